"""Getting (latents, masks) pairs for segmentation: encode or reuse a latent set, read masks at any grid."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from funcml.progress import progress_bar

from funcml.data.base import SignalSet
from funcml.encoders.config import EncodeConfig
from funcml.encoders.fitting import fit_latents
from funcml.errors import ArtifactError, DataError
from funcml.seeding import generator


def require_masks(signals: SignalSet) -> None:
    if not signals.has_masks:
        raise DataError(f"{signals.spec} has no segmentation masks (use images/ + masks/, image/ + label/, or a NIfTI "
                        f"volume with labels=LABEL_VOLUME)")


def class_count(signals: SignalSet, masks: np.ndarray | None = None) -> int:
    """Number of classes: the source's label values when it lists them, else the largest mask value + 1."""
    values = signals.info.get("mask_values")
    if values:
        return max(len(values), 2)
    if masks is None:
        raise DataError(f"{signals.spec}: cannot tell the number of classes")
    return max(int(np.max(masks)) + 1, 2)


def class_names(signals: SignalSet, n_classes: int) -> dict[str, str]:
    """``{"0": name, ...}``: stored label values for NIfTI labels, background/foreground for binary masks."""
    values = signals.info.get("mask_values")
    if values:
        return {str(k): f"label {v}" for k, v in enumerate(values)}
    if n_classes == 2:
        return {"0": "background", "1": "foreground"}
    return {str(k): f"class {k}" for k in range(n_classes)}


def encode_rows(model, signals: SignalSet, indices: np.ndarray, config: EncodeConfig | None = None,
                progress: bool = True) -> np.ndarray:
    """Latents ``(n, P)`` of ``signals[indices]`` (test-time encoding, deterministic per chunk)."""
    cfg = config or model.encode_defaults
    out = np.empty((len(indices), model.config.latent_dim), dtype=np.float32)
    bar = progress_bar(total=len(indices), desc="encode", unit="sig", disable=not progress, leave=False)
    for k, start in enumerate(range(0, len(indices), cfg.batch_size)):
        part = indices[start:start + cfg.batch_size]
        x = torch.from_numpy(signals.get(part)).to(model.device)
        out[start:start + len(part)] = fit_latents(model.net, x, cfg, generator=generator(cfg.seed, "encode", k)).cpu().numpy()
        bar.update(len(part))
    bar.close()
    return out


def latents_from_set(latent_set, signals: SignalSet, indices: Sequence[int], model) -> np.ndarray:
    """Rows of ``latent_set`` for the signals ``indices`` of ``signals`` (checked: same data, same model)."""
    latent_set.check_model(model)
    fp = latent_set.manifest.get("source", {}).get("fingerprint")
    if fp not in (None, signals.fingerprint):
        raise ArtifactError(f"{latent_set.path} was not encoded from this data at this grid (fingerprints differ); "
                            f"encode DATA at the model's grid or leave out --latents")
    row_of = {int(i): r for r, i in enumerate(np.asarray(latent_set.index))}
    missing = [int(i) for i in indices if int(i) not in row_of]
    if missing:
        raise ArtifactError(f"{latent_set.path} lacks signal {missing[0]} of the data ({len(missing)} missing)")
    return latent_set.rows(np.asarray([row_of[int(i)] for i in indices], dtype=np.int64))
