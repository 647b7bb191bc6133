"""Client deltas (update − global) and their L2 norm clipping, shared by validation, clipping and DP.

Norms are taken over all trainable tensors together (one vector per client), in float64 so the
bound holds after the cast back to each tensor's dtype up to that dtype's rounding.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field

from federa.settings import Section
from federa.types import State

if TYPE_CHECKING:
    import torch


class RobustSettings(Section):
    """``robust:`` bounds on each client's delta (the validate and clip wrappers)."""

    clip_delta_norm: float | None = Field(None, gt=0, description="Clip each client's delta to this L2 norm.")
    max_update_norm: float | None = Field(None, gt=0, description="Reject an update whose delta norm exceeds this.")
    outlier_k: float | None = Field(
        10.0, gt=1, description="Reject a delta whose norm exceeds k x the round's median delta norm (with 1 or 2 "
        "replies: the median of theirs and the last 5 rounds' accepted norms, once 3 or more); None: off.")
    max_abs_value: float | None = Field(
        1e6, gt=0, description="Reject an update holding a value beyond +-this (pretrained weights are O(1)); None: off.")


def _f64(t: torch.Tensor) -> torch.Tensor:
    import torch

    # On the CPU: client replies arrive there, while the first global state may sit on a GPU.
    return t.to("cpu", torch.float64)


def delta(update: State, global_state: State) -> State:
    """update − global per tensor, in float64 on the CPU."""
    return {k: _f64(update[k]) - _f64(global_state[k]) for k in global_state}


def global_norm(tensors: State) -> float:
    """L2 norm of all tensors flattened into one vector."""
    import torch

    total = torch.zeros((), dtype=torch.float64)
    for t in tensors.values():
        total += (_f64(t) ** 2).sum()
    return float(total.sqrt())


def clip_delta(d: State, max_norm: float) -> State:
    """Scale ``d`` by min(1, max_norm/‖d‖) so that its norm is at most ``max_norm``."""
    norm = global_norm(d)
    if norm <= max_norm:
        return d
    scale = max_norm / norm
    return {k: t * scale for k, t in d.items()}


def clip_update(update: State, global_state: State, max_norm: float) -> State:
    """``update`` moved back towards ``global_state`` so that its delta norm is at most ``max_norm``."""
    clipped = clip_delta(delta(update, global_state), max_norm)
    return {k: (_f64(global_state[k]) + clipped[k]).to(global_state[k].dtype) for k in global_state}
