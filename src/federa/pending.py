"""One loop for every caller that runs methods into a results folder: skip finished → run → report.

``federa run`` (in-process or Flower), the Flower ServerApp, each cell of ``federa compare`` and
each point of its lr grid all go through :func:`run_pending`; they differ only in how one
method runs (an engine's ``run_method``, or the ServerApp's ``drive_method``) and what follows.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

import torch

from federa.checkpoint import atomic_write_bytes
from federa.config import Config
from federa.errors import DataError
from federa.job import Job
from federa.partition import client_val_fraction, format_stats, partition_stats
from federa.report import report_markdown, summarize, write_plots
from federa.results_dir import RunDir, run_name

RunOne = Callable[[Job, str, RunDir], dict[str, Any]]  # one method's rounds → its result record


def run_pending(job: Job, run_dir: RunDir, methods: Sequence[str], run_one: RunOne,
                after_each: Callable[[], Any] | None = None, log=print) -> dict[str, dict[str, Any]]:
    """Run every method of ``methods`` without a ``result.json`` in ``run_dir``; returns the new results.

    ``after_each`` follows every method (e.g. a report, so nothing waits for the last method). A
    method whose federation stopped (status "stopped") ends the loop: the next would meet the
    same missing nodes, and ``--resume`` continues from there.
    """
    results: dict[str, dict[str, Any]] = {}
    for m in methods:
        if run_dir.result(m).is_file():
            log(f"[{m}] already finished; reading it back")
            continue
        results[m] = run_one(job, m, run_dir)
        if after_each is not None:
            after_each()
        if results[m].get("status") == "stopped":
            break
    return results


def pin_partition(run_dir: RunDir, job: Job) -> dict[str, Any]:
    """Save the job's partition once; on resume, refuse to go on if the data now split differently.

    A resumed method must train on the shards its finished rounds used: a changed data file or
    partitioner version would otherwise mix two splits in one run without a word.
    """
    stats = partition_stats(job.strata, job.parts, job.strata_names, job.val_parts, client_val_fraction(job.cfg))
    if not run_dir.partition.is_file():
        run_dir.write_json(run_dir.partition, stats)
        return stats
    saved = json.loads(run_dir.partition.read_text(encoding="utf-8"))
    if [c["indices"] for c in saved["clients"]] != [c["indices"] for c in stats["clients"]]:
        raise DataError(f"{run_dir.partition}: the data now split differently than for the finished rounds; "
                        "pass a new --out")
    return stats


def run_info(job: Job) -> dict[str, Any]:
    cfg = job.cfg
    p = cfg.partition
    return {
        # A built-in model is named as such: its folder differs from machine to machine.
        "name": run_name(cfg), "data": job.data.source,
        "model": str(job.model_path) if cfg.model.path else f"builtin:{cfg.model.builtin}",
        "task": job.task.name, "metric": job.main_metric,
        "num_train": len(job.train), "num_test": len(job.test), "num_labels": len(job.label_names),
        "num_clients": cfg.num_clients, "clients_per_round": cfg.clients_per_round, "rounds": cfg.rounds,
        "partition": p.kind + (f" (alpha={p.alpha})" if p.kind == "dirichlet" else ""),
        "seed": cfg.seed, "threads": torch.get_num_threads(), "device": str(job.device),
        "engine": cfg.engine, **({"warnings": job.warnings} if job.warnings else {}),
    }


def _read_json(path, fix: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise DataError(f"{path} is corrupt (not JSON); {fix}") from None


def write_report(run_dir: RunDir, cfg: Config, info: dict[str, Any]) -> dict[str, Any]:
    """(Re)build summary.json, report.md and the plots from what is on disk."""
    results = {}
    for m in cfg.methods:
        if run_dir.result(m).is_file():
            results[m] = _read_json(run_dir.result(m), f"delete it and `federa run --resume {run_dir.root}` "
                                                       "rewrites it from the method's last checkpoint")
    records = run_dir.read_metrics()
    summary = summarize(records, results, cfg.target_score, info)
    run_dir.write_json(run_dir.summary, summary)
    part_text = ""
    if run_dir.partition.is_file():
        try:
            part_text = format_stats(json.loads(run_dir.partition.read_text(encoding="utf-8")))
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError):
            part_text = f"(client partition not shown: {run_dir.partition} is corrupt)"
    atomic_write_bytes(run_dir.report, report_markdown(summary, part_text).encode("utf-8"))
    if records:
        write_plots(records, run_dir.root, summary["target_score"], info.get("metric", "accuracy"))
    return summary
