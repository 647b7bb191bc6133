"""FedProx (Li et al., MLSys 2020): FedAvg on the server, a proximal term on the clients.

Each client minimises its loss plus (μ/2)·‖w − w_global‖² over the trainable tensors, which
keeps local models near the broadcast one when shards differ (non-IID) or clients do different
amounts of work. The server side is FedAvg unchanged; μ reaches the clients in their
:class:`~federa.types.TrainSettings` (``prox_mu``), so it travels on every engine.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from pydantic import Field

from federa.settings import Section
from federa.strategies.fedavg import FedAvg
from federa.types import TrainSettings


class FedProxSettings(Section):
    """``fedprox:`` the weight of the proximal term."""

    mu: float = Field(0.01, ge=0, description="μ of (μ/2)·‖w − w_global‖²; 0 is FedAvg.")


class FedProx(FedAvg):
    name = "fedprox"
    settings = FedProxSettings

    def __init__(self, clients_per_round: int, seed: int, mu: float = 0.01) -> None:
        super().__init__(clients_per_round, seed)
        self.mu = mu

    def configure_round(self, rnd: int, clients: Sequence[int], base: TrainSettings) -> dict[int, TrainSettings]:
        return {c: replace(s, prox_mu=self.mu) for c, s in super().configure_round(rnd, clients, base).items()}
