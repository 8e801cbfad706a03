"""The cpu backend: its C loops (funcml.backends.native) against ATen's operations and exact values,
its tiled latent-gradient pass (funcml.backends.tiled) against float64 autograd and the layer path,
the build (setup.py) and the fallback without a built library."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from funcml.backends import Execution, backend_for, native, tiled
from funcml.backends.fused import flat_params, sine_omegas
from funcml.backends.ops import AtenOps
from funcml.encoders.config import FieldConfig
from funcml.encoders.meta import per_signal_mse
from funcml.encoders.siren import ModulatedSiren

ROOT = Path(__file__).resolve().parents[1]
needs_loops = pytest.mark.skipif(not native.available(), reason="the C loops are not built (no C compiler at install)")
needs_tiled = pytest.mark.skipif(not tiled.available(), reason="the tiled pass is unavailable (no loops or no BLAS)")
ATEN = AtenOps()
LOOPS = native.NativeOps(lib=native.library())
OPS = [pytest.param(ATEN, id="aten"), pytest.param(LOOPS, id="loops", marks=needs_loops)]


def _reference(u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    d = u.double()
    return d.sin(), d.cos()


def _rel(a, b):
    return ((a.double() - b.double()).abs().max() / b.double().abs().max()).item()


# -- the C loops -------------------------------------------------------------------------------------------
@needs_loops
@pytest.mark.parametrize("scale", [1.0, 30.0, 400.0, 5000.0, 60000.0])
def test_values_are_float32_rounding_of_the_exact_ones(scale):
    g = torch.Generator().manual_seed(int(scale))
    u = torch.randn(200_000, generator=g) * scale
    ref_s, ref_c = _reference(u)
    s, c = torch.empty_like(u), torch.empty_like(u)
    LOOPS.sin_cos_into(u, s, c)
    # 1.5 ulp near 1; ATen's own error is 0.5 ulp (3.6e-8)
    assert (s.double() - ref_s).abs().max().item() < 1.5e-7
    assert (c.double() - ref_c).abs().max().item() < 1.5e-7
    # and they are not simply ATen's (the loop really ran)
    assert not torch.equal(s, torch.sin(u))


@needs_loops
def test_large_and_non_finite_arguments_take_the_exact_path():
    u = torch.randn(50_000) * 10
    u[17] = 3.0e5
    u[99] = -1.0e9
    u[1234] = float("nan")
    u[4321] = float("inf")
    s, c = torch.empty_like(u), torch.empty_like(u)
    LOOPS.sin_cos_into(u, s, c)
    finite = torch.isfinite(u)
    ref_s, ref_c = _reference(u[finite])
    assert (s[finite].double() - ref_s).abs().max().item() < 1.5e-7
    assert (c[finite].double() - ref_c).abs().max().item() < 1.5e-7
    assert torch.isnan(s[1234]) and torch.isnan(c[1234]) and torch.isnan(s[4321]) and torch.isnan(c[4321])


@needs_loops
def test_results_do_not_depend_on_the_thread_count():
    u = torch.randn(301_000) * 100
    old = torch.get_num_threads()
    try:
        shift = torch.randn(1, 1000)
        torch.set_num_threads(1)
        a = LOOPS.shifted_sin_cos(u.view(301, 1000)[:300].clone(), shift)
        torch.set_num_threads(2)
        b = LOOPS.shifted_sin_cos(u.view(301, 1000)[:300].clone(), shift)
    finally:
        torch.set_num_threads(old)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


@pytest.mark.parametrize("case", ["float64", "strided", "small", "grad"])
def test_calls_the_loops_do_not_take_compute_exactly_atens_values(case):
    u = torch.randn(64, 200) * 20
    if case == "float64":
        u = u.double()
    elif case == "strided":
        u = u.t()
    elif case == "small":
        u = u[:2, :10].contiguous()
    if case == "grad":
        u.requires_grad_(True)
        assert not native.applies(u.numel(), u)
        return
    assert not native.applies(u.numel(), u)
    s, c = torch.empty_like(u), torch.empty_like(u)
    LOOPS.sin_cos_into(u, s, c)
    assert torch.equal(s, torch.sin(u)) and torch.equal(c, torch.cos(u))


@pytest.mark.parametrize("ops", OPS)
@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize("with_acc", [False, True])
def test_shifted_activation_matches_sin_and_cos_of_the_sum(ops, shared, with_acc):
    g = torch.Generator().manual_seed(3)
    B, n, L = 4, 300, 64
    u = torch.randn(*((n, L) if shared else (B, n, L)), generator=g) * 40
    shift = torch.randn(B, 1, L, generator=g) * 40
    x = (u.unsqueeze(0) if shared else u) + shift
    ref_s, ref_c = x.double().sin(), x.double().cos()
    acc = torch.randn(B, n, L, generator=g) if with_acc else None
    acc0 = None if acc is None else acc.clone()
    s, c = ops.shifted_sin_cos(u, shift, acc=acc)
    assert c.shape == (B, n, L) and s.shape == (B, n, L)
    if not shared:
        assert c.data_ptr() == u.data_ptr()     # cos x written where u was
    if with_acc:
        assert s is acc
        ref_s = ref_s + acc0.double()
    tol = 3e-7 if with_acc else 1.5e-7
    assert (s.double() - ref_s).abs().max().item() < tol * max(1.0, float(ref_s.abs().max()))
    assert (c.double() - ref_c).abs().max().item() < 1.5e-7


@pytest.mark.parametrize("ops", OPS)
@pytest.mark.parametrize("huge_row", [False, True])
def test_a_residual_sum_and_its_sines_in_one_pass_are_the_separate_ones_bit_for_bit(ops, huge_row):
    """``acc`` with ``keep_sin``: ``s = sin x`` and ``acc + s``, exactly what the pass without ``acc``
    and a separate addition give (also on a row that takes libm for a huge argument)."""
    g = torch.Generator().manual_seed(5)
    B, n, L = 3, 257, 64
    u = torch.randn(B, n, L, generator=g) * 40
    if huge_row:
        u[1, 7, 3] = 1.0e6
    shift = torch.randn(B, L, generator=g) * 40
    acc = torch.randn(B, n, L, generator=g)
    x = (u + shift.unsqueeze(1)).double()          # the float32 argument the loop forms
    ref_s, ref_c = ops.shifted_sin_cos(u.clone(), shift)
    ref_acc = acc + ref_s
    s, c = ops.shifted_sin_cos(u, shift, acc=acc, keep_sin=True)   # u's memory receives cos x
    assert s is not acc and s.data_ptr() != acc.data_ptr()
    assert torch.equal(s, ref_s) and torch.equal(c, ref_c) and torch.equal(acc, ref_acc)
    assert (s.double() - x.sin()).abs().max() < 1.5e-7


class _Counting:
    """The C library, counting the calls of its entry points."""

    def __init__(self, lib, calls):
        self._lib, self._calls = lib, calls

    def __getattr__(self, name):
        self._calls.append(name)
        return getattr(self._lib, name)


@needs_loops
@pytest.mark.parametrize("case", ["factored", "factored-row", "cbar", "none"])
def test_field_adjoint_is_the_products_and_their_coordinate_sums_in_one_pass(case):
    """``ubar = c xbar - s (qbar g)`` (qbar per coordinate, or one row per signal as a strided view
    of a (B, S, L) tensor), ``c xbar - s cbar``, or ``c xbar``, with the sums over coordinates:
    float64 references, a reused output buffer, and the loop really ran (not ATen's kernels)."""
    g = torch.Generator().manual_seed(11)
    B, n, L = 3, 301, 64
    c, xbar, s, gg = (torch.randn(B, n, L, generator=g) for _ in range(4))
    tbar = torch.randn(B, 5, L, generator=g)
    cbar, gk = {"factored": (torch.randn(B, n, L, generator=g), gg), "factored-row": (tbar[:, 2:3], gg),
                "cbar": (torch.randn(B, n, L, generator=g), None), "none": (None, None)}[case]
    ref = c.double() * xbar.double()
    if cbar is not None:
        ref = ref - s.double() * cbar.double() * (1.0 if gk is None else gk.double())
    calls = []
    ops = native.NativeOps(lib=_Counting(native.library(), calls))
    out = torch.full((B, n, L), float("nan"))
    ubar, t = ops.field_adjoint(c, xbar, None if cbar is None else s, cbar, gk, out=out)
    assert calls == ["funcml_mul_sum" if cbar is None else "funcml_field_adjoint"]
    assert ubar is out and t.shape == (B, L)
    assert (ubar.double() - ref).abs().max().item() < 1e-5
    assert (t.double() - ref.sum(dim=1)).abs().max().item() < 1e-4


@needs_loops
def test_field_adjoint_matches_aten_and_is_deterministic_for_a_thread_count():
    g = torch.Generator().manual_seed(12)
    B, n, L = 2, 500, 32
    c, xbar, s, gg, q = (torch.randn(B, n, L, generator=g) for _ in range(5))
    loops = LOOPS.field_adjoint(c, xbar, s, q, gg)
    again = LOOPS.field_adjoint(c, xbar, s, q, gg)
    assert torch.equal(loops[0], again[0]) and torch.equal(loops[1], again[1])
    aten = ATEN.field_adjoint(c, xbar, s, q, gg)
    assert torch.equal(aten[0], (c * xbar).addcmul_(s, q * gg, value=-1.0))
    assert torch.equal(aten[1], aten[0].sum(dim=1))
    assert (loops[0] - aten[0]).abs().max() < 1e-5 and (loops[1] - aten[1]).abs().max() < 1e-4


@pytest.mark.parametrize("ops", OPS)
@pytest.mark.parametrize("with_context", [False, True])
def test_mul_sum_is_the_product_and_its_sums_over_coordinates(ops, with_context):
    g = torch.Generator().manual_seed(4)
    B, n, L = 3, 777, 96
    c = torch.randn(B, n, L, generator=g)
    grad = torch.randn(B, n, L, generator=g)
    context = torch.randperm(n, generator=g)[:190].sort().values if with_context else None
    q_ref = (c.double() * grad.double())
    t, sub = ops.mul_sum_(c, grad, context)
    assert torch.allclose(c.double(), q_ref, atol=1e-6, rtol=0)   # c now holds the product
    assert torch.allclose(t.double(), q_ref.sum(dim=1), atol=2e-5, rtol=0)
    if with_context:
        assert torch.allclose(sub.double(), q_ref[:, context].sum(dim=1), atol=2e-5, rtol=0)
    else:
        assert sub is None


@needs_loops
def test_mul_sum_is_deterministic_for_a_thread_count():
    g = torch.Generator().manual_seed(5)
    c = torch.randn(5, 784, 128, generator=g)
    grad = torch.randn(5, 784, 128, generator=g)
    ctx = torch.arange(0, 784, 4)
    a = LOOPS.mul_sum_(c.clone(), grad, ctx)
    b = LOOPS.mul_sum_(c.clone(), grad, ctx)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


# -- the tiled pass ----------------------------------------------------------------------------------------
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


def _cpu(tiled_pass: bool = True, pass_=None):
    """The cpu backend with or without its tiled pass (or with the given one)."""
    backend = backend_for(Execution(backend="cpu", tiled=tiled_pass), "cpu")
    if pass_ is not None:
        from funcml.backends.backend import FusedBackend

        backend = FusedBackend(backend.ops, name="cpu", tiled=pass_)
    return backend


needs_aten = pytest.mark.skipif(tiled.aten_blas() is None, reason="the ATen sgemm is not built for this torch")
BLAS_CHOICES = ["scipy", pytest.param("aten", marks=needs_aten)]


@needs_tiled
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("gemm_rows", [16, 8])
@pytest.mark.parametrize("blas", BLAS_CHOICES)
def test_tiled_gradients_equal_float64_autograd_across_tiles(channels, masked, gemm_rows, blas, monkeypatch):
    monkeypatch.setenv("FUNCML_TILED_BLAS", blas)
    assert tiled.blas().name == blas
    net = _net(channels)
    coords, values, weights, phi = _problem(channels, masked=masked)
    monkeypatch.setattr(tiled, "TILE_BYTES", 4 * (4 + 3) * 32 * 16)  # 16 rows: 10 tiles, the last of 6
    monkeypatch.setattr(tiled, "SMALL_GEMM", 32 * 32 * gemm_rows)    # 8: two sgemm calls per full tile (scipy)
    assert tiled.tile_rows(4, 32) == 16 and tiled.gemm_rows(32) == gemm_rows
    assert tiled.blas().rows_per_call(32, 16) == (16 if blas == "aten" else gemm_rows)
    context = torch.tensor([0, 5, 17, 40, 99, 149])
    calls = []
    backend = _cpu(pass_=tiled.TiledPass(_Counting(native.library(), calls)))
    loss, grad, sub = backend.latent_grads(net, coords, phi, values, weights, context)
    assert calls == ["funcml_latent_grads"]  # the tiled pass ran
    ref_loss, ref_grad, ref_sub = _autograd64(net, coords, values, weights, phi, context)
    assert _rel(loss, ref_loss) < 1e-5
    assert _rel(grad, ref_grad) < 1e-4 and _rel(sub, ref_sub) < 1e-4


@needs_tiled
def test_tiled_equals_layer_by_layer_kernels_and_switches_off(monkeypatch):
    net = _net(1)
    coords, values, weights, phi = _problem(1, b=5, n=300, masked=True)
    context = torch.arange(0, 300, 7)
    got = _cpu().latent_grads(net, coords, phi, values, weights, context)
    monkeypatch.setenv("FUNCML_TILED", "0")                  # the environment's default of Execution.tiled
    layers = backend_for(Execution(backend="cpu"), "cpu")
    assert layers.tiled is None and _cpu().tiled is not None
    for a, b in zip(got, layers.latent_grads(net, coords, phi, values, weights, context)):
        assert _rel(a, b) < 1e-5


@needs_tiled
def test_tiled_result_does_not_depend_on_the_thread_count():
    net = _net(2)
    coords, values, weights, phi = _problem(2, b=4, n=500)
    context = torch.arange(0, 500, 3)
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = _cpu().latent_grads(net, coords, phi, values, weights, context)
        torch.set_num_threads(2)
        two = _cpu().latent_grads(net, coords, phi, values, weights, context)
    finally:
        torch.set_num_threads(old)
    for a, b in zip(one, two):
        assert torch.equal(a, b)


@needs_tiled
def test_the_blas_runs_on_one_thread_during_the_pass_only(monkeypatch):
    """Each of the pass's threads calls SciPy's BLAS: it is limited to one thread for the call, then the
    process's own setting is back."""
    monkeypatch.setenv("FUNCML_TILED_BLAS", "scipy")
    libraries = tiled.blas().limiter
    before = [lib.get_num_threads() for lib in libraries.lib_controllers]
    seen = []
    net = _net(1)
    coords, values, weights, phi = _problem(1)

    class Watching:
        def __getattr__(self, name):
            if name == "funcml_latent_grads":
                seen.append([lib.get_num_threads() for lib in libraries.lib_controllers])
            return getattr(native.library(), name)

    _cpu(pass_=tiled.TiledPass(Watching())).latent_grads(net, coords, phi, values, weights)
    assert seen and all(n == 1 for n in seen[0])
    assert [lib.get_num_threads() for lib in libraries.lib_controllers] == before


@needs_tiled
def test_rows_with_huge_arguments_take_libm_and_match_aten():
    net = _net(1)
    with torch.no_grad():
        net.first.bias.add_(3e4)  # first-layer arguments omega_1 * 3e4 beyond the polynomial's range
    coords, values, weights, phi = _problem(1, b=2, n=64)
    got = _cpu().latent_grads(net, coords, phi, values, weights)
    ref = backend_for(Execution(backend="fused"), "cpu").latent_grads(net, coords, phi, values, weights)
    assert torch.isfinite(got[1]).all()
    assert _rel(got[0], ref[0]) < 1e-5 and _rel(got[1], ref[1]) < 1e-4


def _sgemm(address: int):
    """The Fortran-shaped sgemm at ``address`` as a Python callable."""
    import ctypes

    ci, cf = ctypes.POINTER(ctypes.c_int), ctypes.POINTER(ctypes.c_float)
    p = ctypes.c_void_p
    return ctypes.CFUNCTYPE(None, ctypes.c_char_p, ctypes.c_char_p, ci, ci, ci, cf, p, ci, p, ci, cf, p, ci)(address)


@needs_aten
@pytest.mark.parametrize("ta,tb", [("N", "N"), ("T", "N"), ("N", "T"), ("t", "t")])
@pytest.mark.parametrize("alpha,beta", [(1.0, 0.0), (1.0, 1.0), (0.5, -2.0)])
def test_aten_sgemm_is_a_column_major_blas_sgemm(ta, tb, alpha, beta):
    """C = alpha op(A) op(B) + beta C on column-major operands with padded leading dimensions, as BLAS
    defines it; with beta 0 a NaN in C is not read."""
    import ctypes

    g = torch.Generator().manual_seed(0)
    m, n, k, pad = 7, 5, 9, 3
    a_rows, a_cols = (m, k) if ta.upper() == "N" else (k, m)
    b_rows, b_cols = (k, n) if tb.upper() == "N" else (n, k)
    # column-major (rows x cols) with leading dimension rows + pad: a row-major (cols, rows + pad) buffer
    a = torch.randn(a_cols, a_rows + pad, generator=g)
    b = torch.randn(b_cols, b_rows + pad, generator=g)
    c = torch.randn(n, m + pad, generator=g)
    if beta == 0.0:
        c[:, :m] = float("nan")
    c0 = c.clone()
    op_a, op_b = a[:, :a_rows].t(), b[:, :b_rows].t()
    op_a = op_a if ta.upper() == "N" else op_a.t()
    op_b = op_b if tb.upper() == "N" else op_b.t()
    expect = alpha * op_a.double() @ op_b.double() + (0.0 if beta == 0.0 else beta * c0[:, :m].t().double())
    i, f = (lambda v: ctypes.byref(ctypes.c_int(v))), (lambda v: ctypes.byref(ctypes.c_float(v)))
    _sgemm(tiled.aten_blas().address)(ta.encode(), tb.encode(), i(m), i(n), i(k), f(alpha), a.data_ptr(),
                                      i(a_rows + pad), b.data_ptr(), i(b_rows + pad), f(beta), c.data_ptr(),
                                      i(m + pad))
    assert torch.allclose(c[:, :m].t().double(), expect, atol=1e-5)
    assert torch.equal(c[:, m:], c0[:, m:])  # the padding is not written


def test_the_tiled_blas_choice_follows_the_environment(monkeypatch):
    monkeypatch.setenv("FUNCML_TILED_BLAS", "scipy")
    assert tiled.blas() is tiled.scipy_blas()
    for choice in ("aten", "auto", "nonsense"):
        monkeypatch.setenv("FUNCML_TILED_BLAS", choice)
        assert tiled.blas() is (tiled.aten_blas() or tiled.scipy_blas())


def test_an_aten_sgemm_built_for_another_torch_is_not_used(monkeypatch):
    if tiled.aten_blas() is None:
        pytest.skip("the ATen sgemm is not built")
    tiled.aten_blas.cache_clear()
    monkeypatch.setattr(torch, "__version__", "0.0.0-other")
    try:
        assert tiled.aten_blas() is None
        monkeypatch.setenv("FUNCML_TILED_BLAS", "aten")
        assert tiled.blas() is tiled.scipy_blas()
    finally:
        tiled.aten_blas.cache_clear()


def test_tile_rows_fit_the_budget_and_clamp():
    assert tiled.tile_rows(5, 128) == 256    # (5 + 3) * 256 * 128 floats = 1 MiB
    assert tiled.tile_rows(14, 256) == 48    # 60 rounded down to a multiple of 16
    assert tiled.tile_rows(1, 8) == 512 and tiled.tile_rows(100, 1024) == 16


def test_gemm_rows_keep_each_sgemm_small():
    assert tiled.gemm_rows(128) == 56      # 61 rows of (128 x 128) within 10**6 multiply-adds, to a multiple of 8
    assert tiled.gemm_rows(64) == 240 and tiled.gemm_rows(256) == 8
    assert tiled.gemm_rows(512) == 512     # not even 8 rows fit: a whole tile per call


def test_float64_other_devices_and_oversized_signals_keep_the_layer_path(monkeypatch):
    net = _net(1)
    coords, values, _, phi = _problem(1)
    omegas = sine_omegas(net)
    params = tuple(flat_params(net))
    assert tiled.applies(coords, values, None, omegas, phi, params, None)
    params64 = tuple(flat_params(_net(1).double()))
    assert not tiled.applies(coords.double(), values.double(), None, omegas, phi.double(), params64, None)
    meta = torch.zeros(1, device="meta")
    assert not tiled.applies(coords, values, meta, omegas, phi, params, None)
    monkeypatch.setattr(tiled, "PART_BYTES", tiled.part_bytes(150, 4, 32, False))  # exactly one signal, unmasked
    assert tiled.applies(coords, values, None, omegas, phi, params, None)
    assert not tiled.applies(coords, values, None, omegas, phi, params, torch.tensor([0, 1]))  # masked: twice


@needs_tiled
def test_large_batches_run_in_groups_with_the_same_result(monkeypatch):
    net = _net(1)
    coords, values, weights, phi = _problem(1, b=7, n=200, masked=True)
    context = torch.arange(0, 200, 5)
    whole = _cpu().latent_grads(net, coords, phi, values, weights, context)
    one_signal = tiled.part_bytes(200, 4, 32, True)
    monkeypatch.setattr(tiled, "PART_BYTES", 3 * one_signal)  # groups of 3 + 3 + 1 signals
    calls = []
    grouped = _cpu(pass_=tiled.TiledPass(_Spy(native.library(), calls))).latent_grads(
        net, coords, phi, values, weights, context)
    assert calls == [3, 3, 1]
    for a, b in zip(whole, grouped):
        assert torch.equal(a, b)
    monkeypatch.setattr(tiled, "PART_BYTES", one_signal - 1)  # not even one signal: the layer path
    layers = _cpu().latent_grads(net, coords, phi, values, weights, context)
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
        self._calls.append(args[12])
        return self._lib.funcml_latent_grads(*args)


# -- the build and the fallback ---------------------------------------------------------------------------
@pytest.mark.skipif(shutil.which("cc") is None and shutil.which("gcc") is None, reason="no C compiler")
def test_setup_builds_the_loops_and_a_portable_build_leaves_out_the_machine_flags(tmp_path):
    src = tmp_path / "src"
    (src / "funcml" / "backends" / "csrc").mkdir(parents=True)
    shutil.copy(ROOT / "setup.py", src / "setup.py")
    for name in ("cpu_loops.c", "aten_sgemm.cpp"):
        shutil.copy(ROOT / "funcml" / "backends" / "csrc" / name, src / "funcml" / "backends" / "csrc")
    env = {**os.environ, "FUNCML_PORTABLE_BUILD": "1"}
    proc = subprocess.run([sys.executable, "setup.py", "build_ext", "--build-lib", str(tmp_path / "lib"),
                           "--build-temp", str(tmp_path / "tmp")], cwd=src, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "-fopenmp" in proc.stdout and "-O3" in proc.stdout and "-march=native" not in proc.stdout
    (built,) = (tmp_path / "lib" / "funcml" / "backends").glob("_cpu_loops*.so")
    import ctypes

    lib = ctypes.CDLL(str(built))
    assert all(hasattr(lib, name) for name in ("funcml_sincos", "funcml_mul_sum", "funcml_field_adjoint",
                                               "funcml_latent_grads"))
    if shutil.which("c++") or shutil.which("g++"):  # torch is importable here: the ATen sgemm is built for it
        (aten,) = (tmp_path / "lib" / "funcml" / "backends").glob("_aten_sgemm*.so")
        lib = ctypes.CDLL(str(aten))
        lib.funcml_aten_torch_version.restype = ctypes.c_char_p
        assert lib.funcml_aten_torch_version().decode() == torch.__version__ and hasattr(lib, "funcml_aten_sgemm")


def test_without_the_built_loops_auto_runs_the_fused_backend_and_cpu_says_why(tmp_path):
    """A funcml whose C loops were not built (no compiler at install): ``auto`` is the fused backend,
    with exactly its latents, and ``--backend cpu`` ends with a message, not a traceback."""
    shutil.copytree(ROOT / "funcml", tmp_path / "funcml", ignore=shutil.ignore_patterns("*.so", "__pycache__"))
    code = """if True:
        import sys, torch
        from funcml.backends import native, resolve
        from funcml.encoders import EncodeConfig, fit_latents
        from funcml.encoders.config import FieldConfig
        from funcml.encoders.siren import ModulatedSiren
        from funcml.errors import ConfigError
        assert not native.available() and resolve("auto", "cpu") == "fused"
        try:
            resolve("cpu", "cpu")
            sys.exit("cpu without its loops did not raise")
        except ConfigError as exc:
            assert "not built" in str(exc)
        torch.manual_seed(0)
        net = ModulatedSiren(FieldConfig(dim_in=2, channels=1, width=32, depth=4, latent_dim=8))
        x = torch.rand(5, 1, 16, 16, generator=torch.Generator().manual_seed(1))
        phi = fit_latents(net, x, EncodeConfig(steps=3), generator=torch.Generator().manual_seed(2))
        torch.save(phi, sys.argv[1])
    """
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "phi.pt")], env=env, capture_output=True,
                          text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    from funcml.encoders import EncodeConfig, fit_latents
    from funcml.encoders.config import FieldConfig

    torch.manual_seed(0)
    net = ModulatedSiren(FieldConfig(dim_in=2, channels=1, width=32, depth=4, latent_dim=8))
    x = torch.rand(5, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    fused = fit_latents(net, x, EncodeConfig(steps=3, backend="fused"), generator=torch.Generator().manual_seed(2))
    assert torch.equal(torch.load(tmp_path / "phi.pt"), fused)
