"""The query head: neighbour reads, interpolation at coordinates, shapes in 1D/2D/3D, training pairs,
the training loop (loss goes down, interrupt and resume), the head files and their refusals."""

import numpy as np
import pytest
import torch

from funcml.encoders.config import EncodeConfig, FieldConfig
from funcml.encoders.model import FieldModel
from funcml.encoders.siren import ModulatedSiren
from funcml.errors import ArtifactError, ConfigError
from funcml.query.estimator import QueryRegressor
from funcml.query.fit import HeadTraining, pairs_psnr, train_head
from funcml.grids import grid_cell, query_grid
from funcml.query.head import Query, QueryHeadConfig, build_head, parse_inputs
from funcml.query.interpolate import interpolate_at, interpolate_signals
from funcml.query.neighbours import gather_neighbours, normalized_average
from funcml.query.pairs import (PairGroup, PairSet, downsampled_inputs, hide_masks, masked_pairs, paired_pairs,
                                parse_hide, parse_scales)
from funcml.query.pixel_sr import PixelSR, ResidualSRNet
from funcml.query.store import read_head


def _model(dim, spatial, model_id="test-model"):
    torch.manual_seed(0)
    net = ModulatedSiren(FieldConfig(dim_in=dim, channels=1, width=8, depth=3, latent_dim=4, omega_first=5.0,
                                     omega_last=10.0))
    return FieldModel(net, (1, *spatial), EncodeConfig(steps=2, inner_lr=0.5, batch_size=8), model_id_=model_id)


def _smooth(n, spatial, seed=0):
    rng = np.random.default_rng(seed)
    grids = np.meshgrid(*[np.linspace(0, 1, s) for s in spatial], indexing="ij")
    out = np.empty((n, 1, *spatial), np.float32)
    for i in range(n):
        out[i, 0] = 0.5 + 0.35 * np.sin(sum(rng.uniform(1, 5) * g for g in grids) + rng.uniform(0, 6))
    return out


def test_neighbours_read_the_k_nearest_samples_with_their_offsets():
    x = torch.arange(20.0).reshape(1, 1, 4, 5)  # value = 5 * row + column
    coords = torch.tensor([[-1 + 2 * 1.25 / 3, -1 + 2 * 2.5 / 4]])  # row 1.25, column 2.5
    v, seen, offs = gather_neighbours(x, coords, 2)
    rows, cols = [1, 1, 2, 2], [2, 3, 2, 3]
    assert v[0, 0, :, 0].tolist() == [5.0 * r + c for r, c in zip(rows, cols)]
    torch.testing.assert_close(offs[0], torch.tensor([[0.25, 0.5], [0.25, -0.5], [-0.75, 0.5], [-0.75, -0.5]]))
    assert seen.sum() == 4
    # at the edge the edge sample repeats, with its true offset; hidden samples read as 0 and unseen
    v3, seen3, offs3 = gather_neighbours(x, torch.tensor([[-1.0, -1.0]]), 3, observed=(x[:, 0] % 2 == 0))
    # rows and columns 0, 0, 1 (-1 clamped to 0): values 0 0 1 / 0 0 1 / 5 5 6, odd ones hidden
    assert v3[0, 0, :, 0].tolist() == [0, 0, 0, 0, 0, 0, 0, 0, 6]
    assert seen3[0, 0].tolist() == [1, 1, 0, 1, 1, 0, 0, 0, 1]
    assert offs3[0, 0].tolist() == [0.0, 0.0] and offs3[0, -1].tolist() == [-1.0, -1.0]
    avg = normalized_average(*gather_neighbours(x, coords, 2, observed=(x[:, 0] % 2 == 0))[:2], offs)
    w8, w12 = np.exp(-(0.25 ** 2 + 0.5 ** 2) / 2), np.exp(-(0.75 ** 2 + 0.5 ** 2) / 2)  # the even ones: 8 and 12
    assert avg.item() == pytest.approx((8 * w8 + 12 * w12) / (w8 + w12), rel=1e-5)


@pytest.mark.parametrize("shape, out, mode, align", [((9,), (20,), "linear", "corners"),
                                                     ((7, 6), (15, 13), "bicubic", "centers"),
                                                     ((4, 5, 3), (8, 9, 7), "trilinear", "centers")])
def test_interpolation_at_coordinates_equals_grid_interpolation(shape, out, mode, align):
    x = torch.rand(2, 1, *shape)
    c = query_grid(shape, out, align=align)
    got = interpolate_at(x, c, mode).transpose(1, 2).reshape(2, 1, *out)
    np.testing.assert_allclose(got.numpy(), interpolate_signals(x.numpy(), out, mode, align=align, clamp=False),
                               atol=1e-5)


