"""Task registry: ``task: <name>`` → the class that owns columns, head, loss and metrics.

Adding a task type is one module (a :class:`~federa.tasks.base.Task` subclass) and one line here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from federa.registry import load

if TYPE_CHECKING:
    from federa.config import DataConfig
    from federa.tasks.base import Task

_REGISTRY: dict[str, str] = {
    "classification": "federa.tasks.classification:Classification",
    "pair_classification": "federa.tasks.classification:PairClassification",
    "regression": "federa.tasks.regression:Regression",
    "token_classification": "federa.tasks.token_classification:TokenClassification",
    "instruction": "federa.tasks.instruction:Instruction",
}


def available_tasks() -> tuple[str, ...]:
    return tuple(_REGISTRY)


def task_class(name: str) -> type[Task]:
    return load(_REGISTRY[name])


def make_task(name: str, data: DataConfig) -> Task:
    return task_class(name)(data)
