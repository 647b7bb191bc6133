"""The local baseline (``<method>+local``): every client fine-tunes alone, nothing is aggregated.

What a client gets without federation: it trains on its own shard only, in the rounds it is
sampled (the same clients, seeds and local steps as the federated run, so the same compute per
client), from the model it ended its previous round with. Every tensor the method trains is
private to the client (:data:`~federa.methods.variants.EVERYTHING`), so the global state is empty
and nothing travels: 0 bytes each way, FeDeRA's SVD start included (each client computes it from
the weights it holds). This is FedSA-LoRA's machinery with nothing shared, so the per-client
copies are kept, checkpointed and saved the same way (``client_private.safetensors``).

Scores. Each client's own model on its own held-out split (``partition.client_val_fraction``,
0.1 by default as for every personalised method) is the natural measure. There is no global
model, so the test-set metrics are the mean over all clients of each client's own model's
metrics (a client never sampled scores the initial model): what a client picked at random gets.
That costs one test evaluation per trained client (plus one for the untrained ones, which share
the initial model). The saved ``final/`` model is the clients' mean, as for FedSA, a convenience
that no client holds; each client's own tensors are in ``client_private.safetensors``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from federa.strategies.base import Updates
from federa.strategies.fedsa import FedSA
from federa.types import State

if TYPE_CHECKING:
    from federa.config import Config


class Local(FedSA):
    name = "local"
    linear = False  # nothing is averaged
    aggregates = False

    def __init__(self, clients_per_round: int, seed: int) -> None:
        super().__init__(clients_per_round, seed)
        self.num_clients = 0

    @classmethod
    def check(cls, cfg: Config) -> str | None:
        if cfg.strategy == cls.name:
            return "strategy=local is the local baseline's rule and needs its variant; select e.g. methods=lora+local"
        if cfg.engine != "inprocess":
            return (f"…+local is a baseline, not a protocol: it runs in one process (engine=inprocess), "
                    f"not on engine={cfg.engine}")
        return None

    @classmethod
    def from_config(cls, cfg: Config) -> Local:
        strategy = cls(cfg.clients_per_round, cfg.seed)
        strategy.num_clients = cfg.num_clients  # the test score averages over every client, sampled or not
        return strategy

    def aggregate(self, rnd: int, global_state: State, updates: Updates) -> State:
        return global_state  # empty: each client's trained tensors stay with it (client memory)

    def test_privates(self) -> list[tuple[State, int]]:
        trained = [(self.kept[c], 1) for c in sorted(self.kept)]
        untrained = self.num_clients - len(self.kept)
        return trained + ([(self.initial, untrained)] if untrained > 0 else [])
