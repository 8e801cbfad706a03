"""The fused backend piece by piece: each autograd Function and each exact saving of work gives the
reference's values and gradients (autograd double backward through ``net(coords, phi)``) in float64.

End-to-end equivalence of every backend in float32 and float64 is in ``test_backends.py``; the
cpu backend's C loops and tiled pass in ``test_backend_cpu.py``.
"""

import pytest
import torch

from funcml.backends import Execution, backend_for, kernels, native
from funcml.backends import backend as backend_mod
from funcml.backends import fused
from funcml.backends.ops import AtenOps
from funcml.encoders.config import EncodeConfig, FieldConfig
from funcml.encoders.coords import make_grid
from funcml.encoders.fitting import fit_latents
from funcml.encoders.meta import accumulate_meta_gradient, adapt_latents, draw_subsets, per_signal_mse
from funcml.encoders.siren import ModulatedSiren

FUSED = backend_for(Execution(backend="fused"), "cpu")
REFERENCE = Execution(backend="reference")
AS_FUSED = Execution(backend="fused")


def _net(channels=1, dim=2, seed=0, meta_sgd=False, dtype=torch.float64):
    torch.manual_seed(seed)
    cfg = FieldConfig(dim_in=dim, channels=channels, width=12, depth=5, latent_dim=6, omega_first=5.0,
                      omega_last=40.0, meta_sgd=meta_sgd)
    return ModulatedSiren(cfg, inner_lr=0.2).to(dtype)


def _problem(channels=1, b=3, n=17, masked=False, seed=1):
    g = torch.Generator().manual_seed(seed)
    coords = torch.rand(n, 2, generator=g, dtype=torch.float64) * 2 - 1
    values = torch.rand(b, n, channels, generator=g, dtype=torch.float64)
    weights = (torch.rand(b, n, generator=g) > 0.4).double() if masked else None
    return coords, values, weights


def _rel(a, b):
    return ((a - b).abs().max() / a.abs().max().clamp_min(1e-30)).item()


def _reference_step(net, coords, values, weights, phi, lr):
    """One second-order inner step with autograd, as the reference does it."""
    loss = per_signal_mse(net(coords, phi), values, weights)
    (g,) = torch.autograd.grad(loss.sum(), phi, create_graph=True)
    return phi - lr * g, loss


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("meta_sgd", [False, True])
def test_inner_step_and_outer_loss_match_autograd_to_second_order(channels, masked, meta_sgd):
    net = _net(channels, meta_sgd=meta_sgd)
    coords, values, weights = _problem(channels, masked=masked)
    params = list(net.parameters())
    phi0 = torch.randn(3, 6, dtype=torch.float64, requires_grad=True)
    # two steps then the outer loss, once with autograd and once fused
    lr = net.inner_learning_rate(0.2)
    p, l_ref = _reference_step(net, coords, values, weights, phi0, lr)
    p, _ = _reference_step(net, coords, values, weights, p, lr)
    out_ref = per_signal_mse(net(coords, p), values, weights)
    ref = torch.autograd.grad(out_ref.sum(), [phi0] + params)
    lr = net.inner_learning_rate(0.2)
    q, l_fused = FUSED.inner_step(net, coords, phi0, values, lr, weights)
    q, _ = FUSED.inner_step(net, coords, q, values, lr, weights)
    out = FUSED.outer_loss(net, coords, q, values, weights)
    got = torch.autograd.grad(out.sum(), [phi0] + params)
    assert (net.inner_lr is not None) == meta_sgd
    assert torch.allclose(l_fused, l_ref, rtol=1e-12, atol=0)
    assert torch.allclose(out, out_ref, rtol=1e-12, atol=0)
    assert torch.allclose(q, p, rtol=1e-12, atol=1e-15)
    for (name, _), a, b in zip([("phi", None)] + list(net.named_parameters()), ref, got):
        assert _rel(a, b) < 1e-11, name


