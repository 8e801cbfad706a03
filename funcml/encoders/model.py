"""A trained field model on disk: ``config.json`` + ``model.safetensors``, identified by a content hash.

Layout of a model directory (format ``funcml.model`` version 1)::

    config.json        {"format", "version", "id", "field": FieldConfig, "signal_shape": [C, *spatial],
                        "encode": EncodeConfig defaults, "training": {...}, "files": {name: sha256}}
    model.safetensors  the shared weights theta (and the learnt inner rates with meta-SGD)

The id is the sha256 of the architecture and the weights file, so two directories with the same
id decode latents identically. Loading verifies the checksum and refuses foreign or corrupt files.
"""

from __future__ import annotations

import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from funcml import __version__
from funcml.encoders.config import ENCODE_ADDED, EncodeConfig, FieldConfig, from_dict
from funcml.encoders.fitting import decode, fit_latents
from funcml.encoders.siren import ModulatedSiren
from funcml.errors import ArtifactError, ConfigError
from funcml.io import (atomic_write_json, canonical_json, load_tensors, read_json, save_tensors, sha256_bytes,
                       sha256_file)
from funcml.io.schema import SHA256, Anything, Int, List, Map, Obj, Str, validate

MODEL_FORMAT = "funcml.model"
MODEL_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
# config.json, version 1 (docs/model-format.md); "field" and "encode" are checked by their dataclasses.
CONFIG_SCHEMA = Obj({
    "format": Str(), "version": Int(), "id": SHA256, "funcml_version": Str(),
    "field": Map(Anything()), "signal_shape": List(Int(min=1), 2, 4), "encode": Map(Anything()),
    "training": Map(Anything()), "files": Obj({WEIGHTS_FILE: SHA256}),
}, optional={"funcml_version", "training"})


def _check_finite_weights(state: dict[str, torch.Tensor], where: str) -> None:
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise ArtifactError(f"{where}: weights {bad[:3]} hold NaN or infinite values (a diverged model)")


def model_id(field: FieldConfig, weights_sha256: str) -> str:
    """Content id: the architecture plus the exact weights."""
    return sha256_bytes(canonical_json({"field": asdict(field), "weights": weights_sha256}))


