"""The Flower engine as ``federa run`` sees it: submit one method's run, wait for its result.

Deployment submits to the SuperLink in ``flower.superlink``; simulation runs Flower's Ray
runtime in this process. Either way federa's ServerApp (:mod:`.server_app`, :mod:`.driver`)
drives the rounds and writes the method's ``result.json``, which this returns.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from federa import writer_lock
from federa.config import load_config
from federa.engines.flower import FlowerError, launch
from federa.engines.flower.driver import stop_file
from federa.errors import ConfigError
from federa.events import Events
from federa.job import Job
from federa.results_dir import RunDir


def run_method(job: Job, method_name: str, run_dir: RunDir, progress: bool = True, log=print,
               events: Events | None = None) -> dict[str, Any]:
    """Run one method on Flower and return its result record (see the module docstring).

    ``events`` hear the method's start and end only: its rounds run in the ServerApp's process
    (listeners such as trackers read them from metrics.jsonl at the end)."""
    events = events if events is not None else Events()
    result = None
    try:
        events.method_start(method_name, job.cfg.rounds, 0, {})
        result = _run(job, method_name, run_dir, progress, log)
    finally:
        events.method_end(method_name, result)
    return result


def _run(job: Job, method_name: str, run_dir: RunDir, progress: bool, log) -> dict[str, Any]:
    cfg = job.cfg
    if cfg != load_config(run_dir.config):
        # The ServerApp reads the folder's config.yaml, not this process's objects.
        raise ConfigError(f"engine=flower runs the config saved in {run_dir.config}, and this job's differs "
                          "(e.g. an lr chosen by --lr-grid); use engine=inprocess for it")
    for key, value in (("model.path", cfg.model.path), ("data.path", cfg.data.path)):
        # The ServerApp and the SuperNodes are other processes, started in other folders.
        if cfg.flower.mode == "deployment" and value and not Path(value).is_absolute():
            raise ConfigError(f"engine=flower: {key}={value} is relative; give an absolute path "
                              "(the SuperLink and SuperNodes resolve paths in their own folders)")
    # The ServerApp writes the folder while it runs, so it holds the writer lock meanwhile;
    # this process takes it back after (writer_lock: one writer at a time).
    with writer_lock.lent(run_dir.root):
        if cfg.flower.mode == "simulation":
            launch.simulate(run_dir, method_name, num_supernodes=cfg.num_clients)
        else:
            launch.submit_and_wait(cfg.flower, run_dir, method_name, progress=progress, rounds=cfg.rounds, log=log)
    result_path = run_dir.result(method_name)
    if stop_file(run_dir, method_name).is_file():
        reason = json.loads(stop_file(run_dir, method_name).read_text())["reason"]
        raise FlowerError(f"[{method_name}] {reason}: bring the SuperNodes back and "
                          f"continue with `federa run --resume {run_dir.root}`")
    if not result_path.is_file():
        raise FlowerError(
            f"the Flower run for {method_name} ended without a result; "
            f"see {run_dir.method_dir(method_name) / 'flower.log'}"
        )
    result = json.loads(result_path.read_text())
    if result.get("status") != "done":
        log(f"[{method_name}] stopped: {result.get('reason')}")
    return result
