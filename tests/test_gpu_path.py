"""The GPU path, checked on a CPU where a CPU can show it: no host-device synchronisation per inner
step, context subsets drawn with the generator of their device, cached device constants, scoped
TF32, compile without CUDA graphs, pinned host copies."""

from __future__ import annotations

import os

import pytest
import torch

from funcml.backends import Execution, fused, kernels, precision
from funcml.backends.constants import device_constant
from funcml.devices import to_device, to_host
from funcml.encoders.config import EncodeConfig, FieldConfig
from funcml.encoders.coords import make_grid, sample_context
from funcml.encoders.fitting import fit_latents
from funcml.encoders.meta import draw_subsets, meta_losses
from funcml.encoders.siren import ModulatedSiren
from funcml.seeding import on_device
from funcml.syncs import HostSyncOps


def _setup(seed=0):
    torch.manual_seed(seed)
    net = ModulatedSiren(FieldConfig(dim_in=2, channels=1, width=16, depth=4, latent_dim=8), inner_lr=0.01)
    return net, make_grid((8, 8)), torch.rand(6, 1, 8, 8)


AS_ON_A_GPU = Execution(backend="fused")  # the element-wise work in ATen, as on a GPU (no C loops there)


@pytest.mark.parametrize("steps", [1, 3])
def test_a_meta_step_makes_no_tensor_from_host_data_and_reads_nothing_back(steps):
    net, coords, x = _setup()
    subsets = draw_subsets(64, 0.25, steps, torch.Generator().manual_seed(1), coords.device)
    meta_losses(net, coords, x, subsets, 0.01, execution=AS_ON_A_GPU)[0].sum().backward()   # constants made
    with HostSyncOps() as ops:
        outer, _ = meta_losses(net, coords, x, subsets, 0.01, execution=AS_ON_A_GPU)
        outer.sum().backward()
        subsets = draw_subsets(64, 0.25, steps, torch.Generator().manual_seed(2), coords.device)
    assert ops.total == 0, dict(ops.counts)
    # the counter does see what the inner loop used to do at every step
    with HostSyncOps() as ops:
        torch.tensor((1.0, 2.0)).view(-1, 1)
        float(outer.detach().sum())
    assert ops.counts == {"tensor from host data": 1, "host read": 1}


@pytest.mark.parametrize("rescale", [True, False])
def test_encoding_steps_make_no_tensor_from_host_data_and_read_nothing_back(rescale):
    net, _, x = _setup()
    cfg = EncodeConfig(steps=4, context_ratio=0.25, grad_rescale=rescale, backend="fused")
    fit_latents(net, x, cfg, generator=torch.Generator().manual_seed(2))
    with HostSyncOps() as ops:
        fit_latents(net, x, cfg, generator=torch.Generator().manual_seed(2))
    assert ops.total == 0, dict(ops.counts)


def test_context_subsets_are_drawn_by_the_generator_of_their_device():
    g = torch.Generator().manual_seed(7)
    idx = sample_context(100, 0.3, g, torch.device("cpu"))
    expected = torch.randperm(100, generator=torch.Generator().manual_seed(7))[:30].sort().values
    assert torch.equal(idx, expected) and idx.device.type == "cpu"
    assert on_device(g, "cpu") is g and on_device(g, None) is g
    assert sample_context(100, 1.0, g) is None


def test_device_constants_are_made_once_outside_inference_mode():
    with torch.inference_mode():
        c = device_constant((20.0, 40.0), torch.float32, torch.device("cpu"))
    assert not c.is_inference() and c.tolist() == [20.0, 40.0]
    assert device_constant((20.0, 40.0), torch.float32, torch.device("cpu")) is c
    assert device_constant((20.0, 40.0), torch.float64, torch.device("cpu")) is not c
    om = kernels.omega_column((20.0, 40.0), torch.zeros(1))
    assert om.shape == (2, 1) and om.data_ptr() == c.data_ptr()


def test_precision_auto_is_tf32_on_cuda_and_fp32_elsewhere():
    assert precision.resolve("auto", "cuda") == "tf32" and precision.resolve(None, "cuda:1") == "tf32"
    assert precision.resolve("auto", "cpu") == "fp32" and precision.resolve("bf16", "cpu") == "bf16"
    with pytest.raises(ValueError):
        precision.resolve("fp16", "cpu")


def _in_child(check) -> int:
    """Run ``check()`` in a forked process (it changes torch's process-wide flags); its exit code."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            check()
            code = 0
        finally:
            os._exit(code)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


@pytest.mark.parametrize("before", ["untouched", "legacy", "set_float32_matmul_precision", "fp32_precision"])
def test_tf32_is_set_for_a_block_and_a_callers_setting_reads_back_unchanged(before):
    """Whichever of torch's APIs a caller used for TF32 (the legacy flag, the matmul-precision call, the
    newer per-backend setting, which cannot be mixed), it reads back the same after a block."""
    m = torch.backends.cuda.matmul

    def state():
        out = []
        for read in (lambda: m.allow_tf32, lambda: m.fp32_precision, torch.get_float32_matmul_precision):
            try:
                out.append(read())
            except (RuntimeError, AttributeError) as exc:
                out.append(type(exc).__name__)
        return out

    def check():
        {"untouched": lambda: None, "legacy": lambda: setattr(m, "allow_tf32", True),
         "set_float32_matmul_precision": lambda: torch.set_float32_matmul_precision("high"),
         "fp32_precision": lambda: setattr(m, "fp32_precision", "tf32")}[before]()
        old = state()
        for enabled, inside in ((True, "tf32"), (False, "ieee")):
            with precision.scoped("tf32" if enabled else "fp32", "cuda"):
                assert m.fp32_precision == inside
            assert state() == old, (state(), old)
        with precision.scoped("auto", "cuda"):
            assert m.fp32_precision == "tf32"
        with precision.scoped("tf32", "cpu"):    # nothing to do on a CPU
            assert state() == old
        assert state() == old

    if not precision._has_new_api():
        pytest.skip("this torch has no fp32_precision API (before 2.9)")
    assert _in_child(check) == 0


def test_compiling_never_uses_cuda_graphs(monkeypatch):
    """``--compile`` selects the mode without CUDA graphs on every device (docs/gpu.md)."""
    modes = []
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: modes.append(kw.get("mode")) or fn)
    fused.compiled.cache_clear()
    try:
        fused.compiled("inner_forward")
    finally:
        fused.compiled.cache_clear()
    assert modes == ["default"] and fused.COMPILE_MODE == "default"


def test_host_copies_round_trip_and_stay_on_the_cpu_without_a_gpu():
    x = torch.arange(6.0).view(2, 3)
    y = to_device(x.numpy(), "cpu")
    assert torch.equal(y, x)
    host, event = to_host({"a": x, "b": x[0]})
    assert event is None and torch.equal(host["a"], x) and torch.equal(host["b"], x[0])


def test_a_batch_gathered_for_the_device_is_the_batch_the_loop_reads():
    from conftest import make_signal_set

    from funcml.encoders.trainer import gather_batch

    signals = make_signal_set(12, (1, 4, 4), seed=2)
    train_idx = signals.indices("train")
    local = train_idx[[3, 0, 5]]
    cache = torch.from_numpy(signals.get(train_idx))
    expected = torch.from_numpy(signals.get(local))
    for source in (cache, None):
        got = gather_batch(source, signals, train_idx, local, torch.device("cpu"))
        assert torch.equal(got, expected)
