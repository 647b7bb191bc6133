"""LoRA-FAIR (Bian et al., ICCV 2025): average A and B, then correct B̄ on the server towards avg(B·A).

Averaging the factors gives B̄·Ā, not the ideal update ΔW = Σ p_k·B_k·A_k. LoRA-FAIR keeps Ā and
fits a residual ΔB on the server (Eq. 8 of the paper, arXiv 2411.14961):

    ΔB* = argmin_ΔB  [1 − cos(ΔW, (B̄ + ΔB)·Ā)] + λ·‖ΔB‖_F

(cosine taken over the flattened matrices; λ = 0.01 as in the paper), so the new adapter
(B̄ + ΔB*, Ā) points where the clients' average update points while staying close to B̄; clients
start the next round from it (the paper's "Avg-Initial"), so nothing extra travels: the factors
and the head, both ways, as in LoRA. The paper solves the problem by gradient descent on the
server; its solver's step size and step count are not given in the text federa followed (no
authors' code was reachable), so federa runs ``lorafair.steps`` Adam steps from ΔB = 0 in
float64 with step ``lorafair.lr`` × RMS(B̄) (scaled to B̄, since the cosine term does not depend on
B's scale), deterministic on every machine. The λ term is the plain Frobenius norm, as written.

Logged per round: ``lorafair_agg_error``, ‖(B̄ + ΔB*)·Ā − ΔW‖_F / ‖ΔW‖_F over the adapted matrices,
beside the uncorrected ``lora_agg_error`` (‖B̄·Ā − ΔW‖_F / ‖ΔW‖_F) every LoRA round reports.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import Field

from federa.settings import Section
from federa.strategies.base import Strategy, Updates
from federa.strategies.fedavg import weighted_average
from federa.methods.lora_math import lora_pairs, weighted_mean
from federa.types import State

if TYPE_CHECKING:
    import torch

    from federa.config import Config


class LoraFairSettings(Section):
    """``lorafair:`` the server-side residual fit of LoRA-FAIR (…+lorafair)."""

    lam: float = Field(0.01, ge=0, description="λ, the weight of ‖ΔB‖_F (the paper's 0.01).")
    steps: int = Field(200, ge=0, description="Adam steps of the residual fit per adapted matrix and round.")
    lr: float = Field(0.02, gt=0, description="Adam step, relative to the RMS of the averaged B.")


def objective(delta_b: torch.Tensor, b_mean: torch.Tensor, a_mean: torch.Tensor, target: torch.Tensor,
              lam: float) -> torch.Tensor:
    """1 − cos(ΔW, (B̄ + ΔB)·Ā) + λ·‖ΔB‖_F, the cosine over the flattened matrices."""
    import torch

    product = (b_mean + delta_b) @ a_mean
    cos = torch.sum(product * target) / (torch.linalg.norm(product) * torch.linalg.norm(target)).clamp_min(1e-300)
    return 1 - cos + lam * torch.linalg.norm(delta_b)


def fit_residual(b_mean: torch.Tensor, a_mean: torch.Tensor, target: torch.Tensor, lam: float, steps: int,
                 lr: float) -> torch.Tensor:
    """ΔB minimising :func:`objective` by ``steps`` Adam steps from 0 (float64), step ``lr``·RMS(B̄)."""
    import torch

    b64, a64, t64 = (x.to(torch.float64) for x in (b_mean, a_mean, target))
    delta = torch.zeros_like(b64, requires_grad=True)
    rms = float(b64.pow(2).mean().sqrt())
    if steps == 0 or rms == 0 or float(torch.linalg.norm(t64)) == 0:
        return delta.detach()  # B̄ = 0 (LoRA's start) or no update: no direction to correct towards
    opt = torch.optim.Adam([delta], lr=lr * rms)
    with torch.enable_grad():
        for _ in range(steps):
            opt.zero_grad()
            objective(delta, b64, a64, t64, lam).backward()
            opt.step()
    return delta.detach()


class LoraFair(Strategy):
    name = "lorafair"
    settings = LoraFairSettings

    def __init__(self, clients_per_round: int, seed: int, lam: float = 0.01, steps: int = 200,
                 lr: float = 0.02) -> None:
        super().__init__(clients_per_round, seed)
        self.lam, self.steps, self.lr = lam, steps, lr
        self.last_error: float | None = None

    @classmethod
    def check(cls, cfg: Config) -> str | None:
        if cfg.strategy == cls.name:
            return "strategy=lorafair is LoRA-FAIR's rule and needs its variant; select methods=lora+lorafair or " \
                   "federa+lorafair"
        return None

    def aggregate(self, rnd: int, global_state: State, updates: Updates) -> State:
        import torch

        states = [u.state for u in updates.values()]
        weights = [u.num_examples for u in updates.values()]
        new = weighted_average(states, weights)  # Ā, B̄ and the head: FedAvg
        gap = norm = 0.0
        for a_key, b_key in lora_pairs(global_state).values():
            target = weighted_mean([s[b_key].to(torch.float64) @ s[a_key].to(torch.float64) for s in states], weights)
            b_mean = weighted_mean([s[b_key] for s in states], weights)
            a_mean = weighted_mean([s[a_key] for s in states], weights)
            corrected = b_mean + fit_residual(b_mean, a_mean, target, self.lam, self.steps, self.lr)
            new[b_key] = corrected.to(global_state[b_key].dtype)
            gap += float(((corrected @ a_mean - target) ** 2).sum())
            norm += float((target ** 2).sum())
        self.last_error = (gap ** 0.5) / (norm ** 0.5) if norm > 0 else None
        return new

    def round_metrics(self, rnd: int) -> dict[str, Any]:
        return {"lorafair_agg_error": self.last_error}
