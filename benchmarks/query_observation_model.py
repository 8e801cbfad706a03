"""How the 28x28 BreastMNIST images relate to the 64x64 ones, and what knowing it is worth.

Super-resolution 28 -> 64 is judged against the real 64x64 images. This script measures

1. which resampling of the 64x64 image reproduces the 28x28 file best (PSNR of resize(64) against
   the real 28, for PyTorch's and PIL's filters): the acquisition operator D of the pair;
2. on the test split: bicubic upsampling of the 28x28 images, and least-squares back-projection
   with D (``min_x ||D x - x28||^2`` by gradient descent from the bicubic image, which keeps
   bicubic's content where D sees nothing): the gain that consistency with the known operator
   gives without any learning, i.e. a classical baseline for funcml's super-resolution.

Usage (the files default to ``medmnist/breastmnist.npz`` and ``medmnist/breastmnist_64.npz`` of the
shared data folder, ``$FUNCML_SHARED_DATA``); the numbers go to
``benchmarks/results/query-observation-model.json``::

    python benchmarks/query_observation_model.py [LOW HIGH]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results import shared_data, table, write_result  # noqa: E402


def psnr(pred: torch.Tensor, target: torch.Tensor) -> float:
    """Mean PSNR (dB) over images ``(N, 1, H, W)`` in [0, 1], the prediction clamped."""
    mse = (pred.clamp(0, 1) - target).pow(2).mean(dim=(1, 2, 3))
    return float((10 * torch.log10(1.0 / mse)).mean())


def torch_resize(x: torch.Tensor, size: int, mode: str) -> torch.Tensor:
    if mode == "area":
        return F.interpolate(x, size=(size, size), mode="area")
    base, _, aa = mode.partition("-")
    return F.interpolate(x, size=(size, size), mode=base, align_corners=False, antialias=aa == "aa")


def pil_resize(x: torch.Tensor, size: int, resample: int) -> torch.Tensor:
    out = [np.asarray(Image.fromarray(np.round(im[0].numpy() * 255).astype(np.uint8)).resize((size, size), resample))
           for im in x]
    return torch.from_numpy(np.stack(out)).float().div(255).unsqueeze(1)


def back_project(low: torch.Tensor, start: torch.Tensor, down, steps: int = 200, lr: float = 2.0) -> torch.Tensor:
    """Least squares ``min_x ||down(x) - low||^2`` from ``start`` by gradient descent."""
    x = start.clone().requires_grad_(True)
    opt = torch.optim.SGD([x], lr=lr)
    for _ in range(steps):
        loss = (down(x) - low).pow(2).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return x.detach()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("low", nargs="?", default=str(shared_data() / "medmnist" / "breastmnist.npz"),
                    help="the 28x28 MedMNIST npz")
    ap.add_argument("high", nargs="?", default=str(shared_data() / "medmnist" / "breastmnist_64.npz"),
                    help="the same images at 64x64 (MedMNIST+ npz)")
    ap.add_argument("--split", default="test")
    ap.add_argument("--json", dest="json_out", help="write the numbers here")
    ap.add_argument("--result", default="query-observation-model", help="result file name in benchmarks/results/")
    ap.add_argument("--notes", default=None, help="conditions of the run for the result (e.g. other jobs running)")
    args = ap.parse_args(argv)
    lo, hi = np.load(args.low), np.load(args.high)
    x_lo = torch.from_numpy(lo[f"{args.split}_images"]).float().div(255).unsqueeze(1)
    x_hi = torch.from_numpy(hi[f"{args.split}_images"]).float().div(255).unsqueeze(1)
    n_lo, n_hi = x_lo.shape[-1], x_hi.shape[-1]
    res: dict = {"split": args.split, "count": int(len(x_lo)), "operator_psnr": {}}
    for mode in ("area", "bilinear", "bicubic", "bilinear-aa", "bicubic-aa"):
        res["operator_psnr"][f"torch {mode}"] = psnr(torch_resize(x_hi, n_lo, mode), x_lo)
    for name, f in (("box", Image.BOX), ("bilinear", Image.BILINEAR), ("bicubic", Image.BICUBIC),
                    ("lanczos", Image.LANCZOS)):
        res["operator_psnr"][f"PIL {name}"] = psnr(pil_resize(x_hi, n_lo, f), x_lo)
    best = max((k for k in res["operator_psnr"] if k.startswith("torch")), key=res["operator_psnr"].get)
    down = lambda x: torch_resize(x, n_lo, best.split(" ", 1)[1])  # noqa: E731
    bicubic = torch_resize(x_lo, n_hi, "bicubic")
    res["operator"] = best
    res["bicubic_psnr"] = psnr(bicubic, x_hi)
    res["back_projection_psnr"] = psnr(back_project(x_lo, bicubic, down), x_hi)
    print(json.dumps(res, indent=2))
    if args.json_out:
        with open(args.json_out, "w") as fh:
            json.dump(res, fh, indent=2)
    ops = sorted(res["operator_psnr"].items(), key=lambda kv: -kv[1])
    tables = [table("Which resampling of the 64x64 images gives the 28x28 file", ["resize 64 -> 28", "PSNR dB"],
                    [[k, round(v, 2)] for k, v in ops]),
              table(f"Super-resolution 28 -> 64 without learning ({res['count']} {args.split} images)",
                    ["method", "PSNR dB"], [["bicubic", round(res["bicubic_psnr"], 2)],
                                            [f"least-squares back-projection through {best}",
                                             round(res["back_projection_psnr"], 2)]],
                    caption="Back-projection: min ||D x - x28||^2 from the bicubic image, 200 gradient steps, D "
                            "the best resampling above.")]
    write_result(args.result, res, task="query", tables=tables, notes=args.notes, order=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
