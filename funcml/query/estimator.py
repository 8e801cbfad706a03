"""Estimators around the query head (scikit-learn conventions): shared settings, prediction on any grid, files.

:class:`QueryEstimator` holds the head's architecture and training settings, trains a head on a
:class:`funcml.query.pairs.PairSet` (:meth:`fit_pairs`), evaluates it on any grid or window
(:meth:`predict_grid`) and saves/loads it (:mod:`funcml.query.store`).
:class:`QueryRegressor` (values: super-resolution, imputation) and
:class:`funcml.tasks.segment.segmenter.QuerySegmenter` (class logits) are its two configurations.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from funcml.errors import ConfigError
from funcml.query.fit import HeadTraining, predict_query, train_head
from funcml.grids import Roi, grid_cell, query_grid
from funcml.query.head import Query, QueryHeadConfig, build_head, parse_inputs
from funcml.query.impute import inpaint_signals
from funcml.query.pairs import PairSet
from funcml.query.store import read_head, write_head
from funcml.seeding import derive_seed

ARCH = ("inputs", "neighbours", "encoder", "encoder_width", "encoder_depth", "encoder_dilation", "base",
        "feature_layers", "feature_proj", "hidden", "layers", "frequencies", "latent_proj", "context", "context_proj")
TRAINING = tuple(f.name for f in dataclasses.fields(HeadTraining))


class QueryEstimator:
    """Shared settings and machinery of query heads.

    Args: the architecture (:class:`funcml.query.head.QueryHeadConfig` fields: ``inputs`` as a
    comma list or tuple, ``neighbours``, ``encoder``, ``encoder_width``, ``encoder_depth``,
    ``encoder_dilation``, ``base``, ``feature_layers``, ``feature_proj``, ``hidden``, ``layers``,
    ``frequencies``, ``latent_proj``, ``context``, ``context_proj``), the training
    (:class:`funcml.query.fit.HeadTraining` fields) and ``progress``.

    Learnt attributes: ``head_``, ``model_`` (the frozen field model), ``grid_`` (the grid the
    inputs were encoded on), ``align_``, ``record_`` (training history, steps, seconds).
    """

    task = "values"
    tasks: tuple[str, ...] | None = None
    output = "values"

    def __init__(self, **params) -> None:
        self.progress = params.pop("progress", True)
        unknown = set(params) - set(ARCH) - set(TRAINING)
        if unknown:
            raise ConfigError(f"unknown settings {sorted(unknown)}")
        defaults = {f.name: f.default for f in dataclasses.fields(QueryHeadConfig)}
        defaults.update({f.name: f.default for f in dataclasses.fields(HeadTraining)})
        for k in (*ARCH, *TRAINING):
            setattr(self, k, params.get(k, defaults[k]))

    def get_params(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k in (*ARCH, *TRAINING) for v in [getattr(self, k)]}

    def head_config(self, out_dim: int, channels: int) -> QueryHeadConfig:
        return QueryHeadConfig(out_dim=out_dim, output=self.output, inputs=parse_inputs(self.inputs),
                               channels=channels, **{k: getattr(self, k) for k in ARCH if k != "inputs"}
                               | {"context": tuple(float(r) for r in self.context)}).validate()

    def training(self) -> HeadTraining:
        return HeadTraining(**{k: getattr(self, k) for k in TRAINING}).validate()

    @property
    def needs_signals(self) -> bool:
        self._check_fitted()
        return self.head_.config.needs_observed

    # -- training -------------------------------------------------------------------------------
    def fit_pairs(self, model, pairs: PairSet, *, out_dim: int, channels: int, grid: Sequence[int], align: str,
                  loss: str = "mse", val: PairSet | None = None, checkpoint_dir: str | Path | None = None,
                  meta: dict | None = None, restart: bool = False, log=None) -> "QueryEstimator":
        """Train a new head for ``model`` on ``pairs`` (see :func:`funcml.query.fit.train_head`;
        ``restart``: discard a checkpoint of other settings in ``checkpoint_dir`` instead of refusing it)."""
        config = self.head_config(out_dim, channels)
        torch.manual_seed(derive_seed(self.seed, "init"))
        head = build_head(config, model.net)
        record = train_head(head, model.net, pairs, self.training(), loss=loss, val=val, checkpoint_dir=checkpoint_dir,
                            meta={**(meta or {}), "model_id": model.id, "head": dataclasses.asdict(config)},
                            fresh_on_mismatch=restart, progress=self.progress, log=log)
        self.head_, self.model_, self.record_ = head, model, record
        self.grid_, self.align_ = tuple(int(s) for s in grid), align
        return self

    # -- prediction -----------------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if not hasattr(self, "head_"):
            raise ConfigError(f"this {type(self).__name__} is not fitted yet (call fit or load)")

    def predict_grid(self, latents: np.ndarray | torch.Tensor, out_shape: Sequence[int], *,
                     signals: np.ndarray | None = None, observed: np.ndarray | None = None, roi: Roi | None = None,
                     grid: Sequence[int] | None = None, batch_size: int = 32) -> torch.Tensor:
        """Head outputs ``(n, out_dim, *out_shape)`` on a grid over ``roi`` (CPU tensor).

        ``latents`` ``(n, P)`` were encoded on ``grid`` (default: the training grid); ``signals``
        ``(n, C, *grid)`` and ``observed`` ``(n, *grid)`` are the observed samples (heads that read them).
        """
        self._check_fitted()
        model, head = self.model_, self.head_
        grid = tuple(int(s) for s in (grid or self.grid_))
        out_shape = tuple(int(s) for s in out_shape)
        z_all = torch.as_tensor(np.asarray(latents, dtype=np.float32))
        model.check_latents(z_all)
        if head.config.needs_observed and (signals is None or tuple(np.shape(signals)[2:]) != grid):
            raise ConfigError(f"this head reads the observed samples: pass the signals on their {grid} grid")
        coords = query_grid(grid, out_shape, roi=roi, align=self.align_, device=model.device)
        cell = grid_cell(grid, out_shape, self.align_, roi)
        outs = []
        for s in range(0, len(z_all), batch_size):
            sl = slice(s, s + batch_size)
            sig = None if signals is None else torch.from_numpy(np.asarray(signals[sl], np.float32)).to(model.device)
            obs = None if observed is None else torch.from_numpy(np.asarray(observed[sl], bool)).to(model.device)
            filled = None
            if obs is not None and head.config.base == "classic":
                filled = torch.from_numpy(inpaint_signals(sig.cpu().numpy(), obs.cpu().numpy())).to(model.device)
            q = Query(z_all[sl].to(model.device), coords, grid, sig, obs, cell, filled)
            out = predict_query(head, model.net, q)
            outs.append(out.transpose(1, 2).reshape(len(out), -1, *out_shape).cpu())
        return torch.cat(outs) if outs else torch.zeros(0, head.config.out_dim, *out_shape)

    # -- persistence ----------------------------------------------------------------------------
    def _extra(self) -> dict:
        return {}

    def write(self, directory: str | Path, training: dict | None = None) -> None:
        """Write the head's files into an existing folder."""
        self._check_fitted()
        write_head(directory, self.head_, task=self.task, model_id=self.model_.id, grid=self.grid_, align=self.align_,
                   extra={"params": self.get_params(), "record": self.record_, "training": training or {},
                          **self._extra()})

    @classmethod
    def load(cls, path: str | Path, model, tasks: tuple[str, ...] | None = None) -> "QueryEstimator":
        """Load a head folder for use with ``model`` (refused unless it is the model it was trained on,
        and a head for one of ``tasks``, default any this class serves)."""
        head, cfg = read_head(path, model, tasks=tasks or cls.tasks)
        params = {k: v for k, v in cfg.get("params", {}).items() if k in (*ARCH, *TRAINING)}
        est = cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in params.items()}, progress=False)
        est.head_, est.model_, est.grid_, est.align_ = head, model, cfg["grid"], cfg["align"]
        est.record_, est.training_, est.config_ = cfg.get("record", {}), cfg.get("training", {}), cfg
        est._restore(cfg)
        return est

    def _restore(self, cfg: dict) -> None:
        return None


