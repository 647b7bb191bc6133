"""Per-client metrics: each client's held-out split, carved at partition time, scores every evaluation."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from datasets import ClassLabel, Dataset
from torch import nn

from federa.client_eval import evaluate_clients, spread
from federa.config import build_config
from federa.errors import ConfigError
from federa.partition import carve_client_val, client_val_fraction, format_stats, partition_stats


def test_carve_is_seeded_disjoint_and_follows_the_small_shard_rule():
    parts = [np.arange(0, 10), np.array([10]), np.array([11, 12]), np.arange(13, 38), np.arange(38, 43)]
    keep, val = carve_client_val(parts, 0.1, seed=3)
    # round(0.1·n), at least 1, at most n − 1: 10 → 1, 1 → 0 (keeps its only example), 2 → 1,
    # 25 → round(2.5) = 2, 5 → round(0.5) = 0 → raised to 1.
    assert [len(v) for v in val] == [1, 0, 1, 2, 1]
    for p, k, v in zip(parts, keep, val):
        assert np.array_equal(np.sort(np.concatenate([k, v])), p) and not set(k) & set(v)
        assert len(k) >= 1
    again_keep, again_val = carve_client_val(parts, 0.1, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip(val, again_val))
    # Each client's carve depends on (seed, its id) only: dropping the other clients changes nothing.
    others = [np.arange(100, 140), np.array([200, 201]), np.array([300]), parts[3]]
    assert np.array_equal(carve_client_val(others, 0.1, seed=3)[1][3], val[3])
    other = carve_client_val(parts, 0.1, seed=4)[1]
    assert any(not np.array_equal(a, b) for a, b in zip(val, other))
    keep0, val0 = carve_client_val(parts, 0.0, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip(keep0, parts)) and all(len(v) == 0 for v in val0)
    big = carve_client_val([np.arange(100)], 0.3, seed=0)[1][0]
    assert len(big) == 30


def test_fraction_defaults_to_off_except_for_personalised_methods():
    assert client_val_fraction(build_config({}, ["methods=lora,federa"])) == 0.0
    assert client_val_fraction(build_config({}, ["methods=lora,lora+fedsa"])) == 0.1
    assert client_val_fraction(build_config({}, ["methods=lora+fedsa", "partition.client_val_fraction=0"])) == 0.0
    assert client_val_fraction(build_config({}, ["methods=lora", "partition.client_val_fraction=0.25"])) == 0.25
    with pytest.raises(ConfigError, match="client_val_fraction"):
        build_config({}, ["partition.client_val_fraction=1"])


def test_partition_json_records_the_held_out_split():
    labels = np.array([0, 1, 0, 1, 1, 0])
    keep, val = [np.array([0, 1]), np.array([3, 5])], [np.array([2]), np.array([4])]
    stats = partition_stats(labels, keep, ["a", "b"], val, 0.1)
    assert stats["client_val_fraction"] == 0.1
    assert stats["clients"][0] == {"id": 0, "num_examples": 2, "label_counts": [1, 1], "indices": [0, 1],
                                        "num_val": 1, "val_label_counts": [1, 0], "val_indices": [2]}
    assert "val" in format_stats(stats).splitlines()[0]
    off = partition_stats(labels, keep, ["a", "b"], [np.array([], dtype=np.int64)] * 2)
    assert "client_val_fraction" not in off and "num_val" not in off["clients"][0]  # unchanged when off


class _ConstantModel(nn.Module):
    """Logits = ``w`` for every example: it predicts argmax(w), whatever the input."""

    def __init__(self, k: int) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(k), requires_grad=False)

    def forward(self, input_ids, **_):
        return SimpleNamespace(logits=self.w.expand(input_ids.shape[0], -1))


def _collate(rows):
    return {"input_ids": torch.zeros(len(rows), 1, dtype=torch.long),
            "labels": torch.tensor([r["label"] for r in rows])}


def test_per_client_numbers_on_a_hand_made_partition():
    from federa.tasks.classification import Classification

    labels = [0, 0, 0, 0, 1, 1, 0, 1, 1, 1, 2, 2]
    train = Dataset.from_dict({"label": labels}).cast_column("label", ClassLabel(names=["x", "y", "z"]))
    val_parts = [np.array([0, 1, 2]), np.array([3, 4]), np.array([], dtype=np.int64), np.array([6, 7, 8, 9])]
    cfg = build_config({}, ["num_clients=4", "clients_per_round=2", "eval_batch_size=2"])
    job = SimpleNamespace(val_parts=val_parts, train=train, cfg=cfg, task=Classification(cfg.data),
                          collate=_collate, label_names=["x", "y", "z"], device="cpu", main_metric="accuracy",
                          client_val=lambda c: train.select(val_parts[c]) if len(val_parts[c]) else None)
    model = _ConstantModel(3)

    # The global model predicts class 0 everywhere: accuracy = share of label 0 in each split.
    glob = {"w": torch.tensor([1.0, 0.0, 0.0])}
    out = evaluate_clients(job, model, lambda c: glob)
    assert out["client_score"] == [1.0, 0.5, None, 0.25]
    s = [1.0, 0.5, 0.25]
    assert out["client_score_mean"] == pytest.approx(sum(s) / 3, abs=1e-12)
    assert out["client_score_worst"] == 0.25
    assert out["client_score_p10"] == pytest.approx(0.25 + 0.2 * (0.5 - 0.25), abs=1e-12)  # 10% of the way
    assert out["client_score_std"] == pytest.approx(float(np.std(s)), abs=1e-12)

    # A personalised model per client (client 3 predicts class 1), and the global one loaded back after.
    own = {3: {"w": torch.tensor([0.0, 1.0, 0.0])}}
    out = evaluate_clients(job, model, lambda c: own.get(c, glob) if c is not None else glob)
    assert out["client_score"] == [1.0, 0.5, None, 0.75]
    assert torch.equal(model.w, glob["w"])

    job.val_parts = [np.array([], dtype=np.int64)] * 4
    assert evaluate_clients(job, model, lambda c: glob) == {}  # nothing held out: no per-client keys
    assert spread([None, None]) == {}


def test_a_run_logs_reports_and_plots_per_client_scores(tiny_cfg, tmp_path):
    from federa.experiment import run_experiment
    from federa.results_dir import RunDir, open_run_dir

    cfg = tiny_cfg("methods=lora", "rounds=1", "partition.client_val_fraction=0.2")
    rd = open_run_dir(cfg, tmp_path / "run", resume=False)
    summary = run_experiment(cfg, rd, progress=False, log=lambda *_: None)
    part = json.loads(RunDir(rd.root).partition.read_text())
    assert part["client_val_fraction"] == 0.2
    for c in part["clients"]:
        n = c["num_examples"] + c["num_val"]
        assert c["num_val"] == min(max(1, round(0.2 * n)), n - 1)
        assert not set(c["indices"]) & set(c["val_indices"])
    records = RunDir(rd.root).read_metrics()
    assert [r["round"] for r in records] == [0, 1]
    for r in records:
        assert len(r["client_score"]) == 4 and all(0.0 <= s <= 1.0 for s in r["client_score"])
        assert r["client_score_worst"] == min(r["client_score"])
        assert r["client_score_mean"] == pytest.approx(sum(r["client_score"]) / 4, abs=1e-12)
    s = summary["methods"]["lora"]
    assert s["final_client_scores"] == records[-1]["client_score"]
    assert s["final_client_score_p10"] == pytest.approx(float(np.percentile(records[-1]["client_score"], 10)))
    report = RunDir(rd.root).report.read_text()
    assert "## Per-client scores" in report and "| lora | 4/4 |" in report
    assert (rd.root / "client_scores.png").stat().st_size > 5_000


def test_compare_shares_the_held_out_split_and_reports_it(tiny_cfg, tmp_path):
    """lora beside lora+fedsa: one partition per cell (both held out 0.1), per-client columns and plot."""
    import csv

    from federa import compare
    from federa.compare import Plan

    plan = Plan(base=tiny_cfg("rounds=1"), methods=("lora", "lora+fedsa"), alphas=("iid",), seeds=(0,),
                out=tmp_path / "cmp")
    outcome = compare.run_compare(plan, progress=False, log=lambda *_: None)
    cell = json.loads((plan.out / "cells" / "aiid-s0" / "partition.json").read_text())
    assert cell["client_val_fraction"] == 0.1 and all(c["num_val"] >= 1 for c in cell["clients"])
    with open(plan.out / "summary.csv", newline="", encoding="utf-8") as f:
        rows = {r["method"]: r for r in csv.DictReader(f)}
    for m in plan.methods:
        assert 0.0 <= float(rows[m]["client_score_worst"]) <= float(rows[m]["client_score_mean"]) <= 1.0
    md = (plan.out / "summary.md").read_text()
    assert "Per-client scores" in md and "| iid | lora+fedsa |" in md
    assert "client_scores_aiid.png" in {p.name for p in outcome["plots"]}
    with open(plan.out / "results.csv", newline="", encoding="utf-8") as f:
        scores = [r["client_score"] for r in csv.DictReader(f)]
    assert all(len(s.split()) == 4 for s in scores)  # one per client id


def test_a_flower_node_with_its_own_file_trains_on_all_of_it():
    from federa.engines.flower.client_app import _overrides

    cfg = build_config({}, ["partition.client_val_fraction=0.2", *_overrides({"data-path": "x.csv"})])
    assert client_val_fraction(cfg) == 0.0
