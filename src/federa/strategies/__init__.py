"""Aggregation strategies, one per module; pick one by name with :func:`make_strategy`."""

from __future__ import annotations

from federa.strategies.base import Strategy, derive_seed
from federa.strategies.fedavg import FedAvg

_STRATEGIES: dict[str, type[Strategy]] = {"fedavg": FedAvg}


def make_strategy(name: str, clients_per_round: int, seed: int) -> Strategy:
    return _STRATEGIES[name](clients_per_round=clients_per_round, seed=seed)


__all__ = ["Strategy", "FedAvg", "derive_seed", "make_strategy"]