@pytest.mark.parametrize("dim, spatial", [(1, (12,)), (2, (6, 7)), (3, (4, 5, 3))])
@pytest.mark.parametrize("base", ["classic", "average", "field", "none"])
def test_the_head_gives_one_value_per_coordinate_in_any_dimension(dim, spatial, base):
    model = _model(dim, spatial)
    cfg = QueryHeadConfig(out_dim=1, inputs=("features", "latent", "observed"), neighbours=3, base=base, hidden=8,
                          layers=1, encoder_width=4, encoder_depth=2)
    head = build_head(cfg, model.net)
    coords = torch.rand(11, dim) * 2 - 1
    obs = torch.rand(2, *spatial) > 0.3 if base in ("average", "classic") else None
    filled = torch.rand(2, 1, *spatial) if base == "classic" else None
    q = Query(torch.randn(2, 4), coords, spatial, torch.rand(2, 1, *spatial), obs, torch.full((dim,), 0.5), filled)
    out = head(model.net, q)
    assert out.shape == (2, 11, 1) and torch.isfinite(out).all()
    logits = build_head(QueryHeadConfig(out_dim=3, output="logits", inputs=("features",), hidden=8), model.net)
    assert logits(model.net, Query(torch.randn(2, 4), coords, spatial)).shape == (2, 11, 3)


def test_head_settings_are_checked():
    assert parse_inputs("observed,both") == ("features", "latent", "observed")
    for bad, message in [(dict(inputs=("pixels",)), "--inputs"), (dict(base="classic", inputs=("features",)), "observed"),
                         (dict(output="logits", out_dim=1), "2 classes"), (dict(neighbours=0), "--neighbours"),
                         (dict(context=(1.0,), inputs=("latent",)), "context")]:
        with pytest.raises(ConfigError, match=message):
            QueryHeadConfig(**{"out_dim": 1, **bad}).validate()
    model = _model(2, (6, 6))
    head = build_head(QueryHeadConfig(out_dim=1, base="classic"), model.net)
    with pytest.raises(ConfigError, match="observed"):
        head(model.net, Query(torch.zeros(1, 4), torch.zeros(3, 2), (6, 6)))


def test_self_supervised_pairs_have_the_drawn_sizes_and_mask_fractions():
    x = _smooth(40, (24, 20))
    groups = downsampled_inputs(x, parse_scales("1.5-4"), repeats=3, seed=0)
    rows = np.concatenate([r for r, _ in groups])
    assert sorted(rows.tolist()) == sorted(list(range(40)) * 3)
    for r, small in groups:
        assert small.shape[:2] == (len(r), 1)
        assert all(round(24 / 4) <= small.shape[2] <= round(24 / 1.5) for _ in [0])
        assert small.shape[3] == max(2, round(20 / (24 / small.shape[2]))) or abs(small.shape[3] - 20 * small.shape[2] / 24) <= 1
    assert len(groups) > 3  # several sizes drawn
    assert parse_scales("2") == (2.0, 2.0)
    for bad in ("0.5-2", "3-2", "x"):
        with pytest.raises(ConfigError, match="--scales"):
            parse_scales(bad)
    m = hide_masks(200, (16, 16), parse_hide("random:0.5"), seed=1)
    assert abs((~m).mean() - 0.5) < 0.02
    b = hide_masks(50, (20, 10), parse_hide("block:0.3-0.3"), seed=2)
    assert ((~b).reshape(50, -1).sum(1) == 6 * 3).all()  # one 6 x 3 box per mask
    seg = hide_masks(10, (100,), parse_hide("block:0.2"), seed=3)
    hidden = np.argwhere(~seg[0]).ravel()
    assert len(hidden) == 20 and (np.diff(hidden) == 1).all()  # one missing segment
    for bad in ("random:0.5-1.2", "stripes:0.3", ""):
        with pytest.raises(ConfigError, match="--hide"):
            parse_hide(bad)


