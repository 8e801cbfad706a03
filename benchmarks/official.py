"""Adapter that runs the official MedFuncta code (github pfriedri/medfuncta) next to funcml.

The official code is never part of funcml: point ``MEDFUNCTA_DIR`` (or the benchmark's
``--official DIR`` option) at a checkout, e.g.::

    git clone https://github.com/pfriedri/medfuncta /tmp/medfuncta

It needs ``einops`` and ``pyyaml`` in the benchmark's environment (``.venv/bin/pip install
einops pyyaml``; not part of funcml's pinned set). Two things are worked around here without
editing its files: ``common/utils.py`` imports tensorboard's ``SummaryWriter`` (a stub module is
installed when tensorboard is absent), and ``train/maml_boot.py`` calls ``torch.cuda.synchronize()``
unconditionally (made a no-op on CPU-only machines).

:class:`Official` builds the official ``LatentModulatedSIREN`` + ``ModelWrapper`` with the weights
of a funcml :class:`~funcml.encoders.siren.ModulatedSiren` (same initialisation, same math) and
feeds its random coordinate sampling from given index lists, so that both implementations see
the same data, weights and context subsets.
"""

from __future__ import annotations

import os
import sys
import types
from argparse import Namespace
from pathlib import Path
from typing import Sequence

import torch

from funcml.encoders.siren import ModulatedSiren


def find_official(path: str | os.PathLike | None = None) -> Path | None:
    """The official checkout: ``path``, else ``$MEDFUNCTA_DIR``, else ``/tmp/medfuncta``; None if absent."""
    for candidate in (path, os.environ.get("MEDFUNCTA_DIR"), "/tmp/medfuncta"):
        if candidate and (Path(candidate) / "models" / "inrs.py").is_file():
            return Path(candidate)
    return None


def _install_workarounds() -> None:
    try:
        from torch.utils import tensorboard  # noqa: F401
    except Exception:  # noqa: BLE001 - tensorboard absent: the official Logger is never used here
        stub = types.ModuleType("torch.utils.tensorboard")
        stub.SummaryWriter = object
        sys.modules["torch.utils.tensorboard"] = stub
    if not torch.cuda.is_available():
        torch.cuda.synchronize = lambda *a, **k: None


def import_official(root: Path):
    """Import the official modules from ``root``; returns (inrs, model_wrapper, maml_boot, utils)."""
    _install_workarounds()
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    import common.utils as utils  # noqa: E402
    import models.inrs as inrs  # noqa: E402
    import models.model_wrapper as model_wrapper  # noqa: E402
    import train.maml_boot as maml_boot  # noqa: E402

    return inrs, model_wrapper, maml_boot, utils


