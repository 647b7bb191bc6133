"""What an engine is: a transport that carries one round's work to the clients and their replies back.

:meth:`federa.engines.server.ServerRun.run` owns the one round loop for every engine; each round it
hands the transport a :class:`ClientTask` per sampled client and gets :class:`Replies` back. The
in-process engine trains them here (one after another, or in worker processes), the Flower engine
sends them over the Grid, and a batched-clients transport would train several in one forward pass:
each implements :meth:`Transport.train` and never sees the strategy.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from federa.errors import NonFiniteLossError

if TYPE_CHECKING:
    from federa.types import LocalRule, State, TrainSettings, Update


@dataclass(frozen=True)
class ClientTask:
    """What one sampled client receives in a round."""

    settings: TrainSettings  # its local schedule and seed
    state: State  # the trainable state it starts from (the global one, or its rank's factors)
    payload: State  # the strategy's tensors beside the state (SCAFFOLD's c); usually empty
    fold: State  # the strategy's base fold (FedEx-LoRA), which the client holds on its frozen weights
    setup: State  # the method's broadcast setup, for a client that does not hold it yet
    # The strategy's client rule, built with the memory the server keeps for the client, for a
    # transport whose clients keep no memory of their own (in-process); None: plain local training,
    # or the client builds the rule itself from ``payload`` and its own memory (a Flower node).
    rule: LocalRule | None = None


@dataclass(frozen=True)
class ScoreTask:
    """What one client receives to score its personalised model where its private tensors live (its
    node): the global model as it would start a round, which the client completes with its own."""

    state: State  # the trainable state it would start from (the global one, or its rank's factors)
    fold: State  # the strategy's base fold, which the client holds on its frozen weights
    setup: State  # the method's broadcast setup, for a client that does not hold it yet
    test: bool  # also score the test set (a client that has trained), not only its own held-out split


@dataclass
class Replies:
    """A round's replies: client id → update, in client-id order; client id → why it failed."""

    updates: dict[int, Update]
    failed: dict[int, str] = field(default_factory=dict)
    # The new global state when the transport aggregated (SecAgg+ gives only the sum); the updates
    # then carry counts and metrics but no tensors.
    aggregate: State | None = None


class Transport:
    """Moves :class:`ClientTask` s out and :class:`Replies` back; the defaults suit a transport whose
    clients live in this process."""

    # True when each client keeps its own memory between its rounds (a Flower node keeps SCAFFOLD's
    # cᵢ, FedSA-LoRA's B): then the server cannot build a client's personalised model and asks
    # :meth:`personal_scores`. False: the strategy keeps every simulated client's memory and checkpoints it.
    keeps_client_memory: bool = False

    def start_round(self, rnd: int) -> set[int]:
        """Called after the round is planned, before :meth:`train`: the clients that brought their own
        data (no shard in the server's partition, so validation caps their weight by the schedule)."""
        return set()

    def train(self, rnd: int, tasks: Mapping[int, ClientTask]) -> Replies:
        raise NotImplementedError

    def check(self, rnd: int, tasks: Mapping[int, ClientTask], replies: Replies, need: int, log,
              method: str) -> None:
        """Raise when the round cannot be aggregated (too few replies), after logging who failed."""
        check_replies(rnd, len(tasks), replies.updates, replies.failed, need, log=log, method=method)

    def round_done(self, rnd: int, tasks: Mapping[int, ClientTask], replies: Replies,
                   record: Mapping[str, Any]) -> None:
        """After the round was aggregated, evaluated and checkpointed."""

    def personal_scores(self, rnd: int, tasks: Mapping[int, ScoreTask]) -> dict[int, dict[str, float]]:
        """Each client's scores of its personalised model, for a transport whose clients keep their
        private tensors (:attr:`keeps_client_memory`): ``val.<metric>`` for every client in ``tasks``,
        ``test.<metric>`` too where its task says ``test``. A client that does not answer is left out."""
        raise NotImplementedError(f"{type(self).__name__} keeps client memory but cannot score personalised models")

    def close(self) -> None:
        """Release what the transport holds (worker processes)."""


def min_replies(cfg) -> int:
    """Valid replies a round needs: ``flower.min_replies``, or half the sampled clients rounded up.

    Clients that fail (a NaN loss, an exception, no reply) are dropped from their round; the
    method stops only when fewer than this many remain.
    """
    return cfg.flower.min_replies or math.ceil(cfg.clients_per_round / 2)


def check_replies(rnd: int, sampled: int, updates: Mapping[int, Update], failed: Mapping[int, str], need: int,
                  log=print, method: str = "") -> None:
    """Log the clients that failed this round; raise when fewer than ``need`` replies remain.

    A NaN/inf loss stops the method (:class:`NonFiniteLossError`) only when too few clients
    trained without one; the line names them and quotes the first client's message.
    """
    for cid, why in sorted(failed.items()):
        log(f"[{method}] round {rnd}: dropped client {cid}: {why}")
    need = min(need, sampled)  # a round that asks fewer (a centralized baseline's one machine) needs them all
    if len(updates) < need:
        first = failed[min(failed)] if failed else "no reply"
        raise NonFiniteLossError(
            f"round {rnd}: only {len(updates)} of {sampled} sampled clients trained, fewer than flower.min_replies={need} "
            f"(clients {sorted(failed)} failed; first: {first})")