def test_pair_batches_hold_the_right_targets_and_hidden_weights():
    model = _model(2, (8, 8))
    x = _smooth(6, (8, 8))
    ps = masked_pairs(model, x, hide=parse_hide("random:0.5"), repeats=2, share=1, progress=False)
    q, target, w = ps.batch(0, 4, 64, seed=0)
    g = ps.groups[0]
    assert len(ps.groups) == 1 and ps.hidden(0) is None  # a mask per pair
    assert q.signals.shape == (4, 1, 8, 8) and target.shape == (4, 64, 1) and w.shape == (4, 64)
    # the targets are the full signals at the drawn coordinates, hidden where the weight is 1
    idx = ((q.coords + 1) / 2 * 7).round().long()
    rows = [int(np.argmin([(g.latents[r] - q.latents[i]).abs().sum() for r in range(len(g))])) for i in range(4)]
    for i, r in enumerate(rows):
        t = torch.from_numpy(x[int(g.rows[r]), 0])[idx[:, 0], idx[:, 1]]
        torch.testing.assert_close(target[i, :, 0], t)
        torch.testing.assert_close(w[i], (~g.observed[r][idx[:, 0], idx[:, 1]]).float())


def test_signals_that_share_a_mask_are_batched_at_their_hidden_positions_only():
    model = _model(2, (8, 8))
    x = _smooth(7, (8, 8))
    ps = masked_pairs(model, x, hide=parse_hide("random:0.5"), repeats=2, share=3, progress=False)
    # each repeat: every signal once, in groups of 3, 3 and 1 signals, each group one mask
    assert [len(g) for g in ps.groups] == [3, 3, 1, 3, 3, 1]
    for r in range(2):
        assert sorted(torch.cat([g.rows for g in ps.groups[3 * r:3 * r + 3]]).tolist()) == list(range(7))
    masks = [g.observed[0] for g in ps.groups]
    assert all(bool((g.observed == g.observed[:1]).all()) for g in ps.groups)
    assert len({m.numpy().tobytes() for m in masks}) == len(masks)
    for g in ps.groups:  # each input is its signal with the group's mask applied
        torch.testing.assert_close(g.inputs, torch.from_numpy(x)[g.rows] * g.observed[:, None])
    for step in range(6):
        q, target, w = ps.batch(step, 8, 64, seed=0)
        k = next(k for k, g in enumerate(ps.groups) if any(torch.equal(q.latents[0], z) for z in g.latents))
        g, hidden = ps.groups[k], (~ps.groups[k].observed[0]).sum()
        assert q.latents.shape[0] == len(g) and len({z.numpy().tobytes() for z in q.latents}) == len(g)  # no repeats
        assert q.coords.shape[0] == min(64, int(hidden)) and bool((w == 1).all())
        idx = ((q.coords + 1) / 2 * 7).round().long()
        assert not g.observed[0][idx[:, 0], idx[:, 1]].any()  # every position drawn is hidden
        assert len(set(map(tuple, idx.tolist()))) == len(idx)


def _sr_setup():
    model = _model(2, (8, 8))
    hi = _smooth(24, (16, 16))
    lo = interpolate_signals(hi, (8, 8), "bilinear")  # a smooth acquisition the head can learn to invert
    return model, paired_pairs(model, lo[:16], hi[:16], progress=False), paired_pairs(model, lo[16:], hi[16:],
                                                                                      progress=False)


def test_a_short_training_lowers_the_loss_and_beats_its_base():
    model, train, val = _sr_setup()
    torch.manual_seed(0)
    head = build_head(QueryHeadConfig(out_dim=1, neighbours=3, base="classic", hidden=32, layers=2, encoder_depth=0),
                      model.net)
    rec = train_head(head, model.net, train, HeadTraining(steps=300, batch_size=8, coords_per_signal=128, lr=3e-3,
                                                          val_every=100), val=val, progress=False)
    losses = [h["loss"] for h in rec["history"]]
    assert losses[-1] < 0.5 * losses[0]
    score = pairs_psnr(head, model.net, val)
    assert score["head"] == pytest.approx(rec["best_val_psnr"]) and score["head"] > score["base"] + 0.5


class _Interrupt(PairSet):
    def __init__(self, inner, at):
        self.__dict__.update(inner.__dict__)
        self.at = at

    def batch(self, step, *args, **kwargs):
        if step == self.at:
            raise KeyboardInterrupt
        return super().batch(step, *args, **kwargs)


