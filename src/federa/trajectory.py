"""How the global model moves from round to round: the norm of each update and the cosine
between consecutive updates (the paper's "FeDeRA's weights oscillate less" made measurable).

An update is the change of the global *trainable* state in one round, all tensors flattened into
one vector: full weights for FFT, the adapter factors (and head) for LoRA-style methods. A cosine
near 1 means consecutive rounds push the same way; near 0 or negative, that they zig-zag.
"""

from __future__ import annotations

import torch

from federa.types import State


class UpdateTrajectory:
    """Remembers the previous global update (one vector of the trainable size), checkpointed with
    the server so a resumed run logs the same cosines (a checkpoint from before has none: None)."""

    def __init__(self) -> None:
        self._prev: torch.Tensor | None = None

    def observe(self, old: State, new: State) -> dict[str, float | None]:
        keys = [k for k in sorted(new) if k in old]
        if not keys:
            return {"update_norm": None, "update_cos": None}
        delta = torch.cat([(new[k].detach().float() - old[k].detach().float()).flatten().cpu() for k in keys])
        norm = float(delta.norm())
        cos = None
        if self._prev is not None and self._prev.numel() == delta.numel():
            denom = norm * float(self._prev.norm())
            cos = float(torch.dot(delta.double(), self._prev.double()) / denom) if denom > 0 else None
        self._prev = delta
        return {"update_norm": norm, "update_cos": cos}

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {} if self._prev is None else {"prev": self._prev}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self._prev = state.get("prev")