@pytest.mark.parametrize("channels", [1, 2])
@pytest.mark.parametrize("masked", [False, True])
def test_first_step_on_one_shared_field_equals_the_batched_step(channels, masked):
    net = _net(channels, meta_sgd=True)
    coords, values, weights = _problem(channels, b=4, masked=masked)
    params = list(net.parameters())
    zero = torch.zeros(4, 6, dtype=torch.float64, requires_grad=True)
    p_ref, l_ref = _reference_step(net, coords, values, weights, zero, net.inner_learning_rate(0.2))
    ref = torch.autograd.grad(per_signal_mse(net(coords, p_ref), values, weights).sum(), params)
    p, loss = FUSED.first_step(net, coords, values, net.inner_learning_rate(0.2), weights)
    got = torch.autograd.grad(FUSED.outer_loss(net, coords, p, values, weights).sum(), params)
    assert torch.allclose(p, p_ref, rtol=1e-11, atol=1e-15) and torch.allclose(loss, l_ref, rtol=1e-12)
    for (name, _), a, b in zip(net.named_parameters(), ref, got):
        assert _rel(a, b) < 1e-11, name  # includes the learnt inner rates (meta-SGD)


@pytest.mark.parametrize("start", ["zero", "random"])
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("chunked", [False, True])
def test_latent_grads_without_graph_give_full_and_context_gradients(start, masked, chunked, monkeypatch):
    net = _net(2)
    coords, values, weights = _problem(2, b=4, masked=masked)
    if chunked:  # cache-sized passes of 3 + 1 signals
        monkeypatch.setattr(backend_mod, "CACHE_CHUNK_ELEMENTS", 3 * 17 * 12)
        assert backend_mod.cache_chunk(4, 17, 12, torch.device("cpu")) == 3
    assert backend_mod.cache_chunk(4, 17, 12, torch.device("meta")) == 4
    phi = torch.zeros(4, 6, dtype=torch.float64) if start == "zero" else torch.randn(4, 6, dtype=torch.float64)
    context = torch.tensor([0, 3, 4, 9, 16])
    loss, grad, sub = FUSED.latent_grads(net, coords, None if start == "zero" else phi, values, weights, context)
    z = phi.clone().requires_grad_(True)
    l_ref = per_signal_mse(net(coords, z), values, weights)
    g_ref = torch.autograd.grad(l_ref.sum(), z)[0]
    w_sub = None if weights is None else weights[:, context]
    s_ref = torch.autograd.grad(per_signal_mse(net(coords[context], z), values[:, context], w_sub).sum(), z)[0]
    assert torch.allclose(loss, l_ref, rtol=1e-12)
    assert _rel(g_ref, grad) < 1e-12 and _rel(s_ref, sub) < 1e-12


def test_shared_first_gradient_only_where_it_saves_work_and_memory(monkeypatch):
    net = _net(2)  # 2 channels, 4 sine layers of width 12
    assert FUSED.shared_first_grads(net, 3, 17) and not FUSED.shared_first_grads(net, 2, 17)
    assert FUSED.shared_first_grads(net, 3, 17) is (16 * 17 * 2 * 4 * 12 <= backend_mod.SHARED_FIRST_MAX_BYTES)
    coords, values, weights = _problem(2, b=4, masked=True)
    context = torch.tensor([0, 3, 4, 9, 16])
    calls = []
    first_grads = kernels.first_grads
    monkeypatch.setattr(kernels, "first_grads", lambda *a: calls.append(1) or first_grads(*a))
    shared = FUSED.latent_grads(net, coords, None, values, weights, context)
    monkeypatch.setattr(backend_mod, "SHARED_FIRST_MAX_BYTES", 16 * 17 * 2 * 4 * 12 - 1)  # one byte short
    per_signal = FUSED.latent_grads(net, coords, None, values, weights, context)
    assert calls == [1]  # the second call ran per signal
    for a, b in zip(shared, per_signal):
        assert _rel(a, b) < 1e-12


