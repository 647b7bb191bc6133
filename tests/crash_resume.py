"""The crash-then-resume harness shared by resume tests: an uninterrupted run beside one that
crashes at the first client of a given round and is then resumed from its checkpoint."""

from __future__ import annotations

from pathlib import Path

import pytest

from federa.checkpoint import load_checkpoint
from federa.engines import inprocess
from federa.engines.inprocess import run_method
from federa.job import Job
from federa.results_dir import RunDir


def _quiet(*_) -> None:
    pass


def run_and_crash_resume(job: Job, method: str, root: Path, monkeypatch, crash_round: int) -> tuple[RunDir, RunDir]:
    """(uninterrupted run, run that crashed in ``crash_round`` and was resumed), both finished."""
    ref, crash = RunDir(root / "ref"), RunDir(root / "crash")
    ref.root.mkdir()
    crash.root.mkdir()
    run_method(job, method, ref, progress=False, log=_quiet)

    real, calls = inprocess.local_update, []

    def crashing(*args, **kwargs):
        calls.append(1)
        if len(calls) > (crash_round - 1) * job.cfg.clients_per_round:  # the first client of crash_round
            raise RuntimeError("simulated crash")
        return real(*args, **kwargs)

    monkeypatch.setattr(inprocess, "local_update", crashing)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_method(job, method, crash, progress=False, log=_quiet)
    monkeypatch.setattr(inprocess, "local_update", real)
    assert load_checkpoint(crash.checkpoint(method))[0]["round"] == crash_round - 1
    run_method(job, method, crash, progress=False, log=_quiet)
    return ref, crash