class Official:
    """The official model, initialised from ``net``, for signals of ``signal_shape`` ``(C, *spatial)``.

    ``meta_step(x, subsets, optimizer)`` runs the official ``train_step``;
    ``encode(x, subsets, steps)`` runs its test-time ``inner_adapt_test_scale`` and returns the
    latents ``(B, P)``. ``subsets`` are the coordinate index lists the official random sampler
    returns in turn (the same ones funcml uses).
    """

    def __init__(self, root: Path, net: ModulatedSiren, signal_shape: Sequence[int], batch_size: int,
                 inner_lr: float, inner_steps: int, context_ratio: float, device: str = "cpu") -> None:
        inrs, model_wrapper, maml_boot, utils = import_official(root)
        self.maml_boot, self.utils = maml_boot, utils
        cfg = net.config
        channels, spatial = int(signal_shape[0]), tuple(int(s) for s in signal_shape[1:])
        data_type = {1: "timeseries", 2: "img", 3: "img3d"}[len(spatial)]
        incr = (cfg.omega_last - cfg.omega_first) / (cfg.depth - 1)
        model = inrs.LatentModulatedSIREN(
            in_size=cfg.dim_in, out_size=cfg.channels, hidden_size=cfg.width, num_layers=cfg.depth,
            latent_modulation_dim=cfg.latent_dim, w0=cfg.omega_first, w0_increments=incr,
            modulate_shift=True, modulate_scale=False, enable_skip_connections=True).to(device)
        copy_weights(net, model)
        model.modulations = torch.zeros(batch_size, cfg.latent_dim, requires_grad=True, device=device)
        self.args = Namespace(
            data_type=data_type, data_size=(channels, *spatial), data_ratio=context_ratio, device=torch.device(device),
            in_size=cfg.dim_in, out_size=cfg.channels, inner_lr=inner_lr, inner_steps=inner_steps,
            sample_type="random", inner_lr_boot=inner_lr, inner_steps_boot=0, lam=0.0, print_step=10 ** 12)
        self.wrapper = model_wrapper.ModelWrapper(self.args, model).to(device)
        self._queue: list[torch.Tensor] = []
        wrapper = self.wrapper

        def random_sample():  # the official sampler, fed from the queue instead of torch.randperm
            idx = self._queue.pop(0)
            wrapper.sampled_index = idx
            wrapper.sampled_coord = wrapper.grid[idx]
            return wrapper.sampled_coord

        wrapper.random_sample = random_sample
        self.step = 0

    def parameters(self):
        return self.wrapper.model.parameters()

    def meta_step(self, x: torch.Tensor, subsets: Sequence[torch.Tensor], optimizer: torch.optim.Optimizer) -> float:
        """One official meta-update; returns the mean outer loss of the batch."""
        self._queue = list(subsets)
        self.step += 1
        self.wrapper.model.modulations = torch.zeros(x.shape[0], self.wrapper.model.modulations.shape[-1],
                                                     requires_grad=True, device=x.device)
        logger = self.utils.MetricLogger()
        logger.reset = lambda: None  # keep the step's meters readable after train_step
        self.maml_boot.train_step(self.args, self.step, self.wrapper, optimizer, x, logger, None)
        return float(logger.meters["loss_outer"].value)

    def outer_losses(self, x: torch.Tensor, subsets: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-signal (outer, last inner) losses of the official inner loop (no update)."""
        self._queue = list(subsets)
        w = self.wrapper
        w.coord_init()
        w.model.modulations = torch.zeros(x.shape[0], w.model.modulations.shape[-1], requires_grad=True,
                                          device=x.device)
        inner = self.maml_boot.inner_adapt(w, x, step_size=self.args.inner_lr, num_steps=self.args.inner_steps,
                                           first_order=False, sample_type="random")
        w.coord_init()
        return w(x), inner

    def encode(self, x: torch.Tensor, subsets: Sequence[torch.Tensor], steps: int) -> torch.Tensor:
        self._queue = list(subsets)
        w = self.wrapper
        w.model.eval()
        w.coord_init()
        w.model.modulations = torch.zeros(x.shape[0], w.model.modulations.shape[-1], requires_grad=True,
                                          device=x.device)
        self.maml_boot.inner_adapt_test_scale(w, x, step_size=self.args.inner_lr, num_steps=steps, first_order=True,
                                              sample_type="random", scale_type="grad")
        return w.model.modulations.detach()


def copy_weights(net: ModulatedSiren, model: torch.nn.Module) -> None:
    """funcml weights -> the official per-layer modules (the fused shift map is split by rows)."""
    L = net.config.width
    linears = [net.first, *net.hidden]
    with torch.no_grad():
        for k, (src, layer) in enumerate(zip(linears, model.layers)):
            layer.linear.weight.copy_(src.weight)
            layer.linear.bias.copy_(src.bias)
            layer.modulate_shift_layer.weight.copy_(net.shift.weight[k * L:(k + 1) * L])
            layer.modulate_shift_layer.bias.copy_(net.shift.bias[k * L:(k + 1) * L])
        model.last_layer.linear.weight.copy_(net.out.weight)
        model.last_layer.linear.bias.copy_(net.out.bias)


def official_grads_as_funcml(net: ModulatedSiren, model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The official model's ``.grad`` mapped onto funcml parameter names."""
    wrapper_model = model
    out = {"first.weight": wrapper_model.layers[0].linear.weight.grad,
           "first.bias": wrapper_model.layers[0].linear.bias.grad,
           "out.weight": wrapper_model.last_layer.linear.weight.grad,
           "out.bias": wrapper_model.last_layer.linear.bias.grad,
           "shift.weight": torch.cat([l.modulate_shift_layer.weight.grad for l in wrapper_model.layers]),
           "shift.bias": torch.cat([l.modulate_shift_layer.bias.grad for l in wrapper_model.layers])}
    for k, layer in enumerate(wrapper_model.layers[1:]):
        out[f"hidden.{k}.weight"] = layer.linear.weight.grad
        out[f"hidden.{k}.bias"] = layer.linear.bias.grad
    return out
