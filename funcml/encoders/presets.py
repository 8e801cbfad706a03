"""Named configurations: the paper's GPU presets and CPU presets that learn in minutes on 2 cores.

A :class:`Preset` holds the architecture (without the data-given ``dim_in``/``channels``) and
the meta-training settings; :func:`get_preset` looks one up and :meth:`Preset.build` applies
overrides (every field of :class:`FieldConfig` and :class:`TrainConfig` can be overridden).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from funcml.encoders.config import FieldConfig, TrainConfig
from funcml.errors import ConfigError

_BUDGET_STEP_CAP = 10 ** 9   # under a time budget ``steps`` only bounds the run
ARCH_FIELDS = ("width", "depth", "latent_dim", "omega_first", "omega_last", "meta_sgd")


@dataclass(frozen=True)
class Preset:
    """A named configuration.

    Attributes:
        name, description: registry key and one line for ``funcml presets``.
        dim: the coordinate dimension it is made for (1, 2 or 3).
        resolution: the grid it is made for (data are resampled to it unless ``--resolution``).
        arch: architecture fields (see :data:`ARCH_FIELDS`).
        train: meta-training settings (``train.steps``: the length of a step-scheduled run).
        gpu: made for a GPU (the paper's settings) rather than a 2-core CPU.
        minutes: the default time budget: ``funcml train`` without ``--steps`` trains this long,
            its schedule fitted to the minutes (see :meth:`schedule_overrides`).
    """

    name: str
    description: str
    dim: int
    resolution: tuple[int, ...] | None
    arch: dict = field(default_factory=dict)
    train: TrainConfig = field(default_factory=TrainConfig)
    gpu: bool = False
    minutes: float = 20.0

    def schedule_overrides(self, steps: int | None = None, max_minutes: float | None = None) -> dict:
        """The schedule options of a run: with ``steps`` the cosine spans them and ``max_minutes``
        only stops the run (a resumable checkpoint); without, ``max_minutes`` (default: the
        preset's :attr:`minutes`) is a time budget that the schedule follows."""
        if steps is not None:
            return {"steps": steps, "max_minutes": max_minutes, "budget_minutes": None}
        return {"steps": _BUDGET_STEP_CAP, "max_minutes": None,
                "budget_minutes": self.minutes if max_minutes is None else max_minutes}

    def build(self, dim_in: int, channels: int, **overrides) -> tuple[FieldConfig, TrainConfig]:
        """Field and train configs for data of ``dim_in`` and ``channels``, with ``overrides``
        (None values are ignored; unknown names raise :class:`ConfigError`)."""
        overrides = {k: v for k, v in overrides.items() if v is not None}
        arch = {**self.arch, **{k: overrides.pop(k) for k in list(overrides) if k in ARCH_FIELDS}}
        train_names = {f.name for f in dataclasses.fields(TrainConfig)}
        unknown = set(overrides) - train_names
        if unknown:
            raise ConfigError(f"unknown option(s) for preset {self.name}: {sorted(unknown)}")
        field_cfg = FieldConfig(dim_in=dim_in, channels=channels, **arch).validate()
        train_cfg = dataclasses.replace(self.train, **overrides).validate()
        return field_cfg, train_cfg


_PRESETS: dict[str, Preset] = {}


def register_preset(preset: Preset) -> Preset:
    if preset.name in _PRESETS:
        raise ValueError(f"preset {preset.name!r} registered twice")
    _PRESETS[preset.name] = preset
    return preset


def get_preset(name: str) -> Preset:
    try:
        return _PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown preset {name!r}; available: {', '.join(sorted(_PRESETS))}") from None


def list_presets() -> list[Preset]:
    return list(_PRESETS.values())


# -- the paper's presets (MedFuncta, Friedrich et al.; outer lr, clipping and H from the official code) --
register_preset(Preset(
    name="ecg", minutes=60.0, dim=1, resolution=(187,), gpu=True,
    description="paper 1D: MIT-BIH beats (187 samples), 8 x 64, P 64, omega 20->200, gamma 1, batch 64",
    arch=dict(width=64, depth=8, latent_dim=64, omega_first=20.0, omega_last=200.0),
    train=TrainConfig(steps=250_000, batch_size=64, inner_steps=10, inner_lr=1e-2, context_ratio=1.0,
                      outer_lr=3e-6, val_every=1000, val_signals=256, checkpoint_every=5000),
))
register_preset(Preset(
    name="image-64", minutes=60.0, dim=2, resolution=(64, 64), gpu=True,
    description="paper 2D: 64x64 images, 15 x 256, P 2048, omega 20->400, gamma 0.25, batch 24",
    arch=dict(width=256, depth=15, latent_dim=2048, omega_first=20.0, omega_last=400.0),
    train=TrainConfig(steps=250_000, batch_size=24, inner_steps=10, inner_lr=1e-2, context_ratio=0.25,
                      outer_lr=3e-6, val_every=1000, val_signals=256, checkpoint_every=5000),
))
register_preset(Preset(
    name="volume-32", minutes=60.0, dim=3, resolution=(32, 32, 32), gpu=True,
    description="paper 3D: 32^3 volumes, 15 x 256, P 8192, omega 20->300, gamma 0.25, batch 4",
    arch=dict(width=256, depth=15, latent_dim=8192, omega_first=20.0, omega_last=300.0),
    train=TrainConfig(steps=250_000, batch_size=4, inner_steps=10, inner_lr=1e-2, context_ratio=0.25,
                      outer_lr=3e-6, val_every=1000, val_signals=128, checkpoint_every=5000),
))

# -- CPU presets: the same method, sized to learn something real within minutes on 2 cores --
register_preset(Preset(
    name="cpu-ecg", minutes=15.0, dim=1, resolution=(187,),
    description="CPU 1D: ECG beats (187 samples), 6 x 64, P 93, meta-SGD, omega 20->100, gamma 1, G 3, "
                "alpha 0.1, batch 32",
    arch=dict(width=64, depth=6, latent_dim=93, omega_first=20.0, omega_last=100.0, meta_sgd=True),
    train=TrainConfig(steps=1500, batch_size=32, inner_steps=3, inner_lr=0.1, context_ratio=1.0,
                      outer_lr=3e-4, warmup_steps=50, val_every=250, val_signals=128, checkpoint_every=250),
))
register_preset(Preset(
    name="cpu-image", minutes=20.0, dim=2, resolution=None,
    description="CPU 2D: 28x28 images (at the data's size), 6 x 128, P 392, meta-SGD, omega 20->60, "
                "per-layer outer lr, gamma 1, G 3, alpha 1, batch 16",
    arch=dict(width=128, depth=6, latent_dim=392, omega_first=20.0, omega_last=60.0, meta_sgd=True),
    train=TrainConfig(steps=500, batch_size=16, inner_steps=3, inner_lr=1.0, context_ratio=1.0,
                      outer_lr=3e-4, omega_lr=True, warmup_steps=30, val_every=250, val_signals=64,
                      checkpoint_every=250),
))
register_preset(Preset(
    name="cpu-image-64", minutes=30.0, dim=2, resolution=(64, 64),
    description="CPU 2D: 64x64 images, 6 x 256, P 2048, meta-SGD, omega 20->120, per-layer outer lr, "
                "gamma 0.25, G 3, alpha 1, batch 16",
    # P 2048 (half the pixels) feeds (6 - 1) x 256 = 1280 shifts: at width 128 only 640 of its
    # directions reach the field; the wider field buys more per minute than the steps it costs
    arch=dict(width=256, depth=6, latent_dim=2048, omega_first=20.0, omega_last=120.0, meta_sgd=True),
    train=TrainConfig(steps=500, batch_size=16, inner_steps=3, inner_lr=1.0, context_ratio=0.25,
                      outer_lr=3e-4, omega_lr=True, warmup_steps=30, val_every=250, val_signals=64,
                      checkpoint_every=250),
))
register_preset(Preset(
    name="cpu-volume", minutes=20.0, dim=3, resolution=(16, 16, 16),
    description="CPU 3D: 16^3 volumes, 6 x 128, P 512, omega 20->60, gamma 0.25, G 3, alpha 1, batch 4",
    arch=dict(width=128, depth=6, latent_dim=512, omega_first=20.0, omega_last=60.0),
    train=TrainConfig(steps=300, batch_size=4, inner_steps=3, inner_lr=1.0, context_ratio=0.25,
                      outer_lr=3e-4, warmup_steps=20, val_every=100, val_signals=32, checkpoint_every=100),
))
