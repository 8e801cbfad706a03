"""Training pairs for query heads: what the head sees (observed samples, their latents) and what it must say.

Three sources, all from a data set's own signals:

* :func:`downsampled_pairs`: super-resolution, self-supervised: each signal downsampled by random
  factors (e.g. 1.5-4x, the data's own resizing: antialiased bilinear 2D, area 3D, linear 1D); the
  head is asked for the original at its own sample positions;
* :func:`paired_pairs`: super-resolution from real pairs (the same signals at two resolutions);
* :func:`masked_pairs`: imputation: random hidden masks (random samples, blocks, missing segments);
  the head is asked for the hidden samples.

Every input is encoded once with the frozen field (its latent is part of the pair). A
:class:`PairSet` holds groups of pairs that share their input and output grids and draws
training batches (:meth:`PairSet.batch`) as :class:`funcml.query.head.Query` objects.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from funcml.data.transforms import resize_signals
from funcml.encoders.config import EncodeConfig
from funcml.encoders.fitting import fit_latents
from funcml.errors import ConfigError, DataError
from funcml.grids import grid_cell, query_grid
from funcml.query.head import Query
from funcml.query.impute import inpaint_signals
from funcml.seeding import derive_seed, generator

HIDE_KINDS = ("random", "block")


def encode_signals(model, x: np.ndarray, *, observed: np.ndarray | None = None, config: EncodeConfig | None = None,
                   progress: bool = True, desc: str = "encode") -> np.ndarray:
    """Latents ``(n, P)`` of signals ``(n, C, *spatial)`` (only the ``observed`` ``(n, *spatial)`` samples fitted)."""
    cfg = config or model.encode_defaults
    out = np.empty((len(x), model.config.latent_dim), dtype=np.float32)
    bar = tqdm(total=len(x), desc=desc, unit="sig", disable=not progress, leave=False)
    for k, start in enumerate(range(0, len(x), cfg.batch_size)):
        xb = torch.from_numpy(np.ascontiguousarray(x[start:start + cfg.batch_size], dtype=np.float32)).to(model.device)
        w = None
        if observed is not None:
            w = torch.from_numpy(observed[start:start + len(xb)].reshape(len(xb), -1).astype(np.float32)).to(model.device)
        z = fit_latents(model.net, xb, cfg, generator=generator(cfg.seed, "encode", k), weights=w)
        out[start:start + len(xb)] = z.cpu().numpy()
        bar.update(len(xb))
    bar.close()
    return out


@dataclass
class PairGroup:
    """Pairs that share their grids.

    Attributes:
        inputs: ``(n, C, *grid_in)`` observed signals (None for heads that do not read them; then
            ``grid`` names the grid the latents were encoded on). latents: ``(n, P)`` encoded from them.
        targets: ``(m, C|-, *grid_out)`` float values or int class masks; ``rows`` ``(n,)`` picks each pair's target.
        observed: ``(n, *grid_in)`` bool (imputation; ``grid_out == grid_in``), else None.
        filled: ``(n, C, *grid_in)`` the inputs with hidden samples inpainted (imputation), else None.
        align: how the two grids line up (``centers``/``corners``).
    """

    inputs: torch.Tensor | None
    latents: torch.Tensor
    targets: torch.Tensor
    rows: torch.Tensor
    observed: torch.Tensor | None = None
    align: str = "centers"
    grid: tuple[int, ...] | None = None
    filled: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.latents)

    @property
    def grid_in(self) -> tuple[int, ...]:
        return tuple(self.grid) if self.grid is not None else tuple(self.inputs.shape[2:])

    @property
    def grid_out(self) -> tuple[int, ...]:
        return tuple(self.targets.shape[2:] if self.targets.is_floating_point() else self.targets.shape[1:])


class PairSet:
    """Groups of training pairs; :meth:`batch` draws one group's signals and random output positions."""

    def __init__(self, groups: Sequence[PairGroup]) -> None:
        self.groups = [g for g in groups if len(g)]
        if not self.groups:
            raise DataError("no training pairs (the split is empty)")
        self._coords: dict[int, torch.Tensor] = {}
        self._hidden: dict[int, torch.Tensor | None] = {}

    def __len__(self) -> int:
        return sum(len(g) for g in self.groups)

    def coords(self, k: int) -> torch.Tensor:
        g = self.groups[k]
        if k not in self._coords:
            self._coords[k] = query_grid(g.grid_in, g.grid_out, align=g.align, device=g.latents.device)
        return self._coords[k]

    def hidden(self, k: int) -> torch.Tensor | None:
        """Flat indices of the positions group ``k`` hides when all its pairs share one mask, else None."""
        if k not in self._hidden:
            obs = self.groups[k].observed
            shared = obs is not None and bool((obs == obs[:1]).all()) and not bool(obs[0].all())
            self._hidden[k] = (~obs[0].flatten()).nonzero().squeeze(1).cpu() if shared else None
        return self._hidden[k]

    def batch(self, step: int, batch_size: int, n_coords: int, seed: int, jitter: bool = False
              ) -> tuple[Query, torch.Tensor, torch.Tensor | None]:
        """``(query, targets (B, N, C) float or (B, N) int, loss weights (B, N) or None)`` for ``step``."""
        gen = torch.Generator().manual_seed(derive_seed(seed, "batch", step))
        sizes = torch.tensor([len(g) for g in self.groups], dtype=torch.float64)
        k = int(torch.multinomial(sizes, 1, generator=gen)) if len(self.groups) > 1 else 0
        g = self.groups[k]
        coords, hidden = self.coords(k), self.hidden(k)
        if hidden is None:
            rows = torch.randint(len(g), (min(batch_size, len(g)),), generator=gen)
            pick = torch.randperm(coords.shape[0], generator=gen)[:n_coords]
        else:  # one mask for the group: only its hidden positions carry a loss
            rows = torch.randperm(len(g), generator=gen)[:batch_size]
            pick = hidden[torch.randperm(len(hidden), generator=gen)[:n_coords]]
        c = coords[pick.to(coords.device)]
        if jitter:
            step_c = grid_cell(g.grid_in, g.grid_out, g.align) * 2.0 / torch.tensor(
                [max(n - 1, 1) for n in g.grid_in], dtype=torch.float32)
            c = c + ((torch.rand(c.shape, generator=gen) - 0.5) * step_c).to(c)
        rows_d = rows.to(g.latents.device)
        pick_d = pick.to(g.latents.device)
        t = g.targets[g.rows[rows_d]]
        if t.is_floating_point():
            target = t.flatten(2)[:, :, pick_d].transpose(1, 2)
        else:
            target = t.flatten(1)[:, pick_d]
        obs = None if g.observed is None else g.observed[rows_d]
        weights = None if obs is None else (~obs.flatten(1)[:, pick_d]).to(torch.float32)
        cell = grid_cell(g.grid_in, g.grid_out, g.align)
        q = Query(g.latents[rows_d], c, g.grid_in, None if g.inputs is None else g.inputs[rows_d], obs, cell,
                  None if g.filled is None else g.filled[rows_d])
        return q, target, weights


