"""A short real run: built-in MiniLM-L6, real BBC News articles, all three core methods."""

import json

import pytest
from peft import PeftModel
from transformers import AutoModelForSequenceClassification

from federa.cli import main
from federa.pretrained import builtin_model_path

REAL = ["rounds=3", "num_clients=4", "clients_per_round=2", "local_steps=5", "batch_size=16", "max_length=32",
        "data.max_train_examples=320", "data.max_test_examples=120", "partition.alpha=1.0", "lr.fft=1e-4",
        "lr.lora=5e-3", "lr.federa=3e-3", "model.num_threads=2"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("e2e") / "run"
    args = ["run", "--no-progress", "--out", str(out)]
    for kv in REAL:
        args += ["--set", kv]
    assert main(args) == 0
    return out


def test_every_output_file_is_written(run_dir):
    for name in ("config.yaml", "partition.json", "metrics.jsonl", "summary.json", "report.md",
                 "score_vs_round.png", "score_vs_time.png", "score_vs_bytes.png"):
        assert (run_dir / name).is_file(), name
    for m in ("fft", "lora", "federa"):
        assert (run_dir / m / "result.json").is_file()
    assert (run_dir / "fft" / "final" / "config.json").is_file()
    for m in ("lora", "federa"):
        assert (run_dir / m / "final" / "adapter_config.json").is_file()


def test_metrics_lines_have_the_documented_keys(run_dir):
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [(r["method"], r["round"]) for r in lines] == [(m, r) for m in ("fft", "lora", "federa") for r in range(4)]
    keys = {"method", "round", "accuracy", "macro_f1", "loss", "train_loss", "clients", "round_s", "eval_s",
            "client_compute_s", "aggregate_s", "bytes_up", "bytes_down", "examples_seen", "cum_wall_s",
            "cum_train_wall_s", "cum_client_compute_s", "cum_bytes_up", "cum_bytes_down", "cum_examples_seen"}
    for r in lines[1:4]:
        assert keys <= r.keys(), keys - r.keys()
        # 2 clients × 5 steps of batch 16; a pass's last batch may be partial (no drop_last).
        assert 2 * 5 * 8 < r["examples_seen"] <= 2 * 5 * 16


def test_every_method_beats_the_untrained_model(run_dir):
    summary = json.loads((run_dir / "summary.json").read_text())
    for m, s in summary["methods"].items():
        assert s["status"] == "done"
        # 5 balanced classes: the untrained head sits near chance (0.2); training must clearly help.
        assert s["final_score"] > s["initial_score"] + 0.15, (m, s["initial_score"], s["final_score"])
    ms = summary["methods"]
    assert ms["fft"]["trainable_pct"] == 100.0
    assert ms["lora"]["trainable_pct"] < 1.0 and ms["lora"]["trainable_params"] == ms["federa"]["trainable_params"]
    assert ms["fft"]["bytes_per_client_round"] > 100 * ms["federa"]["bytes_per_client_round"]
    report = (run_dir / "report.md").read_text()
    for col in ("trainable %", "final accuracy", "best accuracy", "sent per client per round", "time to target"):
        assert col in report


def test_saved_adapters_load_with_peft(run_dir):
    labels = json.loads((run_dir / "partition.json").read_text())["label_names"]
    for m in ("lora", "federa"):
        base = AutoModelForSequenceClassification.from_pretrained(str(builtin_model_path()), num_labels=len(labels))
        model = PeftModel.from_pretrained(base, str(run_dir / m / "final"))
        assert sum(p.numel() for n, p in model.named_parameters() if "lora_" in n) > 0


def test_report_is_rebuilt_from_disk(run_dir, capsys):
    before = json.loads((run_dir / "summary.json").read_text())
    (run_dir / "report.md").unlink()
    (run_dir / "score_vs_round.png").unlink()
    assert main(["report", str(run_dir)]) == 0
    assert (run_dir / "score_vs_round.png").stat().st_size > 10_000
    after = json.loads((run_dir / "summary.json").read_text())
    assert after["methods"] == before["methods"] and after["target_score"] == before["target_score"]
    assert "| federa |" in capsys.readouterr().out
