"""Which test rows an evaluation reads: the whole split, or a fixed stratified subset (``eval_subset``).

Evaluating every round on the whole split is most of a small model's run time; the curves between
the first and the last evaluations only need to be unbiased, not exact. So with ``eval_subset=N``
every evaluation reads the same N rows (stratified by label, drawn once from ``data.split_seed``),
except the last ``eval_full_last`` evaluations, which read the whole split: the final-k score of
``federa compare``'s claims is then the whole-split score, while time-to-target is read off the
subset curve (a noisier but unbiased estimate of the same score).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from datasets import Dataset

    from federa.config import Config
    from federa.job import Job


def eval_rounds(rounds: int, eval_every: int) -> list[int]:
    """The rounds a run evaluates at (round 0, every ``eval_every``-th, and the last)."""
    return [r for r in range(rounds + 1) if r % eval_every == 0 or r == rounds]


def whole_split_at(cfg: Config, rnd: int) -> bool:
    return cfg.eval_subset is None or rnd in eval_rounds(cfg.rounds, cfg.eval_every)[-cfg.eval_full_last:]


def stratified_subset(labels: np.ndarray | None, size: int, n: int, seed: int) -> np.ndarray:
    """``size`` sorted row indices of ``n``: per label in proportion (largest remainders), else uniform."""
    rng = np.random.default_rng(seed)
    if size >= n:
        return np.arange(n)
    if labels is None:
        return np.sort(rng.choice(n, size=size, replace=False))
    classes, counts = np.unique(labels, return_counts=True)
    want = counts * size / n
    take = np.floor(want).astype(int)
    take[np.argsort(-(want - take), kind="stable")[: size - take.sum()]] += 1
    idx = [rng.choice(np.flatnonzero(labels == c), size=k, replace=False) for c, k in zip(classes, take) if k]
    return np.sort(np.concatenate(idx))


def eval_rows(job: Job, rnd: int) -> Dataset:
    """The test rows the evaluation at round ``rnd`` reads."""
    test = job.test
    if whole_split_at(job.cfg, rnd) or job.cfg.eval_subset >= len(test):
        return test
    labels = None
    if "label" in test.column_names:
        col = np.asarray(test["label"])
        labels = col if col.ndim == 1 and np.issubdtype(col.dtype, np.integer) else None
    return test.select(stratified_subset(labels, job.cfg.eval_subset, len(test), job.cfg.data.split_seed).tolist())
