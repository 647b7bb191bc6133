"""Validation, the outermost wrapper: a client reply must pass before it may touch the global state.

A client can send anything: a buggy one sends the wrong tensors or NaNs, a malicious one a
huge update. :func:`check_update` names the first problem found (or None); the wrapper drops
that client for this round, reports why, and lets the inner strategy aggregate the others.
"""

from __future__ import annotations

import math
import numbers
from typing import TYPE_CHECKING, Any

from federa.strategies.base import Strategy, Updates, Wrapper
from federa.strategies.deltas import RobustSettings, delta, global_norm
from federa.types import State, Update

if TYPE_CHECKING:
    import torch
    from federa.config import Config


def _check_tensors(got: object, ref: State, what: str) -> str | None:
    """Why the mapping ``got`` does not match the template ``ref`` (names, shapes, dtypes, finite)."""
    import torch

    if not isinstance(got, dict):
        return f"{what} is a {type(got).__name__}, not a mapping of tensors"
    if got.keys() != ref.keys():
        missing = sorted(ref.keys() - got.keys())[:3]
        extra = sorted(got.keys() - ref.keys())[:3]
        return f"wrong tensor names{'' if what == 'state' else ' in ' + what} (missing {missing}, unexpected {extra})"
    for name, r in ref.items():
        t = got[name]
        if not isinstance(t, torch.Tensor):
            return f"{name} is a {type(t).__name__}, not a tensor"
        if t.shape != r.shape:
            return f"{name} has shape {tuple(t.shape)}, expected {tuple(r.shape)}"
        if t.dtype != r.dtype:
            return f"{name} has dtype {t.dtype}, expected {r.dtype}"
        if not bool(torch.isfinite(t).all()):
            return f"{name} holds NaN or inf values"
    return None


def check_update(update: Update, global_state: State, max_update_norm: float | None = None,
                 expected_extra: State | None = None) -> str | None:
    """Why ``update`` must be rejected, or None when it is acceptable.

    ``expected_extra``: the template of the tensors a strategy's client rule sends beside the
    state (SCAFFOLD's Δcᵢ); they are checked as strictly as the state, since they too reach
    the global state.
    """
    state = update.state
    if (why := _check_tensors(state, global_state, "state")) is not None:
        return why
    if (why := _check_tensors(update.extra, expected_extra or {}, "extra")) is not None:
        return why
    n = update.num_examples
    # The example count weights FedAvg: a forged count is as harmful as a forged tensor.
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n <= 0:
        return f"num_examples is {n!r}, expected a positive integer"
    if max_update_norm is not None:
        norm = global_norm(delta(state, global_state))
        if not math.isfinite(norm) or norm > max_update_norm:
            return f"update norm {norm:.4g} exceeds robust.max_update_norm={max_update_norm:g}"
    return None


def split_valid(updates: Updates, global_state: State, max_update_norm: float | None = None,
                expected_extra: State | None = None) -> tuple[dict[int, Update], dict[int, str]]:
    """(accepted updates, rejected client id → reason)."""
    accepted, rejected = {}, {}
    for cid, u in updates.items():
        reason = check_update(u, global_state, max_update_norm, expected_extra)
        if reason is None:
            accepted[cid] = u
        else:
            rejected[cid] = reason
    return accepted, rejected


class Validate(Wrapper):
    """Drops invalid replies (and, with ``robust.max_update_norm``, too large ones); always on."""

    section = "robust"
    settings = RobustSettings

    def __init__(self, inner: Strategy, max_update_norm: float | None = None) -> None:
        super().__init__(inner)
        self.max_update_norm = max_update_norm
        self.rejected: dict[int, str] = {}

    @property
    def needs_individual_updates(self) -> bool:  # type: ignore[override]
        return self.max_update_norm is not None  # the structural checks run on whatever arrives

    @classmethod
    def wanted(cls, cfg: Config) -> bool:
        return True

    @classmethod
    def wrap(cls, inner: Strategy, cfg: Config) -> Validate:
        return cls(inner, cfg.robust.max_update_norm)

    def before(self, rnd: int, global_state: State, updates: Updates) -> Updates:
        accepted, self.rejected = split_valid(updates, global_state, self.max_update_norm,
                                              self.expected_extra(global_state))
        return accepted

    def finish_sum(self, rnd: int, global_state: State, aggregate: State) -> State:
        self.rejected = {}
        return super().finish_sum(rnd, global_state, aggregate)

    def round_metrics(self, rnd: int) -> dict[str, Any]:
        rejected = [{"client": c, "reason": r} for c, r in sorted(self.rejected.items())]
        return {**self.inner.round_metrics(rnd), "rejected": rejected}
