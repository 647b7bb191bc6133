"""FlexLoRA (Bai et al., NeurIPS 2024): rebuild the full update, SVD it back to each client's rank.

Client k (rank r_k, share p_k = n_k / Σn) returns B_k, A_k. The server forms the full update
ΔW = Σ p_k B_k A_k per adapted module (out×in, float64), takes its SVD U·S·Vᵀ and keeps the
server's rank: B = U_r·S_r, A = V_rᵀ (r = lora.r). Client k receives the leading r_k slots,
B_k = U_{r_k}·S_{r_k} and A_k = V_{r_k}ᵀ, whose product is the best rank-r_k approximation of
ΔW (Eckart–Young) — the paper's redistribution. The scaling s is common to every party, so it
factors out of ΔW. The SVD runs on the server only: clients never decompose.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from federa.strategies.base import Updates
from federa.strategies.hetrank import HeterogeneousRanks
from federa.methods.lora_math import lora_pairs
from federa.types import State

if TYPE_CHECKING:
    import torch


def truncated_factors(delta: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(A, B) = (V_rᵀ, U_r·S_r) of the SVD of ``delta``, in float64: B·A is its best rank-r approximation."""
    import torch

    u, s, vh = torch.linalg.svd(delta.to(torch.float64), full_matrices=False)
    return vh[:rank].contiguous(), (u[:, :rank] * s[:rank]).contiguous()


class FlexLoRA(HeterogeneousRanks):
    name = "flexlora"

    def aggregate(self, rnd: int, global_state: State, updates: Updates) -> State:
        import torch

        p = self.example_weights(updates)
        new = dict(global_state)
        for a_key, b_key in lora_pairs(global_state).values():
            delta = sum(pk * (u.state[b_key].to(torch.float64) @ u.state[a_key].to(torch.float64))
                        for u, pk in zip(updates.values(), p))
            a, b = truncated_factors(delta, global_state[a_key].shape[0])
            new[a_key], new[b_key] = a.to(global_state[a_key].dtype), b.to(global_state[b_key].dtype)
        return {**new, **self.averaged_rest(updates)}
