"""Every backend against the reference (plain autograd, funcml.encoders.meta/fitting): meta-gradients,
training trajectories and encoded latents in float64 and float32; which backend runs where; the
choice recorded in configurations, models and latent sets; no state left behind between calls."""

import dataclasses
import json

import numpy as np
import pytest
import torch

from funcml.backends import BACKENDS, Execution, backend_for, native, resolve
from funcml.backends import fused as fused_mod
from funcml.encoders.config import EncodeConfig, FieldConfig, TrainConfig
from funcml.encoders.coords import make_grid
from funcml.encoders.dispatch import fast_path
from funcml.encoders.fitting import fit_latents
from funcml.encoders.meta import accumulate_meta_gradient, adapt_latents, draw_subsets, per_signal_mse
from funcml.encoders.siren import ModulatedSiren
from funcml.errors import ConfigError

FAST = ["fused"] + (["cpu"] if native.available() else [])
TOLERANCE = {torch.float64: 1e-10, torch.float32: 2e-4}


def _rel(a, b):
    return ((a - b).abs().max() / a.abs().max().clamp_min(1e-30)).item()


def _setup(dtype=torch.float32, seed=0, meta_sgd=False):
    """A float32 or float64 network at a size where the cpu backend's loops and tiled pass apply."""
    torch.manual_seed(seed)
    cfg = FieldConfig(dim_in=2, channels=1, width=32, depth=5, latent_dim=16, omega_first=10.0, omega_last=60.0,
                      meta_sgd=meta_sgd)
    net = ModulatedSiren(cfg).to(dtype)
    x = torch.rand(6, 1, 16, 16, generator=torch.Generator().manual_seed(seed + 1), dtype=dtype)
    return net, x, make_grid((16, 16)).to(dtype)


def _meta_gradient(net, coords, x, execution, first_order=False, micro=None):
    net.zero_grad()
    subsets = draw_subsets(coords.shape[0], 0.25, 3, torch.Generator().manual_seed(5))
    stats = accumulate_meta_gradient(net, coords, x, subsets, 1e-2, first_order=first_order, loss_scale=1 / 6,
                                     micro_batch_size=micro, execution=execution)
    return [p.grad.clone() for p in net.parameters()], stats.means()


@pytest.mark.parametrize("backend", FAST)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["fp64", "fp32"])
@pytest.mark.parametrize("first_order, micro", [(False, None), (False, 4), (True, None)])
def test_the_meta_gradient_of_each_backend_is_the_references(backend, dtype, first_order, micro):
    net, x, coords = _setup(dtype, meta_sgd=micro is not None)
    ref, ref_stats = _meta_gradient(net, coords, x, Execution(backend="reference"), first_order, micro)
    got, stats = _meta_gradient(net, coords, x, Execution(backend=backend), first_order, micro)
    for (name, _), a, b in zip(net.named_parameters(), ref, got):
        assert _rel(a, b) < TOLERANCE[dtype], name
    assert stats == pytest.approx(ref_stats, rel=TOLERANCE[dtype])


@pytest.mark.parametrize("backend", FAST)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["fp64", "fp32"])
@pytest.mark.parametrize("rescale, masked, start", [(True, False, False), (False, True, False), (True, True, True)])
def test_the_latents_of_each_backend_are_the_references(backend, dtype, rescale, masked, start):
    net, x, _ = _setup(dtype)
    g = torch.Generator().manual_seed(3)
    weights = (torch.rand(6, 256, generator=g) > 0.3).to(dtype) if masked else None
    latents = (torch.randn(6, 16, generator=g) * 0.01).to(dtype) if start else None  # no shared first step
    cfg = EncodeConfig(steps=6, inner_lr=1e-2, context_ratio=0.25, grad_rescale=rescale)

    def encode(name):
        return fit_latents(net, x, dataclasses.replace(cfg, backend=name), generator=torch.Generator().manual_seed(2),
                           weights=weights, latents=latents)
    assert _rel(encode("reference"), encode(backend)) < TOLERANCE[dtype]


@pytest.mark.parametrize("backend", FAST)
def test_ten_training_steps_of_each_backend_follow_the_reference(backend):
    """Ten AdamW meta-steps (one pass, micro-batches, recomputation): same losses and weights."""
    runs = {}
    for name, execution, micro, recompute in (("reference", "reference", None, False), ("one", backend, None, False),
                                              ("micro", backend, 2, False), ("recompute", backend, 4, True)):
        net, x, coords = _setup()
        opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
        losses = []
        for step in range(10):
            subsets = draw_subsets(256, 0.25, 3, torch.Generator().manual_seed(100 + step))
            opt.zero_grad()
            st = accumulate_meta_gradient(net, coords, x, subsets, 1e-2, first_order=False, loss_scale=1 / 6,
                                          micro_batch_size=micro, recompute=recompute,
                                          execution=Execution(backend=execution))
            torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            opt.step()
            losses.append(st.means()["loss_outer"])
        runs[name] = (losses, [p.detach().clone() for p in net.parameters()])
    ref_losses, ref_weights = runs["reference"]
    assert ref_losses[-1] < ref_losses[0]  # it learns
    for name, (losses, weights) in runs.items():
        assert losses == pytest.approx(ref_losses, rel=1e-4), name
        for a, b in zip(ref_weights, weights):
            assert torch.allclose(a, b, rtol=1e-4, atol=1e-6), name