def parse_scales(text: str | Sequence[float]) -> tuple[float, float]:
    """``"1.5-4"`` -> (1.5, 4.0); ``"2"`` -> (2.0, 2.0). Factors are > 1."""
    try:
        parts = [float(p) for p in text.split("-")] if isinstance(text, str) else [float(p) for p in text]
    except ValueError:
        raise ConfigError(f"--scales takes a factor or a range such as 1.5-4; got {text!r}") from None
    lo, hi = (parts[0], parts[0]) if len(parts) == 1 else tuple(parts[:2]) if len(parts) == 2 else (0.0, 0.0)
    if not (1.0 < lo <= hi):
        raise ConfigError(f"--scales must be factors > 1 with LO <= HI, such as 1.5-4; got {text!r}")
    return lo, hi


def low_size(spatial: Sequence[int], factor: float) -> tuple[int, ...]:
    """``round(n / factor)`` per axis (at least 2)."""
    return tuple(max(2, int(round(n / factor))) for n in spatial)


def downsampled_inputs(x: np.ndarray, scales: tuple[float, float], repeats: int, seed: int
                       ) -> list[tuple[np.ndarray, np.ndarray]]:
    """Self-supervised super-resolution inputs: ``[(rows (k,), x[rows] downsampled (k, C, *small))]``, one per size.

    Each signal is downsampled ``repeats`` times, each by a factor drawn uniformly from ``scales``
    (the same factor on every axis).
    """
    rng = np.random.default_rng(derive_seed(seed, "pairs", 0))
    spatial = x.shape[2:]
    factors = rng.uniform(scales[0], scales[1], size=(repeats, len(x)))
    sizes: dict[tuple[int, ...], list[int]] = {}
    for r in range(repeats):
        for i in range(len(x)):
            sizes.setdefault(low_size(spatial, factors[r, i]), []).append(i)
    out = []
    for size in sorted(sizes):
        rows = np.asarray(sizes[size], dtype=np.int64)
        if tuple(size) == tuple(spatial):
            continue
        out.append((rows, resize_signals(x[rows], size)))
    return out


def parse_hide(text: str) -> list[tuple[str, float, float]]:
    """``"random:0.3-0.7,block:0.2-0.5"`` -> ``[("random", 0.3, 0.7), ("block", 0.2, 0.5)]``.

    ``random:LO-HI`` hides a random fraction of the samples drawn from ``[LO, HI]``; ``block:LO-HI``
    hides one box whose side along each axis is a fraction drawn from ``[LO, HI]`` (a missing
    segment in 1D). One kind is drawn per mask.
    """
    kinds = []
    for part in (p.strip() for p in str(text).split(",") if p.strip()):
        name, _, rng = part.partition(":")
        try:
            vals = [float(v) for v in rng.split("-")] if rng else []
        except ValueError:
            vals = []
        if name not in HIDE_KINDS or len(vals) not in (1, 2):
            raise ConfigError(f"--hide takes kinds such as random:0.3-0.7,block:0.2-0.5 ({HIDE_KINDS}); got {text!r}")
        lo, hi = vals[0], vals[-1]
        if not (0.0 < lo <= hi < 1.0):
            raise ConfigError(f"--hide fractions must satisfy 0 < LO <= HI < 1; got {part!r}")
        kinds.append((name, lo, hi))
    if not kinds:
        raise ConfigError("--hide needs at least one kind, such as random:0.5")
    return kinds


