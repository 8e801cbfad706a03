"""Imputation: observed-sample masks (patterns and files), baselines, encoding from partial observations."""

import numpy as np
import pytest
import torch

from conftest import make_signal_set
from funcml.encoders.config import EncodeConfig, FieldConfig
from funcml.encoders.fitting import fit_latents
from funcml.encoders.model import FieldModel
from funcml.encoders.siren import ModulatedSiren
from funcml.errors import ConfigError, DataError
from funcml.metrics import ssim
from funcml.query.impute import hidden_psnr, impute_evaluate, interpolate_missing
from funcml.query.observed import kept_slices, parse_observed


def test_named_patterns_hide_what_they_say():
    m = parse_observed("random:0.3", (20, 30), 5, seed=1)
    a = m.masks([0, 1, 0])
    assert a.shape == (3, 20, 30) and a.dtype == bool
    assert abs(1 - a[0].mean() - 0.3) < 0.05
    np.testing.assert_array_equal(a[0], a[2])  # fixed per signal index ...
    assert (a[0] != a[1]).any()                 # ... and different between signals
    assert (parse_observed("random:0.3", (20, 30), 5, seed=2).masks([0])[0] != a[0]).any()

    s = parse_observed("drop-slices:0.5@1", (4, 9, 3), 2).masks([0])[0]
    kept = np.flatnonzero(s[0, :, 0])
    np.testing.assert_array_equal(kept, kept_slices(9, 0.5))
    assert kept[0] == 0 and kept[-1] == 8 and len(kept) == 4 and s.all(axis=(0, 2)).sum() == 4

    box = parse_observed("box:0.25-0.75,0-0.5", (8, 8), 1).masks([0])[0]
    hidden = ~box
    assert hidden[2:6, 0:4].all() and hidden.sum() == 16
    crop = parse_observed("crop:0.25-0.75", (8,), 1).masks([0])[0]
    np.testing.assert_array_equal(np.flatnonzero(crop), [2, 3, 4, 5])
    # the weights encode_signal_set takes: (b, N) 0/1 in grid order
    w = parse_observed("box:0.25-0.75,0-0.5", (8, 8), 1)(np.array([0]))
    np.testing.assert_array_equal(w.reshape(8, 8), box.astype(np.float32))


def test_mask_files_shared_or_per_signal_and_wrong_shapes_refused(tmp_path):
    shared = np.zeros((6, 6), bool)
    shared[::2] = True
    np.save(tmp_path / "shared.npy", shared)
    per = np.random.default_rng(0).integers(0, 2, size=(3, 6, 6)).astype(np.uint8)
    per[:, 0, 0] = 1
    np.savez(tmp_path / "per.npz", observed=per)
    np.testing.assert_array_equal(parse_observed(str(tmp_path / "shared.npy"), (6, 6), 3).masks([2])[0], shared)
    np.testing.assert_array_equal(parse_observed(str(tmp_path / "per.npz"), (6, 6), 3).masks([1])[0], per[1] == 1)
    with pytest.raises(DataError, match="fits neither"):
        parse_observed(str(tmp_path / "shared.npy"), (6, 7), 3)
    with pytest.raises(DataError, match="fits neither"):
        parse_observed(str(tmp_path / "per.npz"), (6, 6), 4)
    np.save(tmp_path / "bad.npy", np.full((6, 6), 0.5))
    with pytest.raises(DataError, match="0/1"):
        parse_observed(str(tmp_path / "bad.npy"), (6, 6), 3)
    np.save(tmp_path / "empty.npy", np.zeros((6, 6), bool))
    with pytest.raises(DataError, match="no observed"):
        parse_observed(str(tmp_path / "empty.npy"), (6, 6), 3).masks([0])
    for spec, match in [("random:1.5", "fraction"), ("drop-slices:0.5@3", "axis"), ("crop:0.40-0.42", "no sample"),
                        ("blur:3", "unknown pattern")]:
        with pytest.raises(ConfigError, match=match):
            parse_observed(spec, (8, 8), 2)
    with pytest.raises(DataError, match="not found"):
        parse_observed(str(tmp_path / "missing.npy"), (8, 8), 2)


