"""SIGTERM / Ctrl-C: a real `federa run` stops at the next step, drops the round in flight whole,
prints the exact resume command and exits 143 (130 for SIGINT); the resumed run completes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from federa.checkpoint import load_checkpoint
from federa.interrupt import RunInterrupted, StopOnSignal
from federa.results_dir import RunDir

ROUNDS = 4


def _sets(model_dir: Path, csv: Path) -> list[str]:
    sets = [f"model.path={model_dir}", f"data.path={csv}", f"rounds={ROUNDS}", "num_clients=4", "clients_per_round=2",
            "local_steps=20", "batch_size=8", "max_length=32", "lora.r=4", "methods=lora", "model.num_threads=1"]
    return [a for s in sets for a in ("--set", s)]


def _federa(*args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "federa", "run", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 143)])
def test_signal_drops_the_round_in_flight_and_resume_completes(tmp_path, tiny_model_dir, small_csv, sig, code):
    out = tmp_path / "run"
    victim = _federa("--no-progress", "--out", str(out), *_sets(tiny_model_dir, small_csv))
    ckpt = out / "lora" / "checkpoint.pt"
    deadline = time.monotonic() + 240
    # Signal once round 1 is checkpointed, i.e. while round 2 trains (20 local steps per client).
    while time.monotonic() < deadline and victim.poll() is None:
        if ckpt.exists() and (load_checkpoint(ckpt)[0] or {}).get("round", 0) >= 1:
            victim.send_signal(sig)
            break
        time.sleep(0.05)
    stdout, stderr = victim.communicate(timeout=120)
    assert victim.returncode == code, stdout + stderr
    lines = stderr.strip().splitlines()
    assert lines[-1] == f"federa run --resume {out}", stderr
    assert "Traceback" not in stderr
    stopped = load_checkpoint(ckpt)[0]["round"]
    assert 1 <= stopped < ROUNDS and not (out / "lora" / "result.json").exists()
    # Nothing half-written: every metrics line whole, and exactly the checkpointed rounds logged.
    raw = (out / "metrics.jsonl").read_text().splitlines()
    assert [r["round"] for r in RunDir(out).read_metrics()] == list(range(stopped + 1)) and len(raw) == stopped + 1
    assert not list(out.rglob("*.tmp"))

    resumed = _federa("--no-progress", "--resume", str(out))
    stdout, stderr = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, stdout + stderr
    assert f"[lora] resumed after round {stopped}" in stdout
    assert [r["round"] for r in RunDir(out).read_metrics()] == list(range(ROUNDS + 1))
    assert (out / "lora" / "result.json").is_file()


def test_stop_request_is_raised_at_the_next_safe_point_and_a_second_signal_at_once():
    # What was there before (SIG_IGN when the suite runs as a background job of a shell, e.g. CI).
    before = signal.getsignal(signal.SIGINT)
    with StopOnSignal(Path("runs/x")) as stop:
        os.kill(os.getpid(), signal.SIGINT)  # handled in this (main) thread before kill returns
        assert stop.requested == signal.SIGINT
        with pytest.raises(RunInterrupted) as err:
            stop.step(1, 2, 0.5)
        assert err.value.exit_code == 130 and err.value.resume_command == "federa run --resume runs/x"
        with pytest.raises(RunInterrupted):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.1)  # the handler raises at once, even outside a safe point
    assert signal.getsignal(signal.SIGINT) is before  # restored


# A `federa run` whose signal arrives right after its results folder opened, i.e. in the seconds the
# training code still imports after the `results:` line; argv[1] names the signal.
_EARLY = """
import os, signal, sys
import federa.results_dir
from federa.cli import main

opened = federa.results_dir.open_run_dir

def open_then_signal(*args, **kwargs):
    run_dir = opened(*args, **kwargs)
    os.kill(os.getpid(), getattr(signal, sys.argv[1]))
    return run_dir

federa.results_dir.open_run_dir = open_then_signal
sys.exit(main(sys.argv[2:]))
"""


@pytest.mark.parametrize("sig, code", [("SIGTERM", 143), ("SIGINT", 130)])
def test_a_signal_just_after_the_folder_opened_prints_the_resume_line(tmp_path, tiny_model_dir, small_csv, sig, code):
    """Before (issue 25): SIGTERM there died with no line at all; SIGINT printed the placeholder
    `federa run --resume <results folder>`."""
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run([sys.executable, "-c", _EARLY, sig, "run", "--no-progress", "--out", str(out),
                           *_sets(tiny_model_dir, small_csv)], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == code, proc.stdout + proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == f"federa run --resume {out}", proc.stderr
    assert "<results folder>" not in proc.stderr and "Traceback" not in proc.stderr
    assert (out / "config.yaml").is_file() and not (out / "lora").exists()  # stopped before any training
