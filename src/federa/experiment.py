"""One experiment: prepare the job once, run each method on the same partition, write the report.

Results are written as they happen (metrics line per evaluated round, checkpoint per round,
``result.json`` per finished method), so an interrupted experiment resumes where it stopped.
The run's listeners (:mod:`federa.events`) are set up here: the progress display, the
configured trackers, and the stop request of a SIGINT/SIGTERM, honoured between steps.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from federa.config import Config
from federa.engines import get_engine
from federa.events import Fanout
from federa.interrupt import StopOnSignal
from federa.job import Job, prepare_job
from federa.partition import format_stats
from federa.progress import Progress
from federa.results_dir import RunDir, run_name
from federa.pending import pin_partition, run_info, run_pending, write_report
from federa.trackers.base import Trackers


def run_experiment(cfg: Config, run_dir: RunDir, progress: bool = True, log=print,
                   stop: StopOnSignal | None = None) -> dict[str, Any]:
    """``stop``: the caller's signal listener, already entered (:func:`federa.run` enters it before
    the folder opens); None: one is entered here."""
    if stop is None:
        with StopOnSignal(run_dir.root) as own:
            return run_experiment(cfg, run_dir, progress, log, own)
    job = prepare_job(cfg)
    stop.check()  # a signal during data loading: stop before the partition is pinned
    stats = pin_partition(run_dir, job)
    log(f"data: {job.data.source}: {len(job.train)} train / {len(job.test)} test, task {job.task.name} "
        f"({len(job.label_names)} labels), main metric {job.main_metric}")
    log(format_stats(stats))
    for line in job.warnings:
        log(f"warning: {line}")
    info = run_info(job)
    report = partial(write_report, run_dir, cfg, info)
    trackers = Trackers(cfg, run_dir, run_name(cfg), log)
    status = "failed"
    try:
        trackers.start(cfg.model_dump(mode="json"), info, stats)
        events = Fanout([stop, Progress.for_output(progress, log), trackers])
        engine = get_engine(cfg.engine)

        def run_one(job: Job, method: str, rd: RunDir) -> dict[str, Any]:
            return engine(job, method, rd, progress=progress, log=log, events=events)

        run_pending(job, run_dir, cfg.methods, run_one, after_each=report, log=log)
        summary = report()
        trackers.finish(summary)
        status = "done"
    except KeyboardInterrupt:
        status = "interrupted"
        raise
    finally:
        trackers.close(status)
    return summary