class FieldModel:
    """The shared network with what is needed to use it: its signal shape and encode defaults.

    Attributes:
        net: the :class:`ModulatedSiren` (theta).
        signal_shape: ``(C, *spatial)`` of the signals it was trained on.
        encode_defaults: the :class:`EncodeConfig` matching its meta-training.
        training: free-form training summary (data, steps, validation PSNR ...).
        id: content hash, set when saved or loaded (None for an unsaved model).
    """

    def __init__(self, net: ModulatedSiren, signal_shape: tuple[int, ...], encode_defaults: EncodeConfig,
                 training: dict | None = None, model_id_: str | None = None) -> None:
        if len(signal_shape) - 1 != net.config.dim_in or signal_shape[0] != net.config.channels:
            raise ConfigError(f"signal shape {signal_shape} does not fit a {net.config.dim_in}-D, "
                              f"{net.config.channels}-channel field")
        self.net = net
        self.signal_shape = tuple(int(s) for s in signal_shape)
        self.encode_defaults = encode_defaults
        self.training = dict(training or {})
        self.id = model_id_

    @property
    def config(self) -> FieldConfig:
        return self.net.config

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    def to(self, device: torch.device | str) -> "FieldModel":
        self.net.to(device)
        return self

    # -- use ------------------------------------------------------------------------------------
    def encode(self, signals: torch.Tensor, config: EncodeConfig | None = None, **kwargs: Any) -> torch.Tensor:
        """Fit latents ``(B, P)`` to ``signals`` ``(B, C, *spatial)`` (see :func:`fit_latents`)."""
        cfg = config or self.encode_defaults
        self.check_signals(tuple(signals.shape[1:]), allow_other_resolution=True)
        return fit_latents(self.net, signals.to(self.device), cfg, **kwargs)

    def decode(self, latents: torch.Tensor, spatial: tuple[int, ...] | None = None, **kwargs: Any) -> torch.Tensor:
        """Render latents ``(B, P)`` to ``(B, C, *spatial)`` (default: the training grid)."""
        self.check_latents(latents)
        return decode(self.net, latents.to(self.device), spatial or self.signal_shape[1:], **kwargs)

    def check_signals(self, shape: tuple[int, ...], allow_other_resolution: bool = False) -> None:
        c, spatial = shape[0], shape[1:]
        if len(spatial) != self.config.dim_in or c != self.config.channels:
            raise ConfigError(f"signals of shape {shape} do not fit this model, which takes "
                              f"{self.config.channels}-channel {self.config.dim_in}-D signals {self.signal_shape}")
        if not allow_other_resolution and tuple(spatial) != self.signal_shape[1:]:
            raise ConfigError(f"signals of size {tuple(spatial)} differ from the model's grid {self.signal_shape[1:]}")

    def check_latents(self, latents: torch.Tensor) -> None:
        if latents.dim() != 2 or latents.shape[1] != self.config.latent_dim:
            raise ConfigError(f"latents of shape {tuple(latents.shape)} do not fit this model "
                              f"(latent dimension {self.config.latent_dim})")

    # -- persistence ----------------------------------------------------------------------------
    def state_tensors(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu() for k, v in self.net.state_dict().items()}

    def save(self, directory: str | Path) -> str:
        """Write the model directory (files atomically) and return its id."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = self.state_tensors()
        _check_finite_weights(state, "refusing to save a model")
        save_tensors(directory / WEIGHTS_FILE, state, metadata={"format": MODEL_FORMAT})
        digest = sha256_file(directory / WEIGHTS_FILE)
        self.id = model_id(self.config, digest)
        atomic_write_json(directory / CONFIG_FILE, {
            "format": MODEL_FORMAT,
            "version": MODEL_VERSION,
            "id": self.id,
            "funcml_version": __version__,
            "field": asdict(self.config),
            "signal_shape": list(self.signal_shape),
            "encode": asdict(self.encode_defaults),
            "training": self.training,
            "files": {WEIGHTS_FILE: digest},
        })
        return self.id

    @classmethod
    def load(cls, directory: str | Path, device: str | torch.device = "cpu", verify: bool = True) -> "FieldModel":
        """Load and verify a model directory; raise :class:`ArtifactError` if anything is off."""
        directory = Path(directory)
        if not directory.is_dir():
            raise ArtifactError(f"model directory not found: {directory}")
        cfg = read_model_config(directory)
        weights = directory / WEIGHTS_FILE
        if not weights.is_file():
            raise ArtifactError(f"{directory} has no {WEIGHTS_FILE}")
        if verify:
            digest = sha256_file(weights)
            if digest != cfg["files"].get(WEIGHTS_FILE):
                raise ArtifactError(f"{weights} does not match its checksum in {CONFIG_FILE} (corrupt or replaced)")
            if model_id(cfg["field_config"], digest) != cfg["id"]:
                raise ArtifactError(f"{directory}: model id does not match its content")
        net = ModulatedSiren(cfg["field_config"])
        state = load_tensors(weights)
        _check_finite_weights(state, str(weights))
        try:
            net.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise ArtifactError(f"{weights} does not match the architecture in {CONFIG_FILE}: {exc}") from None
        model = cls(net, tuple(cfg["signal_shape"]), cfg["encode_config"], cfg.get("training"), cfg["id"])
        return model.to(device)

    def copy_to(self, directory: str | Path) -> None:
        """Save a copy (used to embed the model in a latent set)."""
        self.save(directory)


def read_model_config(directory: str | Path) -> dict:
    """Read and validate ``config.json`` of a model directory (no weights loaded)."""
    directory = Path(directory)
    cfg = read_json(directory / CONFIG_FILE, what="model config")
    if not isinstance(cfg, dict) or cfg.get("format") != MODEL_FORMAT:
        raise ArtifactError(f"{directory} is not a funcml model directory (config.json format is not {MODEL_FORMAT!r})")
    if cfg.get("version") != MODEL_VERSION:
        raise ArtifactError(f"{directory}: model format version {cfg.get('version')} is not supported "
                            f"(this funcml reads version {MODEL_VERSION})")
    for key in ("id", "field", "signal_shape", "encode", "files"):
        if key not in cfg:
            raise ArtifactError(f"{directory}/config.json lacks {key!r}")
    validate(cfg, CONFIG_SCHEMA, f"{directory}/{CONFIG_FILE}")
    try:
        cfg["field_config"] = from_dict(FieldConfig, cfg["field"], "model field config", require_all=True).validate()
        encode = {**ENCODE_ADDED, **cfg["encode"]} if isinstance(cfg["encode"], dict) else cfg["encode"]
        cfg["encode_config"] = from_dict(EncodeConfig, encode, "model encode config", require_all=True).validate()
    except ConfigError as exc:
        raise ArtifactError(f"{directory}/config.json: {exc}") from None
    shape = cfg["signal_shape"]
    if not (isinstance(shape, list) and all(isinstance(s, int) and s > 0 for s in shape)
            and len(shape) == cfg["field_config"].dim_in + 1):
        raise ArtifactError(f"{directory}/config.json: invalid signal_shape {shape!r}")
    if not isinstance(cfg["files"], dict):
        raise ArtifactError(f"{directory}/config.json: invalid files entry")
    return cfg


def copy_model_dir(src: str | Path, dst: str | Path) -> None:
    """Copy a model directory's two files (config and weights) to ``dst``."""
    dst = Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        shutil.copyfile(Path(src) / name, dst / name)
