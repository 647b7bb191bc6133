"""Validation, the outermost wrapper: a client reply must pass before it may touch the global state.

A client can send anything: a buggy one sends the wrong tensors or NaNs, a malicious one a
huge update, a forged example count or forged metrics. :func:`check_update` names the first
problem found (or None); the wrapper drops that client for this round, reports why, and lets
the inner strategy aggregate the others. Three bounds hold without any setting:

- a client's weight is at most its registered shard size (:meth:`Validate.register_shards`,
  the partition the server computed), or, for a client without one, the examples its local
  steps can have read (``local_steps × batch_size``): a larger claim is counted as that cap;
- no value beyond ±``robust.max_abs_value`` (default 1e6) reaches the model: 3e38 is finite,
  but it turns the next evaluation into NaN;
- with 3 or more replies, a delta whose norm exceeds ``robust.outlier_k`` (default 10) × the
  round's median delta norm is rejected: scale-free, so it needs no tuning per model. A round
  with 1 or 2 replies has no honest median of its own: its replies are measured against the
  median of their norms together with the accepted norms of the last :data:`HISTORY_ROUNDS`
  rounds (kept in the checkpoint), once that pool holds 3 or more norms.

A rejected reply's metrics are forged as far as the server knows: :func:`counted_metrics` says
which figures the server may add to its counters and logs.
"""

from __future__ import annotations

import math
import numbers
import statistics
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from federa.strategies.base import Strategy, Updates, Wrapper
from federa.strategies.robust import RobustSettings, delta, global_norm
from federa.types import State, TrainSettings, Update

if TYPE_CHECKING:
    import torch
    from federa.config import Config

# Counts beyond 2**53 are not exact as floats (the weighted mean divides them): no real shard is that big.
MAX_COUNT = 2**53
# Metrics that count something, hence are never negative (train_loss is checked on its own).
_COUNTERS = ("samples", "steps", "train_seconds")
# Rounds of accepted delta norms a round with fewer than 3 replies is measured against.
HISTORY_ROUNDS = 5


def _show(v: object) -> str:
    # A forged value may be a 400-digit int or a megabyte string: name it in a few characters.
    if isinstance(v, int) and not isinstance(v, bool) and v.bit_length() > 64:
        return f"an integer of {v.bit_length()} bits"
    text = repr(v)
    return text if len(text) <= 40 else text[:37] + "..."


def _check_tensors(got: object, ref: State, what: str, max_abs: float | None = None) -> str | None:
    """Why the mapping ``got`` does not match the template ``ref`` (names, shapes, dtypes, finite, magnitude)."""
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
        if max_abs is not None and t.numel() and (peak := float(t.abs().max())) > max_abs:
            return f"{name} holds a value of magnitude {peak:.3g}, beyond robust.max_abs_value={max_abs:g}"
    return None


def check_count(n: object) -> str | None:
    """Why ``n`` cannot be an example count (the weight of a reply), or None."""
    # bool is an int to Python, and a float 3.7 would be truncated to 3 by int(): refuse both.
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n <= 0:
        return f"num_examples is {_show(n)}, expected a positive integer"
    if n > MAX_COUNT:
        return f"num_examples is {_show(n)}, beyond any real shard (at most 2**53)"
    return None


def check_metrics(metrics: object) -> str | None:
    """Why a reply's training metrics cannot be logged (missing or forged), or None."""
    if not isinstance(metrics, Mapping):
        return f"metrics is a {type(metrics).__name__}, not a mapping"
    if "train_loss" not in metrics:
        return "metrics lack train_loss"
    for key, v in metrics.items():
        if isinstance(v, bool) or not isinstance(v, numbers.Real):
            return f"metric {key} is {_show(v)}, not a number"
        if not isinstance(v, numbers.Integral) and not math.isfinite(v):
            return f"metric {key} is {v}, not finite"
        # A finite 1e308 would still overflow a sum of seconds or examples into inf.
        if abs(v) > MAX_COUNT:
            return f"metric {key} is {_show(v)}, beyond 2**53"
        if v < 0 and (key == "train_loss" or key in _COUNTERS):
            return f"metric {key} is {_show(v)}, expected >= 0"
    return None


