"""Confidence intervals over seeds and the paired-difference verdict rule of ``claims.md``.

A claim compares two methods on the *same* cells (same partition, same seed), so its evidence is
the per-seed difference; its verdict is read off the 95% t-interval of that difference:

- **supported**: the whole interval lies on the side the claim states;
- **refuted**: the whole interval lies on the other side;
- **inconclusive**: the interval straddles the boundary (or there are fewer than two seeds, where no
  interval exists); the interval is printed either way.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from scipy import stats as _scipy_stats

CONFIDENCE = 0.95


@dataclass(frozen=True)
class Interval:
    """Mean of ``n`` values and its two-sided t-interval (``lo``/``hi`` None with fewer than two values)."""

    mean: float
    lo: float | None
    hi: float | None
    n: int

    @property
    def half_width(self) -> float | None:
        return None if self.hi is None else self.hi - self.mean

    def text(self, spec: str = "+.4f") -> str:
        if self.lo is None:
            return f"{format(self.mean, spec)} (n={self.n}, no interval)"
        return f"{format(self.mean, spec)} [{format(self.lo, spec)}, {format(self.hi, spec)}] (n={self.n})"


def t_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> Interval | None:
    """Mean ± t_{(1+c)/2, n-1} · s/√n over ``values`` (None values dropped); None when empty."""
    xs = [float(v) for v in values if v is not None]
    if not xs:
        return None
    mean = statistics.fmean(xs)
    if len(xs) < 2:
        return Interval(mean, None, None, len(xs))
    half = float(_scipy_stats.t.ppf((1 + confidence) / 2, len(xs) - 1)) * statistics.stdev(xs) / math.sqrt(len(xs))
    return Interval(mean, mean - half, mean + half, len(xs))


@dataclass(frozen=True)
class Verdict:
    verdict: str  # supported | refuted | inconclusive
    interval: Interval | None
    boundary: float

    def text(self, spec: str = "+.4f") -> str:
        if self.interval is None:
            return "no paired seeds"
        return f"{self.interval.text(spec)} vs {format(self.boundary, spec)} → {self.verdict}"


def paired_verdict(diffs: Sequence[float], side: str = ">", boundary: float = 0.0,
                   confidence: float = CONFIDENCE) -> Verdict:
    """The verdict on "per-seed difference ``side`` ``boundary``" (``side`` is ``>`` or ``<``)."""
    if side not in (">", "<"):
        raise ValueError(f"side must be '>' or '<', got {side!r}")
    ci = t_interval(diffs, confidence)
    if ci is None or ci.lo is None:
        return Verdict("inconclusive", ci, boundary)
    above, below = ci.lo > boundary, ci.hi < boundary
    if (above and side == ">") or (below and side == "<"):
        return Verdict("supported", ci, boundary)
    if (below and side == ">") or (above and side == "<"):
        return Verdict("refuted", ci, boundary)
    return Verdict("inconclusive", ci, boundary)


def combine(verdicts: Sequence[str]) -> str:
    """One claim over several settings (alphas, baselines): all agree, or mixed, or inconclusive."""
    if not verdicts:
        return "inconclusive"
    if all(v == "supported" for v in verdicts):
        return "supported"
    if all(v == "refuted" for v in verdicts):
        return "refuted"
    if "supported" in verdicts and "refuted" in verdicts:
        return "mixed"
    return "inconclusive"


def last_k_mean(scores: Sequence[float], k: int) -> float | None:
    """Mean of the last ``k`` evaluated scores (fewer when fewer exist): final accuracy, less noisy."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    tail = list(scores)[-k:]
    return statistics.fmean(tail) if tail else None
