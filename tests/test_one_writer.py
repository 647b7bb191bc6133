"""One results folder, one writer: the OS lock, the config fingerprint on resume, nothing left by an early error."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from federa import writer_lock
from federa.cli import main

SRC = str(Path(__file__).resolve().parents[1] / "src")

# A process that takes the writer lock on a folder (as a second `federa run` or a ServerApp would)
# and keeps it until killed; it prints "held" once it has it.
_HOLDER = """
import sys, time
from federa import writer_lock
writer_lock.acquire(sys.argv[1], role="federa ServerApp")
print("held", flush=True)
time.sleep(600)
"""


def _hold(folder: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER, str(folder)], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": SRC})
    assert proc.stdout.readline().strip() == "held"
    return proc


def _args(tiny_model_dir, small_csv, out: Path, *sets: str) -> list[str]:
    args = ["run", "--no-progress", "--out", str(out)]
    for s in (f"model.path={tiny_model_dir}", f"data.path={small_csv}", "methods=lora", "rounds=1", "num_clients=4",
              "clients_per_round=2", "local_steps=1", "max_length=16", "lora.r=2", "model.num_threads=1", *sets):
        args += ["--set", s]
    return args


@pytest.fixture(scope="module")
def _finished_once(tiny_model_dir, small_csv, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("finished") / "run"
    assert main(_args(tiny_model_dir, small_csv, out)) == 0
    writer_lock.release(out)  # as after `federa run` exits
    return out


@pytest.fixture
def finished(_finished_once, tmp_path, capsys) -> Path:
    """A copy of a finished one-round LoRA run, not locked by anyone."""
    capsys.readouterr()
    return Path(shutil.copytree(_finished_once, tmp_path / "run"))


def _err_lines(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.strip()]


# -- the lock --------------------------------------------------------------------------------------


def test_second_writer_is_refused_naming_the_holder(finished, capsys):
    proc = _hold(finished)
    try:
        before = (finished / "metrics.jsonl").read_text()
        assert main(["run", "--resume", str(finished), "--no-progress"]) == 2
        err = _err_lines(capsys)
        assert len(err) == 1 and err[0].startswith("error: ")
        assert f"pid {proc.pid} on host {socket.gethostname()}" in err[0] and "federa ServerApp" in err[0]
        assert (finished / "metrics.jsonl").read_text() == before  # nothing written twice
    finally:
        proc.kill()
        proc.wait()


def test_kill_9_never_leaves_a_stale_lock(tmp_path):
    folder = tmp_path / "f"
    folder.mkdir()
    proc = _hold(folder)
    with pytest.raises(writer_lock.RunBusyError, match=f"pid {proc.pid}"):
        writer_lock.acquire(folder)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    writer_lock.acquire(folder)  # the kernel dropped the dead holder's lock
    writer_lock.release(folder)


def test_lock_is_reentrant_in_one_process_and_lent_to_another(tmp_path):
    folder = tmp_path / "f"
    folder.mkdir()
    writer_lock.acquire(folder)
    writer_lock.acquire(folder)  # the in-process simulation's ServerApp inside `federa run`
    writer_lock.release(folder)
    assert writer_lock.is_held(folder)
    with writer_lock.lent(folder):  # a deployment ServerApp writes meanwhile
        proc = _hold(folder)
        proc.kill()
        proc.wait()
    assert writer_lock.is_held(folder)
    # Someone else kept it: taking it back fails, naming them.
    with pytest.raises(writer_lock.RunBusyError, match="federa ServerApp"):
        with writer_lock.lent(folder):
            proc = _hold(folder)
    proc.kill()
    proc.wait()
    assert not writer_lock.is_held(folder)


# -- the config fingerprint --------------------------------------------------------------------------


def _edit(run: Path, **changes) -> None:
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    for dotted, value in changes.items():
        node = cfg
        *path, last = dotted.split("__")
        for p in path:
            node = node[p]
        node[last] = value
    (run / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))


@pytest.mark.parametrize("changes, named", [
    ({"lora__r": 4}, ["lora.r: 2 -> 4"]),
    ({"lora__target_modules": ["query"]}, ["lora.target_modules"]),
    ({"lr__lora": 0.5, "clients_per_round": 3}, ["clients_per_round: 2 -> 3", "lr.lora:"]),
])
def test_resume_with_a_changed_config_is_refused_naming_the_keys(finished, capsys, changes, named):
    _edit(finished, **changes)
    before = sorted(p.name for p in finished.rglob("*"))
    assert main(["run", "--resume", str(finished), "--no-progress"]) == 2
    err = _err_lines(capsys)
    assert len(err) == 1 and "differs from the config the run started with" in err[0], err
    for n in named:
        assert n in err[0]
    assert "--allow-changed" in err[0]
    assert sorted(p.name for p in finished.rglob("*")) == before
    writer_lock.release(finished)  # (refused before taking it for good; harmless otherwise)


def test_allow_changed_rounds_continues_the_run(finished, capsys):
    _edit(finished, rounds=2)
    assert main(["run", "--resume", str(finished), "--no-progress"]) == 2
    assert "rounds: 1 -> 2" in capsys.readouterr().err
    assert main(["run", "--resume", str(finished), "--no-progress", "--allow-changed", "nope"]) == 2
    assert "--allow-changed nope: no such config key" in capsys.readouterr().err
    # rounds=2 on a finished method: it stays finished (result.json), nothing is retrained.
    assert main(["run", "--resume", str(finished), "--no-progress", "--allow-changed", "rounds"]) == 0
    assert "resuming with changed config (allowed): rounds: 1 -> 2" in capsys.readouterr().out
    writer_lock.release(finished)
    # The fingerprint now holds the new rounds: the next resume needs no flag.
    assert main(["run", "--resume", str(finished), "--no-progress"]) == 0
    writer_lock.release(finished)


@pytest.fixture
def unfinished(tiny_model_dir, small_csv, tmp_path, capsys, monkeypatch) -> Path:
    """A two-round LoRA run stopped by a full disk after round 1's checkpoint (lora.r=2), not locked."""
    from full_disk import FullDisk

    out = tmp_path / "unfinished"
    full = FullDisk("metrics.jsonl", 3)  # round 2's metrics line
    monkeypatch.setattr(os, "fsync", full)
    assert main(_args(tiny_model_dir, small_csv, out, "rounds=2")) == 2
    monkeypatch.setattr(os, "fsync", full.real)
    writer_lock.release(out)
    assert full.fired and (out / "lora" / "checkpoint.pt").is_file() and not (out / "lora" / "result.json").exists()
    capsys.readouterr()
    return out


