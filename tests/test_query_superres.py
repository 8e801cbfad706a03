"""Super-resolution: interpolation baselines, cross-resolution meta-training, the evaluation."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import make_signal_set
from funcml.data.base import ArraySignalSet
from funcml.data.transforms import resize_signals
from funcml.encoders.config import EncodeConfig, FieldConfig, TrainConfig
from funcml.encoders.coords import make_grid
from funcml.encoders.fitting import decode, fit_latents
from funcml.encoders.meta import draw_subsets, meta_losses
from funcml.encoders.model import FieldModel
from funcml.encoders.multires import (MultiResConfig, MultiResTrainer, check_pairs, cross_resolution_losses,
                                      low_resolution_size)
from funcml.encoders.siren import ModulatedSiren
from funcml.errors import ConfigError, DataError, OutputExistsError
from funcml.metrics import psnr, ssim
from funcml.query.interpolate import interpolate_signals
from funcml.query.superres import superres_evaluate
from funcml.seeding import generator


def _pair(n=16, low=8, high=16, seed=0):
    """The same smooth signals at two resolutions (the low one area-resampled from the high one)."""
    hi = make_signal_set(n, (1, high, high), seed=seed)
    lo_data = resize_signals(hi.get(np.arange(n)), (low, low))
    lo = ArraySignalSet(lo_data, name="low", spec="low", splits=hi.splits, labels=hi.labels, task=hi.task,
                        label_names=hi.label_names, fingerprint=f"low-{seed}")
    return lo, hi


def test_interpolation_baselines_use_the_pixel_centre_convention():
    x = np.random.default_rng(0).uniform(size=(2, 1, 5, 7)).astype(np.float32)
    ref = F.interpolate(torch.from_numpy(x), size=(10, 14), mode="bicubic", align_corners=False).clamp(0, 1).numpy()
    np.testing.assert_allclose(interpolate_signals(x, (10, 14)), ref, atol=1e-6)
    # linear interpolation of a linear ramp is exact at the sample-aligned (corners) convention in 1D
    ramp = np.linspace(0.1, 0.9, 9, dtype=np.float32)[None, None]
    np.testing.assert_allclose(interpolate_signals(ramp, (17,), align="corners")[0, 0], np.linspace(0.1, 0.9, 17),
                               atol=1e-6)
    with pytest.raises(ConfigError):
        interpolate_signals(ramp, (17,), "bicubic")


def test_cross_resolution_loss_reduces_to_the_meta_loss_on_the_same_grid():
    torch.manual_seed(0)
    net = ModulatedSiren(FieldConfig(dim_in=2, channels=1, width=16, depth=3, latent_dim=6))
    x = torch.rand(3, 1, 6, 6)
    coords = make_grid((6, 6))
    subsets = draw_subsets(36, 0.5, 2, generator(0, "context", 0))
    ref_outer, ref_inner = meta_losses(net, coords, x, subsets, 0.1)
    values = x.flatten(2).transpose(1, 2)
    outer, inner = cross_resolution_losses(net, coords, x, coords, values, subsets, 0.1)
    torch.testing.assert_close(outer, ref_outer)
    torch.testing.assert_close(inner, ref_inner)
    # gradients reach the shared weights through the inner loop (second order)
    outer.sum().backward()
    assert net.first.weight.grad is not None and net.first.weight.grad.abs().sum() > 0


def test_pairs_that_cannot_be_the_same_signals_are_refused():
    lo, hi = _pair()
    check_pairs(lo, hi)
    with pytest.raises(DataError, match="holds 12 signals"):
        check_pairs(make_signal_set(12, (1, 8, 8)), hi)
    with pytest.raises(DataError, match="coarser"):
        check_pairs(hi, lo)
    other = make_signal_set(16, (1, 16, 16), seed=0)
    other.labels = other.labels[::-1].copy()
    with pytest.raises(DataError, match="different labels"):
        check_pairs(lo, other)


def _tiny(steps=4):
    field = FieldConfig(dim_in=2, channels=1, width=16, depth=3, latent_dim=8, omega_first=10.0, omega_last=30.0)
    train = TrainConfig(steps=steps, batch_size=4, inner_steps=2, inner_lr=0.5, context_ratio=0.5, outer_lr=1e-3,
                        val_every=2, val_signals=4, test_steps=3, checkpoint_every=2, log_every=1, seed=3)
    return field, train


@pytest.mark.parametrize("mode", ["paired", "downsample"])
def test_multires_training_runs_resumes_and_records_its_supervision(tmp_path, mode):
    lo, hi = _pair()
    field, train = _tiny()
    if mode == "paired":
        kwargs = dict(signals=lo, targets=hi, multires=MultiResConfig(mode="paired", target_coords=50))
    else:
        kwargs = dict(signals=hi, multires=MultiResConfig(mode="downsample", factor=2.0))
    trainer = MultiResTrainer(field, train, out=tmp_path / "m", **kwargs, progress=False)
    assert (trainer.in_shape, trainer.out_shape) == ((8, 8), (16, 16))
    result = trainer.run()
    assert result.finished and np.isfinite(result.best_val_psnr)
    model = FieldModel.load(tmp_path / "m")
    record = model.training["multires"]
    assert record["mode"] == mode and record["inner_grid"] == [8, 8] and record["target_grid"] == [16, 16]
    # the validation score is the super-resolution PSNR of the validation signals
    val = torch.from_numpy(hi.get(trainer.val_idx))
    low = torch.from_numpy(lo.get(trainer.val_idx)) if mode == "paired" else torch.from_numpy(
        resize_signals(val.numpy(), (8, 8)))
    enc = EncodeConfig(steps=3, inner_lr=0.5, context_ratio=0.5, batch_size=64, seed=3)
    phi = model.encode(low, enc, generator=generator(3, "validate", 0))
    from funcml.query.render import render_latents

    sr = render_latents(model.net, phi, (8, 8), (16, 16)).numpy()
    history_val = [h["val_psnr"] for h in result.history if h.get("val_psnr") is not None]
    assert max(history_val) == pytest.approx(result.best_val_psnr)
    assert float(psnr(sr, val.numpy()).mean()) == pytest.approx(result.best_val_psnr, abs=0.05)
    # resuming with other supervision settings is refused
    other = MultiResConfig(mode="downsample", factor=4.0) if mode == "paired" else MultiResConfig(mode="downsample",
                                                                                                factor=3.0)
    sig = hi if other.mode == "downsample" else lo
    with pytest.raises(OutputExistsError):
        MultiResTrainer(field, _tiny(steps=6)[1], sig, tmp_path / "m", multires=other, progress=False)


def test_multires_config_errors():
    with pytest.raises(ConfigError):
        MultiResConfig(mode="downsample", factor=1.0).validate()
    with pytest.raises(ConfigError):
        MultiResConfig(mode="sideways").validate()
    assert low_resolution_size((28, 28), 2.0) == (14, 14)


def test_superres_evaluation_reports_funcml_next_to_interpolation():
    lo, hi = _pair(n=12)
    torch.manual_seed(0)
    net = ModulatedSiren(FieldConfig(dim_in=2, channels=1, width=16, depth=3, latent_dim=8))
    model = FieldModel(net, (1, 8, 8), EncodeConfig(steps=3, batch_size=5))
    metrics, ex = superres_evaluate(model, lo, hi, split="all", progress=False)
    assert metrics["count"] == 12 and metrics["classic"] == "bicubic"
    x_low, x_high = lo.get(np.arange(12)), hi.get(np.arange(12))
    bic = F.interpolate(torch.from_numpy(x_low), size=(16, 16), mode="bicubic", align_corners=False).clamp(0, 1).numpy()
    assert metrics["bicubic"]["psnr"] == pytest.approx(float(psnr(bic, x_high).mean()), abs=1e-6)
    assert metrics["bicubic"]["ssim"] == pytest.approx(float(ssim(bic, x_high).mean()), abs=1e-6)
    assert metrics["gain_over_classic"]["psnr"] == pytest.approx(metrics["funcml"]["psnr"] - metrics["bicubic"]["psnr"])
    assert ex["funcml"].shape == (6, 1, 16, 16) and ex["low"].shape == (6, 1, 8, 8)
    # the classic interpolation of funcml's own 8x8 reconstruction, recomputed here batch by batch
    cfg = model.encode_defaults
    fit = [decode(net, fit_latents(net, torch.from_numpy(x_low[s:s + 5]), cfg,
                                   generator=generator(cfg.seed, "encode", k)), (8, 8))
           for k, s in enumerate(range(0, 12, 5))]
    fit_bic = interpolate_signals(torch.cat(fit).numpy(), (16, 16), "bicubic", align="centers")
    assert metrics["funcml_fit_bicubic"]["psnr"] == pytest.approx(float(psnr(fit_bic, x_high).mean()), abs=1e-5)
    assert metrics["gain_between_samples"]["psnr"] == pytest.approx(
        metrics["funcml"]["psnr"] - metrics["funcml_fit_bicubic"]["psnr"])
