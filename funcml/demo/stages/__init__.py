"""The downstream stages of ``funcml demo``, in the order they run.

Each stage is a function ``stage(ctx: DemoContext) -> dict`` of its own module that calls the tasks'
public functions; the explanation stage explains the classifier the classification stage wrote.
"""

from __future__ import annotations

from funcml.demo.context import DemoStage
from funcml.demo.stages.classification import classification_stage
from funcml.demo.stages.explanation import explanation_stage
from funcml.demo.stages.generation import generate_stage
from funcml.demo.stages.query import impute_stage, render_stage, superres_stage

STAGES: tuple[tuple[str, DemoStage], ...] = (
    ("classification", classification_stage),
    ("render", render_stage),
    ("superres", superres_stage),
    ("impute", impute_stage),
    ("generate", generate_stage),
    ("explanation", explanation_stage),
)
