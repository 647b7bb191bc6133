"""Aggregation: strategies (one module each, named in :mod:`.registry`) and wrappers around any of
them; how a round's replies pass through both is :mod:`.stack`, read top to bottom."""

from federa.strategies.registry import available_strategies, register_strategy, strategy_class

__all__ = ["available_strategies", "register_strategy", "strategy_class"]
