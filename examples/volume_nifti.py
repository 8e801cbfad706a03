"""3D volumes (NIfTI): meta-learn a field on brain MRI volumes, encode them, render them on a finer grid.

Command (the MRIcron brain volumes ``ch2``, ``ch2bet``, ``aal``, ``brodmann`` and ``chris_t1``;
``ch2`` is held out as test)::

    python examples/volume_nifti.py --data PATH/TO/mricron --out runs/volume

``--data`` is a NIfTI file or folder (default: ``mricron`` under the data root, see ``funcml
datasets``: the templates of https://github.com/neurolabusc/MRIcron; without it the example stops
and says what to download and where).

It runs, in this process::

    funcml train DATA --preset cpu-volume --resolution 16 --steps 300 --out OUT/model
    funcml encode DATA --model OUT/model --resolution 16 --out OUT/latents
    funcml evaluate OUT/latents --data DATA --resolution 16
    funcml render --latents OUT/latents --resolution 64x64x64 --out OUT/render    (one .nii.gz per volume)

and decodes every field on a 64^3 grid, 4x finer per axis than the fit
(``FieldModel.decode(latents, (64, 64, 64))``), and writes ``OUT/render.png``: three orthogonal
slices of each volume, the original resampled to 64^3 next to the field decoded at 64^3. Its numbers: ``OUT/result.json``.

Expected output (a 2-core CPU, one thread, other jobs running)::

    PSNR at 16^3 (the fitted grid): train (4 volumes) 46.6 dB, test (ch2, unseen) 19.6 dB
    PSNR of the 64^3 renders against the volumes resampled to 64^3: train 19.3 dB, test 16.7 dB
    run time 630 s (300 meta-steps at 1.55 s each, then encoding and decoding; the `funcml render`
    step for NIfTI files adds a few seconds)

Four training volumes are far too few to meta-learn a prior that generalises: the training volumes
are reproduced almost exactly at 16^3 while the unseen one is not (the paper meta-learns on hundreds
of volumes at 32^3 on a GPU, 28-39 dB). At 64^3 the renders are smooth: a 16^3 fit holds no detail
finer than its grid, so the 64^3 PSNR measures the missing detail, not an error of the rendering.

``--fast`` (for the tests): 3 meta-steps, 8^3 grid, 3 test-time steps, a 16^3 render (< 20 s).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Timer, dataset_path, funcml, write_result  # noqa: E402


def render_figure(originals: np.ndarray, renders: np.ndarray, names: list[str], path: Path) -> None:
    """Central axial/coronal/sagittal slices: originals ``(n, 1, D, H, W)`` over renders, per volume."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from funcml.viz import save_figure

    n = len(originals)
    fig, axes = plt.subplots(n, 6, figsize=(10, 1.8 * n + 0.4), dpi=100, squeeze=False)
    for i in range(n):
        for j, vol in enumerate((originals[i, 0], renders[i, 0])):
            c = [s // 2 for s in vol.shape]
            for k, sl in enumerate((vol[c[0]], vol[:, c[1]], vol[:, :, c[2]])):
                ax = axes[i, 3 * j + k]
                ax.imshow(np.rot90(sl), cmap="gray", vmin=0, vmax=1)
                ax.set_xticks([])
                ax.set_yticks([])
        axes[i, 0].set_ylabel(names[i], fontsize=7)
    for k, title in enumerate(("original x", "original y", "original z", "field x", "field y", "field z")):
        axes[0, k].set_title(title, fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=None, help="NIfTI file or folder (default: mricron under the data root)")
    parser.add_argument("--out", default="runs/volume", help="output folder")
    parser.add_argument("--steps", type=int, default=300, help="meta-steps")
    parser.add_argument("--resolution", type=int, default=16, help="grid the field is fitted on (cube)")
    parser.add_argument("--render", type=int, default=64, help="grid the field is rendered on (cube)")
    parser.add_argument("--fast", action="store_true", help="tiny sizes (a smoke test, < 20 s)")
    args = parser.parse_args(argv)
    if args.fast:
        args.steps, args.resolution, args.render = 3, 8, 16
    args.data = dataset_path(args.data, "mricron", "--data with a NIfTI file or folder")
    timer = Timer()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    res = str(args.resolution)
    extra = ["--test-steps", "3", "--val-every", "0"] if args.fast else []
    train = funcml("train", args.data, "--preset", "cpu-volume", "--resolution", res, "--steps", str(args.steps),
                   "--out", out / "model", "--overwrite", "--device", "cpu", *extra)
    funcml("encode", args.data, "--model", out / "model", "--resolution", res, "--out", out / "latents",
           "--overwrite", "--device", "cpu", *(["--steps", "3"] if args.fast else []))
    evaluation = funcml("evaluate", out / "latents", "--data", args.data, "--resolution", res, "--device", "cpu")

    # Every volume's field on a 4x finer grid: FieldModel.decode on the [-1, 1] grid of that size (the
    # numbers and figure), and `funcml render` for NIfTI files (pixel-centre aligned, see querying.md).
    import torch

    from funcml.data import LoadOptions, load_signals
    from funcml.latents import LatentSet
    from funcml.metrics import psnr

    fine = (args.render,) * 3
    latent_set = LatentSet.open(out / "latents")
    model = latent_set.load_model()
    latents = torch.from_numpy(latent_set.rows(np.arange(len(latent_set))))
    renders = model.decode(latents, fine).numpy()                                 # (n, 1, R, R, R)
    reference = load_signals(args.data, LoadOptions(resolution=fine))
    originals = reference.get(latent_set.index)                                   # (n, 1, R, R, R)
    fine_psnr = psnr(renders, originals)
    funcml("render", "--latents", out / "latents", "--resolution", "x".join(map(str, fine)), "--out", out / "render",
           "--overwrite", "--device", "cpu")
    splits = np.asarray(latent_set.splits)
    names = [Path(f).name.split(".")[0] for f in reference.info.get("files", [])] or \
        [f"volume {i}" for i in range(len(originals))]
    names = [f"{names[i]} ({['train', 'val', 'test'][splits[k]]})" for k, i in enumerate(latent_set.index)]
    render_figure(originals, renders, names, out / "render.png")

    def mean_where(values: np.ndarray, code: int) -> float | None:
        sel = splits == code
        return float(values[sel].mean()) if sel.any() else None

    result = {
        "example": "volume_nifti",
        "fast": args.fast,
        "volumes": int(len(originals)),
        "fit_grid": args.resolution,
        "render_grid": args.render,
        "train_val_psnr": train.get("val_psnr"),
        "psnr_fit_grid": {s: evaluation[s]["psnr"] for s in ("train", "val", "test") if s in evaluation},
        "psnr_render_grid": {s: mean_where(fine_psnr, c) for s, c in (("train", 0), ("val", 1), ("test", 2))},
        "figure": str(out / "render.png"),
        "seconds": float(str(timer).split()[0]),
    }
    write_result(out, result)
    print(f"run time {timer}")
    return result


if __name__ == "__main__":
    main()
