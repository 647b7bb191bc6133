"""Tracker registry: ``trackers: [tensorboard, mlflow, wandb]`` → the class that logs a run to each.

Each tracker is one module (its class and, where it has options, its config section) and one
line here, with the optional extra that installs its library. The registry itself imports no
tracker library, so the config can check that an extra is installed (``tracker_problem``)
before any work starts. :mod:`federa.trackers.base` feeds them from the run's events.
"""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING

from federa.registry import load

if TYPE_CHECKING:
    from federa.settings import Section
    from federa.trackers.base import Tracker

_REGISTRY: dict[str, str] = {
    "tensorboard": "federa.trackers.tensorboard:TensorBoardTracker",
    "mlflow": "federa.trackers.mlflow:MlflowTracker",
    "wandb": "federa.trackers.wandb:WandbTracker",
}
# The module each needs, and the extra that installs it.
_NEEDS: dict[str, str] = {"tensorboard": "tensorboard", "mlflow": "mlflow", "wandb": "wandb"}
# Tracker settings, each beside its tracker (composed into the config like engine sections).
_SECTIONS: dict[str, str] = {
    "mlflow": "federa.trackers.mlflow:MlflowSettings",
    "wandb": "federa.trackers.wandb:WandbSettings",
}


def available_trackers() -> tuple[str, ...]:
    return tuple(_REGISTRY)


def tracker_problem(name: str) -> str | None:
    """Why ``name`` cannot be used here (unknown, or its extra is not installed), or None."""
    if name not in _REGISTRY:
        return f"unknown tracker '{name}'; choose from {', '.join(_REGISTRY)}"
    if importlib.util.find_spec(_NEEDS[name]) is None:
        return f"tracker {name} needs its library: pip install 'federa[{name}]'"
    return None


def tracker_class(name: str) -> type[Tracker]:
    return load(_REGISTRY[name])


def tracker_sections() -> dict[str, type[Section]]:
    return {name: load(entry) for name, entry in _SECTIONS.items()}
