"""Segmentation by querying: metrics, the head (exact synthetic masks, resolution independence), the U-Net."""

import numpy as np
import pytest
import torch
from sklearn.metrics import f1_score, jaccard_score

from funcml.encoders.config import EncodeConfig, FieldConfig
from funcml.encoders.model import FieldModel
from funcml.encoders.siren import ModulatedSiren
from funcml.errors import ArtifactError
from funcml.query.head import field_features
from funcml.tasks.segment.metrics import dice_iou, hd95, segmentation_report
from funcml.tasks.segment.segmenter import QuerySegmenter
from funcml.tasks.segment.unet import UNet, UNetSegmenter


def test_dice_and_iou_equal_scikit_learn_per_image_and_class():
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 3, size=(4, 9, 7))
    pred = np.where(rng.random((4, 9, 7)) < 0.7, truth, rng.integers(0, 3, size=(4, 9, 7)))
    pred[2][pred[2] == 2] = 0
    truth[2][truth[2] == 2] = 1  # class 2 absent from image 2 on both sides -> undefined there
    dice, iou = dice_iou(pred, truth, 3)
    for i in range(4):
        for k in range(3):
            if i == 2 and k == 2:
                assert np.isnan(dice[i, k]) and np.isnan(iou[i, k])
                continue
            t, p = truth[i].ravel() == k, pred[i].ravel() == k
            assert dice[i, k] == pytest.approx(f1_score(t, p))
            assert iou[i, k] == pytest.approx(jaccard_score(t, p))
    rep = segmentation_report(pred, truth, 3, with_hd95=False)
    assert rep["per_class"]["2"]["images"] == 3
    assert rep["per_class"]["1"]["dice"] == pytest.approx(np.mean(dice[:, 1]))
    assert rep["mean"]["dice"] == pytest.approx(np.mean([np.nanmean(dice[:, k]) for k in range(3)]))
    assert rep["mean_foreground"]["iou"] == pytest.approx(np.mean([np.nanmean(iou[:, k]) for k in (1, 2)]))


def _surface_points(mask):
    from scipy import ndimage

    s = mask & ~ndimage.binary_erosion(mask, structure=np.ones((3,) * mask.ndim), border_value=0)
    return np.argwhere(s).astype(float)


@pytest.mark.parametrize("shape, spacing", [((20, 24), None), ((10, 12, 9), (2.0, 1.0, 0.5))])
def test_hd95_equals_the_brute_force_percentile_of_surface_distances(shape, spacing):
    from scipy.spatial.distance import cdist

    rng = np.random.default_rng(1)
    grids = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
    a = sum((g - s / 2) ** 2 / (s / 3) ** 2 for g, s in zip(grids, shape)) < 1
    b = sum((g - s / 2 - 1.5) ** 2 / (s / 4) ** 2 for g, s in zip(grids, shape)) < 1
    b |= rng.random(shape) < 0.01  # a few stray voxels (outliers the 95th percentile is about)
    sp = np.ones(len(shape)) if spacing is None else np.asarray(spacing)
    pa, pb = _surface_points(a) * sp, _surface_points(b) * sp
    d = cdist(pa, pb)
    expected = np.percentile(np.concatenate([d.min(axis=1), d.min(axis=0)]), 95)
    assert hd95(a, b, spacing) == pytest.approx(expected, rel=1e-6)
    assert hd95(a, a) == 0.0
    assert np.isnan(hd95(a, np.zeros(shape, bool)))


def _discs(n, size, seed):
    """Disc masks at pixel centres of a size x size grid; the latent is (cy, cx, r) rescaled."""
    rng = np.random.default_rng(seed)
    p = np.stack([rng.uniform(0.3, 0.7, n), rng.uniform(0.3, 0.7, n), rng.uniform(0.15, 0.3, n)], 1)
    t = (np.arange(size) + 0.5) / size
    yy, xx = np.meshgrid(t, t, indexing="ij")
    m = (yy[None] - p[:, :1, None]) ** 2 + (xx[None] - p[:, 1:2, None]) ** 2 < p[:, 2:, None] ** 2
    return ((p - 0.5) * 4).astype(np.float32), m.astype(np.int64)


@pytest.fixture(scope="module")
def field_model():
    torch.manual_seed(0)
    net = ModulatedSiren(FieldConfig(dim_in=2, channels=1, width=16, depth=3, latent_dim=3, omega_first=10.0,
                                     omega_last=20.0))
    model = FieldModel(net, (1, 16, 16), EncodeConfig())
    model.id = "synthetic-test-model"
    return model


def test_the_head_learns_a_half_plane_mask_exactly(field_model):
    a = np.random.default_rng(0).integers(3, 14, 32) / 16  # edges between pixels: every pixel has a margin
    t = (np.arange(16) + 0.5) / 16
    masks = (t[None, None, :] > a[:, None, None]).repeat(16, axis=1).astype(np.int64)  # class 1 right of x = a
    z = np.stack([(a - 0.5) * 4, np.zeros(32), np.zeros(32)], 1).astype(np.float32)
    est = QuerySegmenter(inputs="latent", hidden=32, steps=300, batch_size=16, coords_per_signal=256, lr=5e-3,
                         jitter=False, progress=False).fit(field_model, z, masks)
    np.testing.assert_array_equal(est.predict(z), masks)