def test_baselines_are_exact_where_they_should_be():
    # linear interpolation reproduces a linear function (1D and 2D)
    t = np.linspace(0.1, 0.9, 15, dtype=np.float32)
    obs = np.zeros(15, bool)
    obs[::4] = True
    obs[-1] = True
    np.testing.assert_allclose(interpolate_missing(t[None], obs, "linear")[0], t, atol=1e-6)
    yy, xx = np.meshgrid(np.linspace(0, 1, 9), np.linspace(0, 1, 9), indexing="ij")
    plane = (0.2 + 0.3 * yy + 0.4 * xx).astype(np.float32)[None]
    obs2 = np.random.default_rng(0).random((9, 9)) < 0.5
    obs2[[0, 0, -1, -1], [0, -1, 0, -1]] = True  # corners: every hidden sample is inside the hull
    np.testing.assert_allclose(interpolate_missing(plane, obs2, "linear"), plane, atol=1e-5)
    # biharmonic inpainting reproduces a harmonic function; observed samples are never changed
    harm = (0.5 + 0.1 * (yy ** 2 - xx ** 2)).astype(np.float32)[None]
    box = np.ones((9, 9), bool)
    box[3:6, 3:6] = False
    np.testing.assert_allclose(interpolate_missing(harm, box, "biharmonic"), harm, atol=1e-4)
    for method in ("nearest", "linear", "biharmonic"):
        np.testing.assert_array_equal(interpolate_missing(harm, box, method)[0][box], harm[0][box])
    # hidden PSNR counts only hidden samples
    pred = harm.copy()[None]
    pred[0, 0, 4, 4] += 0.1
    assert hidden_psnr(pred, harm[None], box[None])[0] == pytest.approx(10 * np.log10(1 / (0.01 / 9)), rel=1e-4)


def test_fitting_only_observed_samples_ignores_the_hidden_ones():
    torch.manual_seed(0)
    net = ModulatedSiren(FieldConfig(dim_in=2, channels=1, width=16, depth=3, latent_dim=8))
    x = torch.rand(2, 1, 8, 8)
    mask = parse_observed("box:0.3-0.7", (8, 8), 2)
    w = torch.from_numpy(mask(np.array([0, 1])))
    cfg = EncodeConfig(steps=3, inner_lr=0.5, context_ratio=1.0, grad_rescale=False)
    phi = fit_latents(net, x, cfg, weights=w)
    x2 = x.clone()
    x2[:, :, ~mask.masks([0])[0]] = 1.0  # change only the hidden samples
    torch.testing.assert_close(fit_latents(net, x2, cfg, weights=w), phi)


def test_impute_evaluation_scores_hidden_samples_against_the_baselines():
    signals = make_signal_set(8, (1, 10, 10))
    torch.manual_seed(0)
    model = FieldModel(ModulatedSiren(FieldConfig(dim_in=2, channels=1, width=16, depth=3, latent_dim=8)),
                       (1, 10, 10), EncodeConfig(steps=2, batch_size=3))
    masks = parse_observed("random:0.5", (10, 10), len(signals), seed=0)
    metrics, ex = impute_evaluate(model, signals, masks, split="all", progress=False)
    x = signals.get(np.arange(8))
    obs = masks.masks(np.arange(8))
    bih = np.stack([interpolate_missing(x[i], obs[i], "biharmonic") for i in range(8)])
    assert metrics["biharmonic"]["psnr_hidden"] == pytest.approx(float(hidden_psnr(bih, x, obs).mean()))
    assert metrics["hidden_fraction"] == pytest.approx(1 - obs.mean())
    assert metrics["biharmonic"]["ssim_all"] == pytest.approx(float(ssim(bih, x).mean()))
    assert metrics["biharmonic"]["ssim_all"] > metrics["nearest"]["ssim_all"]
    # smooth signals: interpolating beats copying the nearest observed sample
    assert metrics["biharmonic"]["psnr_hidden"] > metrics["linear"]["psnr_hidden"] > metrics["nearest"]["psnr_hidden"]
    assert ex["funcml"].shape == (6, 1, 10, 10) and ex["_mask"].shape == (6, 10, 10)
