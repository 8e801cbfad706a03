"""Helpers shared by the query-head benchmarks (query_head_*.py)."""

from __future__ import annotations

import dataclasses

from funcml.query.estimator import QueryRegressor


def model_record(model) -> dict:
    """The field model's id, architecture and meta-training settings (for the results file)."""
    keep = {k: model.training[k] for k in ("config", "step", "val_psnr") if k in model.training}
    return {"id": model.id, "field": dataclasses.asdict(model.config), "training": keep}


def budget_head(task: str, inputs: str, minutes: float, **params) -> QueryRegressor:
    """A value head trained for ``minutes`` of process CPU time (residual over the field's value
    when it reads no observed samples)."""
    params.setdefault("base", None if "observed" in inputs else "field")
    params = {k: v for k, v in params.items() if v is not None}
    return QueryRegressor(task, inputs=inputs, steps=10 ** 6, max_minutes=minutes, clock="process", val_every=250,
                          progress=False, **params)


def fit_record(est) -> dict:
    """Steps, wall and CPU seconds and the best validation of a trained head or PixelSR."""
    if hasattr(est, "record_"):
        r = est.record_
        return {"steps": r["steps"], "seconds": r["seconds"], "cpu_seconds": r["cpu_seconds"],
                "best_val_psnr": r["best_val_psnr"], "best_step": r["best_step"]}
    return {"steps": est.steps_, "seconds": est.fit_seconds_, "cpu_seconds": est.cpu_seconds_}
