"""The fused element-wise loops (funcml.encoders.fused_loops): values, in-place contracts, fall-backs, build."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from funcml.encoders import fused_loops as loops

needs_compiler = pytest.mark.skipif(loops._compiler() is None, reason="no C compiler: the ATen path is used")


def _reference(u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    d = u.double()
    return d.sin(), d.cos()


@needs_compiler
def test_the_fused_loop_builds_and_runs_here():
    assert loops.available()
    u = torch.randn(10_000)
    assert loops._applies(u.numel(), u) and loops.enabled_on('cpu')


@needs_compiler
@pytest.mark.parametrize("scale", [1.0, 30.0, 400.0, 5000.0, 60000.0])
def test_values_are_float32_rounding_of_the_exact_ones(scale):
    g = torch.Generator().manual_seed(int(scale))
    u = torch.randn(200_000, generator=g) * scale
    ref_s, ref_c = _reference(u)
    s, c = torch.empty_like(u), torch.empty_like(u)
    loops.sin_cos_into(u, s, c)
    # 1.5 ulp near 1; ATen's own error is 0.5 ulp (3.6e-8)
    assert (s.double() - ref_s).abs().max().item() < 1.5e-7
    assert (c.double() - ref_c).abs().max().item() < 1.5e-7
    # and they are not simply ATen's (the fused loop really ran)
    assert not torch.equal(s, torch.sin(u))


@needs_compiler
def test_large_and_non_finite_arguments_take_the_exact_path():
    u = torch.randn(50_000) * 10
    u[17] = 3.0e5
    u[99] = -1.0e9
    u[1234] = float("nan")
    u[4321] = float("inf")
    s, c = torch.empty_like(u), torch.empty_like(u)
    loops.sin_cos_into(u, s, c)
    finite = torch.isfinite(u)
    ref_s, ref_c = _reference(u[finite])
    assert (s[finite].double() - ref_s).abs().max().item() < 1.5e-7
    assert (c[finite].double() - ref_c).abs().max().item() < 1.5e-7
    assert torch.isnan(s[1234]) and torch.isnan(c[1234]) and torch.isnan(s[4321]) and torch.isnan(c[4321])


@needs_compiler
def test_results_do_not_depend_on_the_thread_count():
    u = torch.randn(301_000) * 100
    old = torch.get_num_threads()
    try:
        shift = torch.randn(1, 1000)
        torch.set_num_threads(1)
        a = loops.shifted_sin_cos(u.view(301, 1000)[:300].clone(), shift)
        torch.set_num_threads(2)
        b = loops.shifted_sin_cos(u.view(301, 1000)[:300].clone(), shift)
    finally:
        torch.set_num_threads(old)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


@pytest.mark.parametrize("case", ["float64", "strided", "small", "grad", "aten"])
def test_fallbacks_compute_exactly_atens_values(case, monkeypatch):
    u = torch.randn(64, 200) * 20
    if case == "float64":
        u = u.double()
    elif case == "strided":
        u = u.t()
    elif case == "small":
        u = u[:2, :10].contiguous()
    elif case == "aten":
        monkeypatch.setenv("FUNCML_FUSED_LOOPS", "0")
    if case == "grad":
        u.requires_grad_(True)
        assert not loops._applies(u.numel(), u)
        return
    assert not loops._applies(u.numel(), u)
    s, c = torch.empty_like(u), torch.empty_like(u)
    loops.sin_cos_into(u, s, c)
    assert torch.equal(s, torch.sin(u)) and torch.equal(c, torch.cos(u))


@needs_compiler
def test_a_fresh_cache_builds_the_library_atomically(tmp_path):
    code = ("import torch; from funcml.encoders import fused_loops as loops; "
            "assert loops.available(); p = loops.library_path(loops._compiler()); "
            "assert p.parent == loops.cache_dir() and p.exists(); print(p)")
    env = {**os.environ, "FUNCML_CACHE_DIR": str(tmp_path / "cache")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    files = sorted(p.name for p in (tmp_path / "cache").iterdir())
    assert len(files) == 1 and files[0].startswith("fused-loops-") and files[0].endswith(".so")  # no temp left behind


def test_without_a_compiler_everything_runs_on_aten(tmp_path):
    code = ("import torch; from funcml.encoders import fused_loops as loops; "
            "assert not loops.available(); u = torch.randn(100, 1000); o = u.clone(); sh = torch.randn(100, 1000); "
            "s, c = loops.shifted_sin_cos(u.view(1, 100, 1000), sh.view(1, 100000)[:, :1000]); "
            "assert torch.equal(s[0], (o + sh[0, :1000]).sin()) and torch.equal(c[0], (o + sh[0, :1000]).cos())")
    env = {**os.environ, "FUNCML_CACHE_DIR": str(tmp_path / "cache"), "PATH": str(tmp_path), "CC": ""}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr


@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize("with_acc", [False, True])
def test_shifted_activation_matches_sin_and_cos_of_the_sum(shared, with_acc):
    g = torch.Generator().manual_seed(3)
    B, n, L = 4, 300, 64
    u = torch.randn(*((n, L) if shared else (B, n, L)), generator=g) * 40
    shift = torch.randn(B, 1, L, generator=g) * 40
    x = (u.unsqueeze(0) if shared else u) + shift
    ref_s, ref_c = x.double().sin(), x.double().cos()
    acc = torch.randn(B, n, L, generator=g) if with_acc else None
    acc0 = None if acc is None else acc.clone()
    s, c = loops.shifted_sin_cos(u, shift, acc=acc)
    assert c.shape == (B, n, L) and s.shape == (B, n, L)
    if not shared:
        assert c.data_ptr() == u.data_ptr()     # cos x written where u was
    if with_acc:
        assert s is acc
        ref_s = ref_s + acc0.double()
    tol = 3e-7 if with_acc else 1.5e-7
    assert (s.double() - ref_s).abs().max().item() < tol * max(1.0, float(ref_s.abs().max()))
    assert (c.double() - ref_c).abs().max().item() < 1.5e-7


@pytest.mark.parametrize("huge_row", [False, True])
def test_a_residual_sum_and_its_sines_in_one_pass_are_the_separate_ones_bit_for_bit(huge_row):
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
    ref_s, ref_c = loops.shifted_sin_cos(u.clone(), shift)
    ref_acc = acc + ref_s
    s, c = loops.shifted_sin_cos(u, shift, acc=acc, keep_sin=True)   # u's memory receives cos x
    assert s is not acc and s.data_ptr() != acc.data_ptr()
    assert torch.equal(s, ref_s) and torch.equal(c, ref_c) and torch.equal(acc, ref_acc)
    assert (s.double() - x.sin()).abs().max() < 1.5e-7


@needs_compiler
@pytest.mark.parametrize("case", ["factored", "factored-row", "cbar", "none"])
def test_field_adjoint_is_the_products_and_their_coordinate_sums_in_one_pass(case, monkeypatch):
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
    lib, calls = loops._load(), []

    class Counting:  # the compiled library, counting the calls of its two loops
        def __getattr__(self, name):
            calls.append(name)
            return getattr(lib, name)

    monkeypatch.setattr(loops, "_load", lambda: Counting())
    out = torch.full((B, n, L), float("nan"))
    ubar, t = loops.field_adjoint(c, xbar, None if cbar is None else s, cbar, gk, out=out)
    assert calls == ["funcml_mul_sum" if cbar is None else "funcml_field_adjoint"]
    assert ubar is out and t.shape == (B, L)
    assert (ubar.double() - ref).abs().max().item() < 1e-5
    assert (t.double() - ref.sum(dim=1)).abs().max().item() < 1e-4


@needs_compiler
def test_field_adjoint_falls_back_to_aten_and_is_deterministic_for_a_thread_count(monkeypatch):
    g = torch.Generator().manual_seed(12)
    B, n, L = 2, 500, 32
    c, xbar, s, gg, q = (torch.randn(B, n, L, generator=g) for _ in range(5))
    fused = loops.field_adjoint(c, xbar, s, q, gg)
    again = loops.field_adjoint(c, xbar, s, q, gg)
    assert torch.equal(fused[0], again[0]) and torch.equal(fused[1], again[1])
    monkeypatch.setenv("FUNCML_FUSED_LOOPS", "0")
    aten = loops.field_adjoint(c, xbar, s, q, gg)
    assert torch.equal(aten[0], (c * xbar).addcmul_(s, q * gg, value=-1.0))
    assert torch.equal(aten[1], aten[0].sum(dim=1))
    assert (fused[0] - aten[0]).abs().max() < 1e-5 and (fused[1] - aten[1]).abs().max() < 1e-4


@pytest.mark.parametrize("with_context", [False, True])
def test_mul_sum_is_the_product_and_its_sums_over_coordinates(with_context):
    g = torch.Generator().manual_seed(4)
    B, n, L = 3, 777, 96
    c = torch.randn(B, n, L, generator=g)
    grad = torch.randn(B, n, L, generator=g)
    context = torch.randperm(n, generator=g)[:190].sort().values if with_context else None
    q_ref = (c.double() * grad.double())
    t, sub = loops.mul_sum_(c, grad, context)
    assert torch.allclose(c.double(), q_ref, atol=1e-6, rtol=0)   # c now holds the product
    assert torch.allclose(t.double(), q_ref.sum(dim=1), atol=2e-5, rtol=0)
    if with_context:
        assert torch.allclose(sub.double(), q_ref[:, context].sum(dim=1), atol=2e-5, rtol=0)
    else:
        assert sub is None


def test_mul_sum_is_deterministic_for_a_thread_count():
    g = torch.Generator().manual_seed(5)
    c = torch.randn(5, 784, 128, generator=g)
    grad = torch.randn(5, 784, 128, generator=g)
    ctx = torch.arange(0, 784, 4)
    a = loops.mul_sum_(c.clone(), grad, ctx)
    b = loops.mul_sum_(c.clone(), grad, ctx)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
