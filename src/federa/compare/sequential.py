"""How many seeds: a pre-registered sequential plan, and the sample-size line of an open comparison.

**Sequential plan.** The seeds of a comparison are added in pre-registered *looks* (e.g. 3, 5, 8
seeds per alpha). After each look every claim is read; an alpha whose comparisons are all decided
stops, one with an open comparison gets the next look's seeds, up to the last look. Reading the
data several times would inflate the error rate of a fixed-confidence interval, so every interval
of such a plan is built at ``1 - (1 - 0.95) / K`` confidence for ``K`` looks (Bonferroni over looks):
whichever look a comparison stops at, its chance of a wrong supported/refuted/equivalent verdict
stays at most 5% (two-sided; the union bound needs no assumption about the stopping rule).
Multiplicity across comparisons (alphas, baselines) is not corrected: each verdict's 5% is its own.

**Sample-size line.** For an open comparison, the seeds at which an interval of the same confidence,
at the observed mean and standard deviation, would clear the nearest decision boundary: the claim's
boundary (supported/refuted) or the edge of the equivalence band. A planning figure, not a promise:
the observed SD of a few seeds is itself noisy.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

from scipy import stats as _scipy_stats

from federa.compare.stats import CONFIDENCE
from federa.errors import ConfigError

# Beyond this many seeds the line says "more than" instead of a number.
MAX_SEEDS_LINE = 200


def look_confidence(looks: int, overall: float = CONFIDENCE) -> float:
    """Each look's interval confidence so that ``looks`` looks keep the overall error at ``1 - overall``."""
    if looks < 1:
        raise ValueError(f"looks must be >= 1, got {looks}")
    return 1 - (1 - overall) / looks


def parse_looks(text: str) -> tuple[int, ...]:
    """``3,5,8`` → (3, 5, 8): strictly increasing seed counts, the first at least 2 (an interval needs two)."""
    try:
        looks = tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise ConfigError(f"--looks must be seed counts separated by commas, got '{text}'; e.g. --looks 3,5,8") from None
    if not looks or looks[0] < 2 or any(b <= a for a, b in zip(looks, looks[1:])):
        raise ConfigError(f"--looks needs increasing seed counts starting at 2 or more, got '{text}'; "
                          "e.g. --looks 3,5,8")
    return looks


def half_width(sd: float, n: int, confidence: float) -> float:
    """t_{(1+c)/2, n-1} · sd / √n."""
    return float(_scipy_stats.t.ppf((1 + confidence) / 2, n - 1)) * sd / math.sqrt(n)


def seeds_to_close(diffs: Sequence[float], boundary: float, margin: float | None = None,
                   confidence: float = CONFIDENCE, cap: int = MAX_SEEDS_LINE) -> int | None:
    """Seeds at which the interval, at the observed mean and SD of ``diffs``, would no longer straddle
    ``boundary`` or would lie inside ``±margin``: whichever comes first. None: not within ``cap``
    seeds (the mean sits on the boundary), or fewer than two values (no SD to plan with)."""
    xs = [float(x) for x in diffs if x is not None]
    if len(xs) < 2:
        return None
    mean, sd = statistics.fmean(xs), statistics.stdev(xs)
    room = [abs(mean - boundary)]
    if margin is not None and abs(mean) < margin:
        room.append(margin - abs(mean))
    for n in range(2, cap + 1):
        if any(half_width(sd, n, confidence) < r for r in room):
            return n
    return None


def sample_size_line(diffs: Sequence[float], boundary: float, margin: float | None = None,
                     confidence: float = CONFIDENCE, cap: int = MAX_SEEDS_LINE) -> str:
    """"≈N more seeds would close it at the observed SD" for an open comparison."""
    n_now = sum(x is not None for x in diffs)
    if n_now < 2:
        return "needs a second seed before any sample size can be estimated"
    n = seeds_to_close(diffs, boundary, margin, confidence, cap)
    sd = statistics.stdev([float(x) for x in diffs if x is not None])
    if n is None:
        return f"not closable within {cap} seeds at the observed SD {sd:.4f} (the mean sits on the boundary)"
    return f"≈{max(0, n - n_now)} more seed(s) (n≈{n}) would close it at the observed SD {sd:.4f}"


def fixed_n(sd: float, effect: float, confidence: float = CONFIDENCE, cap: int = MAX_SEEDS_LINE) -> int | None:
    """The fixed number of seeds whose interval half-width at SD ``sd`` is below ``effect`` (the gap
    to decide): the planning rule behind a profile's seed count. None: not within ``cap``."""
    for n in range(2, cap + 1):
        if half_width(sd, n, confidence) < effect:
            return n
    return None


def next_look(n_now: int, looks: Sequence[int]) -> int | None:
    """The seed count of the look after ``n_now`` seeds, or None when the plan is exhausted."""
    return next((k for k in looks if k > n_now), None)
