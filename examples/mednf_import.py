"""Import a MedNF release (the official MedFuncta latents) and classify it.

A MedNF release is a folder ``{train,val,test}/datapoint_{i}.pt`` (``{'modulations': tensor[P],
'label': tensor}``) with an optional ``model.pt`` (the official ``LatentModulatedSIREN`` state
dict). With a downloaded release::

    python examples/mednf_import.py --release /path/to/MedNF/pneumoniamnist --w0 10 --w0-increment 5 \\
        --resolution 64x64 --out runs/mednf

Without a release at hand the example first writes one in the official layout from a funcml latent
set and its model (``--from-latents``; default: a ``cpu-image`` model trained on ``--data``, the
embedded BreastMNIST 28x28 images unless given, and their latents), so that every step runs::

    python examples/mednf_import.py --out runs/mednf

Steps (in this process)::

    funcml import-mednf RELEASE --out OUT/latents [--w0 W0 --w0-increment INC --resolution R]
    funcml classify --latents OUT/latents --model logreg --out OUT/classifier

and a check that the imported model decodes the imported latents (PSNR of the first test signals
against the release's own model). Numbers: ``OUT/result.json``.

Expected output (a 2-core CPU, one thread; the release written from the BreastMNIST 28x28 latents of
a ``cpu-image`` model)::

    imported 780 latents (P = 256; train 546, val 78, test 156) with the converted model;
    decoded imported vs original latents: max |difference| 0.0
    logreg (C = 0.01 chosen by val AUC) on the imported latents: test accuracy 0.795, AUC 0.837, macro-F1 0.686
    run time 16 s (with --from-latents; training and encoding the latents first takes a few minutes)

``--fast`` (for the tests): a release of at most 60 latents per split (< 20 s).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Timer, funcml, write_result  # noqa: E402
from generate_classes import ensure_latents  # noqa: E402


def official_state_dict(model) -> dict:
    """funcml weights -> the official LatentModulatedSIREN keys (the inverse of the importer)."""
    state = model.net.state_dict()
    width = model.config.width
    n_layers = model.config.depth - 1
    out = {"layers.0.linear.weight": state["first.weight"], "layers.0.linear.bias": state["first.bias"],
           "last_layer.linear.weight": state["out.weight"], "last_layer.linear.bias": state["out.bias"]}
    for i in range(n_layers):
        out[f"layers.{i}.modulate_shift_layer.weight"] = state["shift.weight"][i * width:(i + 1) * width]
        out[f"layers.{i}.modulate_shift_layer.bias"] = state["shift.bias"][i * width:(i + 1) * width]
        if i:
            out[f"layers.{i}.linear.weight"] = state[f"hidden.{i - 1}.weight"]
            out[f"layers.{i}.linear.bias"] = state[f"hidden.{i - 1}.bias"]
    return {k: v.clone() for k, v in out.items()}


def write_release(latent_set, folder: Path, limit: int | None) -> dict:
    """Write ``latent_set`` as a MedNF release; return the import options its model needs."""
    import torch

    model = latent_set.load_model()
    splits = np.asarray(latent_set.splits)
    for code, name in enumerate(("train", "val", "test")):
        rows = np.flatnonzero(splits == code)[:limit]
        (folder / name).mkdir(parents=True, exist_ok=True)
        for i, row in enumerate(rows):
            point = {"modulations": torch.from_numpy(latent_set.rows([row])[0])}
            if latent_set.labels is not None:
                point["label"] = torch.from_numpy(np.array(latent_set.labels[row]))
            torch.save(point, folder / name / f"datapoint_{i}.pt")
    torch.save(official_state_dict(model), folder / "model.pt")
    cfg = model.config
    return {"w0": cfg.omega_first, "w0_increment": (cfg.omega_last - cfg.omega_first) / (cfg.depth - 1),
            "resolution": "x".join(str(s) for s in model.signal_shape[1:]), "model": model}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--release", default=None, help="a MedNF release folder (downloaded)")
    parser.add_argument("--from-latents", dest="latents", default=None,
                        help="without --release: write a release from this funcml latent set first")
    parser.add_argument("--data", default="demo", help="data to train and encode when neither is given")
    parser.add_argument("--w0", type=float, default=None, help="official w0 of model.pt")
    parser.add_argument("--w0-increment", type=float, default=None, help="official w0_increment of model.pt")
    parser.add_argument("--resolution", default=None, help="signal size model.pt was trained on, e.g. 64x64")
    parser.add_argument("--classifier", default="logreg", help="funcml classify --model")
    parser.add_argument("--out", default="runs/mednf", help="output folder")
    parser.add_argument("--fast", action="store_true", help="a small release (a smoke test, < 20 s)")
    args = parser.parse_args(argv)
    timer = Timer()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    original_model = None
    release = Path(args.release) if args.release else None
    if release is None:
        if args.latents is not None and not Path(args.latents).exists():
            raise SystemExit(f"error: {args.latents} not found: pass --release or --from-latents")
        from funcml.latents import LatentSet

        latents = ensure_latents(args, out)
        release = out / "release"
        made = write_release(LatentSet.open(latents), release, 60 if args.fast else None)
        original_model = made.pop("model")
        args.w0, args.w0_increment, args.resolution = made["w0"], made["w0_increment"], made["resolution"]
        print(f"wrote a MedNF-layout release from {latents} -> {release}")

    options = []
    for flag, value in (("--w0", args.w0), ("--w0-increment", args.w0_increment), ("--resolution", args.resolution)):
        if value is not None:
            options += [flag, str(value)]
    imported = funcml("import-mednf", release, "--out", out / "latents", "--overwrite", *options)
    clf = funcml("classify", "--latents", out / "latents", "--model", args.classifier, "--out", out / "classifier",
                 "--overwrite", "--device", "cpu", *(["--no-search"] if args.fast else []))

    result = {"example": "mednf_import", "fast": args.fast, "latents": imported.get("count"),
              "latent_dim": imported.get("latent_dim"), "classifier": args.classifier,
              "test_accuracy": clf["test"]["accuracy"], "test_auc": clf["test"]["auc"],
              "test_macro_f1": clf["test"]["macro_f1"]}
    from funcml.latents import LatentSet

    ls = LatentSet.open(out / "latents")
    if ls.model_id is not None:
        import torch

        model = ls.load_model()
        z = torch.from_numpy(ls.rows(np.arange(min(8, len(ls)))))
        decoded = model.decode(z)
        result["decodes"] = list(decoded.shape)
        if original_model is not None:  # the release was written from a funcml model: exact round trip
            result["decode_max_abs_diff_vs_original"] = float((decoded - original_model.decode(z)).abs().max())
    result["seconds"] = float(str(timer).split()[0])
    write_result(out, result)
    print(f"run time {timer}")
    return result


if __name__ == "__main__":
    main()
