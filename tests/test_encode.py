"""Test-time encoding: fitting, gradient-norm rescaling, dataset encodes that resume bit-identically."""

import dataclasses

import numpy as np
import pytest
import torch

from funcml.encoders.config import EncodeConfig
from funcml.latents.encode import encode_signal_set
from funcml.encoders.fitting import decode, fit_latents, reconstruction_psnr
from funcml.encoders.model import FieldModel
from funcml.encoders.trainer import MetaTrainer
from funcml.errors import ConfigError, OutputExistsError
from funcml.latents import LatentSet


@pytest.fixture
def trained(tmp_path, tiny_images, tiny_field, tiny_train):
    MetaTrainer(tiny_field, dataclasses.replace(tiny_train, steps=20, outer_lr=3e-3), tiny_images, tmp_path / "model",
                progress=False).run()
    return FieldModel.load(tmp_path / "model"), tmp_path / "model"


def test_more_test_time_steps_fit_better(trained, tiny_images):
    model, _ = trained
    x = torch.from_numpy(tiny_images.get(range(8)))
    psnrs = []
    for steps in (0, 3, 20):
        phi = fit_latents(model.net, x, EncodeConfig(steps=steps, inner_lr=0.5, context_ratio=0.5))
        psnrs.append(float(reconstruction_psnr(model.net, phi, x).mean()))
    assert psnrs[0] < psnrs[1] < psnrs[2]


