"""The aggregation interface, after Flower's ``Strategy``: configure a round, aggregate replies.

A strategy decides which clients train and with what settings, and turns their replies into
the next global state. It knows nothing about processes or transport, so the in-process and
the Flower engine drive the same object. Any state it keeps across rounds goes through
``state_dict``/``load_state_dict`` so that checkpoints capture it. A plain strategy writes
:meth:`Strategy.aggregate` alone; what some do besides (a client hook, personalised tensors,
frozen weights they move) are capabilities with defaults (:mod:`federa.strategies.capabilities`).

A :class:`Wrapper` is a strategy around another one (Flower's DP-wrapper pattern): it may
change the replies before the inner strategy sees them (validation, clipping) and the result
after (noise, a server optimiser). What a wrapper needs from the rest of the stack is declared
in class attributes, and :mod:`federa.strategies.stack` refuses incompatible stacks by them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, ClassVar

from federa.strategies.capabilities import (
    NO_CLIENT_HOOK, NO_FROZEN_WEIGHTS, NOT_PERSONALISED, ClientHook, FrozenWeights, Personalised,
)
from federa.types import State, TrainSettings, Update

if TYPE_CHECKING:
    import numpy as np
    from federa.config import Config
    from federa.settings import Section

Updates = Mapping[int, Update]  # client id → reply, in client-id order


def derive_seed(*parts: int) -> int:
    """A 31-bit seed that depends only on ``parts`` (e.g. run seed, round, client id).

    Derived rather than drawn from a running generator, so a resumed run or a client on
    another machine computes the same value with no RNG state to carry around.
    """
    import numpy as np

    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0] & 0x7FFFFFFF)


class Strategy(ABC):
    """The server core: which clients train with what settings (:meth:`configure_round`) and the
    next global state from their replies (:meth:`aggregate`, the one method a strategy must write).

    What a strategy may do beyond that is grouped in three capabilities
    (:mod:`federa.strategies.capabilities`), reached as :attr:`client_hook`, :attr:`personal` and
    :attr:`frozen`: the strategy itself when it subclasses the capability's class, else a default
    that does nothing.
    """

    name: ClassVar[str] = ""
    # Its config section (``cfg.<name>``), or None when it has no settings of its own.
    settings: ClassVar[type[Section] | None] = None
    # True when aggregate() is a weighted mean Σwᵢ·stateᵢ/Σwᵢ of the replies: then a sum is
    # all it needs (secure aggregation) and one client's influence is bounded (DP).
    linear: ClassVar[bool] = False
    # False for a baseline whose rounds aggregate nothing (+local, +centralized): wrappers that act
    # on an aggregate (clipping, server optimiser, DP, SecAgg+) have nothing to act on there.
    aggregates: ClassVar[bool] = True

    def __init__(self, clients_per_round: int, seed: int, **settings: Any) -> None:
        self.clients_per_round = clients_per_round
        self.seed = seed

    @classmethod
    def from_config(cls, cfg: Config) -> Strategy:
        """Built from the run's schedule and the strategy's own section, like Flower's strategies."""
        own = getattr(cfg, cls.name).model_dump() if cls.settings is not None else {}
        return cls(clients_per_round=cfg.clients_per_round, seed=cfg.seed, **own)

    @classmethod
    def check(cls, cfg: Config) -> str | None:
        """Why this strategy cannot run under ``cfg`` (e.g. an engine it does not support), or None.

        The client hook (payload, extra, memory, base fold) runs on every engine: in-process the
        strategy keeps each simulated client's memory, on Flower each node keeps its own."""
        return None

    # -- capabilities: the strategy itself when it has one, else the do-nothing default ---------

    @property
    def client_hook(self) -> ClientHook:
        """What each client is sent and what is kept for it (SCAFFOLD, heterogeneous ranks, FedSA)."""
        return self if isinstance(self, ClientHook) else NO_CLIENT_HOOK

    @property
    def personal(self) -> Personalised:
        """The tensors each client keeps to itself (FedSA-LoRA's B, +local)."""
        return self if isinstance(self, Personalised) else NOT_PERSONALISED

    @property
    def frozen(self) -> FrozenWeights:
        """The frozen weights the strategy reads or moves (FedEx-LoRA, FLoRA, FRLoRA, FedSVD)."""
        return self if isinstance(self, FrozenWeights) else NO_FROZEN_WEIGHTS

    # -- the server core -------------------------------------------------------------------

    def register_shards(self, sizes: Mapping[int, int]) -> None:
        """The examples each client holds, as the server's partition says (client id → count);
        validation caps a reply's weight by it. A client missing here has no registered shard."""

    def sample_clients(self, rnd: int, clients: Sequence[int]) -> list[int]:
        """Uniform sample without replacement, a pure function of (seed, round, client ids)."""
        import numpy as np

        k = min(self.clients_per_round, len(clients))
        rng = np.random.default_rng(derive_seed(self.seed, rnd, 0x5A))
        return sorted(int(c) for c in rng.choice(np.asarray(clients), size=k, replace=False))

    def configure_round(self, rnd: int, clients: Sequence[int], base: TrainSettings) -> dict[int, TrainSettings]:
        """Which clients train in round ``rnd`` and with what settings (each its own seed)."""
        return {c: replace(base, seed=derive_seed(self.seed, rnd, c)) for c in self.sample_clients(rnd, clients)}

    @abstractmethod
    def aggregate(self, rnd: int, global_state: State, updates: Updates) -> State:
        """The next global state from this round's replies (at least one)."""

    def aggregate_round(self, rnd: int, global_state: State, updates: Updates) -> State:
        """:meth:`aggregate`, except that a round with no reply keeps the global state."""
        return self.aggregate(rnd, global_state, updates) if updates else global_state

    def finish_sum(self, rnd: int, global_state: State, aggregate: State) -> State:
        """The next global state when the transport already aggregated (SecAgg+ gives only the
        mean): what wrappers do after the inner strategy, and nothing else."""
        return aggregate

    def round_metrics(self, rnd: int) -> dict[str, Any]:
        """Figures of the last aggregated round for the metrics line (e.g. ε under DP)."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        del state


class Wrapper(Strategy):
    """A strategy around ``inner``: :meth:`before` the replies, :meth:`after` the result.

    Sampling, client settings and every capability are the inner strategy's: a wrapper acts on
    the server side only, so it forwards the three capability attributes, not their methods."""

    section: ClassVar[str | None] = None  # its config section (several wrappers may share one)
    # What it needs from the rest of the stack, checked when a stack is built from a config:
    needs_individual_updates: ClassVar[bool] = False  # reads each client's update, not just a sum
    hides_individual_updates: ClassVar[bool] = False  # the server gets only the sum (SecAgg+)
    needs_linear: ClassVar[bool] = False  # only sound around a linear (mean) strategy
    # Its guarantee covers the model update only (DP's noise, SecAgg+'s masks): it cannot
    # stand around a strategy whose replies carry other tensors too (``expected_extra``).
    covers_state_only: ClassVar[bool] = False
    # It acts on what a round aggregates: meaningless around a baseline that aggregates nothing.
    needs_aggregation: ClassVar[bool] = True

    def __init__(self, inner: Strategy) -> None:
        self.inner = inner

    @classmethod
    def wanted(cls, cfg: Config) -> bool:
        """Whether ``cfg`` asks for this wrapper."""
        raise NotImplementedError

    @classmethod
    def check(cls, cfg: Config) -> str | None:
        """Why this wrapper cannot run under ``cfg`` beyond the capability rules, or None."""
        return None

    @classmethod
    def wrap(cls, inner: Strategy, cfg: Config) -> Wrapper:
        return cls(inner)

    @property
    def clients_per_round(self) -> int:  # type: ignore[override]
        return self.inner.clients_per_round

    @property
    def seed(self) -> int:  # type: ignore[override]
        return self.inner.seed

    @property
    def client_hook(self) -> ClientHook:
        return self.inner.client_hook

    @property
    def personal(self) -> Personalised:
        return self.inner.personal

    @property
    def frozen(self) -> FrozenWeights:
        return self.inner.frozen

    def configure_round(self, rnd: int, clients: Sequence[int], base: TrainSettings) -> dict[int, TrainSettings]:
        return self.inner.configure_round(rnd, clients, base)

    def register_shards(self, sizes: Mapping[int, int]) -> None:
        self.inner.register_shards(sizes)

    def before(self, rnd: int, global_state: State, updates: Updates) -> Updates:
        return updates

    def after(self, rnd: int, global_state: State, new_state: State) -> State:
        return new_state

    def aggregate(self, rnd: int, global_state: State, updates: Updates) -> State:
        return self.aggregate_round(rnd, global_state, updates)

    def aggregate_round(self, rnd: int, global_state: State, updates: Updates) -> State:
        inner = self.inner.aggregate_round(rnd, global_state, self.before(rnd, global_state, updates))
        return self.after(rnd, global_state, inner)

    def finish_sum(self, rnd: int, global_state: State, aggregate: State) -> State:
        return self.after(rnd, global_state, self.inner.finish_sum(rnd, global_state, aggregate))

    def round_metrics(self, rnd: int) -> dict[str, Any]:
        return self.inner.round_metrics(rnd)

    def state_dict(self) -> dict[str, Any]:
        return {"inner": self.inner.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.inner.load_state_dict(state.get("inner", {}))

    def layers(self) -> list[Strategy]:
        """This wrapper, the wrappers inside it, and the strategy at the core, outermost first."""
        inner = self.inner.layers() if isinstance(self.inner, Wrapper) else [self.inner]
        return [self, *inner]