def counted_metrics(update: Update, accepted: bool) -> Mapping[str, Any]:
    """The metrics of ``update`` the server may count (examples seen, compute seconds, modelled
    round time, train loss): all of an accepted reply's, none of a rejected one's, whose figures
    may be forged (a list, NaN, 1e300) whatever the reason it was rejected for."""
    return update.metrics if accepted and check_metrics(update.metrics) is None else {}


def check_update(update: Update, global_state: State, max_update_norm: float | None = None,
                 expected_extra: State | None = None, max_abs_value: float | None = None) -> str | None:
    """Why ``update`` must be rejected, or None when it is acceptable.

    ``expected_extra``: the template of the tensors a strategy's client rule sends beside the
    state (SCAFFOLD's Δcᵢ); they are checked as strictly as the state, since they too reach
    the global state.
    """
    # The example count weights FedAvg: a forged count is as harmful as a forged tensor.
    if (why := check_count(update.num_examples)) is not None:
        return why
    if (why := check_metrics(update.metrics)) is not None:
        return why
    state = update.state
    if (why := _check_tensors(state, global_state, "state", max_abs_value)) is not None:
        return why
    if (why := _check_tensors(update.extra, expected_extra or {}, "extra", max_abs_value)) is not None:
        return why
    if max_update_norm is not None:
        norm = global_norm(delta(state, global_state))
        if not math.isfinite(norm) or norm > max_update_norm:
            return f"update norm {norm:.4g} exceeds robust.max_update_norm={max_update_norm:g}"
    return None


def split_valid(updates: Updates, global_state: State, max_update_norm: float | None = None,
                expected_extra: State | None = None, start: Callable[[int], State] | None = None,
                max_abs_value: float | None = None) -> tuple[dict[int, Update], dict[int, str]]:
    """(accepted updates, rejected client id → reason). ``start``: client id → the state that client
    started from, when it is not ``global_state`` (heterogeneous LoRA ranks)."""
    accepted, rejected = {}, {}
    for cid, u in updates.items():
        reason = check_update(u, global_state if start is None else start(cid), max_update_norm, expected_extra,
                              max_abs_value)
        if reason is None:
            accepted[cid] = u
        else:
            rejected[cid] = reason
    return accepted, rejected


def outliers(norms: Mapping[int, float], k: float, history: Iterable[float] = ()) -> dict[int, str]:
    """Client id → reason, for each delta norm above ``k`` × the median of ``norms`` (3 or more).

    The median is that of the replies themselves, so one attacker among honest clients cannot
    move it far, and the bound scales with the model, the learning rate and the round. With 1
    or 2 replies that median could be the attacker's own: the median is then taken over
    ``norms`` together with ``history`` (the accepted norms of recent rounds), when those are 3
    or more; with fewer there is no bound.
    """
    if len(norms) >= 3:
        pool, what = list(norms.values()), "the round's median"
    else:
        pool, what = [*history, *norms.values()], "the median of this and recent rounds' accepted norms"
        if len(pool) < 3:
            return {}
    med = statistics.median(pool)
    out = {}
    for cid, n in norms.items():
        if n > k * med:
            ratio = f"{n / med:.3g}x" if med > 0 else "infinitely"
            out[cid] = f"update norm {n:.4g} is {ratio} {what} {med:.4g} (robust.outlier_k={k:g})"
    return out


def step_examples(settings: TrainSettings) -> int | None:
    """The most examples a client's local training reads: local_steps × batch_size (None under local_epochs)."""
    return None if settings.local_epochs is not None else settings.num_steps(0) * settings.batch_size


def weight_cap(client: int, shard_sizes: Mapping[int, int], steps_cap: int | None) -> int | None:
    """The largest weight ``client``'s reply may carry: its registered shard size, else ``steps_cap``."""
    return shard_sizes.get(client, steps_cap)


