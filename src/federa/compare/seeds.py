"""Per-(method, alpha, seed) results: what the claims pair up, seed by seed.

Also the comparison's target: 99% of FFT's score *at convergence* in the same cell, where
convergence is FFT's plateau (no gain of more than 0.5 points over its last 5 evaluations) or,
when it never plateaus, the round budget; which one applied is recorded per cell.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from federa.compare.stats import last_k_mean
from federa.modelled_time import NetworkSettings, cumulative_modelled_s
from federa.report import DEFAULT_TARGET_FRACTION, time_to_target

PLATEAU_WINDOW = 5  # evaluations
PLATEAU_GAIN = 0.005  # 0.5 points of the main metric


def converged_score(scores: Sequence[float]) -> tuple[float, int | None]:
    """(score at convergence, index of the evaluation where the plateau was detected or None).

    Plateau at evaluation ``j``: the best of the last ``PLATEAU_WINDOW`` evaluations beats the
    best before them by at most ``PLATEAU_GAIN``; the score at convergence is the best up to ``j``.
    Without a plateau it is the best over the whole budget.
    """
    for j in range(PLATEAU_WINDOW, len(scores)):
        window, before = scores[j - PLATEAU_WINDOW + 1:j + 1], scores[:j - PLATEAU_WINDOW + 1]
        if max(window) - max(before) <= PLATEAU_GAIN:
            return max(scores[:j + 1]), j
    return max(scores), None


def convergence_target(fft_records: Sequence[Mapping[str, Any]]) -> tuple[float, str]:
    """The cell's target from FFT's curve, and the rule text (plateau round or budget)."""
    recs = sorted(fft_records, key=lambda r: r["round"])
    score, j = converged_score([r["score"] for r in recs])
    how = (f"plateau at round {recs[j]['round']}" if j is not None
           else f"round budget ({recs[-1]['round']} rounds, no plateau)")
    return DEFAULT_TARGET_FRACTION * score, (f"{DEFAULT_TARGET_FRACTION:.0%} of FFT's score at convergence "
                                             f"({score:.4f}; {how})")


@dataclass
class SeedResult:
    method: str
    alpha: str
    seed: int
    status: str | None
    final: float | None  # the last evaluation
    final_k: float | None  # mean of the last k evaluations
    best: float | None
    target: float | None
    round_to_target: int | None  # None: never reached
    compute_s_to_target: float | None
    wall_s_to_target: float | None
    modelled_s_to_target: float | None
    modelled_s_total: float | None
    update_cos_mean: float | None  # mean over rounds of the cosine between consecutive global updates
    update_norm_mean: float | None
    start: float | None = None  # the score before training (round 0)
    floor: float | None = None  # the best constant prediction's score on the test split (the label prior)

    @property
    def reached(self) -> bool:
        return self.round_to_target is not None

    @property
    def gain(self) -> float | None:
        """How much this run learned at all: final-k score minus the better of the untrained model's
        and the best constant prediction's (moving from the minority class to the majority one is not
        learning the task)."""
        if self.final_k is None or self.start is None:
            return None
        return self.final_k - max(self.start, self.floor if self.floor is not None else self.start)


def _mean(xs: Sequence[float | None]) -> float | None:
    vals = [x for x in xs if x is not None]
    return statistics.fmean(vals) if vals else None


def seed_result(method: str, alpha: str, seed: int, records: Sequence[Mapping[str, Any]],
                summary: Mapping[str, Any], target: float | None, last_k: int, network: NetworkSettings,
                num_clients: int, floor: float | None = None) -> SeedResult:
    recs = sorted(records, key=lambda r: r["round"])
    trained = [r for r in recs if r["round"] > 0]
    scores = [r["score"] for r in recs]
    ttt = time_to_target(recs, target)
    modelled = cumulative_modelled_s(recs, network, num_clients, seed)
    return SeedResult(
        method=method, alpha=alpha, seed=seed, status=summary.get("status"),
        # Final-k over trained rounds only: the evaluation before training is not a final score.
        final=scores[-1] if scores else None,
        final_k=last_k_mean([r["score"] for r in trained] or scores, last_k) if scores else None,
        best=max(scores) if scores else None, target=target,
        round_to_target=ttt["round"] if ttt else None,
        compute_s_to_target=ttt["client_compute_s"] if ttt else None,
        wall_s_to_target=ttt["train_wall_s"] if ttt else None,
        modelled_s_to_target=modelled.get(ttt["round"]) if ttt and modelled else None,
        modelled_s_total=modelled[recs[-1]["round"]] if modelled and recs else None,
        update_cos_mean=_mean([r.get("update_cos") for r in trained]),
        update_norm_mean=_mean([r.get("update_norm") for r in trained]),
        start=recs[0]["score"] if recs and recs[0]["round"] == 0 else None,
        floor=floor,
    )