class QueryRegressor(QueryEstimator):
    """A query head that predicts values: super-resolution (``task="superres"``) or imputation (``"impute"``).

    Defaults: the head reads everything (``features,latent,observed``) and predicts a residual over
    classic interpolation of the observed samples (super-resolution: bicubic/trilinear/linear;
    imputation: biharmonic inpainting, linear in 1D). Other arguments: see :class:`QueryEstimator`.
    """

    tasks = ("superres", "impute")

    def __init__(self, task: str = "superres", **params) -> None:
        if task not in self.tasks:
            raise ConfigError(f"a value head's task is one of {self.tasks}; got {task!r}")
        params.setdefault("inputs", "features,latent,observed")
        params.setdefault("feature_proj", 64)
        params.setdefault("base", "classic")
        super().__init__(**params)
        self.task = task

    def fit(self, model, pairs: PairSet, *, grid: Sequence[int] | None = None, align: str = "centers",
            val: PairSet | None = None, checkpoint_dir: str | Path | None = None, meta: dict | None = None,
            restart: bool = False, log=None) -> "QueryRegressor":
        """Train on ``pairs`` (:mod:`funcml.query.pairs`) for the frozen ``model``; ``grid``: the grid
        test inputs will be encoded on (default: the model's)."""
        c = model.signal_shape[0]
        return self.fit_pairs(model, pairs, out_dim=c, channels=c, grid=grid or model.signal_shape[1:], align=align,
                              loss="mse", val=val, checkpoint_dir=checkpoint_dir, meta=meta, restart=restart, log=log)

    def predict(self, latents: np.ndarray, out_shape: Sequence[int], *, signals: np.ndarray | None = None,
                observed: np.ndarray | None = None, roi: Roi | None = None,
                grid: Sequence[int] | None = None) -> np.ndarray:
        """Values ``(n, C, *out_shape)`` in [0, 1]; with ``observed`` (imputation on the signals' own grid)
        the observed samples are kept as they are."""
        out = self.predict_grid(latents, out_shape, signals=signals, observed=observed, roi=roi,
                                grid=grid).clamp_(0, 1).numpy()
        if observed is not None and signals is not None and out.shape[2:] == np.shape(signals)[2:] and roi is None:
            keep = np.asarray(observed, bool)[:, None]
            out = np.where(keep, np.asarray(signals, np.float32), out)
        return out

    def _restore(self, cfg: dict) -> None:
        self.task = cfg.get("task", self.task)
