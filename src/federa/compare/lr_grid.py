"""``--lr-grid``: each method's learning rate picked on a validation split of the clients' shards.

Every multiplier of a method's configured lr gets a short run (half the rounds) that trains on
what is left of each shard and is scored on the held-out *training* rows, never the test set.
Runs live under ``DIR/cells/<cell>/lr_grid/x<multiplier>/``.

**The rule** (``LR_RULE``, recorded in ``compare.json`` and ``lr_choice.json``): the grid runs on the
first ``plan.grid_seeds`` (≥ 2) seeds of each alpha; per (method, alpha) every rate's validation score
is averaged over those seeds, and the default (×1) is kept **unless another rate beats it by more
than one standard error** of the paired difference (SE over the seeds, floored by the binomial SE of
two accuracies on the validation rows, so two seeds that happen to agree cannot make a 2-row gap
look certain). Of the rates that clear it, the best mean wins. A grid where every rate's mean is
within one SE of the validation rows' label prior (nothing learned on validation at any rate), or
where every rate ties, **decides nothing**: the default is kept and the page says so, rather than
calling it tuned.

Folders made by the earlier rule (``LEGACY_LR_RULE``: the best single-seed score on the alpha's first
seed) record no rule; they are read back, and resumed, under that rule, so a page never shows an lr
that its runs did not use.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from federa.compare.jobs import with_lr
from federa.config import build_config
from federa.errors import DataError
from federa.results_dir import RunDir

if TYPE_CHECKING:
    from federa.job import Job

# lr grid: multipliers of each method's configured lr, scored on VAL_FRACTION of every client's
# shard after half the rounds (a documented, shortened budget: the grid costs 1.5x a cell, not 3x).
LR_MULTIPLIERS = (0.3, 1.0, 3.0)
VAL_FRACTION = 0.2
GRID_START_ROWS = 8  # rows a grid run's round-0 evaluation reads (its score is never used)
GRID_COLUMNS = ["alpha", "seed", "method", "multiplier", "lr", "val_score", "val_macro_f1", "rounds", "status",
                "chosen"]
LR_RULE = "one-se/v2"  # mean over grid seeds, keep ×1 unless beaten by > 1 SE; all-ties decide nothing
LEGACY_LR_RULE = "best-single-seed/v1"  # what a compare.json without "lr_rule" was made by
DEFAULT_MULTIPLIER = 1.0
CHOICE_FILE = "lr_choice.json"


@dataclass
class LrChoice:
    """One (method, alpha) grid read by the one-SE rule."""

    scores: dict[float, list[float | None]]  # multiplier → validation score per grid seed (None: failed)
    chosen: float  # the multiplier kept
    status: str  # tuned | default kept | decides nothing | every rate failed
    means: dict[float, float] = field(default_factory=dict)
    diffs: dict[float, float] = field(default_factory=dict)  # mean paired gain over the default
    se: dict[float, float] = field(default_factory=dict)  # its standard error
    prior: float | None = None  # the validation rows' label prior (accuracy of the majority class)
    val_rows: int | None = None

    def as_dict(self) -> dict[str, Any]:
        key = lambda d: {f"{k:g}": v for k, v in d.items()}  # noqa: E731  (json keys are text)
        return {"rule": LR_RULE, "scores": key(self.scores), "means": key(self.means), "gain_vs_default": key(self.diffs),
                "se": key(self.se), "chosen": self.chosen, "status": self.status, "prior": self.prior,
                "val_rows": self.val_rows}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LrChoice:
        key = lambda x: {float(k): v for k, v in x.items()}  # noqa: E731
        return cls(key(d["scores"]), d["chosen"], d["status"], key(d["means"]), key(d["gain_vs_default"]),
                   key(d["se"]), d.get("prior"), d.get("val_rows"))


def _binomial_se(p: float, q: float, rows: int) -> float:
    """SE of the difference of two independent accuracies p, q on ``rows`` rows."""
    return math.sqrt(max(p * (1 - p) + q * (1 - q), 0.0) / rows)


def one_se_choice(scores: Mapping[float, Sequence[float | None]], default: float = DEFAULT_MULTIPLIER,
                  val_rows: int | None = None, prior: float | None = None) -> LrChoice:
    """The one-standard-error rule over ``scores`` (multiplier → validation score per grid seed, the
    seeds in the same order for every multiplier; None = a failed run).

    SE of a candidate's gain over ``default``: the SD of the per-seed gains / √n, floored (when
    ``val_rows`` is known, i.e. an accuracy on that many rows) by the binomial SE of the gain averaged
    over the n seeds. ``prior``: the label prior of the validation rows (None: no such floor)."""
    scores = {float(m): list(v) for m, v in scores.items()}
    means = {m: statistics.fmean(xs) for m, v in scores.items() if (xs := [x for x in v if x is not None])}
    out = LrChoice(scores, default, "default kept", means, prior=prior, val_rows=val_rows)
    if not means:
        out.status = "every rate failed"
        return out
    if default not in means:  # the default failed on every seed: the best that ran, on its mean alone
        out.chosen, out.status = max(means, key=lambda m: (means[m], -abs(math.log(m)))), "tuned"
        return out
    base = scores[default]
    for m in means:
        if m == default:
            continue
        pairs = [(c, d) for c, d in zip(scores[m], base) if c is not None and d is not None]
        if not pairs:
            continue
        gains = [c - d for c, d in pairs]
        n = len(gains)
        se = statistics.stdev(gains) / math.sqrt(n) if n > 1 else math.inf
        if val_rows:
            se = max(se, math.sqrt(sum(_binomial_se(c, d, val_rows) ** 2 for c, d in pairs)) / n)
        out.diffs[m], out.se[m] = statistics.fmean(gains), se
    floor = _binomial_se(prior, prior, val_rows) / math.sqrt(2 * len(base)) if prior is not None and val_rows else 0.0
    if max(means.values()) - min(means.values()) <= 1e-12 or (
            prior is not None and all(v <= prior + floor for v in means.values())):
        out.status = "decides nothing"
        return out
    winners = [m for m in out.diffs if out.diffs[m] > out.se[m]]
    if winners:
        out.chosen = max(winners, key=lambda m: (means[m], -abs(math.log(m))))
        out.status = "tuned"
    return out


def carve_validation(parts: Sequence[np.ndarray], fraction: float, seed: int) -> tuple[list[np.ndarray], np.ndarray]:
    """Hold out ``fraction`` of every client's shard: (shards left to train on, held-out indices).

    A client keeps at least one example to train on; one with a single example gives none.
    """
    rng = np.random.default_rng(seed)
    keep, held = [], []
    for idx in parts:
        k = min(max(1, round(fraction * len(idx))), len(idx) - 1)
        out = rng.choice(idx, size=k, replace=False) if k > 0 else np.empty(0, dtype=np.int64)
        keep.append(np.setdiff1d(idx, out))
        held.append(out)
    val = np.sort(np.concatenate(held)).astype(np.int64)
    if len(val) == 0:
        raise DataError("--lr-grid: the clients' shards are too small to hold out a validation split; "
                        "raise data.max_train_examples or drop --lr-grid")
    return keep, val


def validation_job(job: Job) -> Job:
    """The job the lr grid runs: trains on the kept shards, evaluates on held-out *training* rows.

    Half the rounds (at least one), evaluated in full only at the end, is the grid's shortened budget.
    """
    keep, val = carve_validation(job.parts, VAL_FRACTION, job.cfg.seed)
    rounds = max(1, job.cfg.rounds // 2)
    raw = job.cfg.model_dump(mode="json")
    # The rule reads the last evaluation only: the round-0 one (which every server makes) reads a token
    # GRID_START_ROWS rows instead of the whole validation split, since it cannot change the choice.
    raw.update(rounds=rounds, eval_every=rounds, eval_subset=GRID_START_ROWS, eval_full_last=1)
    # Scored on the pooled held-out rows only: no per-client scores in a grid run.
    return replace(job, cfg=build_config(raw), parts=keep, test=job.train.select(val.tolist()), val_parts=[])


def _grid_dir(rd: RunDir, mult: float) -> RunDir:
    return RunDir(rd.root / "lr_grid" / f"x{mult:g}")


def grid_scores(rd: RunDir, methods: Sequence[str], chosen: Mapping[str, float] | None = None) -> list[dict[str, Any]]:
    """Every finished grid run of this cell. ``chosen`` (method → multiplier, the one-SE rule's choice
    for the alpha) marks the chosen rows; None marks each method's best score in this cell, the
    legacy rule (ties to the multiplier nearest the default)."""
    rows = []
    for mult in LR_MULTIPLIERS:
        grd = _grid_dir(rd, mult)
        last = {r["method"]: r for r in grd.read_metrics()}  # records are in round order
        for m in methods:
            if not grd.result(m).is_file():
                continue
            res = json.loads(grd.result(m).read_text(encoding="utf-8"))
            rec = last.get(m, {}) if res.get("status") == "done" else {}
            rows.append({"method": m, "multiplier": mult, "lr": res["lr"], "val_score": rec.get("score"),
                         "val_macro_f1": rec.get("macro_f1"), "rounds": res.get("rounds"),
                         "status": res.get("status"), "chosen": False})
    if chosen is not None:
        for r in rows:
            r["chosen"] = math.isclose(r["multiplier"], chosen.get(r["method"], math.nan))
        return rows
    for m in methods:
        scored = [r for r in rows if r["method"] == m and r["val_score"] is not None]
        if scored:
            max(scored, key=lambda r: (r["val_score"], -abs(math.log(r["multiplier"]))))["chosen"] = True
    return rows


def validation_prior(job: Job) -> tuple[float | None, int]:
    """(label prior of the grid's validation rows, their count): the majority class's share when the
    main metric is accuracy (the score every rate ties at when nothing is learned), else None."""
    _, val = carve_validation(job.parts, VAL_FRACTION, job.cfg.seed)
    if job.main_metric != "accuracy":
        return None, len(val)
    strata = np.asarray(job.strata)[val]
    return float(np.bincount(strata).max() / len(strata)), len(val)


def run_grid(job: Job, rd: RunDir, methods: Sequence[str], progress: bool = True, log=print,
             keep: bool = True) -> None:
    """Run (or read back) the grid runs of ``methods`` on this cell's validation split.
    ``keep=False`` drops each finished grid run's checkpoints and final model (only its score matters)."""
    from federa.engines.inprocess import run_method  # grid runs are short and local, whatever the engine
    from federa.pending import run_pending

    vjob = validation_job(job)
    for mult in LR_MULTIPLIERS:
        grd = _grid_dir(rd, mult)
        grd.root.mkdir(parents=True, exist_ok=True)

        def run_one(vjob: Job, m: str, grd: RunDir, mult: float = mult) -> dict[str, Any]:
            log(f"[lr grid {m}] lr={job.cfg.lr_of(m) * mult:.3g} (x{mult:g}) on the validation split")
            return run_method(with_lr(vjob, m, job.cfg.lr_of(m) * mult), m, grd, progress=progress, log=log)

        def prune(grd: RunDir = grd) -> None:
            for m in methods:
                grd.drop_resume_files(m, final_too=True)

        run_pending(vjob, grd, methods, run_one, after_each=None if keep else prune, log=lambda *_: None)


def choose_over_seeds(cells: Sequence[tuple[Job, RunDir]], methods: Sequence[str], progress: bool = True, log=print,
                      keep: bool = True) -> dict[str, LrChoice]:
    """The one-SE rule over the grids of ``cells`` (the alpha's grid seeds): runs what is missing."""
    for job, rd in cells:
        run_grid(job, rd, methods, progress, log, keep)
    priors = [validation_prior(job) for job, _ in cells]
    val_rows = round(statistics.fmean(n for _, n in priors))
    prior = statistics.fmean(p for p, _ in priors) if all(p is not None for p, _ in priors) else None
    out: dict[str, LrChoice] = {}
    for m in methods:
        scores: dict[float, list[float | None]] = {mult: [] for mult in LR_MULTIPLIERS}
        for _, rd in cells:
            got = {r["multiplier"]: r["val_score"] for r in grid_scores(rd, [m])}
            for mult in LR_MULTIPLIERS:
                scores[mult].append(got.get(mult))
        out[m] = one_se_choice(scores, DEFAULT_MULTIPLIER, val_rows, prior)
        c = out[m]
        log(f"[lr grid {m}] x{c.chosen:g} ({c.status}) over {len(cells)} seed(s)")
    return out


def choose_lrs(job: Job, rd: RunDir, methods: Sequence[str], progress: bool = True, log=print,
               keep: bool = True) -> dict[str, float]:
    """The legacy rule (``LEGACY_LR_RULE``): the grid on this one cell, the best score each. Kept to
    resume folders made by it."""
    run_grid(job, rd, methods, progress, log, keep)
    chosen = {r["method"]: r["lr"] for r in grid_scores(rd, methods) if r["chosen"]}
    for m in methods:
        if m not in chosen:
            log(f"[lr grid {m}] every lr failed; keeping lr={job.cfg.lr_of(m):.3g}")
        else:
            log(f"[lr grid {m}] chose lr={chosen[m]:.3g}")
    return chosen


def read_choices(out: Path) -> dict[str, dict[str, LrChoice]]:
    """alpha → method → the recorded one-SE choice (``DIR/lr_choice.json``); {} when none was made."""
    path = out / CHOICE_FILE
    if not path.is_file():
        return {}
    raw = json.loads(path.read_text(encoding="utf-8"))
    return {a: {m: LrChoice.from_dict(d) for m, d in per.items()} for a, per in raw["alphas"].items()}


def write_choices(out: Path, alpha: str, choices: Mapping[str, LrChoice], seeds: Sequence[int]) -> None:
    from federa.checkpoint import atomic_write_bytes

    path = out / CHOICE_FILE
    raw = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {"rule": LR_RULE, "alphas": {}}
    raw["alphas"][alpha] = {m: {**c.as_dict(), "grid_seeds": list(seeds)} for m, c in choices.items()}
    atomic_write_bytes(path, json.dumps(raw, indent=1).encode("utf-8"))


def recorded_rule(out: Path) -> str:
    """The lr rule a results folder was made by: compare.json's ``lr_rule``; a folder whose compare.json
    ran a grid but names no rule predates the one-SE rule."""
    path = out / "compare.json"
    if not path.is_file():
        return LR_RULE
    info = json.loads(path.read_text(encoding="utf-8"))
    return info.get("lr_rule") or (LEGACY_LR_RULE if info.get("lr_grid") else LR_RULE)


def choices_markdown(choices: Mapping[str, Mapping[str, LrChoice]], base_lrs: Mapping[str, float]) -> str:
    """The page's record of the grid: scores per seed, means, gains over ×1 with their SE, the choice."""
    lines = ["## Learning rates (one-SE rule)", "",
             f"Rule `{LR_RULE}`: each rate's validation score (rows held out of the clients' training shards, "
             "half the rounds) averaged over the grid seeds; the default ×1 is kept unless another rate beats it "
             "by more than one standard error of the paired gain (SE over seeds, floored by the binomial SE on "
             "the validation rows); a grid whose every rate sits within one SE of the validation label prior, "
             "or ties, **decides nothing** (the default is used, untuned).", "",
             "| alpha | method | " + " | ".join(f"×{m:g}: per seed → mean" for m in LR_MULTIPLIERS)
             + " | best gain over ×1 ± SE | prior | chosen | status |",
             "|---|---|" + "---|" * (len(LR_MULTIPLIERS) + 4)]
    for a, per in choices.items():
        for m, c in per.items():
            cols = []
            for mult in LR_MULTIPLIERS:
                xs = c.scores.get(mult, [])
                seeds = "/".join("–" if x is None else f"{x:.3f}" for x in xs)
                cols.append(f"{seeds} → {c.means[mult]:.3f}" if mult in c.means else seeds or "–")
            best = max(c.diffs, key=lambda k: c.diffs[k], default=None)
            gain = f"×{best:g}: {c.diffs[best]:+.3f} ± {c.se[best]:.3f}" if best is not None else "–"
            lr = base_lrs.get(m)
            chosen = f"×{c.chosen:g}" + (f" (lr {lr * c.chosen:.3g})" if lr else "")
            prior = "–" if c.prior is None else f"{c.prior:.3f}"
            lines.append(f"| {a} | {m} | " + " | ".join(cols) + f" | {gain} | {prior} | {chosen} | {c.status} |")
    return "\n".join(lines) + "\n"