def test_auto_is_cpu_on_a_cpu_where_the_loops_are_built_and_fused_elsewhere():
    assert resolve("auto", "cpu") == ("cpu" if native.available() else "fused")
    assert resolve("auto", "cuda") == "fused" and resolve("auto", "meta") == "fused"
    assert resolve("fused", "cpu") == "fused" and resolve("fused", "cuda:1") == "fused"
    with pytest.raises(ConfigError, match="runs on a CPU"):
        resolve("cpu", "cuda")
    assert BACKENDS == ("auto", "reference", "fused", "cpu")
    assert backend_for(Execution(), "cpu") is backend_for(Execution(), "cpu")   # made once
    assert backend_for(Execution(backend="fused"), "cpu").native_loops is False
    assert backend_for(Execution(backend="fused", compile=True), "cpu").tiled is None


@pytest.mark.parametrize("bad", [dict(backend="gpu"), dict(precision="auto"), dict(precision="fp16")])
def test_an_execution_refuses_what_it_cannot_run(bad):
    with pytest.raises(ConfigError):
        Execution(**bad)
    with pytest.raises(ConfigError, match="--backend"):
        TrainConfig(backend="gpu").validate()
    with pytest.raises(ConfigError, match="--precision"):
        EncodeConfig(precision="fp16").validate()


def test_an_execution_comes_from_a_configuration_with_its_precision_resolved():
    train = TrainConfig(backend="fused", precision="auto", compile=True)
    assert Execution.of(train, "cpu") == Execution(backend="fused", precision="fp32", compile=True)
    assert Execution.of(train, "cuda").precision == "tf32"
    assert Execution.of(EncodeConfig(precision="bf16"), "cpu").precision == "bf16"
    with pytest.raises(dataclasses.FrozenInstanceError):
        Execution().backend = "fused"


def test_the_reference_runs_where_no_backend_applies_or_it_is_asked_for(monkeypatch):
    """Subclasses that change the forward pass, per-signal grids, data that need a gradient and the
    reference choice run plain autograd: the inner loop differentiates the subclass's own forward."""
    class Shifted(ModulatedSiren):
        def forward(self, coords, latents):
            return super().forward(coords, latents) + 0.1

    net, x, coords = _setup(torch.float64)
    other = Shifted(net.config).double()
    other.load_state_dict(net.state_dict())
    values = x.flatten(2).transpose(1, 2)
    assert fast_path(None, net, coords, values) is not None
    assert fast_path(None, other, coords, values) is None
    assert fast_path(None, net, coords.expand(6, -1, -1), values) is None
    assert fast_path(None, net, coords, values.clone().requires_grad_(True)) is None
    assert fast_path(Execution(backend="reference"), net, coords, values) is None
    assert fast_path(EncodeConfig(backend="reference"), net, coords, values) is None
    for cls in (fused_mod.InnerStep, fused_mod.FirstStep, fused_mod.OuterLoss):
        monkeypatch.setattr(cls, "apply", lambda *a: pytest.fail("a fused Function ran for the reference"))
    _meta_gradient(net, coords, x, Execution(backend="reference"))
    phi, _ = adapt_latents(other, coords, values, [None, None], 0.2, create_graph=False)
    z = torch.zeros(6, 16, dtype=torch.float64, requires_grad=True)
    g = torch.autograd.grad(per_signal_mse(other(coords, z), values).sum(), z)[0]
    z2 = (-0.2 * g).detach().requires_grad_(True)
    g2 = torch.autograd.grad(per_signal_mse(other(coords, z2), values).sum(), z2)[0]
    assert torch.allclose(phi, z2 - 0.2 * g2, atol=1e-12)


def test_a_lower_precision_changes_only_its_own_calls():
    """Precision travels in the execution: tf32 (emulated on a CPU) and bf16 move the gradient, bf16
    more, and a call at fp32 afterwards gives exactly the numbers it gave before (nothing persists)."""
    net, x, coords = _setup()
    ref, _ = _meta_gradient(net, coords, x, Execution(backend="fused"))
    dev = {p: max(_rel(a, b) for a, b in zip(ref, _meta_gradient(net, coords, x, Execution("fused", p))[0]))
           for p in ("tf32", "bf16")}
    again, _ = _meta_gradient(net, coords, x, Execution(backend="fused"))
    assert all(torch.equal(a, b) for a, b in zip(ref, again))
    # TF32 keeps 10 mantissa bits, bfloat16 7: both move the gradient, bfloat16 more
    assert 1e-5 < dev["tf32"] < dev["bf16"]


