"""RAVAN (Raje et al., NeurIPS 2025): average the scaled heads s_i·H_i, reset the scales to 1.

Every client shares the frozen B_i, A_i (:mod:`federa.methods.ravan_layers`), so the average of the
clients' updates is exact in the heads: Σ_k p_k·s_ik·B_i·H_ik·A_i = B_i·(Σ_k p_k·s_ik·H_ik)·A_i. The server
sets H_i ← Σ_k p_k·s_ik·H_ik and s_i ← 1 (the scale is folded into the head), as FedLLM-Factory's
``alg/ravan.py`` ``Server.aggregate`` does (weights: the clients' example shares); everything else (the
task head) is FedAvg's. What travels: the h heads (r_h² each) and h scales per adapted module, and the head.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field

from federa.settings import SHAPES, Section
from federa.strategies.base import Strategy, Updates
from federa.strategies.fedavg import weighted_average
from federa.types import State

if TYPE_CHECKING:
    from federa.config import Config

H_PART, S_PART = ".lora_H.", ".lora_s."


class RavanSettings(Section):
    """``ravan:`` the number of heads of RAVAN (…+ravan); lora.r is split evenly among them."""

    heads: int = Field(4, ge=1, description="Heads h; each has rank lora.r / h (lora.r must be a multiple of h).",
                       json_schema_extra=SHAPES)


class Ravan(Strategy):
    name = "ravan"
    settings = RavanSettings

    def __init__(self, clients_per_round: int, seed: int, heads: int = 4) -> None:
        super().__init__(clients_per_round, seed)
        self.heads = heads

    @classmethod
    def check(cls, cfg: Config) -> str | None:
        if cfg.strategy == cls.name:
            return "strategy=ravan is RAVAN's rule and needs its variant; select methods=lora+ravan or federa+ravan"
        if cfg.lora.r % cfg.ravan.heads:
            return (f"ravan.heads={cfg.ravan.heads} does not divide lora.r={cfg.lora.r}; each head takes "
                    f"lora.r / heads slots, so set lora.r to a multiple of it")
        return None

    def aggregate(self, rnd: int, global_state: State, updates: Updates) -> State:
        import torch

        states = [u.state for u in updates.values()]
        weights = [u.num_examples for u in updates.values()]
        new = weighted_average(states, weights)  # the task head (and, overwritten below, H and s)
        total = float(sum(weights))
        for h_key in [k for k in global_state if H_PART in k]:
            s_key = h_key.replace(H_PART, S_PART)
            acc = sum(s[h_key].to(torch.float64) * s[s_key].to(torch.float64) * (w / total)
                      for s, w in zip(states, weights))
            new[h_key] = acc.to(global_state[h_key].dtype)
            new[s_key] = torch.ones_like(global_state[s_key])
        return new
