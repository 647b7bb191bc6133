"""The centralized baseline (``<method>+centralized``): one machine trains on every client's data.

The upper reference of federated learning: the same model and method, with all clients' training
data pooled on one machine (the server's :attr:`~federa.job.Job.pooled_id`, whose shard is the
union of the clients' training shards; held-out client splits stay out of it), trained with the
same budget in examples. Round t samples the clients the federated run samples (same seed) and
trains once on the pool for the sum of their local steps: ``clients_per_round × local_steps``
steps of ``batch_size``, or with ``local_epochs`` Σ over the sampled clients of
ceil(local_epochs·nᵢ/batch_size), so the examples processed per round equal the federated run's.
Each round's training continues from the last one's model with a fresh AdamW, as every federated
client's does, so the data (pooled and shuffled, hence IID) and the absence of averaging are the
only differences. Nothing travels: 0 bytes. Every client's held-out split scores the one model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from federa.strategies.base import Strategy, Updates, derive_seed
from federa.types import State, TrainSettings

if TYPE_CHECKING:
    from federa.config import Config


class Centralized(Strategy):
    name = "centralized"
    aggregates = False

    def __init__(self, clients_per_round: int, seed: int) -> None:
        super().__init__(clients_per_round, seed)
        self.sizes: dict[int, int] = {}

    @classmethod
    def check(cls, cfg: Config) -> str | None:
        if cfg.strategy == cls.name:
            return ("strategy=centralized is the centralized baseline's rule and needs its variant; "
                    "select e.g. methods=lora+centralized")
        if cfg.engine != "inprocess":
            return (f"…+centralized is a baseline, not a protocol: it runs in one process (engine=inprocess), "
                    f"not on engine={cfg.engine}")
        return None

    def register_shards(self, sizes: Mapping[int, int]) -> None:
        self.sizes = dict(sizes)

    def configure_round(self, rnd: int, clients: Sequence[int], base: TrainSettings) -> dict[int, TrainSettings]:
        pooled = len(clients)  # Job.pooled_id: the first id no client has
        steps = sum(base.num_steps(self.sizes[c]) for c in self.sample_clients(rnd, clients))
        return {pooled: replace(base, local_steps=steps, local_epochs=None, seed=derive_seed(self.seed, rnd, pooled))}

    def aggregate(self, rnd: int, global_state: State, updates: Updates) -> State:
        (update,) = updates.values()  # the one machine's model is the model
        return update.state
