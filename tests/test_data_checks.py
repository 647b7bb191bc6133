"""Silent garbage training is refused or named: no tokenizer files, unreadable text, unlearnable test classes."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest
from datasets import Dataset

from federa.cli import main
from federa.data_checks import VOCAB_FILES, unknown_token_share, unseen_classes_warning
from federa.errors import ModelError
from federa.job import prepare_job
from federa.pretrained import load_tokenizer


def _without_tokenizer(model_dir: Path, dest: Path) -> Path:
    shutil.copytree(model_dir, dest)
    for f in dest.iterdir():
        if f.name.startswith(("tokenizer", "vocab", "special_tokens")):
            f.unlink()
    assert not any((dest / n).exists() for n in VOCAB_FILES)
    return dest


def test_a_model_folder_without_tokenizer_files_is_refused_in_one_line(tmp_path, tiny_model_dir, small_csv, capsys):
    """Before: transformers built a 5-token tokenizer, every word became [UNK], and training 'succeeded'."""
    bare = _without_tokenizer(tiny_model_dir, tmp_path / "bare")
    with pytest.raises(ModelError, match="has no tokenizer files"):
        load_tokenizer(bare)
    out = tmp_path / "run"
    rc = main(["run", "--set", f"model.path={bare}", "--set", f"data.path={small_csv}", "--set", "rounds=1",
               "--set", "methods=lora", "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1
    assert err[0].startswith(f"error: model.path {bare} has no tokenizer files (expected one of tokenizer.json, vocab.txt")


def test_unknown_token_share_counts_only_real_tokens():
    # [CLS]=101 [SEP]=102 [PAD]=0 [UNK]=100: 2 unknown of 4 real tokens, padding and markers ignored.
    ds = Dataset.from_dict({"input_ids": [[101, 100, 7592, 100, 2088, 102, 0, 0]]})
    assert unknown_token_share(ds, 100, [100, 101, 102, 0, 103]) == 0.5
    assert unknown_token_share(ds, None, []) == 0.0


def test_text_the_tokenizer_cannot_read_is_warned_about(tmp_path, tiny_cfg):
    data = tmp_path / "runes.csv"
    with open(data, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        for i in range(40):
            w.writerow(["ᚠᚢᚦᚨᚱᚲ ᚷᚹᚺ ⵣⵓⵔ ꦲꦏ" + (" news" if i % 2 else ""), "ab"[i % 2]])
    job = prepare_job(tiny_cfg(f"data.path={data}", "num_clients=2"))
    # 32 training rows (stratified 80%), half with 4 of 4 real tokens unknown, half 4 of 5: 128/144.
    assert job.warnings == [f"89% of the training tokens are the tokenizer's unknown token: the model at "
                            f"{job.model_path} cannot read this text (wrong tokenizer, or another language/script); "
                            "results will be poor"]


def test_clean_data_gives_no_warning(tiny_cfg):
    assert prepare_job(tiny_cfg()).warnings == []


def test_a_test_class_absent_from_training_is_named():
    line = unseen_classes_warning([0, 0, 1, 1], [0, 1, 2, 2, 1], ["a", "b", "c"])
    assert line is not None and line.startswith("the test split has class(es) c (2 of 5 test examples)")
    assert unseen_classes_warning([0, 1, 2], [2, 1], ["a", "b", "c"]) is None


def test_divergence_is_the_first_round_past_100x_the_initial_loss():
    from federa.report import diverged

    rows = [{"round": 0, "loss": 1.6}, {"round": 1, "loss": 5.0}, {"round": 2, "loss": 1.7e7}, {"round": 3, "loss": 9.0}]
    assert diverged(rows) == {"round": 2, "loss": 1.7e7, "initial_loss": 1.6}
    assert diverged(rows[:2]) is None  # 3x is overfitting territory, not divergence
    assert diverged([{"round": 0, "loss": 1.0}, {"round": 1, "loss": float("nan")}])["round"] == 1


def test_an_exploding_lr_is_flagged_in_the_report_and_the_exit_code(tmp_path, tiny_model_dir, small_csv, capsys):
    """Before: lr 1e6 on MiniLM ended with test loss 1.7e7, status done, exit 0 (here: lr 100 on the tiny model, 903)."""
    out = tmp_path / "run"
    rc = main(["run", "--set", f"model.path={tiny_model_dir}", "--set", f"data.path={small_csv}", "--set", "rounds=2",
               "--set", "methods=fft", "--set", "lr.fft=100", "--set", "num_clients=2",
               "--set", "clients_per_round=2", "--set", "local_steps=2", "--set", "max_length=32",
               "--set", "model.num_threads=1", "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    import json

    d = json.loads((out / "summary.json").read_text())["methods"]["fft"]["diverged"]
    assert rc == 3 and d["round"] == 1 and d["loss"] > 100 * d["initial_loss"]
    assert err[-1].startswith("error: training diverged (fft at round 1: test loss over 100x its start)")
    assert "diverged at round 1" in (out / "report.md").read_text()


def test_a_checkpoint_with_another_head_gets_a_fresh_one_and_a_warning(tmp_path, tiny_model_dir, tiny_cfg):
    """Before: transformers' RuntimeError (ignore_mismatched_sizes) as a traceback."""
    import shutil

    from transformers import BertForSequenceClassification

    three = tmp_path / "three"
    BertForSequenceClassification.from_pretrained(str(tiny_model_dir), num_labels=3).save_pretrained(three)
    for f in tiny_model_dir.iterdir():
        if f.name.startswith(("tokenizer", "vocab", "special_tokens")):
            shutil.copy(f, three)
    job = prepare_job(tiny_cfg(f"model.path={three}"))
    assert job.warnings == [f"the model at {three} carries a 3-label head (BertForSequenceClassification); federa "
                            "replaces it with a fresh 5-label head for this data"]
    assert job.base_model().classifier.weight.shape == (5, 32)
