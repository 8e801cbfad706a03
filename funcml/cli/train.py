"""``funcml train``: meta-learn the shared network on a dataset."""

from __future__ import annotations

import click

from funcml.cli.common import (backend_option, data_options, device_option, emit_json, info, json_option,
                               load_data, overwrite_option, parse_key_values, parse_resolution, precision_option)
from funcml.errors import ConfigError


@click.command("train")
@click.argument("data")
@click.option("--preset", default="cpu-image", show_default=True, help="Named configuration (see `funcml presets`).")
@click.option("--out", required=True, type=click.Path(), help="Output model directory.")
@click.option("--steps", type=int, default=None,
              help="Outer (meta) steps; the cosine schedule spans them. Without it the run has a time budget.")
@click.option("--max-minutes", type=float, default=None,
              help="Without --steps: the time budget (default: the preset's, see `funcml presets`); warm-up and "
                   "cosine decay follow the wall time and training ends when it is spent. With --steps: stop after "
                   "this wall time (a resumable checkpoint is kept).")
@click.option("--batch-size", type=int, default=None, help="Meta-batch size (all processes together).")
@click.option("--micro-batch-size", type=int, default=None,
              help="Signals per pass; gradients are accumulated (same update, less memory). Default: automatic.")
@click.option("--width", type=int, default=None, help="Hidden width L.")
@click.option("--depth", type=int, default=None, help="Layers K, output layer included (official num_layers).")
@click.option("--latent-dim", type=int, default=None, help="Latent size P.")
@click.option("--omega-first", type=float, default=None, help="omega of the first layer.")
@click.option("--omega-last", type=float, default=None, help="omega of the last layer (linear schedule in between).")
@click.option("--inner-steps", type=int, default=None, help="Inner SGD steps G.")
@click.option("--inner-lr", type=float, default=None, help="Inner learning rate alpha.")
@click.option("--context-ratio", type=float, default=None, help="Context fraction gamma per inner step.")
@click.option("--outer-lr", type=float, default=None, help="Peak AdamW learning rate (cosine schedule).")
@click.option("--omega-lr/--no-omega-lr", default=None,
              help="Scale each sine layer's learning rate by omega_1/omega_k (the same phase change per step).")
@click.option("--weight-decay", type=float, default=None)
@click.option("--grad-clip", type=float, default=None, help="Clip the outer gradient norm (0: off).")
@click.option("--guard-drop-db", type=float, default=None,
              help="Roll back to the last good checkpoint with a halved learning rate when the training PSNR falls "
                   "this far below its best (default 5; 0: only on non-finite values).")
@click.option("--warmup-steps", type=int, default=None)
@click.option("--first-order/--second-order", default=None, help="Drop second-order terms of the meta-gradient.")
@click.option("--first-order-warmup", type=float, default=None,
              help="Run this fraction of the schedule (steps or budget) first-order, then second-order.")
@click.option("--meta-sgd/--no-meta-sgd", default=None, help="Learn per-dimension inner learning rates.")
@click.option("--val-every", type=int, default=None, help="Validation PSNR every N steps (0: at the end only).")
@click.option("--val-signals", type=int, default=None, help="Held-out signals used for validation.")
@click.option("--test-steps", type=int, default=None, help="Test-time steps H for validation and encoding.")
@click.option("--grad-rescale/--no-grad-rescale", default=None, help="Test-time gradient-norm rescaling.")
@click.option("--tune-momentum/--no-tune-momentum", default=None,
              help="At the end, choose the model's test-time momentum on the validation signals (default: on).")
@click.option("--checkpoint-every", type=int, default=None)
@click.option("--recompute/--no-recompute", default=None,
              help="Recompute each inner step in the backward instead of keeping it (same result, less memory).")
@click.option("--compile/--no-compile", "compile_", default=None,
              help="torch.compile the fused kernels (same result; minutes to compile on a CPU; no CUDA graphs).")
@precision_option
@backend_option
@click.option("--seed", type=int, default=None)
@click.option("--target-data", default=None, metavar="DATA_HIGH",
              help="Super-resolution training: the same signals as DATA at a higher resolution (same order); the "
                   "outer loss compares the adapted field with them between DATA's samples.")
@click.option("--downsample", type=float, default=None,
              help="Self-supervised super-resolution training: the inner loop sees DATA downsampled by this factor, "
                   "the outer loss asks for DATA itself.")
@click.option("--target-coords", type=int, default=None,
              help="With --target-data/--downsample: supervise this many random target positions per step.")
@click.option("--resume/--no-resume", default=None,
              help="Continue the run in --out (default: automatically when its settings match).")
