"""A method's bookkeeping, round by round: bytes each way, modelled time, the update trajectory and the
running totals since round 0 (carried in checkpoints, so a resumed run continues them).

Pure arithmetic on what the server already knows; nothing here changes what trains. The figures land
in each metrics.jsonl line (``bytes_up``, ``client_train_s``, ``modelled_round_s``, ``cum_*``, ...).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from federa.methods.base import state_bytes
from federa.modelled_time import record_round_s, speed_factors
from federa.methods.lora_math import aggregation_error
from federa.trajectory import UpdateTrajectory

if TYPE_CHECKING:
    from federa.modelled_time import NetworkSettings
    from federa.types import State, Update

_COUNTERS = ("train_wall_s", "client_compute_s", "wall_s", "bytes_up", "bytes_down", "examples_seen", "modelled_s")


@dataclass
class Totals:
    """Cumulative counters since round 0 (carried in checkpoints, so resume keeps them)."""

    train_wall_s: float = 0.0  # configure → aggregate, summed over rounds (no evaluation)
    client_compute_s: float = 0.0  # Σ over clients of local training seconds
    wall_s: float = 0.0  # end to end, evaluation included
    bytes_up: int = 0
    bytes_down: int = 0
    examples_seen: int = 0
    modelled_s: float = 0.0  # Σ of modelled round times under cfg.network (federa.modelled_time)
    contacted: set[int] = field(default_factory=set)  # clients that already hold the setup broadcast

    def as_dict(self) -> dict[str, Any]:
        return {**{k: getattr(self, k) for k in _COUNTERS}, "contacted": sorted(self.contacted)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Totals:
        # A checkpoint written before modelled time existed resumes with it at 0.
        return cls(**{k: d[k] for k in _COUNTERS if k in d}, contacted=set(d["contacted"]))


@dataclass(frozen=True)
class Downlink:
    """Bytes sent to each replying client this round, read before aggregation moves the strategy on."""

    state: dict[int, int]  # its trainable state (smaller than the global one for a lower LoRA rank)
    beside: dict[int, int]  # the strategy's payload and base fold
    setup: int  # the method's setup, sent once, in a client's first round


@dataclass(frozen=True)
class RoundReplies:
    """A round's replies as the server judged them."""

    updates: Mapping[int, Update]  # every reply
    accepted: Mapping[int, Update]  # those aggregated
    weights: Mapping[int, int]  # each accepted reply's weight
    counted: Mapping[int, Mapping[str, Any]]  # each reply's figures that count (none for a rejected reply)
    aggregate: State | None = None  # the transport's aggregate (SecAgg+): no update carried tensors


class Ledger:
    """Bytes, modelled time, trajectory and running totals of one method."""

    def __init__(self, network: NetworkSettings, num_clients: int, seed: int, travels: bool) -> None:
        # A baseline (+local, +centralized) sends nothing anywhere: its bytes are 0 by definition.
        self.travels = travels
        self.totals = Totals()
        self.trajectory = UpdateTrajectory()  # update norm and cosine to the previous round's update
        # One more speed, nominal, for a centralized baseline's machine (Job.pooled_id): no straggler.
        self.link = network.link()
        self.speeds = [*speed_factors(network, num_clients, seed), network.compute_scale]

    def account(self, rnd: int, replies: RoundReplies, sent: Downlink, old_state: State, new_state: State,
                strategy_metrics: Mapping[str, Any], times: Mapping[str, float]) -> dict[str, Any]:
        """The round's figures for its metrics line, added to the totals. ``times``: ``round_s`` and
        ``aggregate_s``."""
        updates, accepted, weights, counted, aggregate = (replies.updates, replies.accepted, replies.weights,
                                                          replies.counted, replies.aggregate)
        ids = sorted(updates)
        newly = set(updates) - self.totals.contacted
        up_each = {c: state_bytes(updates[c].state) + state_bytes(updates[c].extra) if aggregate is None
                   else state_bytes(aggregate) for c in ids}  # masked vectors: one state's worth each
        down_each = {c: sent.state[c] + sent.setup * (c in newly) + sent.beside[c] for c in ids}
        figures = {
            "clients": ids,
            "bytes_down": sum(down_each.values()),
            "bytes_up": sum(up_each.values()),
            "examples_seen": int(sum(m.get("samples", 0) for m in counted.values())),
            "client_compute_s": sum(m.get("train_seconds", 0.0) for m in counted.values()),
            "train_loss": sum(u.metrics["train_loss"] * weights[c] for c, u in accepted.items())
            / sum(weights.values()) if accepted else None,
            "rejected": [],
            # What averaging LoRA's factors separately loses this round (None: no LoRA pair, or SecAgg+).
            "lora_agg_error": aggregation_error([u.state for u in accepted.values()], list(weights.values()))
            if aggregate is None else None,
            **strategy_metrics,
            **times,
            # Per sampled client, in the order of "clients": what a network model (federa.modelled_time) prices.
            "client_train_s": [counted[c].get("train_seconds", 0.0) for c in ids],
            "client_bytes_down": [down_each[c] for c in ids],
            "client_bytes_up": [up_each[c] for c in ids],
            **self.trajectory.observe(old_state, new_state),
        }
        if not self.travels:
            figures.update({"bytes_down": 0, "bytes_up": 0, "client_bytes_down": [0] * len(ids),
                            "client_bytes_up": [0] * len(ids)})
        # What this round would take on cfg.network's links (pure arithmetic; see federa.modelled_time).
        figures["modelled_round_s"] = record_round_s({"round": rnd, **figures}, self.link, self.speeds)
        t = self.totals
        t.contacted |= newly
        t.train_wall_s += figures["round_s"]
        t.client_compute_s += figures["client_compute_s"]
        t.bytes_up += figures["bytes_up"]
        t.bytes_down += figures["bytes_down"]
        t.examples_seen += figures["examples_seen"]
        t.modelled_s += figures["modelled_round_s"]
        return figures

    def cumulative(self) -> dict[str, Any]:
        """The running totals, as each metrics line carries them."""
        t = self.totals
        return {"cum_train_wall_s": t.train_wall_s, "cum_client_compute_s": t.client_compute_s,
                "cum_wall_s": t.wall_s, "cum_bytes_up": t.bytes_up, "cum_bytes_down": t.bytes_down,
                "cum_examples_seen": t.examples_seen, "cum_modelled_s": t.modelled_s}
