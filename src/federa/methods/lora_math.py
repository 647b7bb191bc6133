"""LoRA factors inside a trainable state: find the (A, B) pairs, and measure what naive averaging loses.

Averaging LoRA factors separately is not averaging the updates: avg(B)·avg(A) ≠ avg(B·A). The
relative gap, summed over every adapted matrix, is the *aggregation error* that FedEx-LoRA,
FFA-LoRA and FLoRA were designed to remove; federa logs it for every LoRA-family round.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from federa.types import State

if TYPE_CHECKING:
    import torch

A_KEY, B_KEY = ".lora_A.", ".lora_B."


def lora_pairs(state: State) -> dict[str, tuple[str, str]]:
    """Module prefix → (its lora_A key, its lora_B key), for every module with both in ``state``."""
    pairs = {}
    for k in state:
        if A_KEY in k:
            b = k.replace(A_KEY, B_KEY)
            if b in state:
                pairs[k.split(A_KEY)[0]] = (k, b)
    return pairs


def lora_rank(key: str, shape: Sequence[int]) -> int | None:
    """The rank of a LoRA factor of this name and shape (A: rows, B: columns), or None for other tensors."""
    if A_KEY in key:
        return shape[0]
    if B_KEY in key:
        return shape[1]
    return None


def with_rank(key: str, tensor: torch.Tensor, rank: int) -> torch.Tensor:
    """A LoRA factor cut to its leading ``rank`` slots, or zero-padded up to ``rank`` slots.

    Heterogeneous-rank schemes (FLoRA, FlexLoRA, HetLoRA) keep a client's rank-r_k adapter as
    the leading r_k slots of the global one; zero slots contribute nothing to B·A. Other
    tensors, and factors already at ``rank``, come back as they are (the same object).
    """
    import torch

    have = lora_rank(key, tensor.shape)
    if have is None or have == rank:
        return tensor
    dim = 0 if A_KEY in key else 1
    if have > rank:
        return tensor.narrow(dim, 0, rank).clone()
    shape = list(tensor.shape)
    shape[dim] = rank
    out = torch.zeros(shape, dtype=tensor.dtype, device=tensor.device)
    out.narrow(dim, 0, have).copy_(tensor)
    return out


def fit_ranks(state: State, like: Mapping[str, torch.Size]) -> State:
    """``state`` with each LoRA factor cut or zero-padded to the rank of the same name in ``like``
    (a mapping of shapes); everything else untouched."""
    return {k: with_rank(k, v, r) if k in like and (r := lora_rank(k, like[k])) is not None else v
            for k, v in state.items()}


def widest_ranks(states: Sequence[State]) -> list[State]:
    """The states with every LoRA factor zero-padded to the largest rank among them (same B·A)."""
    if len(states) < 2:
        return list(states)
    widest = {k: max((s[k].shape for s in states), key=lambda shape: shape.numel())
              for k in states[0] if lora_rank(k, states[0][k].shape) is not None}
    return [fit_ranks(s, widest) for s in states]


def weighted_mean(tensors: Sequence[torch.Tensor], weights: Sequence[float]) -> torch.Tensor:
    import torch

    total = float(sum(weights))
    out = torch.zeros(tensors[0].shape, dtype=torch.float64)
    for t, w in zip(tensors, weights):
        out += t.to(torch.float64) * (w / total)
    return out


def aggregation_error(states: Sequence[State], weights: Sequence[float]) -> float | None:
    """‖avg(B)·avg(A) − avg(B·A)‖_F / ‖avg(B·A)‖_F over all adapted matrices (weights as FedAvg's).

    None when the states hold no LoRA pair, or the mean product is zero (LoRA's first round
    starts from B = 0 on every client, where the question has no answer yet).
    """
    import torch

    if not states:
        return None
    states = widest_ranks(states)  # clients of different ranks (FLoRA, FlexLoRA, HetLoRA): zero-padded
    pairs = lora_pairs(states[0])
    if not pairs:
        return None
    gap = norm = 0.0
    for a_key, b_key in pairs.values():
        mean_product = weighted_mean([s[b_key].to(torch.float64) @ s[a_key].to(torch.float64) for s in states], weights)
        product_of_means = weighted_mean([s[b_key] for s in states], weights) @ weighted_mean(
            [s[a_key] for s in states], weights)
        gap += float(((product_of_means - mean_product) ** 2).sum())
        norm += float((mean_product ** 2).sum())
    return (gap ** 0.5) / (norm ** 0.5) if norm > 0 else None
