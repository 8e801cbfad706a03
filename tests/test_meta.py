"""Meta-learning: second-order meta-gradient, context reduction, micro-batching, meta-SGD."""

import copy

import pytest
import torch

from funcml.encoders.config import FieldConfig
from funcml.encoders.coords import make_grid, signals_to_values
from funcml.encoders.meta import accumulate_meta_gradient, adapt_latents, draw_subsets, meta_losses, per_signal_mse
from funcml.encoders.siren import ModulatedSiren


def _tiny(meta_sgd=False, seed=0):
    torch.manual_seed(seed)
    cfg = FieldConfig(dim_in=1, channels=1, width=5, depth=3, latent_dim=3, omega_first=3.0, omega_last=6.0, meta_sgd=meta_sgd)
    return ModulatedSiren(cfg, inner_lr=0.3).double()


def _data(b=3, n=9, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 1, n, generator=g, dtype=torch.float64)


def _outer_mean(net, coords, x, subsets, lr, first_order=False):
    outer, _ = meta_losses(net, coords, x, subsets, lr, first_order)
    return outer.mean()


def test_second_order_meta_gradient_matches_finite_differences():
    net = _tiny()
    x = _data()
    coords = make_grid((9,), dtype=torch.float64)
    subsets = [torch.tensor([0, 2, 3, 7]), torch.tensor([1, 4, 5, 8]), None]
    accumulate_meta_gradient(net, coords, x, subsets, 0.3, first_order=False, loss_scale=1 / 3)
    analytic = {n: p.grad.clone() for n, p in net.named_parameters()}
    eps = 1e-6
    checked = 0
    for name, p in net.named_parameters():
        flat = p.data.view(-1)
        for i in range(0, flat.numel(), max(1, flat.numel() // 4)):
            old = flat[i].item()
            flat[i] = old + eps
            up = _outer_mean(net, coords, x, subsets, 0.3).item()
            flat[i] = old - eps
            down = _outer_mean(net, coords, x, subsets, 0.3).item()
            flat[i] = old
            numeric = (up - down) / (2 * eps)
            assert analytic[name].view(-1)[i].item() == pytest.approx(numeric, rel=1e-5, abs=1e-9), (name, i)
            checked += 1
    assert checked > 15


def test_first_order_drops_the_second_order_terms():
    net = _tiny()
    x = _data()
    coords = make_grid((9,), dtype=torch.float64)
    subsets = [None, None]
    accumulate_meta_gradient(net, coords, x, subsets, 0.3, first_order=True, loss_scale=1 / 3)
    fo = {n: p.grad.clone() for n, p in net.named_parameters()}
    # Independent first-order reference: adapt with the graph cut, then differentiate the outer loss
    # at the adapted (constant) latents.
    net.zero_grad()
    values = signals_to_values(x)
    phi = torch.zeros(3, 3, dtype=torch.float64, requires_grad=True)
    for _ in subsets:
        loss = per_signal_mse(net(coords, phi), values).sum()
        (g,) = torch.autograd.grad(loss, phi)
        phi = (phi - 0.3 * g).detach().requires_grad_(True)
    per_signal_mse(net(coords, phi.detach()), values).mean().backward()
    for n, p in net.named_parameters():
        assert torch.allclose(fo[n], p.grad, atol=1e-12), n
    net.zero_grad()
    accumulate_meta_gradient(net, coords, x, subsets, 0.3, first_order=False, loss_scale=1 / 3)
    so = {n: p.grad.clone() for n, p in net.named_parameters()}
    assert not torch.allclose(fo["shift.weight"], so["shift.weight"], atol=1e-6)


def test_context_subsets_are_fresh_per_step_and_of_size_gamma_n():
    g = torch.Generator().manual_seed(0)
    subsets = draw_subsets(784, 0.25, 5, g)
    assert all(len(s) == 196 and len(set(s.tolist())) == 196 for s in subsets)
    assert all(int(s.min()) >= 0 and int(s.max()) < 784 for s in subsets)
    assert len({tuple(s.tolist()) for s in subsets}) == 5
    assert draw_subsets(784, 1.0, 3, g) == [None, None, None]


def test_inner_steps_only_see_their_context_and_outer_loss_sees_everything():
    net = _tiny()
    coords = make_grid((9,), dtype=torch.float64)
    x = _data()
    subsets = [torch.tensor([0, 1, 2]), torch.tensor([3, 4])]
    phi_a, _ = adapt_latents(net, coords, signals_to_values(x), subsets, 0.3, create_graph=False)
    x2 = x.clone()
    x2[..., 5:] = 1.0 - x2[..., 5:]  # change only coordinates outside every context subset
    phi_b, _ = adapt_latents(net, coords, signals_to_values(x2), subsets, 0.3, create_graph=False)
    assert torch.allclose(phi_a, phi_b)
    outer_a, _ = meta_losses(net, coords, x, subsets, 0.3)
    outer_b, _ = meta_losses(net, coords, x2, subsets, 0.3)
    assert not torch.allclose(outer_a, outer_b)


@pytest.mark.parametrize("micro", [1, 2])
def test_micro_batched_update_equals_full_batch_update(micro):
    torch.manual_seed(0)
    cfg = FieldConfig(dim_in=2, channels=1, width=16, depth=4, latent_dim=8, omega_first=10, omega_last=30)
    net_a = ModulatedSiren(cfg, inner_lr=0.5)
    net_b = copy.deepcopy(net_a)
    x = torch.rand(5, 1, 6, 6, generator=torch.Generator().manual_seed(2))
    coords = make_grid((6, 6))
    subsets = draw_subsets(36, 0.5, 3, torch.Generator().manual_seed(3))
    results = []
    for net, mb in ((net_a, None), (net_b, micro)):
        opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
        opt.zero_grad()
        stats = accumulate_meta_gradient(net, coords, x, subsets, 0.5, first_order=False, loss_scale=1 / 5,
                                         micro_batch_size=mb)
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        results.append(stats.means())
    for (n, pa), pb in zip(net_a.named_parameters(), net_b.parameters()):
        assert torch.allclose(pa, pb, atol=1e-7, rtol=1e-5), n
    assert results[0]["loss_outer"] == pytest.approx(results[1]["loss_outer"], rel=1e-6)


def test_meta_sgd_learns_per_dimension_inner_rates():
    net = _tiny(meta_sgd=True)
    assert net.inner_lr.shape == (3,) and torch.allclose(net.inner_lr, torch.full((3,), 0.3, dtype=torch.float64))
    coords = make_grid((9,), dtype=torch.float64)
    for first_order in (False, True):
        net.zero_grad()
        accumulate_meta_gradient(net, coords, _data(), [None, None], 0.3, first_order=first_order, loss_scale=1.0)
        assert net.inner_lr.grad is not None and net.inner_lr.grad.abs().sum() > 0


def test_inner_loop_reduces_the_loss():
    net = _tiny()
    coords = make_grid((9,), dtype=torch.float64)
    values = signals_to_values(_data())
    before = per_signal_mse(net(coords, torch.zeros(3, 3, dtype=torch.float64)), values)
    phi, _ = adapt_latents(net, coords, values, [None] * 5, 0.3, create_graph=False)
    after = per_signal_mse(net(coords, phi), values)
    assert (after < before).all()
