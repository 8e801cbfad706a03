"""The main job on the embedded BreastMNIST data: train, encode, evaluate, then downstream tasks.

``run_demo`` writes a report folder::

    model/                 the meta-trained model (cpu-image preset unless overridden)
    latents/               every split encoded (a latent set with the model embedded)
    reconstructions.png    originals over reconstructions (test split)
    training_curves.png    PSNR during meta-training
    report.json            all metrics (training, reconstruction per split, each task)

The downstream stages are listed in :data:`funcml.demo.stages.STAGES`; each gets a
:class:`~funcml.demo.context.DemoContext` and returns its metrics (and may write files into ``ctx.out``).
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Callable

from funcml.demo.context import DemoContext
from funcml.demo.stages import STAGES
from funcml.errors import OutputExistsError
from funcml.io import atomic_write_json


DEMO_MINUTES = 2.0   # the meta-training budget: the whole demo stays within 5 minutes on 2 cores


def run_demo(out: str | Path, *, preset: str = "cpu-image", steps: int | None = None, minutes: float | None = None,
             quick: bool = False, device: str = "auto", overwrite: bool = False, log: Callable[[str], None] = print,
             progress: bool = True) -> dict:
    """Run the whole pipeline on the embedded data and return the report dict.

    Meta-training gets a time budget of ``minutes`` (default :data:`DEMO_MINUTES`; the schedule
    fits it), or ``steps`` steps; ``quick``: 20 steps."""
    from funcml.data import load_signals
    from funcml.devices import resolve_device

    out = _fresh_folder(Path(out), overwrite)
    t0 = time.perf_counter()
    dev = resolve_device(device)
    signals = load_signals("demo")
    log(f"[1/4] data: embedded BreastMNIST {signals.signal_shape}, splits {signals.describe()['splits']}")
    result, model = _train(out, signals, dev, preset, steps, minutes, quick, log, progress)
    log("[3/4] encoding every split")
    report, latent_set = _encode_and_evaluate(out, signals, model, result, preset, log, progress)
    ctx = DemoContext(out=out, signals=signals, model=model, latent_set=latent_set, device=dev, quick=quick,
                      log=log, report=report)
    log(f"[4/4] downstream tasks: {', '.join(n for n, _ in STAGES) or 'none registered'}")
    for name, stage in STAGES:
        t_stage = time.perf_counter()
        report["tasks"][name] = stage(ctx)
        report["seconds"][name] = time.perf_counter() - t_stage
        log(f"      {name}: {report['seconds'][name]:.0f} s")
    report["minutes"] = (time.perf_counter() - t0) / 60
    atomic_write_json(out / "report.json", report)
    log(f"report: {out / 'report.json'} ({report['minutes']:.1f} min)")
    return report


def _fresh_folder(out: Path, overwrite: bool) -> Path:
    """``out`` created empty; an existing one is replaced only with ``overwrite``."""
    if out.exists():
        if not overwrite:
            raise OutputExistsError(f"output path exists: {out} (pass --overwrite to replace it)")
        shutil.rmtree(out)
    out.mkdir(parents=True)
    return out


def _train(out: Path, signals, dev, preset: str, steps: int | None, minutes: float | None, quick: bool,
           log: Callable[[str], None], progress: bool):
    """Meta-train the preset into ``out/model`` (a budget of ``minutes``, or ``steps``); ``(result, model)``."""
    from funcml.encoders.model import FieldModel
    from funcml.encoders.presets import get_preset
    from funcml.encoders.trainer import MetaTrainer

    p = get_preset(preset)
    if quick:
        steps = steps or 20
    overrides = p.schedule_overrides(steps, None if steps else DEMO_MINUTES if minutes is None else minutes)
    if quick:
        overrides.update(val_every=0, val_signals=16)
    field_cfg, train_cfg = p.build(signals.dim, signals.channels, **overrides)
    length = (f"{train_cfg.steps} steps" if train_cfg.budget_minutes is None
              else f"{train_cfg.budget_minutes:g} minutes")
    log(f"[2/4] meta-training preset {p.name}: {length}, batch {train_cfg.batch_size}, "
        f"{field_cfg.depth} x {field_cfg.width}, P {field_cfg.latent_dim}")
    result = MetaTrainer(field_cfg, train_cfg, signals, out / "model", dev, progress=progress).run()
    if (out / "model" / "training_curves.png").exists():
        shutil.copyfile(out / "model" / "training_curves.png", out / "training_curves.png")
    log(f"      {result.steps_done} steps, validation PSNR {result.best_val_psnr:.2f} dB, "
        f"{result.median_step_seconds:.3f} s/step")
    return result, FieldModel.load(out / "model", device=dev)


def _encode_and_evaluate(out: Path, signals, model, result, preset: str, log: Callable[[str], None],
                         progress: bool):
    """Encode every split into ``out/latents``, plot reconstructions; ``(report, latent_set)``."""
    from funcml.encoders.presets import get_preset
    from funcml.latents.encode import encode_signal_set
    from funcml.latents.evaluate import evaluate_latent_set
    from funcml.viz import plot_reconstructions

    latent_set, enc_stats = encode_signal_set(model, signals, out / "latents", model_dir=out / "model",
                                              progress=progress)
    metrics, (orig, recon) = evaluate_latent_set(latent_set, model, signals)
    plot_reconstructions(orig, recon, out / "reconstructions.png")
    log(f"      test PSNR {metrics['test']['psnr']:.2f} dB, SSIM {metrics['test']['ssim']:.3f} "
        f"({enc_stats['signals_per_second']:.0f} signals/s)")
    report: dict = {
        "data": signals.describe() | {"info": None},
        "preset": get_preset(preset).name,
        "training": result.summary(),
        "encoding": {k: enc_stats[k] for k in ("signals", "seconds", "signals_per_second")},
        "reconstruction": metrics,
        "tasks": {},
        "seconds": {"training": result.minutes * 60, "encoding": enc_stats["seconds"]},
    }
    return report, latent_set