def test_a_shape_key_cannot_be_allowed_to_change_on_an_unfinished_run(unfinished, capsys):
    """Before (issue 25): `--allow-changed lora.r` loaded the rank-2 checkpoint into a rank-4 model (a
    RuntimeError traceback) after rewriting the fingerprint, so restoring lora.r: 2 was refused next."""
    _edit(unfinished, lora__r=4)
    def files() -> dict[Path, bytes]:  # the lock file records who held the folder last: not the run's
        return {p.relative_to(unfinished): p.read_bytes() for p in unfinished.rglob("*")
                if p.is_file() and p.name != writer_lock.LOCK_NAME}

    before = files()
    assert main(["run", "--resume", str(unfinished), "--no-progress", "--allow-changed", "lora.r"]) == 2
    writer_lock.release(unfinished)
    err = _err_lines(capsys)
    assert err == [f"error: --resume {unfinished}: lora.r changed (2 -> 4), which changes the shape of the trained "
                   "tensors, and lora has not finished, so its checkpoint cannot load; restore lora.r in config.yaml, "
                   "or start a new run with --out"], err
    assert files() == before  # nothing written: not the fingerprint, not a checkpoint
    _edit(unfinished, lora__r=2)  # put back, the run goes on and finishes
    assert main(["run", "--resume", str(unfinished), "--no-progress"]) == 0
    writer_lock.release(unfinished)
    assert json.loads((unfinished / "lora" / "result.json").read_text())["status"] == "done"


