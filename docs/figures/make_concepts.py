"""Make the figures of docs/concepts.md with real funcml calls.

    funcml train demo --preset cpu-image --out runs/demo-model          # or any 2D model, e.g. a shared one
    python docs/figures/make_concepts.py --model runs/demo-model --out docs/figures

Writes four PNGs (about 20 s on one CPU core):

    concept_field.png          a BreastMNIST image -> its latent phi -> the field decoded at 28x28 and at 112x112
    concept_omega.png          the omega-schedule per layer of every preset
    concept_context.png        the coordinates of one inner step at context ratio gamma = 1, 0.5, 0.25, 0.1
    concept_meta_learning.png  the inner/outer loop and the PSNR after each test-time step
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch  # noqa: E402

from funcml.data import load_signals  # noqa: E402
from funcml.encoders import EncodeConfig, FieldModel, list_presets, omega_schedule  # noqa: E402
from funcml.encoders.coords import sample_context  # noqa: E402
from funcml.metrics import psnr  # noqa: E402
from funcml.viz import save_figure  # noqa: E402


def field_figure(model: FieldModel, images: torch.Tensor, out: Path) -> None:
    """Signal -> latent -> decoded at the training grid and 4x finer."""
    latents = model.encode(images)                                   # (B, P)
    recon = model.decode(latents)                                    # (B, 1, 28, 28)
    fine = model.decode(latents, (112, 112))                         # (B, 1, 112, 112)
    values = psnr(recon.numpy(), images.numpy())
    fig, axes = plt.subplots(len(images), 4, figsize=(9, 2.2 * len(images)), dpi=110,
                             gridspec_kw={"width_ratios": [1, 1.6, 1, 1]})
    for i in range(len(images)):
        axes[i, 0].imshow(images[i, 0], cmap="gray", vmin=0, vmax=1)
        axes[i, 1].bar(np.arange(latents.shape[1]), latents[i].numpy(), width=1.0, color="tab:blue")
        axes[i, 1].set_xlim(0, latents.shape[1])
        axes[i, 2].imshow(recon[i, 0], cmap="gray", vmin=0, vmax=1)
        axes[i, 3].imshow(fine[i, 0], cmap="gray", vmin=0, vmax=1)
        axes[i, 2].set_xlabel(f"{values[i]:.1f} dB", fontsize=8)
        for j in (0, 2, 3):
            axes[i, j].set_xticks([])
            axes[i, j].set_yticks([])
        axes[i, 1].tick_params(labelsize=6)
    titles = ["signal (28x28)", f"latent phi (P = {latents.shape[1]})", "decoded at 28x28", "decoded at 112x112"]
    for ax, title in zip(axes[0], titles):
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    save_figure(fig, out / "concept_field.png")
    plt.close(fig)


def omega_figure(out: Path) -> None:
    """omega_k per layer for every registered preset."""
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=110)
    for p in list_presets():
        depth = p.arch["depth"]
        omegas = omega_schedule(depth, p.arch["omega_first"], p.arch["omega_last"])
        ax.plot(range(1, depth + 1), omegas, "o-" if not p.gpu else "s--", ms=3,
                label=f"{p.name} ({depth} layers)")
    ax.set_xlabel("layer k (1 = first sine layer, K = output)")
    ax.set_ylabel("omega_k")
    ax.set_title("omega-schedule: linear from omega_1 to omega_K", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, out / "concept_omega.png")
    plt.close(fig)


def context_figure(image: torch.Tensor, out: Path) -> None:
    """The coordinates one inner step sees (``sample_context``) at several ratios gamma."""
    h, w = image.shape[-2:]
    ratios = (1.0, 0.5, 0.25, 0.1)
    fig, axes = plt.subplots(1, len(ratios), figsize=(2.3 * len(ratios), 2.6), dpi=110)
    for ax, ratio in zip(axes, ratios):
        idx = sample_context(h * w, ratio, torch.Generator().manual_seed(0))
        mask = np.zeros(h * w, dtype=bool)
        mask[np.arange(h * w) if idx is None else idx.numpy()] = True
        shown = np.ma.masked_where(~mask.reshape(h, w), image[0].numpy())
        ax.imshow(np.full((h, w), 0.5), cmap="Reds", vmin=0, vmax=3)
        ax.imshow(shown, cmap="gray", vmin=0, vmax=1)
        ax.set_title(f"gamma = {ratio:g} ({int(mask.sum())} coords)", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("context reduction: each inner step fits phi on a random coordinate subset", fontsize=9)
    fig.tight_layout()
    save_figure(fig, out / "concept_context.png")
    plt.close(fig)


def meta_learning_figure(model: FieldModel, images: torch.Tensor, out: Path) -> None:
    """Diagram of the two loops, and the PSNR of a test-time encode after h = 0..H steps."""
    defaults = model.encode_defaults
    steps = list(range(0, 2 * defaults.steps + 1, 2))
    curve = []
    for h in steps:
        cfg = EncodeConfig(steps=h, inner_lr=defaults.inner_lr, context_ratio=defaults.context_ratio,
                           grad_rescale=defaults.grad_rescale)
        recon = model.decode(model.encode(images, cfg))
        curve.append(float(np.mean(psnr(recon.numpy(), images.numpy()))))
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(10, 3.6), dpi=110, gridspec_kw={"width_ratios": [1.3, 1]})
    ax.set_xlim(0, 10)
    ax.set_ylim(0, 6)
    ax.axis("off")
    boxes = {
        "batch": (0.2, 4.2, "meta-batch of\nB signals"),
        "inner": (3.5, 4.2, "inner loop (G steps)\nphi <- phi - alpha grad_phi L\non a context subset, theta fixed"),
        "loss": (3.5, 1.2, "outer loss L(theta, phi_G)\non all coordinates"),
        "outer": (0.2, 1.2, "outer step: AdamW on theta\nthrough the unrolled loop\n(second order)"),
        "test": (7.3, 4.2, "encode a new signal:\nH steps on phi,\ntheta frozen"),
    }
    for key, (x, y, text) in boxes.items():
        colour = "#dbe9f6" if key != "test" else "#e5f3e0"
        ax.add_patch(FancyBboxPatch((x, y), 2.6 if key != "inner" else 3.3, 1.4, boxstyle="round,pad=0.1",
                                    fc=colour, ec="0.3"))
        ax.text(x + (1.3 if key != "inner" else 1.65), y + 0.7, text, ha="center", va="center", fontsize=7)
    for (x0, y0), (x1, y1) in [((2.9, 4.9), (3.4, 4.9)), ((5.15, 4.1), (5.15, 2.7)), ((3.4, 1.9), (2.9, 1.9)),
                               ((1.5, 2.7), (1.5, 4.1)), ((6.9, 4.9), (7.2, 4.9))]:
        ax.add_patch(FancyArrowPatch((x0, y0), (x1, y1), arrowstyle="->", mutation_scale=10, color="0.3"))
    ax.text(0.2, 0.4, "phi starts at 0 for every signal (CAVIA); theta is shared by all signals", fontsize=7)
    bx.plot(steps, curve, "o-", ms=3)
    bx.axvline(defaults.steps, color="0.5", ls=":", label=f"H = {defaults.steps} (default)")
    bx.set_xlabel("test-time steps on phi")
    bx.set_ylabel("PSNR (dB)")
    bx.set_title(f"encoding {len(images)} test images with a trained model", fontsize=9)
    bx.grid(alpha=0.3)
    bx.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, out / "concept_meta_learning.png")
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a 2D one-channel 28x28 model directory (funcml train demo ...)")
    parser.add_argument("--out", default="docs/figures", help="folder for the PNGs")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model = FieldModel.load(args.model)
    signals = load_signals("demo")
    test = signals.indices("test")[:3]
    images = torch.as_tensor(signals.get(test), dtype=torch.float32)     # (3, 1, 28, 28)
    field_figure(model, images, out)
    omega_figure(out)
    context_figure(images[0], out)
    test16 = torch.as_tensor(signals.get(signals.indices("test")[:16]), dtype=torch.float32)
    meta_learning_figure(model, test16, out)
    print(f"wrote 4 figures to {out}")


if __name__ == "__main__":
    main()