def hide_masks(n: int, spatial: Sequence[int], kinds: list[tuple[str, float, float]], seed: int) -> np.ndarray:
    """Observed masks ``(n, *spatial)`` bool, each hiding samples by one kind of :func:`parse_hide`."""
    rng = np.random.default_rng(derive_seed(seed, "pairs", 1))
    spatial = tuple(int(s) for s in spatial)
    out = np.ones((n, *spatial), dtype=bool)
    for i in range(n):
        name, lo, hi = kinds[rng.integers(len(kinds))]
        if name == "random":
            out[i] = rng.random(spatial) >= rng.uniform(lo, hi)
        else:
            box = []
            for s in spatial:
                w = max(1, int(round(rng.uniform(lo, hi) * s)))
                a = int(rng.integers(0, s - w + 1))
                box.append(slice(a, a + w))
            out[i][tuple(box)] = False
        if not out[i].any():
            out[i].flat[rng.integers(out[i].size)] = True
    return out


def _tensor(a: np.ndarray, device) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a)).to(device)


def downsampled_pairs(model, x: np.ndarray, *, scales: tuple[float, float] = (1.5, 4.0), repeats: int = 4,
                      seed: int = 0, align: str = "centers", config: EncodeConfig | None = None,
                      progress: bool = True) -> PairSet:
    """Self-supervised super-resolution pairs from signals ``(n, C, *spatial)`` (see :func:`downsampled_inputs`)."""
    if repeats < 1:
        raise ConfigError(f"--repeats must be >= 1; got {repeats}")
    targets = _tensor(x.astype(np.float32), model.device)
    groups = []
    for rows, small in downsampled_inputs(x, scales, repeats, seed):
        z = encode_signals(model, small, config=config, progress=progress, desc=f"encode {small.shape[2:]}")
        groups.append(PairGroup(_tensor(small, model.device), _tensor(z, model.device), targets,
                                _tensor(rows, model.device), align=align))
    return PairSet(groups)


def paired_pairs(model, low: np.ndarray, high: np.ndarray, *, align: str = "centers",
                 config: EncodeConfig | None = None, progress: bool = True) -> PairSet:
    """Super-resolution pairs from real data: ``low`` ``(n, C, *small)`` and ``high`` ``(n, C, *large)``."""
    if len(low) != len(high) or low.shape[1] != high.shape[1]:
        raise DataError(f"paired data differ: {low.shape} vs {high.shape}")
    z = encode_signals(model, low, config=config, progress=progress)
    dev = model.device
    return PairSet([PairGroup(_tensor(low.astype(np.float32), dev), _tensor(z, dev),
                              _tensor(high.astype(np.float32), dev), torch.arange(len(low), device=dev), align=align)])


def masked_pairs(model, x: np.ndarray, *, hide: list[tuple[str, float, float]], repeats: int = 4, seed: int = 0,
                 share: int = 16, config: EncodeConfig | None = None, progress: bool = True) -> PairSet:
    """Imputation pairs: each signal ``repeats`` times with a random hidden mask (see :func:`hide_masks`),
    with the classic inpainting of each (the ``classic`` base of value heads).

    ``share`` signals (drawn at random in each repeat) share one mask and form one group, so that a
    training batch queries only positions hidden in all its signals (none of its compute goes to
    observed samples, which carry no loss); ``share = 1``: a mask per pair, all pairs in one group.
    """
    if repeats < 1 or share < 1:
        raise ConfigError(f"--repeats and --share-masks must be >= 1; got {repeats}, {share}")
    if share == 1:
        rows = np.tile(np.arange(len(x)), repeats)
        sizes = [len(rows)]
        obs = hide_masks(len(rows), x.shape[2:], hide, seed)
    else:
        rng = np.random.default_rng(derive_seed(seed, "pairs", 2))
        chunks = [order[s:s + share] for order in (rng.permutation(len(x)) for _ in range(repeats))
                  for s in range(0, len(x), share)]
        rows, sizes = np.concatenate(chunks), [len(c) for c in chunks]
        obs = np.repeat(hide_masks(len(chunks), x.shape[2:], hide, seed), sizes, axis=0)
    inputs = x[rows].astype(np.float32) * obs[:, None]
    z = encode_signals(model, inputs, observed=obs, config=config, progress=progress)
    filled = inpaint_signals(inputs, obs)
    dev, targets = model.device, _tensor(x.astype(np.float32), model.device)
    bounds = np.cumsum([0, *sizes])
    return PairSet([PairGroup(_tensor(inputs[a:b], dev), _tensor(z[a:b], dev), targets, _tensor(rows[a:b], dev),
                              observed=_tensor(obs[a:b], dev), align="centers", filled=_tensor(filled[a:b], dev))
                    for a, b in zip(bounds[:-1], bounds[1:])])
