"""The aggregation interface, after Flower's ``Strategy``: configure a round, aggregate replies.

A strategy decides which clients train and with what settings, and turns their replies into
the next global state. It knows nothing about processes or transport, so the in-process and
the Flower engine drive the same object. Any state it keeps across rounds goes through
``state_dict``/``load_state_dict`` so that checkpoints capture it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from federa.client import TrainSettings, Update
from federa.methods.base import State


def derive_seed(*parts: int) -> int:
    """A 31-bit seed that depends only on ``parts`` (e.g. run seed, round, client id).

    Derived rather than drawn from a running generator, so a resumed run or a client on
    another machine computes the same value with no RNG state to carry around.
    """
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0] & 0x7FFFFFFF)


class Strategy(ABC):
    name: str = ""

    def __init__(self, clients_per_round: int, seed: int) -> None:
        self.clients_per_round = clients_per_round
        self.seed = seed

    def sample_clients(self, rnd: int, clients: Sequence[int]) -> list[int]:
        """Uniform sample without replacement, a pure function of (seed, round, client ids)."""
        k = min(self.clients_per_round, len(clients))
        rng = np.random.default_rng(derive_seed(self.seed, rnd, 0x5A))
        return sorted(int(c) for c in rng.choice(np.asarray(clients), size=k, replace=False))

    def configure_round(self, rnd: int, clients: Sequence[int], base: TrainSettings) -> dict[int, TrainSettings]:
        """Which clients train in round ``rnd`` and with what settings (each its own seed)."""
        return {c: replace(base, seed=derive_seed(self.seed, rnd, c)) for c in self.sample_clients(rnd, clients)}

    @abstractmethod
    def aggregate(self, rnd: int, global_state: State, updates: Sequence[Update]) -> State:
        """The next global state from the replies of this round."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        del state