class Validate(Wrapper):
    """Drops invalid and outlying replies and caps each reply's weight; always on."""

    section = "robust"
    settings = RobustSettings
    needs_aggregation = False  # a broken reply is refused in every round, a baseline's too

    def __init__(self, inner: Strategy, max_update_norm: float | None = None, outlier_k: float | None = None,
                 max_abs_value: float | None = None, steps_cap: int | None = None) -> None:
        super().__init__(inner)
        self.max_update_norm, self.outlier_k, self.max_abs_value = max_update_norm, outlier_k, max_abs_value
        self.steps_cap = steps_cap
        self.shard_sizes: dict[int, int] = {}
        self.rejected: dict[int, str] = {}
        self.capped: dict[int, int] = {}
        # The accepted delta norms of the last rounds, one list per round: what a round with 1 or
        # 2 replies is measured against. Checkpointed, so a resumed run decides as the uninterrupted one.
        self.recent_norms: deque[list[float]] = deque(maxlen=HISTORY_ROUNDS)

    @property
    def needs_individual_updates(self) -> bool:  # type: ignore[override]
        # Only a fixed bound must see every update; under SecAgg+ the outlier rule, which needs
        # them too, cannot run (the server sees only the sum) and is skipped (docs/reliability.md).
        return self.max_update_norm is not None

    @classmethod
    def wanted(cls, cfg: Config) -> bool:
        return True

    @classmethod
    def wrap(cls, inner: Strategy, cfg: Config) -> Validate:
        r = cfg.robust
        steps_cap = cfg.local_steps * cfg.batch_size if cfg.local_epochs is None and cfg.local_steps else None
        return cls(inner, r.max_update_norm, r.outlier_k, r.max_abs_value, steps_cap)

    def register_shards(self, sizes: Mapping[int, int]) -> None:
        self.shard_sizes = dict(sizes)
        super().register_shards(sizes)

    def weight_cap(self, client: int) -> int | None:
        return weight_cap(client, self.shard_sizes, self.steps_cap)

    def before(self, rnd: int, global_state: State, updates: Updates) -> Updates:
        # Each reply is checked against the state its client started from (the global state,
        # or its own rank's factors under heterogeneous LoRA ranks).
        hook = self.client_hook
        accepted, self.rejected = split_valid(updates, global_state, self.max_update_norm,
                                              hook.expected_extra(global_state),
                                              start=lambda cid: hook.client_state(rnd, cid, global_state),
                                              max_abs_value=self.max_abs_value)
        if self.outlier_k is not None:
            norms = {c: global_norm(delta(u.state, hook.client_state(rnd, c, global_state))) for c, u in accepted.items()}
            history = [n for past in self.recent_norms for n in past]
            for cid, reason in outliers(norms, self.outlier_k, history).items():
                self.rejected[cid] = reason
                del accepted[cid]
                del norms[cid]
            self.recent_norms.append(sorted(norms.values()))
        self.rejected = dict(sorted(self.rejected.items()))
        self.capped = {}
        for cid, u in accepted.items():
            cap = self.weight_cap(cid)
            if cap is not None and u.num_examples > cap:
                self.capped[cid] = cap
                accepted[cid] = replace(u, num_examples=cap)
        return accepted

    def finish_sum(self, rnd: int, global_state: State, aggregate: State) -> State:
        self.rejected, self.capped = {}, {}
        return super().finish_sum(rnd, global_state, aggregate)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "recent_norms": [list(r) for r in self.recent_norms]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        # A checkpoint from before the history existed resumes with none.
        self.recent_norms = deque((list(r) for r in state.get("recent_norms", [])), maxlen=HISTORY_ROUNDS)

    def round_metrics(self, rnd: int) -> dict[str, Any]:
        rejected = [{"client": c, "reason": r} for c, r in sorted(self.rejected.items())]
        out = {**self.inner.round_metrics(rnd), "rejected": rejected}
        if self.capped:  # a claim above the cap: the weight it was counted with
            out["weight_capped"] = [{"client": c, "counted": n} for c, n in sorted(self.capped.items())]
        return out
