"""Import a MedNF release (the official MedFuncta latents) into a latent set.

Layout: ``DIR/{train,val,test}/datapoint_{i}.pt``, each ``{'modulations': tensor[P], 'label': tensor}``,
plus optionally ``DIR/model.pt`` (the shared network's state dict). Every ``.pt`` file is read
with ``torch.load(weights_only=True)``: tensors only, no code is ever unpickled. Files that resolve
outside ``DIR`` (symlinks) are refused.

``model.pt`` is converted exactly: the official per-layer shift maps are stacked into funcml's
single shift map, and its ``w0 + k * w0_increment`` frequencies are funcml's linear omega-schedule
from ``w0`` to ``w0 + (K - 1) * w0_increment``.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import numpy as np
import torch

from funcml.data.base import SPLIT_CODES, SPLITS
from funcml.encoders.config import EncodeConfig, FieldConfig
from funcml.encoders.model import FieldModel
from funcml.encoders.siren import ModulatedSiren
from funcml.errors import ArtifactError, DataError
from funcml.latents.latentset import LatentSet, write_latent_set

_DATAPOINT = re.compile(r"^datapoint_(\d+)\.pt$")
# Official defaults per dimension (configs/experiments/*): w0, w0 increment, signal size.
OFFICIAL_DEFAULTS = {1: (10.0, 10.0, (187,)), 2: (10.0, 5.0, (64, 64)), 3: (10.0, 5.0, (32, 32, 32))}


def safe_torch_load(path: Path, root: Path):
    """``torch.load(weights_only=True)`` of a file that must lie inside ``root``."""
    resolved = path.resolve()
    try:
        resolved.relative_to(root.resolve())
    except ValueError:
        raise ArtifactError(f"{path} resolves outside {root}; refusing to read it") from None
    try:
        return torch.load(resolved, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - pickle/zip/unpickler errors all mean "not safe or not valid"
        raise ArtifactError(f"{path} is not a tensor-only torch file (refused to unpickle: "
                            f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:200]})") from None


def read_mednf_split(directory: Path, root: Path) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """Latents ``(n, P)``, labels ``(n, L)`` (or None) and datapoint numbers of one split folder."""
    files = []
    for p in directory.iterdir():
        m = _DATAPOINT.match(p.name)
        if m:
            files.append((int(m.group(1)), p))
    files.sort()
    latents, labels, numbers = [], [], []
    for number, path in files:
        point = safe_torch_load(path, root)
        if not isinstance(point, dict) or "modulations" not in point:
            raise ArtifactError(f"{path} lacks 'modulations'")
        z = point["modulations"]
        if not isinstance(z, torch.Tensor) or z.dim() != 1 or not torch.isfinite(z).all():
            raise ArtifactError(f"{path}: 'modulations' must be a finite 1-D tensor")
        latents.append(z.float().numpy())
        if "label" in point and point["label"] is not None:
            labels.append(np.asarray(torch.as_tensor(point["label"]).reshape(-1).long().numpy()))
        numbers.append(number)
    if not latents:
        return np.zeros((0, 0), np.float32), None, np.zeros(0, np.int64)
    dims = {len(z) for z in latents}
    if len(dims) != 1:
        raise ArtifactError(f"{directory}: modulations of different sizes {sorted(dims)}")
    if labels and len(labels) != len(latents):
        raise ArtifactError(f"{directory}: some datapoints have labels and others do not")
    lab = np.stack(labels) if labels else None
    return np.stack(latents), lab, np.asarray(numbers, np.int64)


def convert_official_model(state: dict, *, w0: float | None = None, w0_increment: float | None = None,
                           signal_shape: tuple[int, ...] | None = None) -> FieldModel:
    """Build a :class:`FieldModel` from an official ``LatentModulatedSIREN`` state dict."""
    if not isinstance(state, dict):
        raise ArtifactError("model.pt does not hold a state dict")
    for key in ("state_dict", "model"):
        if isinstance(state.get(key), dict):
            state = state[key]
    state = {k[len("model."):] if k.startswith("model.") else k: v for k, v in state.items()}
    n_layers = len({k.split(".")[1] for k in state if k.startswith("layers.")})
    if n_layers < 1 or "last_layer.linear.weight" not in state:
        raise ArtifactError("model.pt is not a MedFuncta LatentModulatedSIREN state dict")
    if any("modulate_scale_layer" in k for k in state):
        raise ArtifactError("model.pt uses scale modulations, which funcml does not implement")
    first = state["layers.0.linear.weight"]
    width, dim_in = first.shape
    latent_dim = state["layers.0.modulate_shift_layer.weight"].shape[1]
    channels = state["last_layer.linear.weight"].shape[0]
    depth = n_layers + 1
    d_w0, d_inc, d_shape = OFFICIAL_DEFAULTS.get(dim_in, (10.0, 5.0, None))
    w0 = d_w0 if w0 is None else w0
    inc = d_inc if w0_increment is None else w0_increment
    shape = tuple(signal_shape) if signal_shape is not None else d_shape
    if shape is None or len(shape) != dim_in:
        raise ArtifactError(f"give the signal size of this {dim_in}-D model (--resolution)")
    cfg = FieldConfig(dim_in=dim_in, channels=channels, width=width, depth=depth, latent_dim=latent_dim,
                      omega_first=w0, omega_last=w0 + (depth - 1) * inc)
    net = ModulatedSiren(cfg)
    ours = {
        "first.weight": state["layers.0.linear.weight"], "first.bias": state["layers.0.linear.bias"],
        "out.weight": state["last_layer.linear.weight"], "out.bias": state["last_layer.linear.bias"],
        "shift.weight": torch.cat([state[f"layers.{i}.modulate_shift_layer.weight"] for i in range(n_layers)]),
        "shift.bias": torch.cat([state[f"layers.{i}.modulate_shift_layer.bias"] for i in range(n_layers)]),
    }
    for i in range(1, n_layers):
        ours[f"hidden.{i - 1}.weight"] = state[f"layers.{i}.linear.weight"]
        ours[f"hidden.{i - 1}.bias"] = state[f"layers.{i}.linear.bias"]
    try:
        net.load_state_dict({k: v.float() for k, v in ours.items()}, strict=True)
    except RuntimeError as exc:
        raise ArtifactError(f"model.pt does not fit the MedFuncta architecture: {exc}") from None
    return FieldModel(net, (channels, *shape), EncodeConfig(steps=20, inner_lr=1e-2, context_ratio=0.25),
                      {"imported_from": "MedNF model.pt", "w0": w0, "w0_increment": inc})


def import_mednf(directory: str | Path, out: str | Path, *, task: str | None = None,
                 label_names: dict[str, str] | None = None, w0: float | None = None, w0_increment: float | None = None,
                 signal_shape: tuple[int, ...] | None = None, overwrite: bool = False) -> LatentSet:
    """Convert a MedNF release folder to a latent set (with its converted model if ``model.pt`` exists)."""
    root = Path(directory)
    if not root.is_dir():
        raise DataError(f"MedNF folder not found: {root}")
    parts = []
    for split in SPLITS:
        sub = root / split
        if sub.is_dir():
            z, y, numbers = read_mednf_split(sub, root)
            if len(z):
                parts.append((split, z, y, numbers))
    if not parts:
        raise DataError(f"{root} holds no datapoint_*.pt files under train/, val/ or test/")
    dims = {z.shape[1] for _, z, _, _ in parts}
    if len(dims) != 1:
        raise ArtifactError(f"{root}: splits have different latent sizes {sorted(dims)}")
    has_labels = {y is not None for _, _, y, _ in parts}
    if len(has_labels) != 1:
        raise ArtifactError(f"{root}: some splits have labels and others do not")
    latents = np.concatenate([z for _, z, _, _ in parts])
    labels = np.concatenate([y for _, _, y, _ in parts]) if parts[0][2] is not None else None
    splits = np.concatenate([np.full(len(z), SPLIT_CODES[s], np.uint8) for s, z, _, _ in parts])
    index = np.concatenate([n for _, _, _, n in parts])
    if task is None:
        if labels is None:
            task = "none"
        elif labels.shape[1] > 1:
            task = "multi-label, binary-class"
        else:
            task = "binary-class" if len(np.unique(labels)) <= 2 else "multi-class"
    if label_names is None and labels is not None:
        label_names = {str(c): str(c) for c in (range(labels.shape[1]) if labels.shape[1] > 1 else np.unique(labels))}
    model_dir, model_id, shape = None, None, []
    with tempfile.TemporaryDirectory() as tmp:
        if (root / "model.pt").is_file():
            model = convert_official_model(safe_torch_load(root / "model.pt", root), w0=w0, w0_increment=w0_increment,
                                           signal_shape=signal_shape)
            if model.config.latent_dim != latents.shape[1]:
                raise ArtifactError(f"model.pt has latent size {model.config.latent_dim} but the datapoints "
                                    f"{latents.shape[1]}")
            model_dir = Path(tmp) / "model"
            model_id = model.save(model_dir)
            shape = list(model.signal_shape)
        return write_latent_set(out, latents, splits=splits, labels=labels, index=index, task=task,
                                label_names=label_names or {}, signal_shape=tuple(shape),
                                source={"name": root.name, "spec": str(root), "fingerprint": None, "format": "MedNF"},
                                encoding={"imported": "MedNF"}, model_id=model_id, model_dir=model_dir,
                                overwrite=overwrite)
