"""One experiment: prepare the job once, run each method on the same partition, write the report.

Results are written as they happen (metrics line per evaluated round, checkpoint per round,
``result.json`` per finished method), so an interrupted experiment resumes where it stopped.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from federa.config import Config
from federa.errors import ConfigError, DataError
from federa.job import Job, prepare_job
from federa.partition import format_stats, partition_stats
from federa.report import report_markdown, summarize, write_plots
from federa.runlog import RunDir


def default_run_dir(cfg: Config, root: str | Path = "runs") -> Path:
    return Path(root) / f"{time.strftime('%Y%m%d-%H%M%S')}-{cfg.name}"


def open_run_dir(cfg: Config, out: Path, resume: bool) -> RunDir:
    """Create ``out`` for a fresh run, or check it belongs to ``cfg`` when resuming."""
    run_dir = RunDir(out)
    if resume:
        if not run_dir.config.is_file():
            raise ConfigError(f"--resume {out}: no config.yaml there; pass the folder of an earlier run")
        return run_dir
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"output folder {out} is not empty; pass a new --out, or --resume {out} to continue it")
    out.mkdir(parents=True, exist_ok=True)
    run_dir.config.write_text(cfg.to_yaml(), encoding="utf-8")
    return run_dir


def run_info(job: Job) -> dict[str, Any]:
    cfg = job.cfg
    p = cfg.partition
    return {
        "name": cfg.name, "model": str(job.model_path), "data": job.data.source,
        "num_train": len(job.train), "num_test": len(job.test), "num_classes": len(job.label_names),
        "num_clients": cfg.num_clients, "clients_per_round": cfg.clients_per_round, "rounds": cfg.rounds,
        "partition": p.kind + (f" (alpha={p.alpha})" if p.kind == "dirichlet" else ""),
        "seed": cfg.seed, "threads": torch.get_num_threads(), "device": str(job.device),
        "engine": cfg.engine,
    }


def write_report(run_dir: RunDir, cfg: Config, info: dict[str, Any]) -> dict[str, Any]:
    """(Re)build summary.json, report.md and the plots from what is on disk."""
    results = {}
    for m in cfg.methods:
        if run_dir.result(m).is_file():
            results[m] = json.loads(run_dir.result(m).read_text())
    records = run_dir.read_metrics()
    summary = summarize(records, results, cfg.target_accuracy, info)
    run_dir.write_json(run_dir.summary, summary)
    part_text = ""
    if run_dir.partition.is_file():
        part_text = format_stats(json.loads(run_dir.partition.read_text()))
    run_dir.report.write_text(report_markdown(summary, part_text), encoding="utf-8")
    if records:
        write_plots(records, run_dir.root, summary["target_accuracy"])
    return summary


def pin_partition(run_dir: RunDir, job: Job) -> dict[str, Any]:
    """Save the job's partition once; on resume, refuse to go on if the data now split differently.

    A resumed method must train on the shards its finished rounds used: a changed data file or
    partitioner version would otherwise mix two splits in one run without a word.
    """
    stats = partition_stats(np.asarray(job.data.train["label"]), job.parts, job.label_names)
    if not run_dir.partition.is_file():
        run_dir.write_json(run_dir.partition, stats)
        return stats
    saved = json.loads(run_dir.partition.read_text(encoding="utf-8"))
    if [c["indices"] for c in saved["clients"]] != [c["indices"] for c in stats["clients"]]:
        raise DataError(f"{run_dir.partition}: the data now split differently than for the finished rounds; "
                        "pass a new --out")
    return stats


def run_experiment(cfg: Config, run_dir: RunDir, progress: bool = True, log=print) -> dict[str, Any]:
    job = prepare_job(cfg)
    stats = pin_partition(run_dir, job)
    log(f"data: {job.data.source}: {len(job.train)} train / {len(job.test)} test, {len(job.label_names)} classes")
    log(format_stats(stats))
    info = run_info(job)
    for m in cfg.methods:
        if run_dir.result(m).is_file():
            log(f"[{m}] already finished; reading it back")
            continue
        if cfg.engine == "flower":
            from federa.engines.flower import run_method as run_flower

            run_flower(job, m, run_dir, progress=progress, log=log)
        else:
            from federa.engines.inprocess import run_method

            run_method(job, m, run_dir, progress=progress, log=log)
        write_report(run_dir, cfg, info)  # a report after every method: nothing waits for the last
    return write_report(run_dir, cfg, info)