@overwrite_option
@device_option
@json_option
@data_options
def train_command(data, preset, out, steps, max_minutes, batch_size, micro_batch_size, width, depth, latent_dim,
                  omega_first, omega_last, inner_steps, inner_lr, context_ratio, outer_lr, omega_lr, weight_decay,
                  grad_clip, guard_drop_db, warmup_steps, first_order, first_order_warmup, meta_sgd, val_every,
                  val_signals, test_steps, grad_rescale, tune_momentum, checkpoint_every, recompute, compile_,
                  precision, backend, seed, target_data, downsample, target_coords, resume, overwrite, device, as_json,
                  resolution, channels, split_seed, val_fraction, test_fraction, data_option):
    """Meta-learn a neural-field model on DATA (its train split) and write it to --out.

    DATA is a path (MedMNIST npz, WFDB folder, UCR file, NIfTI, image folder) or
    medmnist:NAME[@SIZE], or `demo`. Rerunning the same command after an interruption resumes.
    Under torchrun every process runs this command; they share the meta-batch.
    """
    from funcml.devices import resolve_device
    from funcml.encoders import distributed
    from funcml.encoders.presets import get_preset

    p = get_preset(preset)
    res = parse_resolution(resolution) or p.resolution
    signals = load_data(data, res, channels, split_seed, val_fraction, test_fraction, data_option)
    if signals.dim != p.dim:
        raise ConfigError(f"preset {p.name} is for {p.dim}-D signals but {data} holds {signals.dim}-D signals")
    field_cfg, train_cfg = p.build(
        signals.dim, signals.channels, width=width, depth=depth, latent_dim=latent_dim, omega_first=omega_first,
        omega_last=omega_last, meta_sgd=meta_sgd, **p.schedule_overrides(steps, max_minutes), batch_size=batch_size,
        micro_batch_size=micro_batch_size, inner_steps=inner_steps, inner_lr=inner_lr, context_ratio=context_ratio,
        outer_lr=outer_lr, omega_lr=omega_lr, weight_decay=weight_decay, grad_clip=grad_clip, guard_drop_db=guard_drop_db,
        warmup_steps=warmup_steps, first_order=first_order, first_order_warmup=first_order_warmup, val_every=val_every,
        val_signals=val_signals, test_steps=test_steps, grad_rescale=grad_rescale, tune_momentum=tune_momentum,
        checkpoint_every=checkpoint_every, seed=seed, recompute=recompute, compile=compile_, precision=precision, backend=backend)
    dev = resolve_device(device)
    with distributed.session():
        trainer = _make_trainer(field_cfg, train_cfg, signals, out, dev, target_data, downsample, target_coords,
                                resume, overwrite, as_json, data_option, split_seed, val_fraction, test_fraction)
        if trainer.dist.is_main:
            start = "resuming" if trainer._resume_decision else "training"
            length = (f"{train_cfg.steps} steps" if train_cfg.budget_minutes is None else
                      f"a {train_cfg.budget_minutes:g}-minute budget (warm-up and cosine decay over the wall time)")
            info(f"{start} {p.name} on {signals.name} {signals.signal_shape} x {len(trainer.train_idx)} train "
                 f"signals, {length}, device {trainer.device}, precision {trainer.cfg.precision}, "
                 f"backend {train_cfg.backend}")
        result = trainer.run()
    if not trainer.dist.is_main:
        return
    _report(result, out, as_json, field_cfg, trainer.cfg)


def _report(result, out, as_json: bool, field_cfg, train_cfg) -> None:
    """The closing lines: steps, stop reason, validation, rollbacks; the JSON with --json (``train_cfg``:
    the settings the trainer ran, precision resolved)."""
    s = result.summary()
    val = "n/a" if s["val_psnr"] is None else f"{s['val_psnr']:.2f} dB"
    median = "n/a" if result.median_step_seconds is None else f"{result.median_step_seconds:.3f} s"
    info(f"done: {result.steps_done}/{result.steps_total} steps (stopped by {result.stopped_by}), best validation "
         f"PSNR {val} (step {result.best_step}), median step {median}, peak memory {s['peak_memory_mb']:.0f} MB -> {out}")
    for rb in result.rollbacks:
        info(f"collapse at step {rb['step']} ({rb['reason']}): rolled back to step {rb['to_step']}, "
             f"learning rate x{rb['lr_scale']:g}")
    if as_json:
        from dataclasses import asdict

        emit_json({**s, "field": asdict(field_cfg), "train": asdict(train_cfg)})


def _make_trainer(field_cfg, train_cfg, signals, out, dev, target_data, downsample, target_coords, resume, overwrite,
                  as_json, data_option, split_seed, val_fraction, test_fraction):
    """A :class:`MetaTrainer`, or the super-resolution trainer with --target-data/--downsample."""
    from funcml.encoders.trainer import MetaTrainer

    if target_data is not None or downsample is not None:
        from funcml.encoders.multires import multires_trainer

        return multires_trainer(field_cfg, train_cfg, signals, out, dev, target_data=target_data,
                                downsample=downsample, target_coords=target_coords, resume=resume,
                                overwrite=overwrite, progress=not as_json, extra=parse_key_values(data_option),
                                split_seed=split_seed, val_fraction=val_fraction, test_fraction=test_fraction)
    if target_coords is not None:
        raise ConfigError("--target-coords needs --target-data or --downsample")
    return MetaTrainer(field_cfg, train_cfg, signals, out, dev, resume=resume, overwrite=overwrite,
                       progress=not as_json)


def register(cli: click.Group) -> None:
    cli.add_command(train_command)