def test_second_order_first_step_shares_its_field_only_when_the_batch_has_more_signals_than_channels(monkeypatch):
    """At ``batch <= channels`` the shared field's reverse runs once per channel, as much work as per
    signal, and keeps more: adapt_latents then takes the ordinary inner step from zero (same result)."""
    net = _net(2)
    assert FUSED.shared_first_step(net, 3) and not FUSED.shared_first_step(net, 2)
    assert not FUSED.shared_first_step(net, 1)
    assert not backend_for(Execution(backend="fused", shared_first=False), "cpu").shared_first_step(net, 3)
    coords, values, _ = _problem(2, b=2)
    taken = {"first": 0, "inner": 0}
    for name, cls in (("first", fused.FirstStep), ("inner", fused.InnerStep)):
        def counting(*args, _apply=cls.apply, _name=name):
            taken[_name] += 1
            return _apply(*args)
        monkeypatch.setattr(cls, "apply", counting)
    phi, _ = adapt_latents(net, coords, values, [None, None], 0.2, create_graph=True, execution=AS_FUSED)
    monkeypatch.undo()
    assert taken == {"first": 0, "inner": 2}
    params = list(net.parameters())
    got = torch.autograd.grad(FUSED.outer_loss(net, coords, phi, values).sum(), params)
    ref_phi, _ = adapt_latents(net, coords, values, [None, None], 0.2, create_graph=True, execution=REFERENCE)
    ref = torch.autograd.grad(per_signal_mse(net(coords, ref_phi), values).sum(), params)
    for (name, _), a, b in zip(net.named_parameters(), ref, got):
        assert _rel(a, b) < 1e-11, name


def test_outer_loss_in_parts_of_coordinates_gives_the_same_loss_and_gradients(monkeypatch):
    """On a CPU the outer loss runs over parts of the coordinates when one layer's tensor would pass
    ``OUTER_PART_BYTES``: the parts' losses weighted by their shares give the whole loss and the same
    gradients (float64), also through a :class:`fused.ProjectionGrad`; with weights it stays whole."""
    net = _net(2)
    coords, values, weights = _problem(2, b=3, n=17)
    phi = torch.randn(3, 6, dtype=torch.float64, requires_grad=True)
    params = [phi] + list(net.parameters())
    whole = FUSED.outer_loss(net, coords, phi, values)
    ref = torch.autograd.grad(whole.sum(), params)
    assert fused.outer_part_rows(3, 17, 12, torch.device("cpu")) == 17
    monkeypatch.setattr(fused, "OUTER_WHOLE_BYTES", 4 * 3 * 12 * 16)  # 17 rows are more than whole
    monkeypatch.setattr(fused, "OUTER_PART_BYTES", 4 * 3 * 12 * 5)    # 5 rows per part at most
    assert fused.outer_part_rows(3, 17, 12, torch.device("cpu")) == 5    # four parts: 5, 5, 5, 2
    assert fused.outer_part_rows(3, 17, 12, torch.device("meta")) == 17  # not a CPU: whole
    assert fused.outer_part_rows(3, 16, 12, torch.device("cpu")) == 16   # within OUTER_WHOLE_BYTES: whole
    calls = []
    apply = fused.OuterLoss.apply
    monkeypatch.setattr(fused.OuterLoss, "apply", lambda *a: calls.append(a[1].coords.shape[0]) or apply(*a))
    projection = fused.projection_grad(net)
    parts = FUSED.outer_loss(net, coords, phi, values, projection=projection)
    got = torch.autograd.grad(parts.sum(), params)
    assert calls == [5, 5, 5, 2]
    assert torch.allclose(parts, whole, rtol=1e-13, atol=0)
    for (name, _), a, b in zip([("phi", None)] + list(net.named_parameters()), ref, got):
        assert _rel(a, b) < 1e-12, name
    calls.clear()
    FUSED.outer_loss(net, coords, phi, values, weights=torch.ones(3, 17, dtype=torch.float64))
    assert calls == [17]


def test_recomputation_gives_identical_gradients_and_keeps_less():
    net = _net(1)
    coords, values, _ = _problem(1)
    phi0 = torch.randn(3, 6, dtype=torch.float64)
    grads = []
    for recompute in (False, True):
        net.zero_grad()
        p, _ = FUSED.inner_step(net, coords, phi0, values, 0.2, recompute=recompute)
        FUSED.outer_loss(net, coords, p, values).sum().backward()
        grads.append([q.grad.clone() for q in net.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*grads))


