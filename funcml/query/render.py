"""Render fields on any grid: finer, coarser, anisotropic or a zoomed window.

:func:`render_latents` evaluates latents ``(B, P)`` on a query grid (see :mod:`funcml.grids`);
:func:`render_to_folder` streams a whole selection of a latent set to ``renders.npy`` (memory-mapped,
so memory stays bounded by one batch) plus a PNG per 1D/2D signal or a NIfTI file per volume.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from funcml.progress import progress_bar

from funcml.encoders.fitting import decode
from funcml.encoders.siren import ModulatedSiren
from funcml.errors import ConfigError
from funcml.io import atomic_dir, atomic_write_json
from funcml.latents.selection import parse_indices  # noqa: F401  (re-exported: `funcml render --indices`)
from funcml.grids import Roi, check_roi, query_grid

RENDERS_FILE = "renders.npy"


def render_latents(net: ModulatedSiren, latents: torch.Tensor, field_shape: Sequence[int], out_shape: Sequence[int],
                   *, roi: Roi | None = None, align: str = "centers", chunk_coords: int = 1 << 16,
                   clamp: bool = True) -> torch.Tensor:
    """Evaluate fields fitted on ``field_shape`` at an ``out_shape`` grid: ``(B, P)`` -> ``(B, C, *out_shape)``.

    ``roi`` restricts the grid to a window (extent fractions per axis); coordinates are evaluated
    ``chunk_coords`` at a time (bounded memory for large 3D grids).
    """
    coords = query_grid(field_shape, out_shape, roi=roi, align=align, device=latents.device, dtype=latents.dtype)
    return decode(net, latents, tuple(int(s) for s in out_shape), coords=coords, chunk_coords=chunk_coords,
                  clamp=clamp)


def _save_png(signal: np.ndarray, path: Path) -> None:
    """One 1D signal as a line plot, one 2D signal as an image at its own pixel size."""
    if signal.ndim == 2:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 2.5), dpi=120)
        for ch in range(signal.shape[0]):
            ax.plot(np.linspace(0, 1, signal.shape[1]), signal[ch], lw=0.8)
        ax.set_ylim(-0.05, 1.05)
        ax.set_xlabel("position (fraction of the extent)")
        fig.tight_layout()
        fig.savefig(path)
        plt.close(fig)
        return
    from PIL import Image

    img = (np.clip(signal, 0, 1) * 255 + 0.5).astype(np.uint8)
    img = img[0] if img.shape[0] == 1 else np.moveaxis(img[:3], 0, -1)
    Image.fromarray(img).save(path)


def _save_nifti(volume: np.ndarray, path: Path, spacing: Sequence[float]) -> None:
    """A ``(C, D, H, W)`` volume as NIfTI (``(D, H, W[, C])``, voxel size ``spacing``)."""
    import nibabel as nib

    data = volume[0] if volume.shape[0] == 1 else np.moveaxis(volume, 0, -1)
    affine = np.diag([*[float(s) for s in spacing], 1.0])
    img = nib.Nifti1Image(np.ascontiguousarray(data, dtype=np.float32), affine)
    nib.save(img, str(path))


def render_to_folder(model, latents: np.ndarray, out: str | Path, out_shape: Sequence[int], *,
                     field_shape: Sequence[int] | None = None, source_index: np.ndarray | None = None, roi: Roi | None = None, align: str = "centers",
                     batch_size: int = 16, max_files: int = 64, overwrite: bool = False, progress: bool = True,
                     extra: dict | None = None, head=None, signals=None) -> dict:
    """Render ``latents`` ``(n, P)`` (array or memory map) with ``model`` into the folder ``out``.

    ``field_shape`` is the grid the latents were fitted on (default: the model's training grid).
    With ``head`` (a :class:`funcml.query.estimator.QueryRegressor` for ``model``) the values come
    from the head; a head that reads observed samples needs ``signals`` (a SignalSet on
    ``field_shape``; row ``source_index[i]`` is latent ``i``'s signal).

    Writes ``renders.npy`` ``(n, C, *out_shape)`` float32 (streamed batch by batch), one
    ``render_XXXXX.png`` (1D/2D) or ``render_XXXXX.nii.gz`` (3D) for the first ``max_files`` rows,
    and ``render.json`` describing the grid. The folder appears complete or not at all.
    """
    field_shape = tuple(int(s) for s in (field_shape or model.signal_shape[1:]))
    dim = len(field_shape)
    out_shape = tuple(int(s) for s in out_shape)
    if len(out_shape) != dim:
        raise ConfigError(f"--resolution {out_shape} does not fit the model's {dim}-D signals")
    roi = check_roi(roi, dim)
    channels = model.signal_shape[0]
    n = len(latents)
    if batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1; got {batch_size}")
    # voxel size in units of the fitted grid's sample spacing (for NIfTI headers)
    spacing = [(n_f * (hi - lo) / m) if align == "centers" else ((n_f - 1) * (hi - lo) / max(m - 1, 1))
               for n_f, m, (lo, hi) in zip(field_shape, out_shape, roi)]
    with atomic_dir(out, overwrite=overwrite) as tmp:
        arr = np.lib.format.open_memmap(tmp / RENDERS_FILE, mode="w+", dtype=np.float32,
                                        shape=(n, channels, *out_shape))
        bar = progress_bar(total=n, desc="render", unit="sig", disable=not progress, leave=False)
        files = []
        for start in range(0, n, batch_size):
            z = torch.from_numpy(np.array(latents[start:start + batch_size], dtype=np.float32)).to(model.device)
            model.check_latents(z)
            if head is None:
                x = render_latents(model.net, z, field_shape, out_shape, roi=roi, align=align).cpu().numpy()
            else:
                sig = signals.get(source_index[start:start + len(z)]) if head.needs_signals else None
                x = head.predict(z.cpu().numpy(), out_shape, signals=sig, roi=roi, grid=field_shape)
            arr[start:start + len(x)] = x
            for k in range(len(x)):
                row = start + k
                if row >= max_files:
                    break
                name = f"render_{row:05d}." + ("nii.gz" if dim == 3 else "png")
                (_save_nifti(x[k], tmp / name, spacing) if dim == 3 else _save_png(x[k], tmp / name))
                files.append(name)
            bar.update(len(x))
        bar.close()
        arr.flush()
        del arr
        info = {"count": n, "shape": [n, channels, *out_shape], "field_shape": list(field_shape),
                "out_shape": list(out_shape), "roi": [list(r) for r in roi], "align": align,
                "model_id": model.id, "spacing_in_source_samples": spacing, "files": files,
                "source_index": None if source_index is None else [int(i) for i in source_index],
                **(extra or {})}
        atomic_write_json(tmp / "render.json", info)
    return info
