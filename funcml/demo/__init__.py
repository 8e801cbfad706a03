"""``funcml demo``: the main job on the embedded data (train, encode, evaluate, then the downstream
stages listed in :data:`funcml.demo.stages.STAGES`). It sits above the tasks and calls their public
functions; no task imports it."""

from funcml.demo.context import DemoContext, DemoStage
from funcml.demo.pipeline import run_demo
from funcml.demo.stages import STAGES

__all__ = ["DemoContext", "DemoStage", "STAGES", "run_demo"]
