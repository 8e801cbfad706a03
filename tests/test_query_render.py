"""Query grids and rendering: fitted analytic signals rendered at new resolutions and windows."""

import json

import numpy as np
import pytest
import torch

from funcml.encoders.config import EncodeConfig, FieldConfig
from funcml.encoders.coords import make_grid
from funcml.encoders.model import FieldModel
from funcml.encoders.siren import ModulatedSiren
from funcml.errors import ConfigError
from funcml.grids import parse_ranges, parse_scale, query_grid, scaled_shape
from funcml.query.render import parse_indices, render_latents, render_to_folder


def test_query_grid_reproduces_the_fitting_grid_and_maps_pixel_centres():
    for shape in [(7,), (5, 9), (3, 4, 6)]:
        for align in ("centers", "corners"):
            assert torch.allclose(query_grid(shape, shape, align=align), make_grid(shape), atol=1e-6)
    # centres: pixel j of 8 over the extent of 4 fitted pixels sits at t = (j + 0.5) / 8
    c = query_grid((4,), (8,), align="centers")[:, 0].double()
    t = (torch.arange(8, dtype=torch.float64) + 0.5) / 8
    assert torch.allclose(c, -1 + 2 * (t * 4 - 0.5) / 3, atol=1e-6)
    # the fitted pixel centres are among the 3x finer pixel centres (odd factor)
    fine = query_grid((5,), (15,))[:, 0]
    assert torch.allclose(fine[1::3], make_grid((5,))[:, 0], atol=1e-6)
    # corners: a window samples [lo, hi] with both ends
    w = query_grid((10,), (3,), roi=[(0.25, 0.75)], align="corners")[:, 0]
    assert torch.allclose(w, torch.tensor([-0.5, 0.0, 0.5]))
    assert scaled_shape((28, 28), 2.0) == (56, 56)
    assert scaled_shape((28, 20), (2.0, 0.5), [(0.0, 0.5), (0.0, 1.0)]) == (28, 10)


@pytest.mark.parametrize("text", ["0.5-0.2", "a-b", "0.1"])
def test_bad_windows_are_refused(text):
    with pytest.raises(ConfigError):
        query_grid((8, 8), (4, 4), roi=parse_ranges(text))


def test_bad_scales_and_indices_are_refused():
    with pytest.raises(ConfigError):
        parse_scale("0")
    with pytest.raises(ConfigError):
        scaled_shape((8, 8, 8), (1.0, 2.0))
    with pytest.raises(ConfigError, match="out of range"):
        parse_indices("0,7-12", 10)
    assert parse_indices("3,5-7", 10).tolist() == [3, 5, 6, 7]


def _analytic(t: np.ndarray) -> np.ndarray:
    """A smooth image over the unit square, t (N, 2) in [0, 1]."""
    return 0.5 + 0.25 * np.sin(2 * np.pi * t[:, 0]) * np.cos(np.pi * t[:, 1])


def _centres(m: int) -> np.ndarray:
    t = (np.arange(m) + 0.5) / m
    return np.stack(np.meshgrid(t, t, indexing="ij"), -1).reshape(-1, 2)


@pytest.fixture(scope="module")
def fitted_field():
    """A small field fitted (weights and latent) to the analytic image sampled at 16 x 16 pixel centres."""
    torch.manual_seed(0)
    n = 16
    net = ModulatedSiren(FieldConfig(dim_in=2, channels=1, width=32, depth=3, latent_dim=4, omega_first=5.0,
                                     omega_last=10.0))
    y = torch.tensor(_analytic(_centres(n)), dtype=torch.float32)[None, :, None]
    phi = torch.zeros(1, 4, requires_grad=True)
    opt = torch.optim.Adam([*net.parameters(), phi], lr=2e-3)
    coords = make_grid((n, n))
    for _ in range(600):
        loss = (net(coords, phi) - y).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 1e-5
    return net, phi.detach(), n


def test_rendering_a_fitted_analytic_signal_at_a_new_resolution_matches_the_analytic_values(fitted_field):
    net, phi, n = fitted_field
    for m in (40, 9):  # finer and coarser than the 16 x 16 samples it was fitted on
        out = render_latents(net, phi, (n, n), (m, m))[0, 0].numpy()
        truth = _analytic(_centres(m)).reshape(m, m)
        t = _centres(m).reshape(m, m, 2)
        inside = (t.min(-1) >= 0.5 / n) & (t.max(-1) <= 1 - 0.5 / n)  # within the fitted samples' hull
        assert np.abs(out - truth)[inside].max() < 0.01
        assert np.sqrt(((out - truth) ** 2).mean()) < 0.01
    # a zoomed window: 20 x 20 pixels over [0.25, 0.75]^2
    win = render_latents(net, phi, (n, n), (20, 20), roi=[(0.25, 0.75)])[0, 0].numpy()
    t = 0.25 + (np.arange(20) + 0.5) / 20 * 0.5
    tw = np.stack(np.meshgrid(t, t, indexing="ij"), -1).reshape(-1, 2)
    assert np.abs(win - _analytic(tw).reshape(20, 20)).max() < 0.01


def test_render_to_folder_streams_npy_pngs_and_nifti(tmp_path):
    torch.manual_seed(1)
    for shape, suffix in (((1, 12), "png"), ((3, 6, 6), "png"), ((1, 4, 5, 6), "nii.gz")):
        cfg = FieldConfig(dim_in=len(shape) - 1, channels=shape[0], width=8, depth=3, latent_dim=5)
        model = FieldModel(ModulatedSiren(cfg), shape, EncodeConfig())
        z = np.random.default_rng(0).normal(size=(5, 5)).astype(np.float32)
        out_shape = tuple(2 * s for s in shape[1:])
        out = tmp_path / f"r{len(shape)}"
        meta = render_to_folder(model, z, out, out_shape, batch_size=2, max_files=3, progress=False)
        arr = np.load(out / "renders.npy")
        assert arr.shape == (5, shape[0], *out_shape)
        expect = render_latents(model.net, torch.from_numpy(z), shape[1:], out_shape).numpy()
        np.testing.assert_allclose(arr, expect, atol=1e-6)
        assert sorted(p.name for p in out.glob(f"render_*.{suffix}")) == [f"render_{i:05d}.{suffix}" for i in range(3)]
        assert json.loads((out / "render.json").read_text())["out_shape"] == list(out_shape) == meta["out_shape"]
        if suffix == "nii.gz":
            import nibabel as nib

            vol = nib.load(str(out / "render_00001.nii.gz"))
            np.testing.assert_allclose(vol.get_fdata(), arr[1, 0], atol=1e-6)
            assert np.allclose(vol.header.get_zooms(), [0.5, 0.5, 0.5])
