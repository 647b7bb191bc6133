"""The aggregation interface, after Flower's ``Strategy``: configure a round, aggregate replies.

A strategy decides which clients train and with what settings, and turns their replies into
the next global state. It knows nothing about processes or transport, so the in-process and
the Flower engine drive the same object. Any state it keeps across rounds goes through
``state_dict``/``load_state_dict`` so that checkpoints capture it.

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

from federa.types import LocalRule, State, TrainSettings, Update

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
    name: ClassVar[str] = ""
    # Its config section (``cfg.<name>``), or None when it has no settings of its own.
    settings: ClassVar[type[Section] | None] = None
    # True when aggregate() is a weighted mean Σwᵢ·stateᵢ/Σwᵢ of the replies: then a sum is
    # all it needs (secure aggregation) and one client's influence is bounded (DP).
    linear: ClassVar[bool] = False
    # Its part of each client's local training (SCAFFOLD's drift correction), or None: plain
    # local training. The client hook: :meth:`client_payload` down, ``Update.extra`` up,
    # ``Update.memory`` kept by the client between its rounds (see :class:`LocalRule`).
    client_rule: ClassVar[type[LocalRule] | None] = None
    # Whether that client rule sends tensors of its own beside the state (SCAFFOLD's Δcᵢ): a wrapper
    # that covers only the state (DP, SecAgg+) cannot stand around it. FedSA's rule sends none.
    client_sends_extra: ClassVar[bool] = True
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

    def client_state(self, rnd: int, client: int, global_state: State) -> State:
        """The trainable state ``client`` starts from this round, and the template its reply must
        match: the global state, unless clients hold states of their own shapes (heterogeneous
        LoRA ranks: FLoRA, FlexLoRA, HetLoRA send each client its rank's factors)."""
        return global_state

    # -- the client hook (strategies with a ``client_rule``) --------------------------------

    def client_payload(self, rnd: int, client: int, global_state: State) -> State:
        """Tensors sent to ``client`` beside the global state this round (counted in bytes_down)."""
        return {}

    def expected_extra(self, global_state: State) -> State:
        """Tensors every reply must carry in ``Update.extra``, as a template (names, shapes,
        dtypes) that validation checks replies against; empty: replies carry none."""
        return {}

    def client_memory(self, client: int) -> State:
        """What ``client`` kept from its last round, when the engine simulates clients in this
        process and the strategy keeps their memory for them (and checkpoints it). On Flower the
        node keeps it (``federa.engines.flower.node_memory``) and this is never asked."""
        return {}

    def keep_client_memory(self, client: int, memory: State) -> None:
        """Store ``client``'s memory after its round (in-process simulation only)."""

    def register_shards(self, sizes: Mapping[int, int]) -> None:
        """The examples each client holds, as the server's partition says (client id → count);
        validation caps a reply's weight by it. A client missing here has no registered shard."""

    def base_fold(self) -> State:
        """Cumulative tensors added to frozen weights of every party, by parameter name
        (FedEx-LoRA's folded residual); empty for strategies that never touch frozen weights.
        Engines send it to every sampled client (counted in ``bytes_down``) and set each frozen
        weight to its unfolded value + the fold."""
        return {}

    # -- frozen tensors a strategy moves (FedSVD's A) ---------------------------------------

    # Name fragments of the frozen tensors the strategy must read: the server hands their values to
    # :meth:`start_frozen` once (FedSVD re-orthonormalises the shared A, so it needs A itself).
    reads_frozen: ClassVar[tuple[str, ...]] = ()

    def start_frozen(self, frozen: State) -> None:
        """Told once by the server: the frozen tensors named by :attr:`reads_frozen`, at the values
        every party builds them with (before any :meth:`base_fold`)."""

    def reparametrise(self, rnd: int, state: State) -> State:
        """The new global state once every wrapper is done with it (after DP's noise, SecAgg+'s
        sum): a change of parametrisation that keeps the model (FedSVD refactors B·A by SVD), which
        as post-processing of the released aggregate costs no privacy. Default: the state as it is."""
        return state

    # -- personalised parts (FedSA-LoRA's B): trained on each client, never sent ----------

    def start_private(self, initial: State) -> None:
        """Told once by the server: the tensors a method variant keeps on each client, at the
        values every client builds them with (empty: nothing is private)."""

    def client_private(self, client: int | None) -> State:
        """``client``'s private tensors as they stand (its model = the global state + these), or
        with None those the global model is evaluated and saved with; empty: every client's
        model is the global model."""
        return {}

    def test_privates(self) -> list[tuple[State, int]]:
        """The models the test-set score averages over, each as the private tensors it adds to the
        global state with the number of clients that hold it: the one global model by default;
        several when no global model exists (+local: every client's own)."""
        return [(self.client_private(None), 1)]

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
    """A strategy around ``inner``: :meth:`before` the replies, :meth:`after` the result."""

    section: ClassVar[str | None] = None  # its config section (several wrappers may share one)
    # Capabilities, checked when a stack is built from a config:
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

    # Sampling and client settings are the inner strategy's.
    @property
    def clients_per_round(self) -> int:  # type: ignore[override]
        return self.inner.clients_per_round

    @property
    def seed(self) -> int:  # type: ignore[override]
        return self.inner.seed

    @property
    def linear(self) -> bool:  # type: ignore[override]
        return self.inner.linear

    @property
    def client_rule(self) -> type[LocalRule] | None:  # type: ignore[override]
        return self.inner.client_rule

    @property
    def aggregates(self) -> bool:  # type: ignore[override]
        return self.inner.aggregates

    def configure_round(self, rnd: int, clients: Sequence[int], base: TrainSettings) -> dict[int, TrainSettings]:
        return self.inner.configure_round(rnd, clients, base)

    # The client hook is the core strategy's; wrappers act on the server side only.
    def client_state(self, rnd: int, client: int, global_state: State) -> State:
        return self.inner.client_state(rnd, client, global_state)

    def client_payload(self, rnd: int, client: int, global_state: State) -> State:
        return self.inner.client_payload(rnd, client, global_state)

    def expected_extra(self, global_state: State) -> State:
        return self.inner.expected_extra(global_state)

    def client_memory(self, client: int) -> State:
        return self.inner.client_memory(client)

    def keep_client_memory(self, client: int, memory: State) -> None:
        self.inner.keep_client_memory(client, memory)

    def register_shards(self, sizes: Mapping[int, int]) -> None:
        self.inner.register_shards(sizes)

    def base_fold(self) -> State:
        return self.inner.base_fold()

    def start_private(self, initial: State) -> None:
        self.inner.start_private(initial)

    @property
    def reads_frozen(self) -> tuple[str, ...]:  # type: ignore[override]
        return self.inner.reads_frozen

    def start_frozen(self, frozen: State) -> None:
        self.inner.start_frozen(frozen)

    def reparametrise(self, rnd: int, state: State) -> State:
        return self.inner.reparametrise(rnd, state)

    def client_private(self, client: int | None) -> State:
        return self.inner.client_private(client)

    def test_privates(self) -> list[tuple[State, int]]:
        return self.inner.test_privates()

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