def test_a_bug_after_the_folder_opened_leaves_it_as_it_was(tiny_model_dir, small_csv, tmp_path, monkeypatch):
    """Before (issue 25): any error but a FederaError or a full disk left config.yaml behind, so the same
    command was then refused as "not empty"."""
    import federa.experiment

    def broken(cfg, run_dir, **_):
        run_dir.write_json(run_dir.partition, {"clients": []})  # something written first
        raise KeyError("text")

    monkeypatch.setattr(federa.experiment, "run_experiment", broken)
    made = tmp_path / "made"
    made.mkdir()
    for out in (tmp_path / "new", made):
        with pytest.raises(KeyError):
            main(_args(tiny_model_dir, small_csv, out))
        assert not out.exists() if out.name == "new" else [p.name for p in out.iterdir()
                                                           if p.name != writer_lock.LOCK_NAME] == []


# -- nothing left behind by an error found after validation -----------------------------------------


@pytest.mark.parametrize("sets, message", [
    (["num_clients=150", "partition.alpha=0.01"], "raise partition.alpha, lower num_clients or partition.min_examples"),
    (["lora.r=64"], "set lora.r<=32"),
])
@pytest.mark.parametrize("existed", [False, True])
def test_early_error_leaves_nothing_and_the_fixed_command_runs(tiny_model_dir, small_csv, tmp_path, capsys,
                                                               sets, message, existed):
    out = tmp_path / "out"
    if existed:
        out.mkdir()  # an empty folder the user made
    assert main(_args(tiny_model_dir, small_csv, out, *sets)) == 2
    err = _err_lines(capsys)
    assert len(err) == 1 and message in err[0]
    if existed:
        assert [p.name for p in out.iterdir() if p.name != writer_lock.LOCK_NAME] == []
    else:
        assert not out.exists()
    if existed and "lora.r=64" in sets:  # once: the fixed command is not refused as "not empty"
        assert main(_args(tiny_model_dir, small_csv, out)) == 0
        writer_lock.release(out)


def test_an_earlier_runs_finished_work_is_never_removed(finished, tiny_model_dir, small_csv, capsys):
    files = sorted(p.relative_to(finished) for p in finished.rglob("*"))
    assert main(_args(tiny_model_dir, small_csv, finished, "lora.r=64")) == 2
    assert "is not empty" in capsys.readouterr().err
    _edit(finished, data__path="/nonexistent.csv")
    assert main(["run", "--resume", str(finished), "--no-progress", "--allow-changed", "data.path"]) == 2
    writer_lock.release(finished)
    assert sorted(p.relative_to(finished) for p in finished.rglob("*")) == files


# -- report and compare take the lock too (issue 14) --------------------------------------------------


def test_report_while_another_process_writes_is_refused(finished, capsys):
    def files() -> dict[str, bytes]:
        return {p.name: p.read_bytes() for p in finished.iterdir() if p.is_file() and p.name != writer_lock.LOCK_NAME}

    before = files()
    proc = _hold(finished)
    try:
        assert main(["report", str(finished)]) == 2
        err = _err_lines(capsys)
        assert len(err) == 1 and err[0].startswith(f"error: results folder {finished} is being written by "
                                                   f"federa ServerApp (pid {proc.pid} "), err
        assert files() == before  # summary.json, report.md, plots untouched
    finally:
        proc.kill()
        proc.wait()
    assert main(["report", str(finished)]) == 0  # the holder gone, the report is rebuilt
    assert not writer_lock.is_held(finished)  # and given back: a later `federa run --resume` may write


@pytest.mark.parametrize("held", ["out", "cell"])
def test_compare_on_a_folder_being_written_is_refused(tmp_path, capsys, held):
    out = tmp_path / "cmp"
    cell = out / "cells" / "a0.1-s0"
    cell.mkdir(parents=True)
    proc = _hold(out if held == "out" else cell)
    try:
        assert main(["compare", "--no-progress", "--alphas", "0.1", "--seeds", "0", "--methods", "lora",
                     "--out", str(out)]) == 2
        err = _err_lines(capsys)
        assert len(err) == 1 and err[0].startswith(f"error: results folder {out if held == 'out' else cell} is being "
                                                   f"written by federa ServerApp (pid {proc.pid} "), err
        assert not (cell / "config.yaml").exists()  # nothing written into the cell
    finally:
        proc.kill()
        proc.wait()
    assert not writer_lock.is_held(out) and not writer_lock.is_held(cell)
