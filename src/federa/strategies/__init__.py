"""Aggregation strategies, one per module; pick one by name with :func:`make_strategy`."""

from __future__ import annotations

from federa.strategies.base import Strategy, derive_seed
from federa.strategies.fedavg import FedAvg
from federa.strategies.median import Median
from federa.strategies.trimmed_mean import TrimmedMean

_STRATEGIES: dict[str, type[Strategy]] = {"fedavg": FedAvg, "median": Median, "trimmed_mean": TrimmedMean}


def make_strategy(name: str, clients_per_round: int, seed: int, trim_fraction: float = 0.1) -> Strategy:
    if name == "trimmed_mean":  # the one strategy with a setting of its own (robust.trim_fraction)
        return TrimmedMean(clients_per_round=clients_per_round, seed=seed, trim_fraction=trim_fraction)
    return _STRATEGIES[name](clients_per_round=clients_per_round, seed=seed)


__all__ = ["Strategy", "FedAvg", "Median", "TrimmedMean", "derive_seed", "make_strategy"]