def test_an_interrupted_training_resumes_to_the_same_head(tmp_path):
    model, train, val = _sr_setup()
    cfg = HeadTraining(steps=40, batch_size=4, coords_per_signal=32, val_every=10)
    arch = QueryHeadConfig(out_dim=1, neighbours=2, base="classic", hidden=8, layers=1, encoder_width=4,
                           encoder_depth=1)

    def fresh():
        torch.manual_seed(0)
        return build_head(arch, model.net)

    straight = fresh()
    train_head(straight, model.net, train, cfg, val=val, progress=False)
    broken = fresh()
    with pytest.raises(KeyboardInterrupt):
        train_head(broken, model.net, _Interrupt(train, 25), cfg, val=val, checkpoint_dir=tmp_path, progress=False)
    resumed = fresh()
    rec = train_head(resumed, model.net, train, cfg, val=val, checkpoint_dir=tmp_path, progress=False)
    assert rec["steps"] == 40
    for k, v in straight.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[k], v)
    with pytest.raises(ConfigError, match="other settings"):
        train_head(fresh(), model.net, train, HeadTraining(steps=41), checkpoint_dir=tmp_path, progress=False)


def test_head_files_round_trip_and_refuse_another_model(tmp_path):
    model, train, val = _sr_setup()
    est = QueryRegressor("superres", neighbours=2, hidden=8, layers=1, encoder_depth=1, encoder_width=4, steps=5,
                         batch_size=4, coords_per_signal=16, progress=False).fit(model, train, val=val)
    lo = val.groups[0].inputs.numpy()
    z = val.groups[0].latents.numpy()
    before = est.predict(z, (16, 16), signals=lo)
    assert before.shape == (8, 1, 16, 16) and before.min() >= 0 and before.max() <= 1
    est.write(tmp_path)
    back = QueryRegressor.load(tmp_path, model)
    np.testing.assert_array_equal(back.predict(z, (16, 16), signals=lo), before)
    assert back.task == "superres" and back.grid_ == (8, 8)
    with pytest.raises(ArtifactError, match="trained on field model"):
        QueryRegressor.load(tmp_path, _model(2, (8, 8), model_id="another-model"))
    with pytest.raises(ArtifactError, match="not for segment"):
        read_head(tmp_path, model, tasks=("segment",))
    with pytest.raises(ConfigError, match="observed samples"):
        back.predict(z, (16, 16))
    (tmp_path / "head.safetensors").write_bytes(b"junk")
    with pytest.raises(ArtifactError, match="checksum"):
        QueryRegressor.load(tmp_path, model)


@pytest.mark.parametrize("dim, spatial", [(1, (30,)), (2, (9, 8))])
def test_an_untrained_imputation_head_is_its_classic_inpainting_and_keeps_observed_samples(dim, spatial):
    from funcml.query.impute import interpolate_missing

    model = _model(dim, spatial)
    x = _smooth(10, spatial)
    ps = masked_pairs(model, x, hide=parse_hide("random:0.5"), repeats=1, progress=False)
    g = ps.groups[0]
    obs, inputs = g.observed.numpy(), g.inputs.numpy()
    method = "linear" if dim == 1 else "biharmonic"
    expected = np.stack([interpolate_missing(inputs[i], obs[i], method) for i in range(len(x))])
    np.testing.assert_allclose(g.filled.numpy(), expected)
    est = QueryRegressor("impute", neighbours=3, hidden=8, layers=1, encoder_depth=0, steps=1, lr=1e-9,
                         batch_size=4, coords_per_signal=8, progress=False).fit(model, ps)
    assert est.head_.config.base == "classic"
    out = est.predict(g.latents.numpy(), spatial, signals=inputs, observed=obs)
    np.testing.assert_allclose(out, np.clip(expected, 0, 1), atol=1e-5)  # the residual starts at zero
    np.testing.assert_array_equal(out[:, 0][obs], inputs[:, 0][obs])


def test_grid_cell_is_the_output_spacing_in_input_samples():
    torch.testing.assert_close(grid_cell((28, 28), (64, 64)), torch.full((2,), 28 / 64))
    torch.testing.assert_close(grid_cell((11,), (21,), "corners"), torch.tensor([0.5]))
    torch.testing.assert_close(grid_cell((8, 8), (8, 8), roi=[(0.0, 0.5)]), torch.full((2,), 0.5))


@pytest.mark.parametrize("dim", [1, 2, 3])
def test_the_residual_cnn_keeps_shapes_and_learns(dim):
    assert ResidualSRNet(dim, 2, width=4, depth=3)(torch.rand(2, 2, *([6] * dim))).shape == (2, 2, *([6] * dim))
    if dim != 2:
        return
    hi = _smooth(16, (16, 16))
    lo = interpolate_signals(hi, (8, 8), "bilinear")
    est = PixelSR(width=16, depth=3, steps=150, lr=3e-3, progress=False).fit(lo, hi)
    first, last = est.history_[0]["loss"], est.history_[-1]["loss"]
    assert last < first and est.predict(lo, (16, 16)).shape == (16, 1, 16, 16)


