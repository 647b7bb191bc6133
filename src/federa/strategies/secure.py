"""Secure aggregation (Flower's SecAgg+ on the Flower engine) as a wrapper: what it means for the stack.

The masking itself is transport (``federa.engines.flower.secagg``): the server learns only the
weighted sum of the replies, so the engine hands the stack that mean through
:meth:`~federa.strategies.base.Strategy.finish_sum`, and only what wrappers do *after* the
inner strategy (a server optimiser) still happens. Hence the capabilities: no other wrapper
may need individual updates, and the strategy must be a mean.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from federa.strategies.base import Updates, Wrapper
from federa.types import State

if TYPE_CHECKING:
    from federa.config import Config


class SecureAggregation(Wrapper):
    hides_individual_updates = True
    needs_linear = True
    covers_state_only = True  # only the state is masked

    @classmethod
    def wanted(cls, cfg: Config) -> bool:
        return cfg.secure_aggregation

    @classmethod
    def check(cls, cfg: Config) -> str | None:
        if cfg.engine != "flower":
            return "secure_aggregation runs on Flower's SecAgg+; set engine=flower"
        if cfg.clients_per_round < 2:
            return "secure_aggregation needs clients_per_round>=2 (SecAgg+ sums at least two clients)"
        return None

    def aggregate_round(self, rnd: int, global_state: State, updates: Updates) -> State:
        raise RuntimeError("under secure aggregation the transport sums the replies; call finish_sum")
