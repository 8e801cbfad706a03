"""``funcml encode``: fit latents to every signal of a dataset (theta frozen)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from funcml.cli.common import (backend_option, data_options, device_option, emit_json, info, json_option,
                               load_data, overwrite_option, parse_resolution, precision_option)
from funcml.errors import ConfigError

if TYPE_CHECKING:
    import torch

    from funcml.encoders.distributed import DistInfo


@click.command("encode")
@click.argument("data")
@click.option("--model", "model_dir", required=True, type=click.Path(), help="Model directory from `funcml train`.")
@click.option("--out", required=True, type=click.Path(), help="Output latent-set directory.")
@click.option("--steps", default=None, metavar="H|auto",
              help="Test-time steps H (default: the model's), or `auto`: each signal stops when its loss stops "
                   "improving (at most --max-steps).")
@click.option("--max-steps", type=click.IntRange(1), default=500, show_default=True, help="With --steps auto: the most steps.")
@click.option("--optimizer", type=click.Choice(["sgd", "adam"]), default=None,
              help="Test-time optimiser of the latents: sgd (the model's rate or its meta-learnt rates) or adam.")
@click.option("--adam-lr", type=float, default=None, help="Adam's learning rate (with --optimizer adam; default 0.01).")
@click.option("--momentum", type=float, default=None,
              help="Heavy-ball momentum of the SGD steps, in [0, 1) (default: the model's, chosen on its "
                   "validation signals for its H; 0 with another --steps).")
@click.option("--batch-size", type=int, default=None, help="Signals encoded together (default 64).")
@click.option("--inner-lr", type=float, default=None, help="Test-time learning rate (default: the model's).")
@click.option("--context-ratio", type=float, default=None, help="Context fraction for the rescaling norm.")
@click.option("--grad-rescale/--no-grad-rescale", default=None, help="Official test-time gradient-norm rescaling.")
@click.option("--split", type=click.Choice(["all", "train", "val", "test"]), default="all", show_default=True)
@click.option("--seed", type=int, default=None, help="Seed of the context subsets (default: the model's).")
@click.option("--embed-model/--no-embed-model", default=True, show_default=True,
              help="Copy the model into the latent set (else store its path).")
@click.option("--compile/--no-compile", "compile_", default=False, show_default=True,
              help="torch.compile the fitting kernels (same latents; a minute or more to compile, pays for big datasets).")
@click.option("--observed", default=None, metavar="MASK",
              help="Fit only observed samples: random:F, drop-slices:F[@AXIS], box:LO-HI[,..], crop:LO-HI[,..] "
                   "or a .npy/.npz mask (see funcml.query.observed).")
@click.option("--observed-seed", type=int, default=0, show_default=True, help="Seed of random: observed patterns.")
@precision_option
@backend_option
@overwrite_option
@device_option
@json_option
@data_options
def encode_command(**opts):
    """Encode DATA with the model in --model into the latent set --out.

    Signals are resampled to the model's grid unless --resolution says otherwise. An interrupted
    encode resumes where it stopped when the same command is run again. Under torchrun every
    process runs this command: each encodes a share of the signals and process 0 merges them into
    one latent set, the same as a one-process encode.
    """
    import torch

    from funcml.devices import resolve_device
    from funcml.encoders import distributed

    dev = resolve_device(opts["device"])
    with distributed.session():
        dist_info = distributed.init_distributed(dev.type)
        if dist_info.enabled and dev.type == "cuda":
            dev = torch.device("cuda", dist_info.local_rank)
        _encode(dev, dist_info, opts)


def _encode(dev: torch.device, rank: DistInfo, o: dict) -> None:
    """The encode of one process (all of it, or its share under torchrun); ``o``: the command's options."""
    from funcml.encoders.config import replace
    from funcml.latents.encode import encode_signal_set
    from funcml.encoders.model import FieldModel
    from funcml.backends.precision import resolve

    say = info if rank.is_main else (lambda message: None)
    model = FieldModel.load(o["model_dir"], device=dev)
    res = parse_resolution(o["resolution"]) or model.signal_shape[1:]
    signals = load_data(o["data"], res, o["channels"], o["split_seed"], o["val_fraction"], o["test_fraction"],
                        o["data_option"])
    if o["optimizer"] == "adam" and o["momentum"]:
        raise ConfigError("--momentum applies to --optimizer sgd (Adam keeps its own moments)")
    at_steps = model.encode_defaults.at_steps(**parse_steps(o["steps"], o["max_steps"]))
    cfg = replace(at_steps, inner_lr=o["inner_lr"], context_ratio=o["context_ratio"], grad_rescale=o["grad_rescale"],
                  seed=o["seed"], batch_size=o["batch_size"], optimizer=o["optimizer"], adam_lr=o["adam_lr"],
                  momentum=o["momentum"], backend=o["backend"], precision=o["precision"] or "auto",
                  compile=o["compile_"]).validate()
    indices = None if o["split"] == "all" else signals.indices(o["split"])
    say(f"encoding {signals.name} ({len(signals) if indices is None else len(indices)} signals, "
        f"{signals.signal_shape}) with model {model.id[:12]}: H={cfg.steps}, batch {cfg.batch_size}, device {dev}, "
        f"precision {resolve(cfg.precision, dev)}, backend {cfg.backend}"
        + (f", {rank.world_size} processes" if rank.enabled else ""))
    masks = None
    if o["observed"] is not None:
        from funcml.query.observed import parse_observed

        masks = parse_observed(o["observed"], signals.spatial_shape, len(signals), seed=o["observed_seed"])
        say(f"fitting only the observed samples ({masks.tag})")
    latent_set, stats = encode_signal_set(model, signals, o["out"], cfg, model_dir=o["model_dir"],
                                          embed_model=o["embed_model"], indices=indices, observed=masks,
                                          observed_tag=masks and masks.tag, overwrite=o["overwrite"],
                                          progress=not o["as_json"])
    if latent_set is None:  # a process other than 0 under torchrun: its share is in its shard
        return
    info(f"done: {len(latent_set)} latents of dimension {latent_set.latent_dim}, mean PSNR {stats['psnr_mean']:.2f} dB, "
         f"{stats['signals_per_second']:.1f} signals/s -> {o['out']}")
    if cfg.auto_stop and "steps_per_signal" in stats:
        say(f"test-time steps per signal: {stats['steps_per_signal']:.1f} on average ({stats['steps_min']} to "
            f"{stats['steps_max']}), {1000 * stats['seconds_per_signal']:.1f} ms per signal")
    if o["as_json"]:
        emit_json({**stats, "out": str(o["out"]), "count": len(latent_set), "latent_dim": latent_set.latent_dim,
                   "psnr_by_split": latent_set.manifest["metrics"].get("psnr_by_split"),
                   "latent_checksum": latent_set.manifest["latent_checksum"], "model_id": model.id})


def parse_steps(steps: str | None, max_steps: int) -> dict:
    """``--steps``: None (the model's H), a number H, or ``auto`` (at most ``max_steps``, stopping each
    signal when it converges)."""
    if steps is None:
        return {}
    if str(steps).strip().lower() == "auto":
        return {"steps": max_steps, "auto_stop": True}
    try:
        return {"steps": int(steps), "auto_stop": False}
    except ValueError:
        raise ConfigError(f"--steps takes a number of test-time steps or `auto`; got {steps!r}") from None


def register(cli: click.Group) -> None:
    cli.add_command(encode_command)