def _primitives():
    """The primitives of both backends (the cpu backend's only where its C loops are built)."""
    return [AtenOps()] + ([native.NativeOps(lib=native.library())] if native.available() else [])


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("ops", _primitives(), ids=lambda o: type(o).__name__)
def test_inner_step_reverse_recomputes_x_and_q_bit_identically_to_keeping_them(channels, ops):
    """Per layer the inner step keeps only sin, cos and g (not the layer inputs ``x_k`` nor ``q_k =
    c_k g_k``: two fifths of its per-coordinate memory); its reverse recomputes them and gives exactly
    the numbers of a reverse from the kept tensors, with ATen's primitives and with the C loops."""
    net = _net(channels).float()
    coords, values, weights = (t.float() if t is not None else None for t in _problem(channels, n=400, masked=True))
    params = tuple(fused.flat_params(net))
    omegas = fused.sine_omegas(net)
    phi = torch.randn(3, 6)
    lr = torch.tensor(0.2)
    with torch.no_grad():  # as inside the autograd Function
        _, _, saved = kernels.inner_forward(ops, coords, values, weights, omegas, phi, lr, params)
        assert saved[2] is None and saved[5] is None and saved[7] is None  # no xs, x_last, qs kept
        h, sigma, wps, _ = kernels.prepare(params, omegas, coords, phi)
        xs, sins, coss, x_last, y = kernels.field_forward(ops, h, sigma, wps, params[-4], params[-3], keep_sin=True)
        # the forward without the xs (x_k = x_{k-1} + s_k in place, in the pass forming s_k) gives the same bits
        no_xs, sins2, coss2, x_last2, y2 = kernels.field_forward(ops, h, sigma, wps, params[-4], params[-3],
                                                                 keep_sin=True, keep_xs=False)
        assert no_xs is None and len(sins) == net.num_sine_layers >= 3
        assert torch.equal(y, y2) and torch.equal(x_last, x_last2)
        assert all(torch.equal(a, b) for a, b in zip(sins + coss, sins2 + coss2))
        xs2, x_last3 = kernels.layer_inputs(sins2)
        assert torch.equal(x_last3, x_last) and all(torch.equal(a, b) for a, b in zip(xs, xs2))
        gs = saved[6]
        _, qs, _ = kernels.closed_grad(ops, gs[-1], coss, wps, keep_q=True)
        kept = saved[:2] + (xs, saved[3], saved[4], x_last, gs, qs) + saved[8:]
        phibar_next = torch.randn(3, 6)
        a = kernels.inner_backward(ops, coords, omegas, phibar_next, phi, lr, params, saved, True, True)
        b = kernels.inner_backward(ops, coords, omegas, phibar_next, phi, lr, params, kept, True, True)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert all(torch.equal(x, y) for x, y in zip(a[2], b[2]))
    assert max(g.abs().max().item() for g in a[2][2:-4:2]) > 0  # the hidden layers' W grads are not trivially 0


@pytest.mark.parametrize("meta_sgd", [False, True])
def test_projection_gradient_of_all_steps_as_one_product_matches_autograd(meta_sgd):
    """With a :class:`fused.ProjectionGrad` the steps leave their rank-B factors of the latent
    projection's gradient and one matmul forms the sum after all of them: the same gradients as
    autograd's double backward (every parameter, float64), and nothing is left behind."""
    net = _net(2, meta_sgd=meta_sgd)
    coords, values, weights = _problem(2, b=4, masked=True)
    subsets = [torch.tensor([0, 3, 5, 8, 9, 12, 16]), None, torch.tensor([1, 2, 4, 6, 10, 11, 13])]
    params = list(net.parameters())
    phi_ref, _ = adapt_latents(net, coords, values, subsets, 0.2, create_graph=True, weights=weights,
                               execution=REFERENCE)
    ref = torch.autograd.grad(per_signal_mse(net(coords, phi_ref), values, weights).sum(), params)
    projection = fused.projection_grad(net)
    taken = []
    take = projection.take
    projection.take = lambda grads: taken.append(len(grads)) or take(grads)
    phi, _ = FUSED.adapt_latents(net, coords, values, subsets, net.inner_learning_rate(0.2), create_graph=True,
                                 weights=weights, projection=projection)
    out = FUSED.outer_loss(net, coords, phi, values, weights, projection=projection)
    got = torch.autograd.grad(out.sum(), params)
    for (name, _), a, b in zip(net.named_parameters(), ref, got):
        assert _rel(a, b) < 1e-11, name
    assert len(taken) == 4  # the first step, two inner steps and the outer loss left factors
    assert projection.us == [] and projection.vs == []
    assert next(g for p, g in zip(params, got) if p is net.shift.weight).abs().max() > 0
    net.shift.weight.requires_grad_(False)  # a frozen projection needs none
    assert fused.projection_grad(net) is None
    with torch.no_grad():
        assert fused.projection_grad(_net(2)) is None


