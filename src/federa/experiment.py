"""One experiment: prepare the job once, run each method on the same partition, write the report.

Results are written as they happen (metrics line per evaluated round, checkpoint per round,
``result.json`` per finished method), so an interrupted experiment resumes where it stopped.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from federa.config import Config
from federa.engines import get_engine
from federa.job import prepare_job
from federa.partition import format_stats
from federa.runlog import RunDir
from federa.runner import pin_partition, run_info, run_pending, write_report


def run_experiment(cfg: Config, run_dir: RunDir, progress: bool = True, log=print) -> dict[str, Any]:
    job = prepare_job(cfg)
    stats = pin_partition(run_dir, job)
    log(f"data: {job.data.source}: {len(job.train)} train / {len(job.test)} test, task {job.task.name} "
        f"({len(job.label_names)} labels), main metric {job.main_metric}")
    log(format_stats(stats))
    for line in job.warnings:
        log(f"warning: {line}")
    info = run_info(job)
    report = partial(write_report, run_dir, cfg, info)
    run_pending(job, run_dir, cfg.methods, partial(get_engine(cfg.engine), progress=progress, log=log),
                after_each=report, log=log)
    return report()
