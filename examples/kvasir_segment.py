"""Kvasir-SEG polyp segmentation by querying fields, next to a pixel U-Net.

Colonoscopy images are encoded into latents by a `cpu-image` field (RGB); a small head learns to
predict the polyp mask at any coordinate from the frozen field's hidden features and the latent.
Because it is queried at coordinates, the head predicts masks on a finer grid than the images
were encoded at::

    python examples/kvasir_segment.py --data PATH/TO/kvasir-seg --out runs/kvasir

``--data`` is a folder with ``images/`` and ``masks/`` (Kvasir-SEG from https://datasets.simula.no/kvasir-seg/;
default: ``kvasir-seg`` under the data root, see ``funcml datasets``; without it the example stops
and says what to download and where).

In this process (R = --resolution, default 24; masks predicted at 2R; sizes chosen for a
15-minute run on a busy 2-core CPU, far below what the task deserves)::

    funcml train DATA --preset cpu-image --resolution R --steps 100 --batch-size 8 --out OUT/model
    funcml encode DATA --model OUT/model --resolution R --steps 10 --out OUT/latents
    funcml segment train DATA --model OUT/model --latents OUT/latents --steps 300 --out OUT/head
    funcml segment predict DATA --head OUT/head --model OUT/model --latents OUT/latents --split test \\
        --resolution 2R --out OUT/predict
    funcml segment unet DATA --resolution R --epochs 8 --out OUT/unet

Output: ``OUT/predict/overlays.png`` (predicted contours red, truth yellow), ``metrics.json`` of both
methods, ``OUT/result.json``.

Expected output (a 2-core CPU, one thread, other jobs running; 799 of the 1,000 Kvasir-SEG pairs:
559 train / 80 val / 160 test images at R = 24)::

    field: validation PSNR 25.2 dB after 100 meta-steps (0.48 s each); 799 images encoded at 24.6 dB
    query head, masks predicted at 48x48: polyp Dice 0.349, IoU 0.241, HD95 11.4 px (160 test images)
    U-Net at 24x24 after 8 epochs: polyp Dice 0.000 (it predicts background everywhere: far too short)
    run time 450 s wall (146 s CPU)

These sizes are a smoke-sized run for a busy CPU, not a benchmark: both methods need far longer
training (the segmentation results in docs/benchmarks.md use 64x64 fields, 300 meta-steps,
1,500 head steps and 30 U-Net epochs).

``--fast`` (for the tests): 8x8 fields, 2 meta-steps, 20 head steps, 1 U-Net epoch; < 20 s on a
small folder (reading all 799 Kvasir images takes longer).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Timer, dataset_path, funcml, write_result  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=None,
                        help="folder with images/ and masks/ (default: kvasir-seg under the data root)")
    parser.add_argument("--resolution", type=int, default=24, help="grid the fields are fitted on")
    parser.add_argument("--steps", type=int, default=100, help="meta-steps")
    parser.add_argument("--encode-steps", type=int, default=10, help="test-time steps H")
    parser.add_argument("--head-steps", type=int, default=300, help="segmentation-head steps")
    parser.add_argument("--unet-epochs", type=int, default=8, help="U-Net baseline epochs (0: skip)")
    parser.add_argument("--out", default="runs/kvasir", help="output folder")
    parser.add_argument("--fast", action="store_true", help="tiny sizes (a smoke test)")
    args = parser.parse_args(argv)
    args.data = dataset_path(args.data, "kvasir-seg", "--data with a folder holding images/ and masks/")
    if args.fast:
        args.resolution, args.steps, args.head_steps, args.unet_epochs, args.encode_steps = 8, 2, 20, 1, 3
    timer = Timer()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    r, fine = str(args.resolution), str(2 * args.resolution)
    tiny = ["--width", "32", "--depth", "3", "--latent-dim", "16", "--test-steps", "3", "--val-every", "0",
            "--batch-size", "4"] if args.fast else ["--batch-size", "8"]
    funcml("train", args.data, "--preset", "cpu-image", "--resolution", r, "--steps", str(args.steps),
           "--out", out / "model", "--overwrite", "--device", "cpu", *tiny)
    funcml("encode", args.data, "--model", out / "model", "--resolution", r, "--out", out / "latents", "--overwrite",
           "--device", "cpu", "--steps", str(args.encode_steps))
    funcml("segment", "train", args.data, "--model", out / "model", "--latents", out / "latents", "--steps",
           str(args.head_steps), "--out", out / "head", "--overwrite", "--device", "cpu",
           *(["--coords-per-signal", "64", "--hidden", "32"] if args.fast else []))
    pred = funcml("segment", "predict", args.data, "--head", out / "head", "--model", out / "model", "--latents",
                  out / "latents", "--split", "test", "--resolution", fine, "--out", out / "predict", "--overwrite",
                  "--device", "cpu")
    result = {"example": "kvasir_segment", "fast": args.fast, "field_grid": args.resolution,
              "query_head": {"grid": 2 * args.resolution, **_scores(pred)},
              "figure": str(out / "predict" / "overlays.png")}
    if args.unet_epochs:
        unet = funcml("segment", "unet", args.data, "--resolution", r, "--epochs", str(args.unet_epochs),
                      "--out", out / "unet", "--overwrite", "--device", "cpu",
                      *(["--base", "4", "--depth", "1"] if args.fast else []))
        result["unet"] = {"grid": args.resolution, **_scores(unet)}
    result["seconds"] = float(str(timer).split()[0])
    write_result(out, result)
    print(f"run time {timer}")
    return result


def _scores(report: dict) -> dict:
    """Foreground Dice/IoU/HD95 and the image count of a `segment predict`/`unet` report."""
    keep = {"count": report.get("count")}
    keep.update({f"{k}_foreground": v for k, v in (report.get("mean_foreground") or {}).items()})
    return keep


if __name__ == "__main__":
    main()