def test_traced_kernels_give_the_same_gradients_and_latents(monkeypatch):
    """The kernels as ``torch.compile`` sees them (dynamo-traced, run by the eager backend so that
    the test takes seconds, not the minutes of code generation): same meta-gradient and latents."""
    net, x, coords = _setup()
    cfg = EncodeConfig(steps=3, inner_lr=1e-2, context_ratio=0.25)

    def run(compile_):
        grads, _ = _meta_gradient(net, coords, x, Execution(compile=compile_))
        phi = fit_latents(net, x, dataclasses.replace(cfg, compile=compile_), generator=torch.Generator().manual_seed(2))
        return grads, phi

    ref_grads, ref_phi = run(False)
    real_compile, traced = torch.compile, []
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: traced.append(fn.__name__) or
                        real_compile(fn, backend="eager", dynamic=True))
    fused_mod.compiled.cache_clear()
    try:
        grads, phi = run(True)
    finally:
        fused_mod.compiled.cache_clear()   # the eager-traced kernels stay with this test
    assert {"inner_forward", "inner_backward", "outer_forward", "latent_grads"} <= set(traced)
    assert _rel(ref_phi, phi) < 1e-5
    for a, b in zip(ref_grads, grads):
        assert _rel(a, b) < 1e-5


@pytest.mark.parametrize("compile_", [False, True])
def test_dataset_encoding_compiles_only_when_asked(tmp_path, monkeypatch, compile_):
    """``encode_signal_set`` runs compiled kernels iff its configuration says ``compile`` (eager by default)."""
    from conftest import make_signal_set

    from funcml.backends import kernels
    from funcml.latents.encode import encode_signal_set
    from funcml.encoders.model import FieldModel

    names = []
    monkeypatch.setattr(fused_mod, "compiled", lambda name: names.append(name) or getattr(kernels, name))
    signals = make_signal_set(4, (1, 8), seed=1)
    field = FieldConfig(dim_in=1, channels=1, width=8, depth=2, latent_dim=4, omega_first=5.0, omega_last=10.0)
    model = FieldModel(ModulatedSiren(field), (1, 8), EncodeConfig(steps=2, batch_size=4))
    model.save(tmp_path / "m")
    cfg = dataclasses.replace(model.encode_defaults, compile=compile_)
    latents, _ = encode_signal_set(model, signals, tmp_path / "lat", cfg, model_dir=tmp_path / "m", progress=False)
    assert bool(names) == compile_ and latents.manifest["encoding"]["compile"] is compile_


def test_the_backend_is_chosen_on_the_command_line_and_recorded(tmp_path, capsys):
    """``--backend`` of train and encode: recorded in the training configuration, the checkpoint and the
    latent set; the latents of the reference and of the default backend agree to float32 rounding."""
    from test_cli import TINY, write_medmnist_npz

    from funcml.cli import main
    from funcml.latents import LatentSet

    data = str(write_medmnist_npz(tmp_path / "tiny.npz"))
    with pytest.raises(SystemExit) as exc:
        main(["train", data, "--out", str(tmp_path / "m"), "--steps", "2", "--backend", "reference", "--json", *TINY])
    out = capsys.readouterr()
    assert exc.value.code == 0, out.err
    assert json.loads(out.out.strip().splitlines()[-1])["train"]["backend"] == "reference"
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["training"]["config"]["backend"] == "reference" and config["encode"]["backend"] == "auto"
    for k, backend in enumerate(("reference", "auto")):
        with pytest.raises(SystemExit) as exc:
            main(["encode", data, "--model", str(tmp_path / "m"), "--out", str(tmp_path / f"l{k}"), "--backend", backend])
        assert exc.value.code == 0, capsys.readouterr().err
    sets = [LatentSet.open(tmp_path / f"l{k}") for k in range(2)]
    assert [s.manifest["encoding"]["backend"] for s in sets] == ["reference", "auto"]
    assert sets[0].manifest["encoding"]["precision"] == "fp32"
    a, b = (torch.tensor(np.array(s.latents)) for s in sets)
    assert _rel(a, b) < 1e-4
    with pytest.raises(SystemExit) as exc:
        main(["encode", data, "--model", str(tmp_path / "m"), "--out", str(tmp_path / "l9"), "--backend", "gpu"])
    assert exc.value.code != 0


def test_a_model_written_before_the_execution_fields_loads_as_auto(tmp_path):
    from funcml.encoders.model import FieldModel

    net, _, _ = _setup()
    FieldModel(net, (1, 16, 16), EncodeConfig(steps=2, backend="fused", precision="bf16")).save(tmp_path / "m")
    path = tmp_path / "m" / "config.json"
    config = json.loads(path.read_text())
    assert config["encode"]["backend"] == "fused"
    for key in ("backend", "precision", "compile"):
        del config["encode"][key]
    path.write_text(json.dumps(config))
    defaults = FieldModel.load(tmp_path / "m").encode_defaults
    assert (defaults.backend, defaults.precision, defaults.compile) == ("auto", "auto", False)
