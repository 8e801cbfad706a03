"""On a CUDA GPU (skipped without one, ``pytest -m cuda`` runs only these): the fused backend against
the reference (autograd) in float64 and float32, the cpu backend refused there, no host synchronisation
in the inner loop or the encoding steps, and a tiny train and encode."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from funcml.backends import Execution, backend_for, precision
from funcml.encoders.config import EncodeConfig, FieldConfig
from funcml.encoders.coords import make_grid, sample_context
from funcml.latents.encode import encode_signal_set
from funcml.encoders.fitting import fit_latents
from funcml.encoders.meta import accumulate_meta_gradient, draw_subsets, meta_losses, per_signal_mse
from funcml.encoders.model import FieldModel
from funcml.encoders.siren import ModulatedSiren
from funcml.encoders.trainer import MetaTrainer
from funcml.latents import LatentSet

pytestmark = pytest.mark.cuda
CUDA = torch.device("cuda")
FUSED = backend_for(Execution(backend="fused"), CUDA)


def _rel(a, b):
    return ((a - b).abs().max() / a.abs().max().clamp_min(1e-30)).item()


def _net(channels=1, dtype=torch.float64, width=12, depth=5, latent=6, seed=0):
    torch.manual_seed(seed)
    cfg = FieldConfig(dim_in=2, channels=channels, width=width, depth=depth, latent_dim=latent, omega_first=5.0,
                      omega_last=40.0)
    return ModulatedSiren(cfg, inner_lr=0.2).to(device=CUDA, dtype=dtype)


def _problem(channels=1, b=4, n=17, masked=False, seed=1, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    coords = (torch.rand(n, 2, generator=g, dtype=dtype) * 2 - 1).to(CUDA)
    values = torch.rand(b, n, channels, generator=g, dtype=dtype).to(CUDA)
    weights = (torch.rand(b, n, generator=g) > 0.4).to(dtype).to(CUDA) if masked else None
    return coords, values, weights


def _reference(net, coords, values, weights, phi, lr, steps):
    for _ in range(steps):
        loss = per_signal_mse(net(coords, phi), values, weights)
        (g,) = torch.autograd.grad(loss.sum(), phi, create_graph=True)
        phi = phi - lr * g
    return per_signal_mse(net(coords, phi), values, weights)


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("masked", [False, True])
def test_inner_steps_and_outer_loss_match_autograd_in_float64(channels, masked):
    net = _net(channels)
    coords, values, weights = _problem(channels, masked=masked)
    params = list(net.parameters())
    phi0 = torch.randn(4, 6, dtype=torch.float64, device=CUDA, requires_grad=True)
    lr = net.inner_learning_rate(0.2)
    ref = torch.autograd.grad(_reference(net, coords, values, weights, phi0, lr, 2).sum(), [phi0] + params)
    with precision.scoped("fp32", CUDA):
        q, _ = FUSED.inner_step(net, coords, phi0, values, lr, weights)
        q, _ = FUSED.inner_step(net, coords, q, values, lr, weights)
        got = torch.autograd.grad(FUSED.outer_loss(net, coords, q, values, weights).sum(), [phi0] + params)
    for (name, _), a, b in zip([("phi", None)] + list(net.named_parameters()), ref, got):
        assert _rel(a, b) < 1e-10, name


@pytest.mark.parametrize("channels", [1, 2])
def test_first_step_on_one_shared_field_matches_autograd_in_float64(channels):
    net = _net(channels)
    coords, values, _ = _problem(channels, b=4)
    params = list(net.parameters())
    zero = torch.zeros(4, 6, dtype=torch.float64, device=CUDA, requires_grad=True)
    ref = torch.autograd.grad(_reference(net, coords, values, None, zero, 0.2, 1).sum(), params)
    p, _ = FUSED.first_step(net, coords, values, 0.2)
    got = torch.autograd.grad(FUSED.outer_loss(net, coords, p, values).sum(), params)
    for (name, _), a, b in zip(net.named_parameters(), ref, got):
        assert _rel(a, b) < 1e-10, name


def test_latent_gradients_with_a_context_subset_match_autograd_in_float64():
    net = _net(2)
    coords, values, weights = _problem(2, masked=True)
    phi = torch.randn(4, 6, dtype=torch.float64, device=CUDA)
    context = torch.tensor([0, 3, 4, 9, 16], device=CUDA)
    loss, grad, sub = FUSED.latent_grads(net, coords, phi, values, weights, context)
    z = phi.clone().requires_grad_(True)
    g_ref = torch.autograd.grad(per_signal_mse(net(coords, z), values, weights).sum(), z)[0]
    s_ref = torch.autograd.grad(per_signal_mse(net(coords[context], z), values[:, context], weights[:, context]).sum(),
                                z)[0]
    assert _rel(g_ref, grad) < 1e-10 and _rel(s_ref, sub) < 1e-10


def _float32_setup():
    net = _net(1, torch.float32, width=32, latent=16)
    x = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(1)).to(CUDA)
    return net, x, make_grid((8, 8), device=CUDA)


def test_meta_gradient_and_encoding_match_plain_autograd_in_float32():
    net, x, coords = _float32_setup()
    subsets = draw_subsets(64, 0.25, 3, torch.Generator().manual_seed(5), CUDA)
    grads, latents = [], []
    with precision.scoped("fp32", CUDA):
        for backend in ("reference", "fused"):
            net.zero_grad()
            accumulate_meta_gradient(net, coords, x, subsets, 1e-2, first_order=False, loss_scale=1 / 6,
                                     execution=Execution(backend=backend))
            cfg = EncodeConfig(steps=6, inner_lr=1e-2, context_ratio=0.25, backend=backend, precision="fp32")
            latents.append(fit_latents(net, x, cfg, generator=torch.Generator().manual_seed(2)))
            grads.append([p.grad.clone() for p in net.parameters()])
    for (name, _), a, b in zip(net.named_parameters(), *grads):
        assert _rel(a, b) < 1e-3, name
    assert _rel(*latents) < 1e-3


def test_the_inner_loop_and_the_encoding_steps_never_wait_for_the_gpu():
    net, x, coords = _float32_setup()
    cfg = EncodeConfig(steps=4, inner_lr=1e-2, context_ratio=0.25)
    subsets = draw_subsets(64, 0.25, 3, torch.Generator().manual_seed(5), CUDA)
    meta_losses(net, coords, x, subsets, 1e-2)[0].sum().backward()       # constants made, kernels loaded
    fit_latents(net, x, cfg, generator=torch.Generator().manual_seed(2))
    torch.cuda.synchronize()
    old = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode("error")
    try:
        subsets = draw_subsets(64, 0.25, 3, torch.Generator().manual_seed(6), CUDA)
        outer, _ = meta_losses(net, coords, x, subsets, 1e-2)
        outer.sum().backward()
        phi = fit_latents(net, x, cfg, generator=torch.Generator().manual_seed(2))
    finally:
        torch.cuda.set_sync_debug_mode(old)
    assert phi.is_cuda and torch.isfinite(phi).all()


def test_context_subsets_are_drawn_on_the_gpu_deterministically():
    a = sample_context(1000, 0.25, torch.Generator().manual_seed(3), CUDA)
    b = sample_context(1000, 0.25, torch.Generator().manual_seed(3), CUDA)
    c = sample_context(1000, 0.25, torch.Generator(device=CUDA).manual_seed(3), CUDA)
    assert a.is_cuda and torch.equal(a, b) and len(a) == 250 and torch.equal(a, a.sort().values)
    assert len(torch.unique(a)) == 250 and c.is_cuda


def test_a_tiny_train_and_encode_on_the_gpu(tmp_path, tiny_images, tiny_field, tiny_train):
    train = dataclasses.replace(tiny_train, steps=6, val_every=3)
    result = MetaTrainer(tiny_field, train, tiny_images, tmp_path / "m", device="cuda", progress=False).run()
    model = FieldModel.load(tmp_path / "m", device="cuda")
    assert result.finished and result.peak_memory_bytes > 0
    assert model.training["config"]["precision"] == "tf32"   # auto: TF32 on a GPU
    cfg = EncodeConfig(steps=3, inner_lr=0.5, context_ratio=0.5, batch_size=5)
    sets = [encode_signal_set(model, tiny_images, tmp_path / f"lat{k}", dataclasses.replace(cfg, precision=p),
                              model_dir=tmp_path / "m", progress=False)[0] for k, p in enumerate(("fp32", "fp32", "auto"))]
    assert sets[0].manifest["latent_checksum"] == sets[1].manifest["latent_checksum"]   # deterministic
    assert sets[2].manifest["encoding"]["precision"] == "tf32"
    reopened = LatentSet.open(tmp_path / "lat0")
    assert len(reopened) == len(tiny_images) and reopened.manifest["metrics"]["psnr_mean"] > 5


def test_the_cpu_backend_is_refused_on_a_gpu_and_auto_is_fused():
    from funcml.backends import resolve
    from funcml.errors import ConfigError

    assert resolve("auto", CUDA) == "fused"
    with pytest.raises(ConfigError):
        fit_latents(_net(1, torch.float32), torch.rand(2, 1, 4, 4, device=CUDA), EncodeConfig(steps=1, backend="cpu"))
