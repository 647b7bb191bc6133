"""What a strategy may do beyond aggregating, in three capabilities, each with a do-nothing default.

A plain strategy (FedAvg, FedProx, the median) aggregates and nothing else. A few also:

- :class:`ClientHook`: take part in each client's round: send it its own starting state
  (heterogeneous LoRA ranks), tensors beside it and a local rule (SCAFFOLD's c), keep what a
  simulated client remembers between its rounds (SCAFFOLD's cᵢ, FedSA-LoRA's B);
- :class:`Personalised`: keep tensors on each client that never travel (FedSA-LoRA's B, +local's
  everything), so a client's model is the global state plus its own;
- :class:`FrozenWeights`: move frozen weights every party holds (FedEx-LoRA's folded residual,
  FedSVD's re-orthonormalised A), or refactor the new state after every wrapper (FedSVD's SVD).

A strategy has a capability by subclassing its class beside :class:`~federa.strategies.base.Strategy`
(``class Scaffold(Strategy, ClientHook)``) and overriding what it changes; the server reaches it as
``strategy.client_hook`` / ``.personal`` / ``.frozen``, the default object here when the strategy
lacks it. A wrapper acts on the server side only, so it forwards these three attributes to its
inner strategy and nothing else of them (:class:`~federa.strategies.base.Wrapper`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from federa.types import LocalRule, State


class ClientHook:
    """What the strategy sends each client and keeps for it. Default: every client starts from the
    global state, with nothing beside it, plain local training, nothing remembered."""

    # Its part of each client's local training (SCAFFOLD's drift correction), or None: plain local
    # training. :meth:`client_payload` goes down, ``Update.extra`` comes up, ``Update.memory`` stays
    # with the client between its rounds (see :class:`~federa.types.LocalRule`).
    client_rule: ClassVar[type[LocalRule] | None] = None
    # Whether that rule sends tensors of its own beside the state (SCAFFOLD's Δcᵢ): a wrapper that
    # covers only the state (DP, SecAgg+) cannot stand around it. FedSA's rule sends none.
    client_sends_extra: ClassVar[bool] = True

    def client_state(self, rnd: int, client: int, global_state: State) -> State:
        """The trainable state ``client`` starts from this round, and the template its reply must
        match: the global state, unless clients hold states of their own shapes (heterogeneous
        LoRA ranks: FLoRA, FlexLoRA, HetLoRA send each client its rank's factors)."""
        return global_state

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


class Personalised:
    """Tensors trained on each client and never sent (FedSA-LoRA's B). Default: none, so every
    client's model is the global model."""

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


class FrozenWeights:
    """Frozen weights the strategy reads or moves, and its last word on the new state. Default:
    frozen weights stay as built, and the state is kept as the wrappers leave it."""

    # Name fragments of the frozen tensors the strategy must read: the server hands their values to
    # :meth:`start_frozen` once (FedSVD re-orthonormalises the shared A, so it needs A itself).
    reads_frozen: ClassVar[tuple[str, ...]] = ()

    def start_frozen(self, frozen: State) -> None:
        """Told once by the server: the frozen tensors named by :attr:`reads_frozen`, at the values
        every party builds them with (before any :meth:`base_fold`)."""

    def base_fold(self) -> State:
        """Cumulative tensors added to frozen weights of every party, by parameter name
        (FedEx-LoRA's folded residual); empty for strategies that never touch frozen weights.
        Engines send it to every sampled client (counted in ``bytes_down``) and set each frozen
        weight to its unfolded value + the fold."""
        return {}

    def reparametrise(self, rnd: int, state: State) -> State:
        """The new global state once every wrapper is done with it (after DP's noise, SecAgg+'s
        sum): a change of parametrisation that keeps the model (FedSVD refactors B·A by SVD), which
        as post-processing of the released aggregate costs no privacy. Default: the state as it is."""
        return state


# Attribute on every strategy → its capability class. A wrapper forwards each of these attributes
# (tests/test_strategy_capabilities.py fails when one is not).
CAPABILITIES: Mapping[str, type] = {"client_hook": ClientHook, "personal": Personalised, "frozen": FrozenWeights}

# The defaults a strategy without the capability answers with (they hold no state, so one is shared).
NO_CLIENT_HOOK, NOT_PERSONALISED, NO_FROZEN_WEIGHTS = ClientHook(), Personalised(), FrozenWeights()