def test_a_spent_time_budget_ends_the_training_with_a_validated_head():
    model, train, val = _sr_setup()
    head = build_head(QueryHeadConfig(out_dim=1, neighbours=2, base="classic", hidden=8, encoder_depth=0), model.net)
    rec = train_head(head, model.net, train, HeadTraining(steps=50, max_minutes=1e-9, clock="process"), val=val,
                     progress=False)
    assert rec["steps"] == 0 and rec["history"][-1]["val_head_psnr"] == pytest.approx(rec["best_val_psnr"])
    assert rec["best_val_psnr"] == pytest.approx(rec["history"][-1]["val_base_psnr"], abs=1e-4)  # starts as its base
    with pytest.raises(ConfigError, match="clock"):
        HeadTraining(clock="moon").validate()


def test_demo_stages_report_the_head_beside_the_field_and_the_baselines(tmp_path):
    from funcml.data.base import ArraySignalSet
    from funcml.demo.context import DemoContext
    from funcml.demo.stages.query import impute_stage, superres_stage

    x = _smooth(24, (8, 8))
    splits = np.repeat(np.array([0, 2], np.uint8), 12)
    signals = ArraySignalSet(x, name="s", spec="s", splits=splits, labels=None, task="none", label_names=None,
                             fingerprint="s")
    ctx = DemoContext(out=tmp_path, signals=signals, model=_model(2, (8, 8)), latent_set=None, device="cpu",
                      quick=True, log=lambda m: None)
    sr, imp = superres_stage(ctx), impute_stage(ctx)
    assert {"funcml", "funcml_head", "bicubic"} <= set(sr) and np.isfinite(sr["funcml_head"]["psnr"])
    assert {"funcml", "funcml_head", "biharmonic"} <= set(imp) and np.isfinite(imp["funcml_head"]["psnr_hidden"])
    assert (tmp_path / "superres.png").stat().st_size > 1000 and (tmp_path / "impute.png").stat().st_size > 1000


def test_head_files_round_trip_a_unet_encoder(tmp_path):
    model, train, val = _sr_setup()
    est = QueryRegressor("superres", neighbours=2, hidden=8, layers=1, encoder="unet", encoder_depth=2,
                         encoder_width=4, steps=3, batch_size=4, coords_per_signal=16, progress=False).fit(model, train)
    lo, z = val.groups[0].inputs.numpy(), val.groups[0].latents.numpy()
    est.write(tmp_path)
    back = QueryRegressor.load(tmp_path, model)
    assert back.head_.config.encoder == "unet" and back.head_.encoder.depth == 2
    np.testing.assert_array_equal(back.predict(z, (16, 16), signals=lo), est.predict(z, (16, 16), signals=lo))


@pytest.mark.parametrize("dim, spatial", [(1, (32,)), (2, (16, 16)), (3, (8, 8, 8))])
def test_a_unet_encoder_reads_context_that_a_shallow_conv_encoder_cannot_see(dim, spatial):
    """One sample at the far corner changes the head's output at the opposite corner through a U-Net
    (context as wide as the signal), but not through one 3-sample convolution."""
    model = _model(dim, spatial)
    x = torch.from_numpy(_smooth(2, spatial))
    far = x.clone()
    far[(slice(None), 0, *[-1] * dim)] += 1.0
    corner = -torch.ones(1, dim)
    outs = {}
    for enc, depth in (("conv", 1), ("unet", 3)):
        torch.manual_seed(0)
        cfg = QueryHeadConfig(out_dim=1, inputs=("observed",), neighbours=1, encoder=enc, encoder_depth=depth,
                              encoder_width=4, hidden=8, layers=1)
        head = build_head(cfg, model.net)
        z = torch.zeros(2, model.config.latent_dim)
        with torch.no_grad():
            outs[enc] = [head(model.net, Query(z, corner, spatial, s)) for s in (x, far)]
    assert outs["conv"][0].shape == outs["unet"][0].shape == (2, 1, 1)
    torch.testing.assert_close(outs["conv"][0], outs["conv"][1])
    assert (outs["unet"][0] - outs["unet"][1]).abs().max() > 1e-4


def test_head_configs_refuse_an_unknown_encoder_and_a_dilated_unet():
    with pytest.raises(ConfigError, match="--encoder must be one of"):
        QueryHeadConfig(out_dim=1, encoder="resnet").validate()
    with pytest.raises(ConfigError, match="conv encoder"):
        QueryHeadConfig(out_dim=1, encoder="unet", encoder_dilation=2).validate()
