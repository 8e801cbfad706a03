"""Figures of the generation task: the training loss curve."""

from __future__ import annotations

from pathlib import Path

from funcml.viz import plt


def plot_loss(history: list[dict], path: str | Path) -> None:
    """Training loss (mean per 50 steps) against the step, log scale."""
    fig, ax = plt.subplots(figsize=(5, 3), dpi=120)
    if history:
        ax.plot([h["step"] for h in history], [h["loss"] for h in history])
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss (MSE)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
