"""The strategy registry: ``strategy: <name>`` → the class that aggregates.

Adding a strategy is one module (a :class:`~federa.strategies.base.Strategy` subclass, with its
settings class if it has any) and one line in ``_REGISTRY``; docs/strategies.md has the steps.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from federa.registry import load

if TYPE_CHECKING:
    from federa.strategies.base import Strategy

_REGISTRY: dict[str, str | type[Strategy]] = {
    "fedavg": "federa.strategies.fedavg:FedAvg",
    "fedprox": "federa.strategies.fedprox:FedProx",
    "scaffold": "federa.strategies.scaffold:Scaffold",
    "median": "federa.strategies.median:Median",
    "trimmed_mean": "federa.strategies.trimmed_mean:TrimmedMean",
    "rolora": "federa.strategies.rolora:RoLoRA",
    "fedex": "federa.strategies.fedex:FedExLoRA",
    "flora": "federa.strategies.flora:FLoRA",
    "flexlora": "federa.strategies.flexlora:FlexLoRA",
    "hetlora": "federa.strategies.hetlora:HetLoRA",
    "fedsa": "federa.strategies.fedsa:FedSA",
    "fedsvd": "federa.strategies.fedsvd:FedSVD",
    "frlora": "federa.strategies.frlora:FRLoRA",
    "lorafair": "federa.strategies.lorafair:LoraFair",
    "ravan": "federa.strategies.ravan:Ravan",
    "local": "federa.strategies.local:Local",
    "centralized": "federa.strategies.centralized:Centralized",
}


def register_strategy(name: str, cls: type[Strategy]) -> None:
    """Make ``cls`` selectable as ``strategy: name`` (a plug-in, or a test's toy strategy).

    Config sections are composed when :mod:`federa.config` is imported, so a strategy registered
    later can be selected but reads no section of its own.
    """
    _REGISTRY[name] = cls


def available_strategies() -> tuple[str, ...]:
    return tuple(_REGISTRY)


def strategy_class(name: str) -> type[Strategy]:
    entry = _REGISTRY[name]
    return load(entry) if isinstance(entry, str) else entry
