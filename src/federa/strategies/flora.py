"""FLoRA (Wang et al., NeurIPS 2024): stack the clients' LoRA factors, so the aggregate is exact.

Client k (rank r_k, share p_k = n_k / Σn) returns B_k (out×r_k) and A_k (r_k×in). The server
concatenates B_stack = [B_1 | … | B_K] by columns and A_stack = [p_1·A_1; …; p_K·A_K] by rows
(the weight goes on A, as in the paper's code), so B_stack·A_stack = Σ p_k B_k A_k with no
cross terms: exact whatever the ranks. The stacked update s·B_stack·A_stack is folded into every
party's frozen weights and each client starts the next round from a fresh adapter.

The fresh adapter is the one every round starts from: plain LoRA's round-0 factors (B = 0, so
a client's update is B_k A_k, the paper's rule; the paper draws a new random A each round, federa
reuses the round-0 A, an equally random start that needs no initialiser on the server), or
FeDeRA's SVD factors (B0, A0). A client of rank r_k starts from their leading r_k slots
(B0_k, A0_k) and its update is the change B_k A_k − B0_k A0_k: the stack then also holds the
columns −B0_k and rows p_k·A0_k, which are zero for plain LoRA.

The fold travels like FedEx-LoRA's (the cumulative out×in matrix per adapted module, sent to
each sampled client and counted in ``bytes_down``), through the same ``base_fold`` mechanism;
the paper sends the stacked factors instead, Σ r_k·(out + in) numbers per module, which is
smaller when every client takes part in every round.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any


from federa.strategies.base import Updates
from federa.strategies.fedex import FoldsIntoBase
from federa.strategies.hetrank import HeterogeneousRanks
from federa.methods.lora_math import lora_pairs, with_rank
from federa.types import State

if TYPE_CHECKING:
    import torch


def stack(bs: Sequence[torch.Tensor], as_: Sequence[torch.Tensor], weights: Sequence[float]
          ) -> tuple[torch.Tensor, torch.Tensor]:
    """(B_stack, A_stack) = ([B_1 | … | B_K], [w_1·A_1; …; w_K·A_K]) in float64: their product is
    Σ w_k·B_k·A_k, for factors of any ranks."""
    import torch

    b = torch.cat([x.to(torch.float64) for x in bs], dim=1)
    a = torch.cat([w * x.to(torch.float64) for x, w in zip(as_, weights)], dim=0)
    return b, a


class FLoRA(FoldsIntoBase, HeterogeneousRanks):
    name = "flora"

    def __init__(self, clients_per_round: int, seed: int, **kwargs: Any) -> None:
        super().__init__(clients_per_round, seed, **kwargs)
        self.fold: State = {}  # frozen weight name → cumulative s·Σ_rounds B_stack·A_stack, float64


    def aggregate(self, rnd: int, global_state: State, updates: Updates) -> State:
        p = self.example_weights(updates)
        for module, (a_key, b_key) in lora_pairs(global_state).items():
            bs, as_, ws = [], [], []
            for u, pk in zip(updates.values(), p):
                rank = u.state[a_key].shape[0]
                # The client's change: its factors, minus the start it was sent (zero for plain LoRA).
                bs += [u.state[b_key], -with_rank(b_key, global_state[b_key], rank)]
                as_ += [u.state[a_key], with_rank(a_key, global_state[a_key], rank)]
                ws += [pk, pk]
            b_stack, a_stack = stack(bs, as_, ws)
            self.add_fold(module, self.scaling * (b_stack @ a_stack))
        # The adapter starts the next round where this one started; the head is averaged.
        return {**global_state, **self.averaged_rest(updates)}
