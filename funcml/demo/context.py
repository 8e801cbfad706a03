"""What a stage of ``funcml demo`` receives."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable


@dataclass
class DemoContext:
    """What a demo stage can use: the report folder, the data, the model and the latent set."""

    out: Path
    signals: object
    model: object
    latent_set: object
    device: object
    quick: bool
    log: Callable[[str], None]
    report: dict = field(default_factory=dict)


DemoStage = Callable[[DemoContext], dict]