def test_encoding_is_deterministic_for_a_seed(trained, tiny_images):
    model, _ = trained
    x = torch.from_numpy(tiny_images.get(range(6)))
    cfg = EncodeConfig(steps=5, inner_lr=0.5, context_ratio=0.25, seed=4)
    a = fit_latents(model.net, x, cfg, generator=torch.Generator().manual_seed(1))
    b = fit_latents(model.net, x, cfg, generator=torch.Generator().manual_seed(1))
    c = fit_latents(model.net, x, cfg, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_gradient_rescaling_steps_along_the_full_gradient_with_the_subset_norm(trained, tiny_images):
    model, _ = trained
    net = model.net
    x = torch.from_numpy(tiny_images.get(range(3)))
    cfg = EncodeConfig(steps=1, inner_lr=0.5, context_ratio=0.25, grad_rescale=True)
    phi = fit_latents(net, x, cfg, generator=torch.Generator().manual_seed(7))
    # Reference: draw the same subset, take both gradients at phi = 0 by hand.
    from funcml.encoders.coords import make_grid, sample_context, signals_to_values
    from funcml.encoders.meta import per_signal_mse

    coords, values = make_grid((8, 8)), signals_to_values(x)
    idx = sample_context(64, 0.25, torch.Generator().manual_seed(7))
    z = torch.zeros(3, net.config.latent_dim, requires_grad=True)
    g_full = torch.autograd.grad(per_signal_mse(net(coords, z), values).sum(), z)[0]
    g_sub = torch.autograd.grad(per_signal_mse(net(coords[idx], z), values[:, idx]).sum(), z)[0]
    expected = -0.5 * g_full * (g_sub.norm(dim=1, keepdim=True) / g_full.norm(dim=1, keepdim=True))
    assert torch.allclose(phi, expected, atol=1e-7)
    assert torch.allclose(phi.norm(dim=1), 0.5 * g_sub.norm(dim=1), rtol=1e-5)


def test_differentiable_encoding_gives_input_gradients(trained, tiny_images):
    model, _ = trained
    x = torch.from_numpy(tiny_images.get(range(2))).requires_grad_(True)
    phi = fit_latents(model.net, x, EncodeConfig(steps=3, inner_lr=0.5, context_ratio=1.0), differentiable=True)
    phi.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_observed_mask_fits_only_the_observed_coordinates(trained, tiny_images):
    model, _ = trained
    x = torch.from_numpy(tiny_images.get(range(2)))
    cfg = EncodeConfig(steps=5, inner_lr=0.5, context_ratio=1.0)
    weights = torch.zeros(2, 64)
    weights[:, :32] = 1
    a = fit_latents(model.net, x, cfg, weights=weights)
    x2 = x.clone()
    x2.view(2, -1)[:, 32:] = 0.9  # change only unobserved values
    b = fit_latents(model.net, x2, cfg, weights=weights)
    assert torch.allclose(a, b)


def test_decode_at_other_resolutions_and_in_chunks(trained):
    model, _ = trained
    z = torch.randn(2, model.config.latent_dim) * 0.1
    full = decode(model.net, z, (16, 16))
    chunked = decode(model.net, z, (16, 16), chunk_coords=37)
    assert full.shape == (2, 1, 16, 16) and torch.allclose(full, chunked)
    assert full.min() >= 0 and full.max() <= 1


def test_dataset_encode_writes_a_complete_latent_set(tmp_path, trained, tiny_images):
    model, model_dir = trained
    cfg = dataclasses.replace(model.encode_defaults, batch_size=5)
    ls, stats = encode_signal_set(model, tiny_images, tmp_path / "lat", cfg, model_dir=model_dir, progress=False)
    assert len(ls) == len(tiny_images) and ls.latent_dim == model.config.latent_dim
    assert np.array_equal(np.asarray(ls.splits), tiny_images.splits)
    assert np.array_equal(np.asarray(ls.labels), tiny_images.labels)
    assert np.isfinite(np.asarray(ls.psnr)).all() and stats["psnr_mean"] > 10
    assert ls.model_id == model.id and ls.load_model().id == model.id
    assert not (tmp_path / "lat.partial").exists()
    assert not (tmp_path / "lat" / "job.json").exists()
    with pytest.raises(OutputExistsError):
        encode_signal_set(model, tiny_images, tmp_path / "lat", cfg, model_dir=model_dir, progress=False)


def test_interrupted_encode_resumes_bit_identically(tmp_path, trained, tiny_images):
    model, model_dir = trained
    cfg = dataclasses.replace(model.encode_defaults, batch_size=5)
    ref, _ = encode_signal_set(model, tiny_images, tmp_path / "ref", cfg, model_dir=model_dir, progress=False)
    partial, _ = encode_signal_set(model, tiny_images, tmp_path / "b", cfg, model_dir=model_dir, progress=False,
                                   max_chunks=2)
    assert partial is None and (tmp_path / "b.partial").exists() and not (tmp_path / "b").exists()
    with pytest.raises(Exception, match="unfinished encode"):
        LatentSet.open(tmp_path / "b")
    got, stats = encode_signal_set(model, tiny_images, tmp_path / "b", cfg, model_dir=model_dir, progress=False)
    assert stats["resumed_rows"] == 10 and stats["signals"] == len(tiny_images) - 10
    assert np.array_equal(np.asarray(ref.latents), np.asarray(got.latents))
    assert ref.manifest["latent_checksum"] == got.manifest["latent_checksum"]


def test_an_unfinished_encode_with_other_settings_is_not_mixed_in(tmp_path, trained, tiny_images):
    model, model_dir = trained
    cfg = dataclasses.replace(model.encode_defaults, batch_size=5)
    encode_signal_set(model, tiny_images, tmp_path / "b", cfg, model_dir=model_dir, progress=False, max_chunks=1)
    other = dataclasses.replace(cfg, steps=cfg.steps + 1)
    with pytest.raises(OutputExistsError, match="other settings"):
        encode_signal_set(model, tiny_images, tmp_path / "b", other, model_dir=model_dir, progress=False)
    ls, _ = encode_signal_set(model, tiny_images, tmp_path / "b", other, model_dir=model_dir, progress=False,
                              overwrite=True)
    assert ls.manifest["encoding"]["steps"] == cfg.steps + 1


def test_signals_of_the_wrong_kind_are_refused(trained):
    model, _ = trained
    with pytest.raises(ConfigError, match="do not fit"):
        model.encode(torch.rand(2, 3, 8, 8))
    with pytest.raises(ConfigError, match="latent dimension"):
        model.decode(torch.zeros(2, model.config.latent_dim + 1))


def _torch_fit(net, x: torch.Tensor, make_optimizer, steps: int) -> torch.Tensor:
    """Latents ``(B, P)`` fitted from zero by a torch optimiser on the summed per-signal MSE of ``x``
    ``(B, C, *spatial)`` (full context, no rescaling): the reference for the test-time optimisers."""
    from funcml.encoders.coords import make_grid, signals_to_values
    from funcml.encoders.meta import per_signal_mse

    phi = torch.zeros(len(x), net.config.latent_dim, requires_grad=True)
    opt = make_optimizer([phi])
    coords, values = make_grid(tuple(x.shape[2:])), signals_to_values(x)
    for _ in range(steps):
        opt.zero_grad()
        per_signal_mse(net(coords, phi), values).sum().backward()
        opt.step()
    return phi.detach()


def test_adam_at_test_time_is_adam_on_each_latent(trained, tiny_images):
    """``optimizer="adam"`` takes Adam steps on phi with the fit's gradients: here (full context, no
    rescaling) those of each signal's MSE, i.e. torch's Adam on the summed loss."""
    model, _ = trained
    net = model.net
    x = torch.from_numpy(tiny_images.get(range(4)))
    cfg = EncodeConfig(steps=6, context_ratio=1.0, grad_rescale=False, optimizer="adam", adam_lr=0.05)
    got = fit_latents(net, x, cfg)
    assert torch.allclose(got, _torch_fit(net, x, lambda p: torch.optim.Adam(p, lr=0.05), 6), atol=1e-5)
    sgd = fit_latents(net, x, dataclasses.replace(cfg, optimizer="sgd", inner_lr=0.5))
    assert not torch.allclose(got, sgd, atol=1e-3)


def test_sgd_at_test_time_uses_the_meta_learnt_rates(tiny_images, tiny_field):
    """A meta-SGD model steps each latent dimension with its own learnt rate: dimensions whose rate is
    zero stay at zero, the others move; the rate given in the config is not used."""
    from funcml.encoders.siren import ModulatedSiren

    torch.manual_seed(0)
    net = ModulatedSiren(dataclasses.replace(tiny_field, meta_sgd=True), inner_lr=0.5)
    with torch.no_grad():
        net.inner_lr[::2] = 0.0
    x = torch.from_numpy(tiny_images.get(range(4)))
    phi = fit_latents(net, x, EncodeConfig(steps=4, inner_lr=123.0, context_ratio=0.5))
    assert torch.all(phi[:, ::2] == 0) and torch.all(phi[:, 1::2].abs().sum(dim=0) > 0)
    assert phi.abs().max() < 10   # a rate of 123 would have thrown the latents far off


def test_auto_steps_stop_a_converged_signal_early_and_keep_its_best_latent(trained, tiny_images):
    from funcml.encoders.fitting import fit_latents_counted

    model, _ = trained
    net = model.net
    real = torch.from_numpy(tiny_images.get(range(3)))
    converged = decode(net, torch.zeros(1, net.config.latent_dim), (8, 8), clamp=False)  # phi = 0 fits it exactly
    x = torch.cat([converged, real])
    cfg = EncodeConfig(steps=60, inner_lr=0.5, context_ratio=0.5, auto_stop=True, stop_patience=4)
    phi, taken = fit_latents_counted(net, x, cfg)
    assert taken[0] == 4 and bool((taken[1:] > taken[0]).all()) and int(taken.max()) <= 60
    assert phi[0].abs().max() < 1e-6    # where it started, where its loss is zero (up to float noise)
    fixed, fixed_taken = fit_latents_counted(net, x, dataclasses.replace(cfg, auto_stop=False))
    assert bool((fixed_taken == 60).all())
    psnr_auto, psnr_fixed = reconstruction_psnr(net, phi, x), reconstruction_psnr(net, fixed, x)
    assert bool((psnr_auto[1:] > psnr_fixed[1:] - 0.5).all())   # the others stop where more steps add little
    with pytest.raises(ConfigError, match="auto"):
        fit_latents(net, x, cfg, differentiable=True)


def test_encode_reports_the_test_time_steps_per_signal(trained, tiny_images, tmp_path):
    model, model_dir = trained
    cfg = dataclasses.replace(model.encode_defaults, steps=40, auto_stop=True, batch_size=8)
    _, stats = encode_signal_set(model, tiny_images, tmp_path / "lat", cfg, model_dir=model_dir, progress=False)
    assert 1 <= stats["steps_min"] <= stats["steps_per_signal"] <= stats["steps_max"] <= 40
    assert stats["seconds_per_signal"] > 0


def test_encode_command_takes_auto_steps_and_an_optimizer(trained, tiny_images, tmp_path, capsys):
    import json

    from funcml.cli import main

    _, model_dir = trained
    np.savez(tmp_path / "tiny.npz", **{f"{s}_images": (tiny_images.get(tiny_images.indices(s))[:, 0] * 255).astype(np.uint8)
                                       for s in ("train", "val", "test")},
             **{f"{s}_labels": np.zeros((len(tiny_images.indices(s)), 1), np.uint8) for s in ("train", "val", "test")})
    argv = ["encode", str(tmp_path / "tiny.npz"), "--model", str(model_dir), "--out", str(tmp_path / "lat"),
            "--steps", "auto", "--max-steps", "30", "--optimizer", "adam", "--adam-lr", "0.05", "--json"]
    with pytest.raises(SystemExit) as exc:
        main(argv)
    out = capsys.readouterr()
    assert exc.value.code == 0, out.err
    rep = json.loads(out.out.strip().splitlines()[-1])
    assert 1 <= rep["steps_min"] <= rep["steps_max"] <= 30 and "test-time steps per signal" in out.err
    manifest = LatentSet.open(tmp_path / "lat").manifest["encoding"]
    assert manifest["optimizer"] == "adam" and manifest["auto_stop"] and manifest["steps"] == 30
    with pytest.raises(SystemExit) as exc:
        main([*argv[:6], "--steps", "many", "--overwrite"])
    assert exc.value.code != 0 and "--steps" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main([*argv[:6], "--optimizer", "adam", "--momentum", "0.5", "--overwrite"])
    err = capsys.readouterr().err
    assert exc.value.code != 0 and "--momentum applies to --optimizer sgd" in err and "Traceback" not in err
    with pytest.raises(SystemExit) as exc:
        main([*argv[:6], "--momentum", "0.5", "--steps", "4", "--overwrite", "--json"])
    assert exc.value.code == 0
    assert LatentSet.open(tmp_path / "lat").manifest["encoding"]["momentum"] == 0.5


def test_momentum_at_test_time_is_heavy_ball_sgd_on_each_latent(trained, tiny_images):
    """``momentum`` m: v <- m v + g, phi <- phi - lr v, i.e. torch's SGD with momentum (dampening 0)."""
    model, _ = trained
    net = model.net
    x = torch.from_numpy(tiny_images.get(range(4)))
    cfg = EncodeConfig(steps=6, inner_lr=0.5, context_ratio=1.0, grad_rescale=False, momentum=0.6)
    got = fit_latents(net, x, cfg)
    reference = _torch_fit(net, x, lambda p: torch.optim.SGD(p, lr=0.5, momentum=0.6), 6)
    assert torch.allclose(got, reference, atol=1e-5)
    plain = fit_latents(net, x, dataclasses.replace(cfg, momentum=0.0))
    assert not torch.allclose(got, plain, atol=1e-3)
    # auto-stop keeps each signal's velocity: with a patience no signal reaches, the same latents
    kept = fit_latents(net, x, dataclasses.replace(cfg, auto_stop=True, stop_patience=100))
    assert torch.allclose(kept, got, atol=1e-6)
    # a differentiable encode differentiates through the velocity too: the gradient of a hand-written
    # differentiable heavy-ball loop
    from funcml.encoders.coords import make_grid, signals_to_values
    from funcml.encoders.meta import per_signal_mse

    xs = x.clone().requires_grad_(True)
    phi_d = fit_latents(net, xs, cfg, differentiable=True)
    assert torch.allclose(phi_d.detach(), got, atol=1e-5)
    (gx,) = torch.autograd.grad(phi_d.square().sum(), xs)
    xr = x.clone().requires_grad_(True)
    coords, values = make_grid((8, 8)), signals_to_values(xr)
    phi = torch.zeros(4, net.config.latent_dim, requires_grad=True)
    v = torch.zeros_like(phi)
    for _ in range(6):
        (g,) = torch.autograd.grad(per_signal_mse(net(coords, phi), values).sum(), phi, create_graph=True)
        v = 0.6 * v + g
        phi = phi - 0.5 * v
    (gx_ref,) = torch.autograd.grad(phi.square().sum(), xr)
    assert torch.allclose(gx, gx_ref, rtol=1e-3, atol=1e-6) and gx.abs().sum() > 0


@pytest.mark.parametrize("bad", [-0.1, 1.0, float("nan")])
def test_momentum_outside_zero_to_one_is_refused(bad):
    with pytest.raises(ConfigError, match="momentum"):
        EncodeConfig(momentum=bad).validate()


def test_a_finished_run_chooses_its_test_time_momentum_on_the_validation_signals(tmp_path, tiny_images, tiny_field,
                                                                                  tiny_train):
    from funcml.encoders.trainer import MOMENTUM_GRID, validation_psnr

    out = tmp_path / "m"
    result = MetaTrainer(tiny_field, dataclasses.replace(tiny_train, steps=20, outer_lr=3e-3), tiny_images, out,
                         progress=False).run()
    model = FieldModel.load(out)
    record = model.training["test_momentum"]
    assert set(record["val_scores"]) == {str(m) for m in MOMENTUM_GRID}
    best = max(MOMENTUM_GRID, key=lambda m: record["val_scores"][str(m)])
    assert model.encode_defaults.momentum == record["chosen"] == best == result.test_momentum
    val = torch.from_numpy(tiny_images.get(tiny_images.indices("val")[: tiny_train.val_signals]))
    for m in {0.0, best}:   # momentum 0's score is the saved model's validation, not measured again
        again = validation_psnr(model.net, val, dataclasses.replace(model.encode_defaults, momentum=m,
                                                                    backend=tiny_train.backend))
        assert again == pytest.approx(record["val_scores"][str(m)], abs=1e-4)
    off = MetaTrainer(tiny_field, dataclasses.replace(tiny_train, steps=20, outer_lr=3e-3, tune_momentum=False),
                      tiny_images, tmp_path / "off", progress=False).run()
    assert off.test_momentum is None and FieldModel.load(tmp_path / "off").encode_defaults.momentum == 0.0


def test_a_models_momentum_holds_at_its_own_h_only():
    """The momentum a run chose for its H: another H, or stopping per signal, runs plain SGD."""
    cfg = EncodeConfig(steps=20, momentum=0.5)
    assert cfg.at_steps(None) is cfg and cfg.at_steps(20).momentum == 0.5
    assert cfg.at_steps(3) == dataclasses.replace(cfg, steps=3, momentum=0.0)
    auto = cfg.at_steps(20, auto_stop=True)
    assert auto.auto_stop and auto.momentum == 0.0 and auto.steps == 20
