"""``--lr-grid``: each method's learning rate picked on a validation split of the clients' shards.

Every multiplier of a method's configured lr gets a short run (half the rounds) that trains on
what is left of each shard and is scored on the held-out *training* rows, never the test set;
the best validation accuracy wins. Runs live under ``DIR/cells/<cell>/lr_grid/x<multiplier>/``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import replace
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
GRID_COLUMNS = ["alpha", "seed", "method", "multiplier", "lr", "val_score", "val_macro_f1", "rounds", "status",
                "chosen"]


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

    Half the rounds (at least one), evaluated only at the end, is the grid's shortened budget.
    """
    keep, val = carve_validation(job.parts, VAL_FRACTION, job.cfg.seed)
    rounds = max(1, job.cfg.rounds // 2)
    raw = job.cfg.model_dump(mode="json")
    raw.update(rounds=rounds, eval_every=rounds)
    # Scored on the pooled held-out rows only: no per-client scores in a grid run.
    return replace(job, cfg=build_config(raw), parts=keep, test=job.train.select(val.tolist()), val_parts=[])


def _grid_dir(rd: RunDir, mult: float) -> RunDir:
    return RunDir(rd.root / "lr_grid" / f"x{mult:g}")


def grid_scores(rd: RunDir, methods: Sequence[str]) -> list[dict[str, Any]]:
    """Every finished grid run of this cell, with the chosen lr per method marked."""
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
    for m in methods:
        scored = [r for r in rows if r["method"] == m and r["val_score"] is not None]
        if scored:
            # Ties go to the multiplier nearest the documented default lr.
            max(scored, key=lambda r: (r["val_score"], -abs(math.log(r["multiplier"]))))["chosen"] = True
    return rows


def choose_lrs(job: Job, rd: RunDir, methods: Sequence[str], progress: bool = True, log=print,
               keep: bool = True) -> dict[str, float]:
    """Run (or read back) the lr grid of ``methods`` on this cell's validation split; best lr each.
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
    chosen = {r["method"]: r["lr"] for r in grid_scores(rd, methods) if r["chosen"]}
    for m in methods:
        if m not in chosen:
            log(f"[lr grid {m}] every lr failed; keeping lr={job.cfg.lr_of(m):.3g}")
        else:
            log(f"[lr grid {m}] chose lr={chosen[m]:.3g}")
    return chosen
