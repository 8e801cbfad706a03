"""``funcml render``: decode latents on any grid (finer, coarser, anisotropic, a zoomed window)."""

from __future__ import annotations

import click

from funcml.cli.common import device_option, emit_json, info, json_option, overwrite_option, parse_resolution


@click.command("render")
@click.option("--latents", required=True, type=click.Path(), help="Latent set from `funcml encode`.")
@click.option("--model", "model_dir", default=None, type=click.Path(), help="Model directory (default: the embedded one).")
@click.option("--out", required=True, type=click.Path(), help="Output folder (renders.npy, PNG/NIfTI files, render.json).")
@click.option("--resolution", default=None, help="Output grid, e.g. 128, 128x96, 64x64x64 (over the ROI).")
@click.option("--scale", default=None, help="Zoom factor instead of --resolution: 2, 0.5 or 2x2x1 per axis.")
@click.option("--roi", default=None, metavar="LO-HI[,LO-HI...]",
              help="Window as extent fractions per axis (one range for all axes, or one per axis), e.g. 0.25-0.75.")
@click.option("--indices", default=None, help="Rows of the latent set, e.g. 0,5,10-19 (default: all, or --split).")
@click.option("--split", type=click.Choice(["all", "train", "val", "test"]), default="all", show_default=True)
@click.option("--align", type=click.Choice(["auto", "centers", "corners"]), default="auto", show_default=True,
              help="Sampling convention: centers (pixels; default for 2D/3D) or corners (samples; default for 1D).")
@click.option("--batch-size", type=int, default=16, show_default=True, help="Latents rendered together.")
@click.option("--max-files", type=int, default=64, show_default=True, help="Write PNG/NIfTI files for this many rows.")
@click.option("--head", "head_dir", default=None, type=click.Path(),
              help="Render through a query head (`funcml superres train` / `funcml impute train`) instead of the field.")
@click.option("--data", default=None,
              help="With a --head that reads observed samples: the data the latents were encoded from.")
@click.option("--split-seed", type=int, default=0, show_default=True, help="Seed of random splits of --data.")
@overwrite_option
@device_option
@json_option
def render_command(latents, model_dir, out, resolution, scale, roi, indices, split, align, batch_size, max_files,
                   head_dir, data, split_seed, overwrite, device, as_json):
    """Render the fields in --latents on a new grid into --out.

    Writes renders.npy (n, C, *grid) float32, one PNG per 1D/2D signal or one NIfTI file per volume
    (first --max-files rows), a preview renders.png and render.json describing the grid.
    """
    import numpy as np

    from funcml.devices import resolve_device
    from funcml.errors import ConfigError
    from funcml.latents import LatentSet
    from funcml.query.figures import plot_method_grid
    from funcml.grids import check_roi, default_align, parse_ranges, parse_scale, scaled_shape
    from funcml.query.render import RENDERS_FILE, parse_indices, render_to_folder

    from pathlib import Path

    from funcml.errors import OutputExistsError

    if Path(out).exists() and not overwrite:  # before anything else, so a finished render is never at risk
        raise OutputExistsError(f"output path exists: {out} (pass --overwrite to replace it)")
    if (resolution is None) == (scale is None):
        raise ConfigError("pass exactly one of --resolution and --scale")
    latent_set = LatentSet.open(latents)
    model = latent_set.load_model(model_dir, device=resolve_device(device))
    field_shape = tuple(latent_set.signal_shape[1:]) or tuple(model.signal_shape[1:])
    dim = len(field_shape)
    region = check_roi(parse_ranges(roi), dim)
    if resolution is not None:
        out_shape = parse_resolution(resolution)
        out_shape = out_shape * dim if len(out_shape) == 1 else out_shape
        if len(out_shape) != dim:
            raise ConfigError(f"--resolution {resolution} does not fit {dim}-D signals")
    else:
        out_shape = scaled_shape(field_shape, parse_scale(scale), region)
    rows = parse_indices(indices, len(latent_set))
    if rows is None:
        rows = np.arange(len(latent_set)) if split == "all" else latent_set.split_indices(split)
    if len(rows) == 0:
        raise ConfigError(f"no rows to render (the {split} split is empty)")
    align = default_align(dim) if align == "auto" else align
    head, signals = _head(head_dir, data, split_seed, model, field_shape, latent_set)
    if head is not None and align != head.align_:
        raise ConfigError(f"the head was trained with --align {head.align_}; render with the same convention")
    info(f"rendering {len(rows)} fields fitted on {field_shape} at {out_shape} (roi {region}, {align})")
    z = latent_set.rows(rows)
    meta = render_to_folder(model, z, out, out_shape, field_shape=field_shape, source_index=latent_set.index[rows],
                            roi=region, align=align, batch_size=batch_size, max_files=max_files, overwrite=overwrite,
                            progress=not as_json, head=head, signals=signals,
                            extra={"latents": str(latents), "rows": [int(r) for r in rows], "head": head_dir})
    renders = np.load(Path(out) / RENDERS_FILE, mmap_mode="r", allow_pickle=False)
    plot_method_grid({"render": np.asarray(renders[:8])}, Path(out) / "renders.png", max_items=8)
    info(f"done: {out}/{RENDERS_FILE} {tuple(meta['shape'])}, {len(meta['files'])} files")
    if as_json:
        emit_json({"out": str(out), "shape": meta["shape"], "count": meta["count"], "files": len(meta["files"]),
                   "out_shape": meta["out_shape"], "roi": meta["roi"], "align": align})


def _head(head_dir, data, split_seed, model, field_shape, latent_set):
    """The value head of --head and, when it reads observed samples, DATA at the latents' grid."""
    if head_dir is None:
        return None, None
    from funcml.data import LoadOptions, load_signals
    from funcml.errors import ConfigError
    from funcml.query.estimator import QueryRegressor

    head = QueryRegressor.load(head_dir, model)
    if not head.needs_signals:
        return head, None
    if data is None:
        raise ConfigError("this head reads the observed samples: pass --data, the data the latents were encoded from")
    signals = load_signals(data, LoadOptions(resolution=field_shape, split_seed=split_seed))
    fp = latent_set.manifest.get("source", {}).get("fingerprint")
    if fp not in (None, signals.fingerprint):
        raise ConfigError(f"--data {data} is not the data the latents were encoded from (fingerprints differ)")
    return head, signals


def register(cli: click.Group) -> None:
    cli.add_command(render_command)