@pytest.mark.parametrize("meta_sgd", [False, True])
@pytest.mark.parametrize("inner_steps", [1, 3])
def test_micro_batches_from_one_shared_first_step_give_the_full_batch_gradient(meta_sgd, inner_steps):
    """Micro-batched second-order meta-steps run the first inner step once for the whole batch and
    its reverse once at the end: the same gradients and statistics as one pass and as autograd."""
    net = _net(1, meta_sgd=meta_sgd)
    coords = make_grid((4, 5)).double()
    x = torch.rand(5, 1, 4, 5, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    subsets = draw_subsets(20, 0.5, inner_steps, torch.Generator().manual_seed(4))
    assert FUSED.shares_first_step(net, 5, 2, False, len(subsets))
    assert not FUSED.shares_first_step(net, 5, 5, False, len(subsets))   # one pass: nothing to share
    assert not FUSED.shares_first_step(net, 5, 2, True, len(subsets))    # first order: no graph to share
    assert not FUSED.shares_first_step(net, 5, 2, False, 0)
    runs = []
    for execution, micro in ((REFERENCE, None), (AS_FUSED, None), (AS_FUSED, 1), (AS_FUSED, 2)):
        net.zero_grad()
        st = accumulate_meta_gradient(net, coords, x, subsets, 0.2, first_order=False, loss_scale=0.2,
                                      micro_batch_size=micro, execution=execution)
        runs.append((st.means(), [p.grad.clone() for p in net.parameters()]))
    ref_stats, ref = runs[0]
    for stats, grads in runs[1:]:
        assert stats == pytest.approx(ref_stats, rel=1e-12)
        for (name, _), a, b in zip(net.named_parameters(), ref, grads):
            assert _rel(a, b) < 1e-11, name


def test_values_of_the_inner_loss_and_latents_from_adapt_latents():
    net = _net(1)
    coords, values, weights = _problem(1, masked=True)
    subsets = [torch.tensor([0, 2, 5, 7]), None, torch.tensor([1, 3, 4])]
    outs = [adapt_latents(net, coords, values, subsets, 0.2, create_graph=True, weights=weights, execution=e)
            for e in (REFERENCE, AS_FUSED)]
    assert torch.allclose(outs[0][0], outs[1][0], rtol=1e-11, atol=1e-14)
    assert torch.allclose(outs[0][1], outs[1][1], rtol=1e-11)


def test_the_layer_path_in_cache_sized_passes_gives_the_latents_of_one_pass(monkeypatch):
    """Encoding runs layer by layer over groups of signals whose activations fit a cache: groups of
    4 + 2 signals give the latents of one pass (float32 rounding of other reduction shapes at most)."""
    torch.manual_seed(0)
    net = ModulatedSiren(FieldConfig(dim_in=2, channels=1, width=32, depth=5, latent_dim=16, omega_first=10.0,
                                     omega_last=60.0))
    x = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    cfg = EncodeConfig(steps=6, inner_lr=1e-2, context_ratio=0.25, backend="fused")
    whole = fit_latents(net, x, cfg, generator=torch.Generator().manual_seed(2))
    monkeypatch.setattr(backend_mod, "CACHE_CHUNK_ELEMENTS", 4 * 64 * net.config.width)
    chunked = fit_latents(net, x, cfg, generator=torch.Generator().manual_seed(2))
    assert _rel(whole, chunked) < 1e-6
