"""Reconstruction quality of a latent set: decode every latent and compare with the signal it came from."""

from __future__ import annotations

import numpy as np


def evaluate_latent_set(latent_set, model, signals, *, batch_size: int = 256, split: str = "all",
                        max_items: int | None = None) -> tuple[dict, tuple[np.ndarray, np.ndarray]]:
    """Decode latents and compare with the signals they came from (matched by their ``index``).

    Returns ``(metrics, (originals, reconstructions))``: metrics ``{split: {psnr, ssim, mse, count}}``
    plus ``"all"``; the arrays hold up to 8 test (else first) signals for a figure.
    """
    import torch

    from funcml.data.base import SPLITS
    from funcml.errors import DataError
    from funcml.metrics import mse, psnr, ssim

    if tuple(signals.signal_shape) != tuple(latent_set.signal_shape):
        raise DataError(f"the data's signals {signals.signal_shape} differ from the encoded ones "
                        f"{latent_set.signal_shape}; pass the same DATA and --resolution as for encoding")
    if latent_set.manifest["source"].get("fingerprint") not in (None, signals.fingerprint):
        raise DataError("DATA is not the data this latent set was encoded from (fingerprints differ)")
    rows = np.arange(len(latent_set)) if split == "all" else latent_set.split_indices(split)
    if max_items is not None:
        rows = rows[:max_items]
    per = {"psnr": [], "ssim": [], "mse": [], "split": []}
    spatial = latent_set.signal_shape[1:]
    for start in range(0, len(rows), batch_size):
        r = rows[start:start + batch_size]
        z = torch.from_numpy(latent_set.rows(r)).to(model.device)
        recon = model.decode(z, spatial).cpu().numpy()
        orig = signals.get(np.asarray(latent_set.index[r]))
        per["psnr"].append(psnr(recon, orig))
        per["ssim"].append(ssim(recon, orig))
        per["mse"].append(mse(recon, orig))
        per["split"].append(np.asarray(latent_set.splits[r]))
    cat = {k: np.concatenate(v) if v else np.zeros(0) for k, v in per.items()}
    metrics: dict = {}
    for code, name in [(None, "all"), *enumerate(SPLITS)]:
        mask = np.ones(len(cat["split"]), bool) if code is None else cat["split"] == code
        if mask.any():
            metrics[name] = {"count": int(mask.sum()), "psnr": float(np.mean(cat["psnr"][mask])),
                             "ssim": float(np.nanmean(cat["ssim"][mask])), "mse": float(np.mean(cat["mse"][mask]))}
    show = latent_set.split_indices("test")
    show = (show if len(show) else np.arange(len(latent_set)))[:8]
    z = torch.from_numpy(latent_set.rows(show)).to(model.device)
    figure = (signals.get(np.asarray(latent_set.index[show])), model.decode(z, spatial).cpu().numpy())
    return metrics, figure
