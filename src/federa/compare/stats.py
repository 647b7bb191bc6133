"""Confidence intervals over seeds and the paired-difference verdict rule of ``claims.md``.

A claim compares two methods on the *same* cells (same partition, same seed), so its evidence is
the per-seed difference; its verdict is read off the 95% t-interval of that difference:

- **supported**: the whole interval lies on the side the claim states;
- **refuted**: the whole interval lies on the other side;
- **equivalent**: the interval straddles the boundary but lies wholly inside an equivalence band
  ``±margin`` around zero (the two methods differ by less than anything the claim cares about); the
  claim states what equivalence means for it ("matches FFT": supported; "beats LoRA": refuted);
- **inconclusive**: the interval straddles the boundary and reaches outside the band (or there are fewer
  than two seeds, where no interval exists); the interval is printed either way.

The one-sided reading comes first: an interval wholly above 0 and inside the band is "supported"
(a real, small gain), never "equivalent". With a sequential plan the interval's confidence is
Bonferroni-corrected over its pre-registered looks (:mod:`federa.compare.sequential`).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from scipy import stats as _scipy_stats

CONFIDENCE = 0.95
# A setting where neither compared method learned: its difference is noise around the start, so the
# setting is left out of the claim's combined verdict (and named on the page).
UNDECIDABLE = "undecidable"


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
    verdict: str  # supported | refuted | inconclusive (what the claim reads)
    interval: Interval | None
    boundary: float
    side: str = ">"
    margin: float | None = None  # the equivalence band ±margin; None: no band for this comparison
    equivalent: bool = False  # decided by the band (then ``verdict`` is what equivalence means for the claim)
    confidence: float = CONFIDENCE
    diffs: tuple[float, ...] = ()  # the per-seed values the interval was built from

    @property
    def outcome(self) -> str:
        """supported | refuted | equivalent | inconclusive: how the interval decided."""
        return "equivalent" if self.equivalent else self.verdict

    @property
    def open(self) -> bool:
        return self.verdict == "inconclusive"

    def text(self, spec: str = "+.4f") -> str:
        if self.interval is None:
            return "no paired seeds"
        conf = "" if math.isclose(self.confidence, CONFIDENCE) else f" ({self.confidence:.2%} interval)"
        band = (f"; inside ±{self.margin:g} → equivalent" if self.equivalent else "")
        return f"{self.interval.text(spec)}{conf} vs {format(self.boundary, spec)}{band} → {self.verdict}"


def paired_verdict(diffs: Sequence[float], side: str = ">", boundary: float = 0.0,
                   confidence: float = CONFIDENCE, margin: float | None = None,
                   if_equivalent: str = "inconclusive") -> Verdict:
    """The verdict on "per-seed difference ``side`` ``boundary``" (``side`` is ``>`` or ``<``).

    ``margin``: an interval that straddles the boundary but lies inside ``[-margin, +margin]`` is
    *equivalent*, and reads as ``if_equivalent`` (what equivalence means for this claim)."""
    if side not in (">", "<"):
        raise ValueError(f"side must be '>' or '<', got {side!r}")
    if if_equivalent not in ("supported", "refuted", "inconclusive"):
        raise ValueError(f"if_equivalent must be supported, refuted or inconclusive, got {if_equivalent!r}")
    xs = tuple(float(d) for d in diffs if d is not None)
    ci = t_interval(xs, confidence)
    common = dict(side=side, margin=margin, confidence=confidence, diffs=xs)
    if ci is None or ci.lo is None:
        return Verdict("inconclusive", ci, boundary, **common)
    above, below = ci.lo > boundary, ci.hi < boundary
    if (above and side == ">") or (below and side == "<"):
        return Verdict("supported", ci, boundary, **common)
    if (below and side == ">") or (above and side == "<"):
        return Verdict("refuted", ci, boundary, **common)
    if margin is not None and -margin < ci.lo and ci.hi < margin:
        return Verdict(if_equivalent, ci, boundary, equivalent=True, **common)
    return Verdict("inconclusive", ci, boundary, **common)


def combine(verdicts: Sequence[str]) -> str:
    """One claim over several settings (alphas, baselines): all agree, or mixed, or inconclusive.

    Settings marked ``undecidable`` (neither compared method learned there, so the budget cannot
    speak to them) are left out, and named on the page; a claim with no decidable setting is
    inconclusive."""
    verdicts = [v for v in verdicts if v != UNDECIDABLE]
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
