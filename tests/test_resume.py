"""Crash safety: kill -9 a real `federa run` mid-round, resume it, and get the uninterrupted result.

A victim `python -m federa run` process and an uninterrupted reference run of the same config
(in this process, through the same CLI entry point) run side by side. The victim is SIGKILLed
once FeDeRA's round-1 checkpoint exists (LoRA has finished by then, so resume must also skip a
finished method). `federa run --resume` must then produce the same trainable tensors (allclose
1e-6), the same final adapter files, and a metrics.jsonl with every round exactly once and the
same numbers. Copies of the killed folder test corrupt checkpoints: one bad file falls back to
``.prev`` (and still ends identical); two bad files stop with one clean error line.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from federa.checkpoint import CheckpointError, load_checkpoint
from federa.cli import main
from federa.types import TrainSettings
from federa.engines.inprocess import run_method
from federa.job import prepare_job
from federa.results_dir import RunDir
from federa.strategies.fedavg import FedAvg
from crash_resume import run_and_crash_resume

ROUNDS = 5
METHODS = ("lora", "federa")
# Only what decides the model; timings and the like legitimately differ between runs.
SAME_FIELDS = ("accuracy", "macro_f1", "loss", "train_loss", "clients", "examples_seen", "bytes_up", "bytes_down")


def _overrides(model_dir: Path, csv: Path) -> list[str]:
    sets = [f"model.path={model_dir}", f"data.path={csv}", f"rounds={ROUNDS}", "num_clients=4",
            "clients_per_round=2", "local_steps=6", "batch_size=8", "max_length=32", "lora.r=4",
            "methods=" + ",".join(METHODS), "model.num_threads=1"]
    return [a for s in sets for a in ("--set", s)]


def _federa(*args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "federa", "run", "--no-progress", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)


def _ckpt_round(path: Path) -> int | None:
    try:
        payload, _ = load_checkpoint(path)
    except (CheckpointError, OSError, RuntimeError, EOFError):
        return None  # mid-rename or mid-write: look again
    return None if payload is None else payload["round"]


def _kill_after_round_one(victim: subprocess.Popen, ckpt: Path, killed: dict, timeout_s: float = 240) -> None:
    """SIGKILL ``victim`` as soon as its FeDeRA checkpoint says round ≥ 1 (polled every 20 ms)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and victim.poll() is None:
        r = _ckpt_round(ckpt) if ckpt.exists() else None
        if r is not None and r >= 1:
            os.kill(victim.pid, signal.SIGKILL)
            killed["round"] = r
            return
        time.sleep(0.02)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_model_dir, small_csv):
    root = tmp_path_factory.mktemp("resume")
    ref_dir, victim_dir = root / "ref", root / "victim"
    sets = _overrides(tiny_model_dir, small_csv)
    victim = _federa("--out", str(victim_dir), *sets)
    ckpt = victim_dir / "federa" / "checkpoint.pt"
    killed: dict = {}
    killer = threading.Thread(target=_kill_after_round_one, args=(victim, ckpt, killed))
    killer.start()
    # The uninterrupted reference runs in this process meanwhile (same CLI entry point).
    assert main(["run", "--no-progress", "--out", str(ref_dir), *sets]) == 0
    killer.join()
    victim_out, _ = victim.communicate(timeout=60)
    assert "round" in killed, "the victim finished before it could be killed; raise ROUNDS or local_steps"
    assert victim.returncode == -signal.SIGKILL, victim_out
    # Snapshot the killed folder for the corruption tests before resume changes it.
    copies = {}
    for name in ("prev_fallback", "only_prev", "all_corrupt"):
        copies[name] = root / name
        shutil.copytree(victim_dir, copies[name])
    at_kill = {"round": _ckpt_round(ckpt), "result": (victim_dir / "federa" / "result.json").exists(),
               "rounds": [r["round"] for r in RunDir(victim_dir).read_metrics() if r["method"] == "federa"]}
    resumed = _federa("--resume", str(victim_dir))
    resumed_out, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, resumed_out
    return {"ref": ref_dir, "victim": victim_dir, "killed_at": killed["round"], "at_kill": at_kill,
            "resumed_out": resumed_out, **copies}


def _final_states(run_dir: Path) -> dict[str, dict[str, torch.Tensor]]:
    return {m: load_checkpoint(RunDir(run_dir).checkpoint(m))[0]["state"] for m in METHODS}


def _assert_same_model(a: Path, b: Path) -> None:
    sa, sb = _final_states(a), _final_states(b)
    for m in METHODS:
        assert sa[m].keys() == sb[m].keys()
        for k in sa[m]:
            assert torch.allclose(sa[m][k], sb[m][k], atol=1e-6, rtol=0), (m, k)
        fa = load_file(a / m / "final" / "adapter_model.safetensors")
        fb = load_file(b / m / "final" / "adapter_model.safetensors")
        assert fa.keys() == fb.keys()
        for k in fa:
            assert torch.allclose(fa[k], fb[k], atol=1e-6, rtol=0), (m, k)


