"""``funcml generate``: train a generative model on latents, sample signals, interpolate, evaluate."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import click
import numpy as np

from funcml.cli.common import (FINITE_FLOAT, data_options, device_option, emit_json, info, json_option, load_data,
                               overwrite_option, parse_resolution)
from funcml.errors import ConfigError, OutputExistsError
from funcml.io.lock import OutputLock
from funcml.tasks.generate.artifact import MODEL_SUBDIR, load_generator_dir
from funcml.tasks.generate.config import GeneratorConfig

_D = GeneratorConfig()


@click.group("generate")
def generate_group() -> None:
    """Generative models over latent vectors (diffusion or flow matching, classifier-free guidance).

    `generate train --latents LATENTS --out GEN`, then `generate sample GEN --n 64 --out DIR`,
    `generate evaluate GEN --latents LATENTS` and `generate interpolate LATENTS --out strip.png`.
    """


def _labels_for_training(latent_set, no_labels: bool):
    from funcml.tasks.generate.evaluate import single_labels

    if no_labels or latent_set.labels is None:
        return None
    y = single_labels(latent_set, latent_set.split_indices("train"))
    if y is None:
        info(f"task {latent_set.task!r} is not single-label: the generator is trained without labels")
    return y


def _publish(partial: Path, out: Path) -> None:
    if out.exists():
        old = out.with_name(out.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(out, old)
        os.replace(partial, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(partial, out)


@generate_group.command("train")
@click.option("--latents", required=True, type=click.Path(), help="Latent set (its train split is modelled).")
@click.option("--out", required=True, type=click.Path(), help="Output generator directory GEN.")
@click.option("--model", "model_dir", default=None, type=click.Path(),
              help="Field model that decodes the latents (default: the one embedded in LATENTS).")
@click.option("--method", type=click.Choice(["flow", "diffusion"]), default=_D.method, show_default=True,
              help="Flow matching (Heun sampler) or v-prediction diffusion (DDIM sampler with Heun correction).")
@click.option("--steps", type=int, default=_D.steps, show_default=True, help="Training steps.")
@click.option("--batch-size", type=int, default=_D.batch_size, show_default=True)
@click.option("--lr", type=FINITE_FLOAT, default=_D.lr, show_default=True,
              help="Peak AdamW learning rate (cosine decay).")
@click.option("--hidden", type=int, default=None, help="Denoiser width (default: clamp(P, 128, 1024)).")
@click.option("--blocks", type=int, default=_D.blocks, show_default=True, help="Residual blocks of the denoiser.")
@click.option("--dropout", type=FINITE_FLOAT, default=_D.dropout, show_default=True)
@click.option("--weight-decay", type=FINITE_FLOAT, default=_D.weight_decay, show_default=True)
@click.option("--p-uncond", type=FINITE_FLOAT, default=_D.p_uncond, show_default=True,
              help="Share of training steps without the label (for classifier-free guidance).")
@click.option("--ema-decay", type=FINITE_FLOAT, default=_D.ema_decay, show_default=True)
@click.option("--sample-steps", type=int, default=_D.sample_steps, show_default=True, help="Default sampler steps.")
@click.option("--eta", type=FINITE_FLOAT, default=_D.eta, show_default=True,
              help="DDIM eta (diffusion only; 1: ancestral, needs many more steps).")
@click.option("--no-labels", is_flag=True, help="Ignore labels (unconditional model).")
@click.option("--seed", type=int, default=_D.seed, show_default=True)
@click.option("--max-minutes", type=FINITE_FLOAT, default=None, help="Stop after this wall time; rerun to continue.")
@click.option("--checkpoint-every", type=int, default=500, show_default=True)
@overwrite_option
@device_option
@json_option
def train_command(latents, out, model_dir, method, steps, batch_size, lr, hidden, blocks, dropout, weight_decay,
                  p_uncond, ema_decay, sample_steps, eta, no_labels, seed, max_minutes, checkpoint_every, overwrite,
                  device, as_json):
    """Train a (class-conditional) generator on the train split of LATENTS and write it to --out.

    An interrupted run (or one stopped by --max-minutes) continues from its last checkpoint when
    the same command is run again.
    """
    from funcml.devices import resolve_device
    from funcml.latents import LatentSet
    from funcml.tasks.generate.generator import LatentGenerator

    out = Path(out)
    if out.exists() and not overwrite:
        raise OutputExistsError(f"output path exists: {out} (pass --overwrite to replace it)")
    dev = resolve_device(device)
    latent_set = LatentSet.open(latents)
    model = latent_set.load_model(model_dir)
    x, _ = latent_set.split("train")
    y = _labels_for_training(latent_set, no_labels)
    gen = LatentGenerator(method=method, hidden=hidden, blocks=blocks, dropout=dropout, steps=steps,
                          batch_size=batch_size, lr=lr, weight_decay=weight_decay, p_uncond=p_uncond,
                          ema_decay=ema_decay, sample_steps=sample_steps, eta=eta, seed=seed, device=str(dev),
                          progress=not as_json)
    gen.config.validate()
    if checkpoint_every < 1:
        raise ConfigError(f"--checkpoint-every must be >= 1; got {checkpoint_every}")
    with OutputLock(out):  # one process at a time trains into GEN (and its checkpoints)
        _train(gen, x, y, out, latent_set, model, model_dir, steps, method, checkpoint_every, max_minutes, dev,
               as_json)


def _train(gen, x, y, out, latent_set, model, model_dir, steps, method, checkpoint_every, max_minutes, dev,
           as_json) -> None:
    from funcml.tasks.generate.artifact import save_generator_dir

    partial = out.with_name(out.name + ".partial")
    partial.mkdir(parents=True, exist_ok=True)
    info(f"training a {method} generator on {len(x)} latents (P {x.shape[1]}, "
         f"{'classes ' + ', '.join(map(str, np.unique(y))) if y is not None else 'unconditional'}), "
         f"{steps} steps, device {dev}")
    gen.fit(x, y, checkpoint_dir=partial, checkpoint_every=checkpoint_every, max_minutes=max_minutes, log=info)
    summary = {"out": str(out), "finished": gen.finished_, **gen.training_, "method": method}
    if not gen.finished_:
        info(f"stopped after {gen.training_['steps_done']}/{steps} steps (--max-minutes); rerun to continue")
        if as_json:
            emit_json(summary)
        return
    src_model = Path(model_dir) if model_dir is not None else latent_set.model_dir
    gen_id = save_generator_dir(gen, partial, latent_set, src_model, model.id)
    shutil.rmtree(partial / "checkpoints", ignore_errors=True)
    _publish(partial, out)
    info(f"done: generator {gen_id[:12]}, final loss {gen.training_['final_loss']:.4f}, "
         f"{gen.training_['seconds']:.0f} s -> {out}")
    if as_json:
        emit_json({**summary, "id": gen_id})


def parse_label(text: str | None, label_names: dict[str, str]) -> int | None:
    """``--label``: a class index or a class name."""
    if text is None:
        return None
    by_name = {v.lower(): int(k) for k, v in label_names.items()}
    if text.lower() in by_name:
        return by_name[text.lower()]
    try:
        return int(text)
    except ValueError:
        names = ", ".join(f"{k} ({v})" for k, v in label_names.items())
        raise ConfigError(f"--label {text!r} is neither a class index nor a class name; classes: {names}") from None


@generate_group.command("sample")
@click.argument("gen_dir", metavar="GEN", type=click.Path())
@click.option("--n", "n", type=int, default=64, show_default=True, help="Number of samples.")
@click.option("--label", default=None, help="Class index or name (default: drawn from the training frequencies).")
@click.option("--guidance", type=FINITE_FLOAT, default=1.0, show_default=True,
              help="Classifier-free guidance weight w: 0 unconditional, 1 conditional, > 1 stronger.")
@click.option("--seed", type=int, default=0, show_default=True, help="Same seed, same samples.")
@click.option("--sample-steps", type=int, default=None, help="Sampler steps (default: the generator's).")
@click.option("--format", "formats", default="npy", show_default=True,
              help="Comma-separated output formats: npy, png (2-D), nifti (2-D/3-D).")
@click.option("--out", required=True, type=click.Path(), help="Output folder.")
@overwrite_option
@device_option
@json_option
def sample_command(gen_dir, n, label, guidance, seed, sample_steps, formats, out, overwrite, device, as_json):
    """Draw --n latents from GEN, decode them into signals and write them with a grid figure.

    The folder gets the signals (samples.npy, png/, nifti/), latents/ (a latent set with the
    model embedded, usable by every other command) and grid.png.
    """
    from funcml.devices import resolve_device
    from funcml.io import atomic_dir, atomic_write_json
    from funcml.latents import write_latent_set
    from funcml.tasks.generate.evaluate import decode_latents, plot_comparison
    from funcml.tasks.generate.export import check_formats, write_signals

    dev = resolve_device(device)
    gen, model, extra = load_generator_dir(gen_dir, dev)
    label_names = extra.get("latent_set", {}).get("label_names", {})
    fmts = check_formats(tuple(f.strip().lower() for f in formats.split(",") if f.strip()), model.signal_shape)
    y = parse_label(label, label_names)
    if y is not None and not gen.conditional:
        raise ConfigError("this generator was trained without labels; sample without --label")
    t0 = time.perf_counter()
    with atomic_dir(out, overwrite=overwrite) as tmp:
        z, labels = gen.sample(n, labels=y, guidance=guidance, seed=seed, steps=sample_steps)
        signals = decode_latents(model, z)
        files = write_signals(tmp, signals, labels, fmts, label_names)
        write_latent_set(tmp / "latents", z, splits=np.zeros(n, np.uint8), labels=labels,
                         task=extra.get("latent_set", {}).get("task", "none") if labels is not None else "none",
                         label_names=label_names if labels is not None else {}, signal_shape=model.signal_shape,
                         source={"name": "generated", "spec": f"generator:{gen.id_}", "fingerprint": None},
                         encoding={"generator": gen.id_, "guidance": guidance, "seed": seed},
                         model_id=model.id, model_dir=Path(gen_dir) / MODEL_SUBDIR)
        plot_comparison({"generated": (signals, labels)}, tmp / "grid.png", label_names)
        counts = {} if labels is None else {str(int(c)): int((labels == c).sum()) for c in np.unique(labels)}
        meta = {"generator_id": gen.id_, "field_model_id": model.id, "n": n, "guidance": guidance, "seed": seed,
                "sample_steps": sample_steps or gen.sample_steps, "label_counts": counts,
                "files": [*files, "latents", "grid.png"], "seconds": time.perf_counter() - t0}
        atomic_write_json(tmp / "samples.json", meta)
    info(f"{n} samples ({', '.join(f'{label_names.get(k, k)}: {v}' for k, v in counts.items()) or 'unconditional'}) "
         f"-> {out} (grid: {Path(out) / 'grid.png'})")
    if as_json:
        emit_json({**meta, "out": str(out)})


@generate_group.command("interpolate")
@click.argument("latents", type=click.Path())
@click.option("--a", "row_a", type=int, default=None, help="Row of the first signal (default: the first test row).")
@click.option("--b", "row_b", type=int, default=None,
              help="Row of the second signal (default: the next test row of another class).")
@click.option("--frames", type=int, default=8, show_default=True)
@click.option("--method", type=click.Choice(["both", "linear", "spherical"]), default="both", show_default=True)
@click.option("--model", "model_dir", default=None, type=click.Path(), help="Field model (default: the embedded one).")
@click.option("--out", required=True, type=click.Path(), help="Output PNG (strip figure).")
@overwrite_option
@device_option
@json_option
def interpolate_command(latents, row_a, row_b, frames, method, model_dir, out, overwrite, device, as_json):
    """Interpolate between two latents of LATENTS (linear and spherical, in the standardised latent
    space) and draw the decoded signals as a strip figure."""
    from funcml.devices import resolve_device
    from funcml.latents import LatentSet
    from funcml.tasks.generate.evaluate import decode_latents
    from funcml.tasks.generate.interpolation import interpolate, plot_strip

    out = Path(out)
    if out.exists() and not overwrite:
        raise OutputExistsError(f"output path exists: {out} (pass --overwrite to replace it)")
    latent_set = LatentSet.open(latents)
    model = latent_set.load_model(model_dir, device=resolve_device(device))
    row_a, row_b = _pick_rows(latent_set, row_a, row_b)
    x_train, _ = latent_set.split("train")
    ref = x_train if len(x_train) >= 2 else latent_set.rows(slice(None))
    mean, scale = ref.mean(0), np.maximum(ref.std(0), 1e-12)
    a, b = latent_set.rows(np.array([row_a]))[0], latent_set.rows(np.array([row_b]))[0]
    methods = ("linear", "spherical") if method == "both" else (method,)
    rows, norms = {}, {}
    for m in methods:
        path = interpolate(a, b, frames, m, mean, scale)
        rows[m] = decode_latents(model, path)
        norms[m] = [float(v) for v in np.linalg.norm((path - mean) / scale, axis=1)]
    out.parent.mkdir(parents=True, exist_ok=True)
    plot_strip(rows, out, title=f"{Path(latents).name}: row {row_a} -> row {row_b}")
    info(f"interpolation strip ({', '.join(methods)}, {frames} frames): {out}")
    if as_json:
        emit_json({"figure": str(out), "a": row_a, "b": row_b, "frames": frames, "standardised_norms": norms})


def _pick_rows(latent_set, row_a: int | None, row_b: int | None) -> tuple[int, int]:
    n = len(latent_set)
    for name, r in (("--a", row_a), ("--b", row_b)):
        if r is not None and not 0 <= r < n:
            raise ConfigError(f"{name} {r} is not a row of the latent set (0 .. {n - 1})")
    pool = latent_set.split_indices("test")
    pool = pool if len(pool) >= 2 else np.arange(n)
    if n < 2 and (row_a is None or row_b is None):
        raise ConfigError("the latent set has fewer than two latents to interpolate between")
    if row_a is None:
        row_a = int(pool[0]) if row_b is None or int(pool[0]) != row_b else int(pool[1])
    if row_b is None:
        labels = None if latent_set.labels is None else np.asarray(latent_set.labels)[:, 0]
        others = [int(r) for r in pool if r != row_a and (labels is None or labels[r] != labels[row_a])]
        row_b = others[0] if others else int(next(r for r in pool if r != row_a))
    return int(row_a), int(row_b)


@generate_group.command("evaluate")
@click.argument("gen_dir", metavar="GEN", type=click.Path())
@click.option("--latents", required=True, type=click.Path(), help="The latent set the generator was trained on.")
@click.option("--data", default=None,
              help="Source DATA of the latents (raw real signals; default: the latent set's source when readable).")
@click.option("--guidance", type=FINITE_FLOAT, default=1.0, show_default=True)
@click.option("--repeats", type=int, default=3, show_default=True, help="Independent sample draws (mean and std).")
@click.option("--k", "k", type=int, default=3, show_default=True, help="k of the k-NN manifolds (precision/recall).")
@click.option("--max-compare", type=int, default=2000, show_default=True, help="Cap on the compared set size.")
@click.option("--max-reference", type=int, default=5000, show_default=True, help="Cap on the reference set size.")
@click.option("--classifier", type=click.Choice(["logistic", "mlp"]), default="logistic", show_default=True,
              help="Classifier on latents for the classification accuracy score (CAS).")
@click.option("--cnn-steps", type=int, default=1000, show_default=True,
              help="Training steps of the feature CNN on the real signals.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", default=None, type=click.Path(), help="Folder for metrics.json and comparison.png "
              "(default: GEN/evaluation).")
@device_option
@json_option
@data_options
def evaluate_command(gen_dir, latents, data, guidance, repeats, k, max_compare, max_reference, classifier, cnn_steps,
                     seed, out,
                     device, as_json, resolution, channels, split_seed, val_fraction, test_fraction, data_option):
    """Score GEN's samples against LATENTS: Fréchet distance, precision/recall, label agreement and
    memorisation in the features of a CNN trained here on the real signals, and the classification
    accuracy score (CAS), each next to real held-out data (ceiling) and a per-class Gaussian (floor)."""
    from funcml.devices import resolve_device
    from funcml.io import atomic_write_json
    from funcml.latents import LatentSet
    from funcml.tasks.generate.evaluate import evaluate_generator, plot_comparison

    for name, v, low in (("--repeats", repeats, 1), ("--k", k, 1), ("--max-compare", max_compare, 5),
                         ("--max-reference", max_reference, 5), ("--cnn-steps", cnn_steps, 1)):
        if v < low:
            raise ConfigError(f"{name} must be >= {low}; got {v}")
    dev = resolve_device(device)
    gen, model, extra = load_generator_dir(gen_dir, dev)
    latent_set = LatentSet.open(latents)
    latent_set.check_model(model)
    signals = load_real_signals(latent_set, data, resolution, channels, split_seed, val_fraction, test_fraction,
                            data_option)
    t0 = time.perf_counter()
    report, sets = evaluate_generator(gen, latent_set, model, signals=signals, guidance=guidance, seed=seed,
                                      repeats=repeats, k=k, max_compare=max_compare, max_reference=max_reference,
                                      classifier=classifier, cnn_steps=cnn_steps, device=dev, log=info)
    report.update(generator_id=gen.id_, method=gen.method, latents=str(latents), seconds=time.perf_counter() - t0)
    out_dir = Path(out) if out else Path(gen_dir) / "evaluation"
    out_dir.mkdir(parents=True, exist_ok=True)
    plot_comparison(sets, out_dir / "comparison.png", latent_set.label_names)
    atomic_write_json(out_dir / "metrics.json", _finite(report))
    info(f"metrics: {out_dir / 'metrics.json'}, figure: {out_dir / 'comparison.png'}")
    if as_json:
        emit_json({**report, "figure": str(out_dir / "comparison.png")})


def _finite(obj):
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj


def load_real_signals(latent_set, data, resolution, channels, split_seed, val_fraction, test_fraction, data_option):
    """The source signals of a latent set (``data`` or the spec in its manifest, checked by
    fingerprint), or None with a note when they cannot be read (decoded latents stand in)."""
    from funcml.errors import FuncmlError

    res = parse_resolution(resolution) or tuple(latent_set.signal_shape[1:])
    expected = latent_set.manifest["source"].get("fingerprint")
    spec = data or latent_set.manifest["source"].get("spec")
    if not spec:
        info("no source data: decoded latents stand in for the real signals")
        return None
    try:
        signals = load_data(spec, res, channels, split_seed, val_fraction, test_fraction, data_option)
    except FuncmlError as exc:
        if data:
            raise
        info(f"cannot read the source data {spec!r} ({exc}): decoded latents stand in for the real signals")
        return None
    if expected is not None and signals.fingerprint != expected:
        message = f"{spec} is not the data {latent_set.path} was encoded from (fingerprints differ)"
        if data:
            raise ConfigError(message + "; pass the same DATA and data options as for encoding")
        info(message + ": decoded latents stand in for the real signals")
        return None
    return signals


def register(cli: click.Group) -> None:
    cli.add_command(generate_group)
