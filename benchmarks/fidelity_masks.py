"""Where the error of a field fitted to a binary mask lies, and how far more test-time steps take it.

For a model (a ``funcml train`` output directory) and the first ``--signals`` test signals of a data
set of 0/1 masks (AdrenalMNIST3D), each encoding below fits the latents from zero with the network
frozen, and the script reports the test PSNR, the share of the squared error that falls on boundary
voxels (voxels with a face neighbour of the other value, on either side of the surface), the
fraction of all voxels that are boundary voxels, and the mean Dice of the reconstruction thresholded
at 0.5:

* SGD with H = 20 (the paper's test-time steps; ``funcml encode --momentum 0``), and with the
  momentum the model chose on its validation signals (what ``funcml encode`` does by default; or
  ``--momentum``);
* SGD continued to H = 100;
* Adam (``--optimizer adam``) with H = 500: an estimate of what the frozen network can represent
  at all, rather than what 20 steps reach.

Writes ``benchmarks/results/fidelity_masks_DATA.json`` and ``docs/figures/fidelity_masks_DATA.png``
(of three test volumes the slice with the most foreground: the mask, the H = 20 reconstruction, its
squared error). Reconstructions are clamped to [0, 1], as ``funcml.encoders.fitting.decode`` returns
them; the PSNR of ``fidelity_budget.py`` is that of the unclamped field.

    nice -n 5 python benchmarks/fidelity_masks.py --data adrenal28 \\
        --model runs/fidelity/adrenal28/base-20m/model --signals 16 --momentum 0.6
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import numpy as np  # noqa: E402
import torch  # noqa: E402
from scipy import ndimage  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fidelity_budget import load, model_momentum, save_figure  # noqa: E402
from results import REPO, table, write_result  # noqa: E402


def boundary(masks: np.ndarray) -> np.ndarray:
    """Voxels with a face neighbour of the other value: bool ``(n, *spatial)`` -> same shape."""
    face = ndimage.generate_binary_structure(masks.ndim - 1, 1)[None]   # no neighbours across signals
    return ndimage.binary_dilation(masks, face) & ~ndimage.binary_erosion(masks, face, border_value=1)


def error_report(recon: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """PSNR, Dice at 0.5 and where the squared error lies, for ``(n, *spatial)`` arrays in [0, 1]."""
    from funcml.metrics import psnr
    from funcml.tasks.segment.metrics import dice_iou

    mask = truth > 0.5
    edge = boundary(mask)
    se = (recon - truth) ** 2
    dice, _ = dice_iou((recon > 0.5).astype(np.int64), mask.astype(np.int64), 2)
    return {"psnr": float(psnr(recon, truth).mean()), "dice": float(np.nanmean(dice[:, 1])),
            "boundary_error_share": float(se[edge].sum() / se.sum()),
            "boundary_voxel_share": float(edge.mean())}


def measure(model_dir: Path, signals, count: int, momentum: float | None = None
            ) -> tuple[list[dict], dict[str, np.ndarray]]:
    """Rows of :func:`error_report` per encoding (see the module docstring), and the masks and the
    H = 20 reconstructions of the first three signals. ``momentum``: that of the momentum row (default:
    the model's own, chosen on its validation signals when it has none)."""
    from funcml.encoders.fitting import decode, fit_latents
    from funcml.encoders.model import FieldModel
    from funcml.seeding import generator

    model = FieldModel.load(model_dir)
    momentum = model_momentum(model, signals)[0] if momentum is None else momentum
    sgd = dataclasses.replace(model.encode_defaults, momentum=0.0)
    x = torch.from_numpy(signals.get(signals.indices("test")[:count]))
    truth = x.numpy()[:, 0]
    rows, recons = [], {}

    def row(label: str, phi: torch.Tensor) -> None:
        recons[label] = decode(model.net, phi, tuple(x.shape[2:])).numpy()[:, 0]
        rows.append({"encoding": label, **error_report(recons[label], truth)})
        print(rows[-1], flush=True)

    gen, phi, done = generator(sgd.seed, "encode", 0), None, 0
    for h in (20, 100):   # one SGD fit, continued
        phi = fit_latents(model.net, x, dataclasses.replace(sgd, steps=h - done), generator=gen, latents=phi)
        done = h
        row(f"SGD, H = {h}", phi)
    with_momentum = dataclasses.replace(sgd, steps=20, momentum=momentum)
    row(f"SGD with momentum {momentum:g}, H = 20",
        fit_latents(model.net, x, with_momentum, generator=generator(sgd.seed, "encode", 0)))
    adam = dataclasses.replace(sgd, steps=500, optimizer="adam", adam_lr=0.01)
    row("Adam 0.01, H = 500", fit_latents(model.net, x, adam, generator=generator(sgd.seed, "encode", 0)))
    return rows, {"truth": truth[:3], "recon": recons["SGD, H = 20"][:3]}


def figure(shown: dict[str, np.ndarray], path: Path) -> None:
    """Of each volume the slice with the most foreground: the mask, the H = 20 reconstruction and its
    squared error (one row each)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    truth, recon = shown["truth"], shown["recon"]
    fig, axes = plt.subplots(3, len(truth), figsize=(2.2 * len(truth), 6.6))
    for j in range(len(truth)):
        z = int(np.argmax(truth[j].sum(axis=(1, 2))))   # the slice with the most of the mask
        for i, (img, name, cmap) in enumerate(((truth[j][z], "mask", "gray"), (recon[j][z], "H = 20", "gray"),
                                               ((recon[j][z] - truth[j][z]) ** 2, "squared error", "magma"))):
            axes[i, j].imshow(img, cmap=cmap, vmin=0, vmax=1)
            axes[i, j].set_axis_off()
            axes[i, j].set_title(f"{name} (test {j}, slice {z})", fontsize=7)
    save_figure(fig, path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="a data set of 0/1 masks known to fidelity_budget (adrenal28)")
    ap.add_argument("--model", type=Path, required=True, help="a funcml train output directory")
    ap.add_argument("--signals", type=int, default=16, help="the first N test signals")
    ap.add_argument("--momentum", type=float, default=None,
                    help="the momentum row's value (default: the model's, chosen on its validation signals if unset)")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    signals = load(a.data)
    rows, shown = measure(a.model, signals, a.signals, a.momentum)
    figure(shown, REPO / "docs" / "figures" / f"fidelity_masks_{a.data}.png")
    columns = ["encoding", "test PSNR dB", "Dice at 0.5", "squared error on boundary voxels",
               "boundary voxels of all voxels"]
    cells = [[r["encoding"], round(r["psnr"], 2), round(r["dice"], 3), f"{100 * r['boundary_error_share']:.1f} %",
              f"{100 * r['boundary_voxel_share']:.1f} %"] for r in rows]
    caption = (f"The first {a.signals} test volumes of {a.data}; model {a.model.parent.name}; Dice of the "
               "reconstruction thresholded at 0.5.")
    write_result(f"fidelity_masks_{a.data}", {"model": a.model.parent.name, "signals": a.signals, "rows": rows},
                 task="fidelity", tables=[table("Where the error of a mask's field lies", columns, cells, caption)])


if __name__ == "__main__":
    main()
