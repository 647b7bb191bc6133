"""A disk that fills up mid-run: finished rounds are kept, one `error:` line gives the resume command,
and the resumed run ends exactly where an uninterrupted one does.

The full disk is simulated where a real one shows it (tests/full_disk.py).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from full_disk import FullDisk

from federa import writer_lock
from federa.checkpoint import load_checkpoint
from federa.cli import main
from federa.results_dir import RunDir

ROUNDS = 3


def _args(model_dir: Path, csv: Path, out: Path) -> list[str]:
    args = ["run", "--no-progress", "--out", str(out)]
    for s in (f"model.path={model_dir}", f"data.path={csv}", f"rounds={ROUNDS}", "num_clients=4",
              "clients_per_round=2", "local_steps=2", "batch_size=8", "max_length=32", "lora.r=4", "methods=lora",
              "model.num_threads=1"):
        args += ["--set", s]
    return args


@pytest.fixture(scope="module")
def reference(tiny_model_dir, small_csv, tmp_path_factory) -> RunDir:
    out = tmp_path_factory.mktemp("ref") / "run"
    assert main(_args(tiny_model_dir, small_csv, out)) == 0
    writer_lock.release(out)
    return RunDir(out)


@pytest.mark.parametrize("name, nth, cut_line", [
    ("checkpoint.pt.tmp", 3, False),  # round 2's checkpoint (round 0 writes the first)
    ("metrics.jsonl", 3, True),  # round 2's metrics line, half of it on disk
])
def test_full_disk_keeps_finished_rounds_and_resume_finishes(reference, tiny_model_dir, small_csv, tmp_path, capsys,
                                                             monkeypatch, name, nth, cut_line):
    out = tmp_path / "run"
    full = FullDisk(name, nth, cut_line)
    monkeypatch.setattr(os, "fsync", full)
    assert main(_args(tiny_model_dir, small_csv, out)) == 2
    monkeypatch.setattr(os, "fsync", full.real)
    writer_lock.release(out)
    assert full.fired
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and "Traceback" not in err[0], err
    assert err[0] == (f"error: the disk holding {out} is full (No space left on device); finished rounds are kept: "
                      f"free some space, then continue with `federa run --resume {out}`")
    # What the full disk left: round 1 checkpointed, no temp file, no result.
    assert load_checkpoint(out / "lora" / "checkpoint.pt")[0]["round"] == 1
    assert not list(out.rglob("*.tmp")) and not (out / "lora" / "result.json").exists()

    assert main(["run", "--resume", str(out), "--no-progress"]) == 0
    writer_lock.release(out)
    assert "[lora] resumed after round 1" in capsys.readouterr().out
    got, want = RunDir(out), reference
    final, ref_final = load_checkpoint(got.checkpoint("lora"))[0], load_checkpoint(want.checkpoint("lora"))[0]
    assert final["round"] == ROUNDS and final["state"].keys() == ref_final["state"].keys()
    for k in final["state"]:
        assert torch.allclose(final["state"][k], ref_final["state"][k], atol=1e-6), k
    lines, ref_lines = got.read_metrics(), want.read_metrics()
    assert [r["round"] for r in lines] == list(range(ROUNDS + 1))  # every round once, the cut line gone
    keys = ("score", "loss", "train_loss", "clients", "cum_bytes_up", "cum_examples_seen")
    for r, ref in zip(lines, ref_lines):
        assert [r.get(k) for k in keys] == [ref.get(k) for k in keys], r["round"]
    assert (out / "lora" / "result.json").is_file()


def test_full_disk_before_any_round_removes_the_new_folder(tiny_model_dir, small_csv, tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    monkeypatch.setattr(os, "fsync", FullDisk("partition.json.tmp", 1))
    assert main(_args(tiny_model_dir, small_csv, out)) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"error: the disk holding {out} is full (No space left on device); no round had finished, so the "
                   "folder was removed: free some space and run the same command again")
    assert not out.exists()  # the same command is not refused as "not empty"


def test_a_full_disk_seen_by_a_rust_writer_is_one_line(tiny_model_dir, small_csv, tmp_path, capsys, monkeypatch):
    """Before (issue 25, a 300 KB tmpfs): the tokenizer save of the final adapter (Rust `tokenizers`)
    raises a plain Exception carrying only the OS's text, and that came out as a traceback."""
    from transformers.tokenization_utils_tokenizers import TokenizersBackend

    def full(*_, **__):
        raise Exception("No space left on device (os error 28)")  # what tokenizers raises, verbatim

    out = tmp_path / "run"
    monkeypatch.setattr(TokenizersBackend, "_save_pretrained", full)
    assert main(_args(tiny_model_dir, small_csv, out)) == 2
    monkeypatch.undo()
    writer_lock.release(out)
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert err == [f"error: the disk holding {out} is full (No space left on device); finished rounds are kept: "
                   f"free some space, then continue with `federa run --resume {out}`"], err
    assert main(["run", "--resume", str(out), "--no-progress"]) == 0
    writer_lock.release(out)
    assert (out / "lora" / "result.json").is_file() and (out / "lora" / "final" / "tokenizer.json").is_file()


@pytest.mark.parametrize("make", [
    lambda: OSError(28, "No space left on device"),
    lambda: Exception("No space left on device (os error 28)"),  # tokenizers
    lambda: RuntimeError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No space '
                         'left on device" })'),  # safetensors
])
def test_disk_full_is_recognised_however_a_library_raises_it(make):
    from federa.errors import disk_full_reason, is_disk_full

    assert is_disk_full(make()) and disk_full_reason(make()) == "No space left on device"
    try:
        try:
            raise make()
        except BaseException as inner:
            raise ValueError("saving failed") from inner
    except ValueError as chained:
        assert is_disk_full(chained)
    assert not is_disk_full(OSError(13, "Permission denied")) and not is_disk_full(ValueError("no space"))