def _assert_same_metrics(a: Path, b: Path) -> None:
    ra, rb = RunDir(a).read_metrics(), RunDir(b).read_metrics()
    for m in METHODS:
        la = [r for r in ra if r["method"] == m]
        lb = [r for r in rb if r["method"] == m]
        assert [r["round"] for r in lb] == list(range(ROUNDS + 1)), m  # none missing, none twice
        assert [r["round"] for r in la] == [r["round"] for r in lb]
        for x, y in zip(la, lb):
            for f in SAME_FIELDS:
                assert x.get(f) == y.get(f), (m, x["round"], f)


def test_kill9_mid_run_then_resume_equals_uninterrupted(runs):
    at_kill = runs["at_kill"]
    print(f"\nkilled after FeDeRA round {runs['killed_at']}; on disk then: checkpoint round {at_kill['round']}, "
          f"metrics rounds {at_kill['rounds']}")
    assert 1 <= at_kill["round"] < ROUNDS and not at_kill["result"]  # really interrupted mid-run
    assert "[lora] already finished" in runs["resumed_out"]
    assert f"[federa] resumed after round {at_kill['round']}" in runs["resumed_out"]
    _assert_same_model(runs["ref"], runs["victim"])
    _assert_same_metrics(runs["ref"], runs["victim"])


def _flip_bytes(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    for i in range(len(raw) // 2, len(raw) // 2 + 16):
        raw[i] ^= 0xFF
    path.write_bytes(bytes(raw))


def test_corrupt_checkpoint_is_detected_and_prev_is_used(runs, capsys):
    run_dir = runs["prev_fallback"]
    ckpt = run_dir / "federa" / "checkpoint.pt"
    prev_round = load_checkpoint(ckpt.with_name("checkpoint.pt.prev"))[0]["round"]
    _flip_bytes(ckpt)
    assert main(["run", "--resume", str(run_dir), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "checkpoint.pt is corrupt (checksum mismatch); resuming from checkpoint.pt.prev" in out
    assert f"[federa] resumed after round {prev_round}" in out
    # The round lost with the bad file is simply run again: the result is still identical.
    _assert_same_model(runs["ref"], run_dir)
    _assert_same_metrics(runs["ref"], run_dir)


def test_crash_between_rename_and_write_resumes_from_prev(runs, capsys):
    """save_checkpoint renames the old file to .prev before writing the new one: die in between."""
    run_dir = runs["only_prev"]
    ckpt = run_dir / "federa" / "checkpoint.pt"
    prev_round = load_checkpoint(ckpt.with_name("checkpoint.pt.prev"))[0]["round"]
    ckpt.unlink()
    assert main(["run", "--resume", str(run_dir), "--no-progress"]) == 0
    assert f"[federa] resumed after round {prev_round}" in capsys.readouterr().out
    _assert_same_model(runs["ref"], run_dir)
    _assert_same_metrics(runs["ref"], run_dir)


def test_all_checkpoints_corrupt_is_one_clean_error(runs, capsys):
    run_dir = runs["all_corrupt"]
    ckpt = run_dir / "federa" / "checkpoint.pt"
    _flip_bytes(ckpt)
    prev = ckpt.with_name("checkpoint.pt.prev")
    prev.write_bytes(prev.read_bytes()[:1000])  # a partial write
    assert main(["run", "--resume", str(run_dir), "--no-progress"]) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "corrupt" in errors[0] and "delete it" in errors[0], err
    assert "Traceback" not in err


# -- no RNG state needs carrying ---------------------------------------------------------


def test_sampling_and_client_seeds_are_pure_functions_of_seed_round_client():
    base = TrainSettings(lr=1e-3, batch_size=8, seed=0, local_steps=1)
    used = FedAvg(3, seed=7)
    history = {r: used.configure_round(r, range(10), base) for r in range(1, 21)}
    fresh = FedAvg(3, seed=7)  # a resumed server: nothing carried over
    for r in (20, 5, 13, 1):  # any order
        assert fresh.configure_round(r, range(10), base) == history[r]
    assert len({tuple(h) for h in history.values()}) > 5  # and it does vary by round
    assert FedAvg(3, seed=8).configure_round(1, range(10), base) != history[1]


@pytest.mark.parametrize("extra", [
    ("dp.enabled=true", "dp.noise_multiplier=0.5", "dp.clip_norm=0.5"),
    ("strategy=trimmed_mean", "trimmed_mean.trim_fraction=0.25", "robust.clip_delta_norm=0.5", "clients_per_round=4"),
], ids=["dp", "trimmed_mean+clip"])
def test_crash_mid_round_resume_with_dp_and_robust(tiny_cfg, tmp_path, monkeypatch, extra):
    """DP noise and robust strategies are resumable too (in-process crash in round 3 of 4)."""
    cfg = tiny_cfg("methods=federa", "rounds=4", *extra)
    job = prepare_job(cfg)
    ref, crash = run_and_crash_resume(job, "federa", tmp_path, monkeypatch, 3)

    a = load_checkpoint(ref.checkpoint("federa"))[0]["state"]
    b = load_checkpoint(crash.checkpoint("federa"))[0]["state"]
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-6, rtol=0), k
    la, lb = ref.read_metrics(), crash.read_metrics()
    assert [r["round"] for r in lb] == [0, 1, 2, 3, 4]
    for x, y in zip(la, lb):
        assert (x["accuracy"], x["loss"], x.get("epsilon")) == (y["accuracy"], y["loss"], y.get("epsilon"))
