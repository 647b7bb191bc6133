"""What FLoRA, FlexLoRA and HetLoRA share: LoRA clients of different ranks around one server adapter.

The server holds an adapter of rank ``lora.r``; client c trains at its own rank r_c
(``lora.client_ranks``, cycled over clients, each ≤ lora.r). A client's adapter is the leading
r_c slots of the server's: it receives A[:r_c] and B[:, :r_c] (:meth:`client_state`, counted in
``bytes_down`` at that size), trains them (the client loads them into its model's leading slots
with zeros elsewhere, which stay zero: see :func:`federa.client.local_update`), and replies at
rank r_c (counted in ``bytes_up`` at that size). Every party applies the same scaling
s = lora.alpha / lora.r to B·A, so equal factors mean an equal update on every client and on
the server, and the aggregation rules below hold exactly as the papers write them (with s
factored out). Tensors outside the adapter (the classifier head) are FedAvg's.

With ``federa`` initialisation the SVD is taken once at the server's rank: a client of rank
r_c < lora.r starts from the top-r_c factors, so its starting model lacks W's singular
components r_c+1 … lora.r (the global model keeps them): truncation is what every one of these
schemes does to the global adapter, and FeDeRA's adapter is not zero at round 0.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from federa.strategies.base import Strategy, Updates
from federa.strategies.capabilities import ClientHook
from federa.strategies.fedavg import weighted_average
from federa.methods.lora_math import lora_rank, with_rank
from federa.types import State

if TYPE_CHECKING:
    from federa.config import Config


class HeterogeneousRanks(Strategy, ClientHook):
    """The common part: each client's rank, its share of the global state, the head's average."""

    def __init__(self, clients_per_round: int, seed: int, rank: int = 8, client_ranks: list[int] | None = None,
                 scaling: float = 2.0, **_: Any) -> None:
        super().__init__(clients_per_round, seed)
        self.rank, self.client_ranks, self.scaling = rank, list(client_ranks or [rank]), scaling

    @classmethod
    def from_config(cls, cfg: Config) -> HeterogeneousRanks:
        return cls(cfg.clients_per_round, cfg.seed, rank=cfg.lora.r, client_ranks=cfg.lora.client_ranks,
                   scaling=cfg.lora.alpha / cfg.lora.r)

    @classmethod
    def check(cls, cfg: Config) -> str | None:
        ranks = cfg.lora.client_ranks or []
        if len(ranks) > cfg.num_clients:
            return (f"lora.client_ranks has {len(ranks)} ranks for {cfg.num_clients} clients; give at most "
                    "num_clients (a shorter list is cycled over clients)")
        if cfg.server_opt.name != "none":
            # The new adapter is rebuilt (stacked and folded, re-factorised by SVD, norm-weighted),
            # so new − old factors is no pseudo-gradient a server optimiser could step along.
            return f"strategy={cls.name} rebuilds the adapter each round, so server_opt cannot step along it; " \
                   "set server_opt.name=none"
        return super().check(cfg)

    def rank_of(self, client: int) -> int:
        return self.client_ranks[client % len(self.client_ranks)]

    def client_state(self, rnd: int, client: int, global_state: State) -> State:
        rank = self.rank_of(client)
        return {k: with_rank(k, v, rank) for k, v in global_state.items()}

    @staticmethod
    def averaged_rest(updates: Updates) -> State:
        """FedAvg of everything outside the adapter (the classifier head), by example count."""
        states = [{k: v for k, v in u.state.items() if lora_rank(k, v.shape) is None} for u in updates.values()]
        return weighted_average(states, [u.num_examples for u in updates.values()]) if states[0] else {}

    @staticmethod
    def example_weights(updates: Updates) -> list[float]:
        """p_k = n_k / Σ n_j, the clients' shares of this round's examples."""
        total = float(sum(u.num_examples for u in updates.values()))
        return [u.num_examples / total for u in updates.values()]