def test_the_head_learns_disc_masks_and_predicts_them_at_any_resolution(field_model, tmp_path):
    z, masks = _discs(64, 16, 0)
    est = QuerySegmenter(inputs="latent", hidden=64, steps=300, batch_size=16, coords_per_signal=256, lr=3e-3,
                         progress=False).fit(field_model, z, masks)
    assert (est.predict(z) == masks).mean() > 0.985
    z_new, m16 = _discs(24, 16, 1)
    _, m48 = _discs(24, 48, 1)
    p16, p48 = est.predict(z_new), est.predict(z_new, (48, 48))
    assert p48.shape == (24, 48, 48)
    assert (p16 == m16).mean() > 0.975 and (p48 == m48).mean() > 0.975
    assert np.nanmean(dice_iou(p48, m48, 2)[0][:, 1]) > 0.9
    # resolution independence: every third 48-grid pixel centre is a 16-grid pixel centre
    assert (p48[:, 1::3, 1::3] == p16).mean() > 0.99
    # a window at 4x zoom agrees with the full prediction where they overlap
    win = est.predict(z_new[:4], (32, 32), roi=[(0.25, 0.75)])
    full = est.predict(z_new[:4], (64, 64))
    assert (win == full[:, 16:48, 16:48]).mean() > 0.99
    # save / load round trip; another model is refused
    est.save(tmp_path / "head")
    back = QuerySegmenter.load(tmp_path / "head", field_model)
    np.testing.assert_array_equal(back.predict(z_new), p16)
    other = FieldModel(field_model.net, (1, 16, 16), EncodeConfig(), model_id_="another-model")
    with pytest.raises(ArtifactError, match="trained on field model"):
        QuerySegmenter.load(tmp_path / "head", other)


def test_field_features_hold_the_hidden_states_and_the_field_value(field_model):
    coords = torch.rand(7, 2) * 2 - 1
    z = torch.randn(3, 3)
    feats = field_features(field_model.net, coords, z, "all")
    width = field_model.config.width
    assert feats.shape == (3, 7, 2 * width + 1)
    torch.testing.assert_close(feats[..., -1:], field_model.net(coords, z))
    torch.testing.assert_close(feats[..., width:2 * width], field_model.net.features(coords, z))
    assert field_features(field_model.net, coords, z, "last").shape == (3, 7, width + 1)


@pytest.mark.parametrize("dim, shape", [(1, (12,)), (2, (10, 13)), (3, (6, 5, 7))])
def test_unet_keeps_any_input_size(dim, shape):
    net = UNet(dim, 2, 3, base=4, depth=2)
    assert net(torch.rand(2, 2, *shape)).shape == (2, 3, *shape)


def test_unet_learns_a_threshold_mask():
    rng = np.random.default_rng(0)
    _, masks = _discs(24, 16, 0)
    x = (0.3 + 0.4 * masks + 0.05 * rng.standard_normal(masks.shape))[:, None].clip(0, 1).astype(np.float32)
    est = UNetSegmenter(base=8, depth=2, epochs=8, batch_size=8, lr=1e-2, progress=False).fit(x, masks)
    assert (est.predict(x) == masks).mean() > 0.97


def test_context_queries_read_features_around_each_coordinate(field_model, tmp_path):
    from funcml.errors import ConfigError
    from funcml.query.head import context_features, context_offsets

    spacing = torch.tensor([0.1, 0.2])
    offs = context_offsets((1.0, 3.0), spacing)
    assert offs.shape == (9, 2)
    torch.testing.assert_close(offs[:5], torch.tensor([[0.0, 0.0], [0.1, 0.0], [-0.1, 0.0], [0.0, 0.2], [0.0, -0.2]]))
    coords, z = torch.rand(5, 2) * 2 - 1, torch.randn(2, 3)
    f = context_features(field_model.net, coords, z, offs, "last")
    assert f.shape == (2, 5, 9, field_model.config.width + 1)
    torch.testing.assert_close(f[:, :, 3], field_features(field_model.net, coords + offs[3], z, "last"))
    z_tr, masks = _discs(8, 16, 0)
    est = QuerySegmenter(inputs="both", context=(1.0, 2.0), hidden=16, steps=3, batch_size=4, coords_per_signal=32,
                         progress=False).fit(field_model, z_tr, masks)
    est.save(tmp_path / "head")
    np.testing.assert_array_equal(QuerySegmenter.load(tmp_path / "head", field_model).predict(z_tr, (8, 8)),
                                  est.predict(z_tr, (8, 8)))
    with pytest.raises(ConfigError, match="context"):
        QuerySegmenter(inputs="latent", context=(1.0,), progress=False).fit(field_model, z_tr, masks)


def test_the_head_segments_volumes_at_any_resolution():
    torch.manual_seed(0)
    net = ModulatedSiren(FieldConfig(dim_in=3, channels=1, width=8, depth=3, latent_dim=4))
    model = FieldModel(net, (1, 8, 8, 8), EncodeConfig(), model_id_="synthetic-3d")
    rng = np.random.default_rng(0)
    a = rng.integers(2, 7, 24) / 8  # class 1 above a plane between voxel centres, class 2 in a corner octant
    t = (np.arange(8) + 0.5) / 8
    zz, yy, xx = np.meshgrid(t, t, t, indexing="ij")
    masks = np.where(zz[None] > a[:, None, None, None], 1, 0) + 2 * ((yy < 0.5) & (xx < 0.5))[None]
    masks = np.minimum(masks, 2)
    z = np.stack([(a - 0.5) * 4, np.zeros(24), np.zeros(24), np.zeros(24)], 1).astype(np.float32)
    est = QuerySegmenter(inputs="latent", hidden=32, steps=200, batch_size=8, coords_per_signal=256, lr=5e-3,
                         progress=False).fit(model, z, masks)
    assert est.n_classes_ == 3
    p8, p24 = est.predict(z), est.predict(z, (24, 24, 24))
    assert (p8 == masks).mean() > 0.97
    assert (p24[:, 1::3, 1::3, 1::3] == p8).mean() > 0.97
    rep = segmentation_report(p8, masks, 3)
    assert rep["mean"]["dice"] > 0.9 and set(rep["per_class"]) == {"0", "1", "2"}
