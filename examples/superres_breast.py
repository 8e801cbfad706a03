"""BreastMNIST super-resolution 28 -> 64 by querying fields on a finer grid.

The official BreastMNIST files at 28x28 and 64x64 hold the same ultrasound images. A field model
meta-trained on the 28x28 images encodes each 28x28 test image; its field is rendered on the 64x64
grid and compared with the real 64x64 image, next to nearest, bilinear and bicubic interpolation::

    funcml datasets fetch breastmnist@64      # once: the 64x64 file from Zenodo
    python examples/superres_breast.py --out runs/superres

``--low`` defaults to the embedded BreastMNIST 28x28 file (``demo``), ``--high`` to ``breastmnist@64``
under the data root (see ``funcml datasets``; without it the example stops and says what to
download and where). With ``--model`` naming an existing model of LOW (``funcml train LOW --preset
cpu-image``, 500 steps) training is skipped; otherwise it is trained first. Then, in this process::

    funcml superres LOW HIGH --model MODEL --split test --out OUT/superres
    funcml render --latents OUT/latents --scale 4 --split test --out OUT/render   (112x112 renders)

Output: ``OUT/superres/superres.png`` (low, bicubic, funcml, truth), ``OUT/superres/metrics.json``,
``OUT/result.json``.

Expected output (a 2-core CPU, one thread, other jobs running; a model trained beforehand with the
``cpu-image`` preset, validation PSNR 29.3 dB at 28x28)::

    test split (156 images), PSNR / SSIM against the real 64x64 images:
      funcml 24.8 dB / 0.640, bicubic 28.4 dB / 0.850, bilinear 27.5 dB / 0.812, nearest 26.7 dB / 0.799
    run time 233 s wall (56 s CPU): two encodes of the 156 test images (superres, then render)

A model meta-trained on 28x28 only has never been asked for values between its pixels, so plain
interpolation is better here; training with ``--target-data breastmnist_64.npz`` (cross-resolution
supervision, see the querying page) is what makes the field good between samples.

``--fast`` (for the tests): a tiny model trained for 3 steps, 8 test images, 3 test-time steps (< 20 s).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Timer, dataset_path, funcml, write_result  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--low", default="demo", help="low-resolution data (default: the embedded BreastMNIST 28x28)")
    parser.add_argument("--high", default=None,
                        help="the same signals at high resolution (default: breastmnist@64 under the data root)")
    parser.add_argument("--model", default=None, help="a model trained on LOW (trained here when not given)")
    parser.add_argument("--steps", type=int, default=500, help="meta-steps when training")
    parser.add_argument("--out", default="runs/superres", help="output folder")
    parser.add_argument("--fast", action="store_true", help="tiny sizes (a smoke test, < 20 s)")
    args = parser.parse_args(argv)
    args.low = dataset_path(args.low, "demo", "--low and --high (the same signals at two resolutions)")
    args.high = dataset_path(args.high, "breastmnist@64", "--high with the same signals at high resolution")
    timer = Timer()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model = Path(args.model) if args.model else None
    if args.fast or model is None or not model.exists():
        model = out / "model"
        tiny = ["--steps", "3", "--width", "32", "--depth", "3", "--latent-dim", "16", "--test-steps", "3",
                "--val-every", "0", "--batch-size", "4"] if args.fast else ["--steps", str(args.steps)]
        funcml("train", args.low, "--preset", "cpu-image", "--out", model, "--overwrite", "--device", "cpu", *tiny)
    fast = ["--max-items", "8", "--steps", "3"] if args.fast else []
    metrics = funcml("superres", args.low, args.high, "--model", model, "--split", "test", "--out",
                     out / "superres", "--device", "cpu", *fast)
    # The same fields rendered 4x finer than they were fitted (any grid works): encode, then render.
    encoded = funcml("encode", args.low, "--model", model, "--split", "test", "--out", out / "latents", "--overwrite",
           "--device", "cpu", *(["--steps", "3"] if args.fast else []))
    funcml("render", "--latents", out / "latents", "--scale", "4", "--indices", f"0-{min(8, encoded['count']) - 1}", "--out", out / "render",
           "--overwrite", "--device", "cpu")
    methods = {k: v for k, v in metrics.items() if isinstance(v, dict) and "psnr" in v}
    result = {"example": "superres_breast", "fast": args.fast, "count": metrics.get("count"),
              "psnr": {k: v["psnr"] for k, v in methods.items()},
              "ssim": {k: v.get("ssim") for k, v in methods.items()},
              "figure": str(out / "superres" / "superres.png"), "renders": str(out / "render" / "renders.png"),
              "seconds": float(str(timer).split()[0])}
    write_result(out, result)
    print(f"run time {timer}")
    return result


if __name__ == "__main__":
    main()
