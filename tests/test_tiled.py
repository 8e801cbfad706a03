"""The tiled latent-gradient pass (funcml.encoders.tiled): same numbers as autograd and as the
layer-by-layer kernels, tile boundaries, masks, channels, libm rows, thread-count independence."""

import pytest
import torch

from funcml.encoders import fused, fused_loops, tiled
from funcml.encoders.config import FieldConfig
from funcml.encoders.meta import per_signal_mse
from funcml.encoders.siren import ModulatedSiren

pytestmark = pytest.mark.skipif(not tiled.available(), reason="tiled pass unavailable (no C compiler or no MKL sgemm)")


def _net(channels: int, seed: int = 0) -> ModulatedSiren:
    torch.manual_seed(seed)
    cfg = FieldConfig(dim_in=2, channels=channels, width=32, depth=5, latent_dim=8, omega_first=10.0,
                      omega_last=40.0)
    return ModulatedSiren(cfg)


def _problem(channels: int, b: int = 3, n: int = 150, masked: bool = False, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    coords = torch.rand(n, 2, generator=g) * 2 - 1
    values = torch.rand(b, n, channels, generator=g)
    weights = (torch.rand(b, n, generator=g) > 0.4).float() if masked else None
    phi = torch.randn(b, 8, generator=g) * 0.1
    return coords, values, weights, phi


def _autograd64(net, coords, values, weights, phi, context):
    """Loss, gradient and context gradient in float64 with plain autograd: the reference."""
    net64 = ModulatedSiren(net.config)
    net64.load_state_dict(net.state_dict())
    net64 = net64.double()
    z = phi.double().requires_grad_(True)
    w = None if weights is None else weights.double()
    loss = per_signal_mse(net64(coords.double(), z), values.double(), w)
    grad = torch.autograd.grad(loss.sum(), z)[0]
    w_sub = None if w is None else w[:, context]
    sub_loss = per_signal_mse(net64(coords[context].double(), z), values[:, context].double(), w_sub)
    return loss, grad, torch.autograd.grad(sub_loss.sum(), z)[0]


def _rel(a, b):
    return ((a.double() - b.double()).abs().max() / b.double().abs().max()).item()


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("masked", [False, True])
def test_tiled_gradients_equal_float64_autograd_across_tiles(channels, masked, monkeypatch):
    net = _net(channels)
    coords, values, weights, phi = _problem(channels, masked=masked)
    monkeypatch.setattr(tiled, "TILE_BYTES", 4 * (4 + 3) * 32 * 16)  # 16 rows: 10 tiles, the last of 6
    assert tiled.tile_rows(4, 32) == 16
    context = torch.tensor([0, 5, 17, 40, 99, 149])
    calls = []
    real = tiled.latent_grads
    monkeypatch.setattr(tiled, "latent_grads", lambda *a: calls.append(1) or real(*a))
    loss, grad, sub = fused.latent_grads(net, coords, phi, values, weights, context)
    assert calls == [1]  # the tiled pass ran
    ref_loss, ref_grad, ref_sub = _autograd64(net, coords, values, weights, phi, context)
    assert _rel(loss, ref_loss) < 1e-5
    assert _rel(grad, ref_grad) < 1e-4 and _rel(sub, ref_sub) < 1e-4


def test_tiled_equals_layer_by_layer_kernels_and_switches_off(monkeypatch):
    net = _net(1)
    coords, values, weights, phi = _problem(1, b=5, n=300, masked=True)
    context = torch.arange(0, 300, 7)
    got = fused.latent_grads(net, coords, phi, values, weights, context)
    monkeypatch.setenv("FUNCML_TILED", "0")
    assert not tiled.available()
    monkeypatch.setattr(tiled, "latent_grads", lambda *a: pytest.fail("tiled pass used while switched off"))
    ref = fused.latent_grads(net, coords, phi, values, weights, context)
    for a, b in zip(got, ref):
        assert _rel(a, b) < 1e-5


def test_tiled_result_does_not_depend_on_the_thread_count():
    net = _net(2)
    coords, values, weights, phi = _problem(2, b=4, n=500)
    context = torch.arange(0, 500, 3)
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = fused.latent_grads(net, coords, phi, values, weights, context)
        torch.set_num_threads(2)
        two = fused.latent_grads(net, coords, phi, values, weights, context)
    finally:
        torch.set_num_threads(old)
    for a, b in zip(one, two):
        assert torch.equal(a, b)


def test_rows_with_huge_arguments_take_libm_and_match_aten(monkeypatch):
    net = _net(1)
    with torch.no_grad():
        net.first.bias.add_(3e4)  # first-layer arguments omega_1 * 3e4 beyond the polynomial's range
    coords, values, weights, phi = _problem(1, b=2, n=64)
    got = fused.latent_grads(net, coords, phi, values, weights)
    monkeypatch.setenv("FUNCML_FUSED_LOOPS", "0")  # ATen's sin and cos, and no tiled pass
    assert not tiled.available()
    ref = fused.latent_grads(net, coords, phi, values, weights)
    assert torch.isfinite(got[1]).all()
    assert _rel(got[0], ref[0]) < 1e-5 and _rel(got[1], ref[1]) < 1e-4


def test_tile_rows_fit_the_budget_and_clamp():
    assert tiled.tile_rows(5, 128) == 256    # (5 + 3) * 256 * 128 floats = 1 MiB
    assert tiled.tile_rows(14, 256) == 48    # 60 rounded down to a multiple of 16
    assert tiled.tile_rows(1, 8) == 512 and tiled.tile_rows(100, 1024) == 16


def test_float64_other_devices_and_oversized_signals_keep_the_layer_path(monkeypatch):
    net = _net(1)
    coords, values, _, phi = _problem(1)
    omegas = tuple(net.omegas[:net.num_sine_layers])
    params = tuple(fused.flat_params(net))
    assert tiled.applies(coords, values, None, omegas, phi, params, None)
    params64 = tuple(fused.flat_params(_net(1).double()))
    assert not tiled.applies(coords.double(), values.double(), None, omegas, phi.double(), params64, None)
    meta = torch.zeros(1, device="meta")
    assert not tiled.applies(coords, values, meta, omegas, phi, params, None)
    monkeypatch.setattr(tiled, "PART_BYTES", tiled.part_bytes(150, 4, 32, False))  # exactly one signal, unmasked
    assert tiled.applies(coords, values, None, omegas, phi, params, None)
    assert not tiled.applies(coords, values, None, omegas, phi, params, torch.tensor([0, 1]))  # masked: twice


def test_large_batches_run_in_groups_with_the_same_result(monkeypatch):
    net = _net(1)
    coords, values, weights, phi = _problem(1, b=7, n=200, masked=True)
    context = torch.arange(0, 200, 5)
    whole = fused.latent_grads(net, coords, phi, values, weights, context)
    one_signal = tiled.part_bytes(200, 4, 32, True)
    monkeypatch.setattr(tiled, "PART_BYTES", 3 * one_signal)  # groups of 3 + 3 + 1 signals
    calls = []
    lib = fused_loops._load()
    monkeypatch.setattr(fused_loops, "_load", lambda: _Spy(lib, calls))
    grouped = fused.latent_grads(net, coords, phi, values, weights, context)
    assert calls == [3, 3, 1]
    for a, b in zip(whole, grouped):
        assert torch.equal(a, b)
    monkeypatch.setattr(tiled, "PART_BYTES", one_signal - 1)  # not even one signal: the layer path
    layers = fused.latent_grads(net, coords, phi, values, weights, context)
    assert calls == [3, 3, 1]
    for a, b in zip(whole, layers):
        assert _rel(a, b) < 1e-5


class _Spy:
    """The C library with its tiled entry point recording the batch size of each call."""

    def __init__(self, lib, calls):
        self._lib, self._calls = lib, calls

    def __getattr__(self, name):
        return getattr(self._lib, name)

    def funcml_latent_grads(self, *args):
        self._calls.append(args[10])
        return self._lib.funcml_latent_grads(*args)
