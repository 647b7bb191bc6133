"""HetLoRA (Cho et al., EMNLP 2024): zero-pad to the server's rank, weight by the updates' norms.

Client k returns B_k, A_k at its rank r_k. The server zero-pads them to rank r (= lora.r; the
zero slots add nothing to B_k A_k) and averages the padded factors with sparsity weights
w_k = ‖B_k A_k‖_F / Σ_j ‖B_j A_j‖_F, taken per adapted module: A = Σ w_k A_k, B = Σ w_k B_k
(a client whose update is small, e.g. a low-rank one, counts less). Client k then receives the
leading r_k slots (truncation). A module where every product is zero falls back to the
clients' example shares. Not implemented: the paper's local rank self-pruning (a client
shrinking its own rank when its last slots' norm is small); client ranks stay fixed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from federa.strategies.base import Updates
from federa.strategies.hetrank import HeterogeneousRanks
from federa.methods.lora_math import lora_pairs, with_rank
from federa.types import State

if TYPE_CHECKING:
    import torch


def sparsity_weights(bs: list[torch.Tensor], as_: list[torch.Tensor]) -> list[float]:
    """w_k = ‖B_k A_k‖_F / Σ_j ‖B_j A_j‖_F (empty when every product is zero)."""
    import torch

    norms = [float(torch.linalg.matrix_norm(b.to(torch.float64) @ a.to(torch.float64))) for b, a in zip(bs, as_)]
    total = sum(norms)
    return [n / total for n in norms] if total > 0 else []


class HetLoRA(HeterogeneousRanks):
    name = "hetlora"

    def aggregate(self, rnd: int, global_state: State, updates: Updates) -> State:
        import torch

        new = dict(global_state)
        states = [u.state for u in updates.values()]
        for a_key, b_key in lora_pairs(global_state).values():
            w = sparsity_weights([s[b_key] for s in states], [s[a_key] for s in states]) or \
                self.example_weights(updates)
            r = global_state[a_key].shape[0]
            for key in (a_key, b_key):
                acc = sum(wk * with_rank(key, s[key], r).to(torch.float64) for s, wk in zip(states, w))
                new[key] = acc.to(global_state[key].dtype)
        return {**new, **self.averaged_rest(updates)}
