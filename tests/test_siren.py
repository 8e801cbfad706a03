"""The latent-modulated SIREN: omega-schedule, initialisation, forward pass against a reference."""

import math

import pytest
import torch

from funcml.encoders.config import FieldConfig
from funcml.encoders.siren import ModulatedSiren, omega_schedule
from funcml.errors import ConfigError


def test_omega_schedule_is_linear_from_first_to_last():
    om = omega_schedule(15, 20.0, 400.0)
    assert len(om) == 15 and om[0] == 20.0 and om[-1] == pytest.approx(400.0)
    steps = [b - a for a, b in zip(om, om[1:])]
    assert all(s == pytest.approx(380.0 / 14) for s in steps)
    assert omega_schedule(5, 30.0, 30.0) == [30.0] * 5  # classic SIREN as the special case


def test_network_uses_each_layers_omega():
    net = ModulatedSiren(FieldConfig(dim_in=2, channels=1, width=8, depth=6, latent_dim=4, omega_first=20, omega_last=400))
    assert net.omegas == omega_schedule(6, 20, 400)
    assert len(net.hidden) == 4  # depth 6 = 1 first + 4 hidden sine layers + 1 output layer
    assert net.shift.out_features == 5 * 8


def test_siren_initialisation_ranges_follow_each_layers_omega():
    torch.manual_seed(0)
    cfg = FieldConfig(dim_in=2, channels=3, width=256, depth=5, latent_dim=64, omega_first=20, omega_last=400)
    net = ModulatedSiren(cfg)
    om = net.omegas
    first_bound = 1.0 / 2
    assert net.first.weight.abs().max() <= first_bound
    assert net.first.weight.abs().max() > 0.9 * first_bound
    for k, layer in enumerate(net.hidden, start=1):
        bound = math.sqrt(6 / 256) / om[k]
        w = layer.weight.abs()
        assert w.max() <= bound and w.max() > 0.99 * bound
        # uniform: the mean absolute value is bound / 2
        assert w.mean().item() == pytest.approx(bound / 2, rel=0.02)
    out_bound = math.sqrt(6 / 256) / om[-1]
    assert net.out.weight.abs().max() <= out_bound
    shift_bound = 1 / math.sqrt(64)
    assert net.shift.weight.abs().max() <= shift_bound and net.shift.weight.abs().max() > 0.99 * shift_bound


def _reference_forward(net: ModulatedSiren, coords: torch.Tensor, phi: torch.Tensor) -> torch.Tensor:
    """Straight from the formulas, one signal and one coordinate at a time."""
    L = net.config.width
    outs = []
    for b in range(phi.shape[0]):
        s = net.shift.weight @ phi[b] + net.shift.bias
        rows = []
        for c in coords:
            x = torch.sin(net.omegas[0] * (net.first.weight @ c + net.first.bias + s[:L]))
            for k, layer in enumerate(net.hidden, start=1):
                x = x + torch.sin(net.omegas[k] * (layer.weight @ x + layer.bias + s[k * L:(k + 1) * L]))
            rows.append(net.out.weight @ x + net.out.bias + 0.5)
        outs.append(torch.stack(rows))
    return torch.stack(outs)


def test_forward_matches_reference_formulas():
    torch.manual_seed(1)
    net = ModulatedSiren(FieldConfig(dim_in=3, channels=2, width=6, depth=4, latent_dim=5, omega_first=5, omega_last=15)).double()
    coords = torch.rand(7, 3, dtype=torch.float64) * 2 - 1
    phi = torch.randn(3, 5, dtype=torch.float64)
    assert torch.allclose(net(coords, phi), _reference_forward(net, coords, phi), atol=1e-12)
    # per-signal coordinates give the same result as one shared grid
    assert torch.allclose(net(coords.expand(3, 7, 3), phi), net(coords, phi), atol=1e-12)


def test_output_is_centred_at_one_half():
    net = ModulatedSiren(FieldConfig(dim_in=1, channels=1, width=4, depth=3, latent_dim=2))
    with torch.no_grad():
        net.out.weight.zero_()
        net.out.bias.zero_()
    y = net(torch.linspace(-1, 1, 5)[:, None], torch.zeros(2, 2))
    assert torch.equal(y, torch.full((2, 5, 1), 0.5))


@pytest.mark.parametrize("bad", [dict(depth=1), dict(width=0), dict(latent_dim=0), dict(dim_in=4), dict(omega_first=-1.0)])
def test_invalid_architectures_are_refused(bad):
    args = dict(dim_in=2, channels=1) | bad
    with pytest.raises(ConfigError):
        ModulatedSiren(FieldConfig(**args))
