"""Task types end to end on the tiny model: single/pair classification, regression, token classification.

Data are small slices of the real built-in corpora (BBC News, STS-B, WNUT-16) written as files,
so the same loading path as a user's own data is exercised.
"""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

from federa.builtin_data import BUILTINS, bbc_news_dataset
from federa.cli import main as cli_main
from federa.config import build_config
from federa.data import load_data
from federa.engines.inprocess import run_method
from federa.job import prepare_job
from federa.results_dir import RunDir
from federa.tasks.classification import mcc
from federa.tasks.token_classification import TokenClassification, entity_type


@pytest.fixture(scope="module")
def pair_csv(tmp_path_factory):
    """240 real BBC article openings paired up: label 'same' when both come from one topic."""
    ds = bbc_news_dataset()
    rng = np.random.default_rng(0)
    idx = rng.permutation(len(ds))[:480]
    out = tmp_path_factory.mktemp("pair") / "pairs.csv"
    with open(out, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["first", "second", "relation"])
        for a, b in zip(idx[::2], idx[1::2]):
            w.writerow([ds[int(a)]["text"][:200], ds[int(b)]["text"][:200],
                        "same" if ds[int(a)]["label"] == ds[int(b)]["label"] else "different"])
    return out


@pytest.fixture(scope="module")
def sts_csv(tmp_path_factory):
    """240 real STS-B pairs with their 0-5 similarity scores."""
    train = BUILTINS["sts_b"].load()["train"].select(range(240))
    out = tmp_path_factory.mktemp("sts") / "sts.csv"
    train.to_csv(str(out), index=False)
    return out


@pytest.fixture(scope="module")
def ner_jsonl(tmp_path_factory):
    """240 real WNUT-16 tweets with BIO tags, as jsonl (tokens, tags lists)."""
    ds = BUILTINS["wnut16"].load().select(range(240))
    out = tmp_path_factory.mktemp("ner") / "ner.jsonl"
    with open(out, "w", encoding="utf-8") as f:
        for row in ds:
            f.write(json.dumps({"words": row["tokens"], "ner": row["tags"]}) + "\n")
    return out


def _run(cfg, tmp_path, method):
    job = prepare_job(cfg)
    rd = RunDir(tmp_path / method)
    rd.root.mkdir(parents=True)
    result = run_method(job, method, rd, progress=False, log=lambda *_: None)
    return job, result, rd.read_metrics()


@pytest.mark.parametrize("method", ["lora", "federa"])
def test_pair_classification_end_to_end(tiny_cfg, pair_csv, tmp_path, method):
    cfg = tiny_cfg(f"data.path={pair_csv}", "data.text_column=first", "data.text_pair_column=second",
                   "data.label_column=relation", "task=pair_classification", f"methods={method}")
    job, result, records = _run(cfg, tmp_path, method)
    assert result["status"] == "done" and job.label_names == ["different", "same"]
    # Tokenised as a pair: BERT's segment ids mark the second text.
    assert set(job.train[0]["token_type_ids"]) == {0, 1}
    assert [r["round"] for r in records] == [0, 1, 2]
    assert all(r["score"] == r["accuracy"] and -1 <= r["mcc"] <= 1 for r in records)


@pytest.mark.parametrize("method", ["lora", "federa"])
def test_regression_end_to_end(tiny_cfg, sts_csv, tmp_path, method):
    cfg = tiny_cfg(f"data.path={sts_csv}", "data.text_pair_column=text_pair", f"methods={method}")
    job, result, records = _run(cfg, tmp_path, method)
    assert job.task.name == "regression"  # inferred: the labels are scores like 3.8
    assert job.main_metric == "pearson" and job.label_names == ["score"]
    head = job.server_model(method)[1].get_submodule("base_model.model.classifier")
    assert head.out_features == 1  # one output, MSE loss
    assert result["status"] == "done"
    for r in records:
        assert r["score"] == r["pearson"] and -1 <= r["spearman"] <= 1 and r["loss"] >= 0
    assert math.isfinite(records[-1]["train_loss"])
    # The report speaks the task's metric: scores are Pearson's r, labelled so.
    from federa.pending import run_info, write_report

    rd = RunDir(tmp_path / method)
    summary = write_report(rd, cfg, run_info(job))
    m = summary["methods"][method]
    assert m["initial_score"] == records[0]["pearson"] and m["final_score"] == records[-1]["pearson"]
    assert "final pearson" in rd.report.read_text(encoding="utf-8") and (rd.root / "score_vs_round.png").is_file()


@pytest.mark.parametrize("method", ["lora", "federa"])
def test_token_classification_end_to_end(tiny_cfg, ner_jsonl, tmp_path, method):
    cfg = tiny_cfg(f"data.path={ner_jsonl}", "data.tokens_column=words", "data.tags_column=ner",
                   f"methods={method}", "partition.alpha=0.5")
    job, result, records = _run(cfg, tmp_path, method)
    assert job.task.name == "token_classification" and job.main_metric == "entity_f1"
    assert job.label_names[0] == "O" and "B-person" in job.label_names
    assert result["status"] == "done"
    for r in records:
        assert r["score"] == r["entity_f1"] and 0 <= r["token_accuracy"] <= 1
    # Non-IID by dominant entity type: the strata names are the entity types plus "none".
    assert job.strata_names[-1] == "none" and "person" in job.strata_names


def test_first_subtoken_carries_the_tag(tiny_cfg, ner_jsonl):
    cfg = tiny_cfg(f"data.path={ner_jsonl}", "data.tokens_column=words", "data.tags_column=ner")
    job = prepare_job(cfg)
    row, raw = job.train[0], job.data.train[0]
    enc = job.tokenizer(raw["tokens"], is_split_into_words=True, truncation=True, max_length=cfg.max_length)
    firsts = [i for i, w in enumerate(enc.word_ids()) if w is not None and (i == 0 or enc.word_ids()[i - 1] != w)]
    assert [row["labels"][i] for i in firsts] == raw["tags"][:len(firsts)]
    assert all(row["labels"][i] == -100 for i in range(len(row["labels"])) if i not in firsts)


def test_dominant_entity_type_strata():
    names = ["O", "B-loc", "I-loc", "B-per", "I-per"]
    task = TokenClassification(build_config().data)
    from datasets import Dataset

    ds = Dataset.from_dict({"tags": [[0, 1, 2, 3], [3, 4, 3, 0], [0, 0], [1, 3]]})
    ids, strata = task.strata(ds, names)
    assert strata == ["loc", "per", "none"]
    # loc 1 entity vs per 1 (tie → alphabetical: loc); per 2; none; tie → loc.
    assert ids.tolist() == [0, 1, 2, 0]
    assert entity_type("I-geo-loc") == "geo-loc" and entity_type("O") is None


def test_mcc_matches_the_binary_formula():
    y = np.array([1, 1, 1, 0, 0, 0, 1, 0])
    p = np.array([1, 0, 1, 0, 0, 1, 1, 0])
    tp, tn, fp, fn = 3, 3, 1, 1
    expected = (tp * tn - fp * fn) / math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    assert mcc(y, p, 2) == pytest.approx(expected, abs=1e-12)
    assert mcc(y, y, 2) == 1.0 and mcc(y, np.zeros_like(y), 2) == 0.0


def test_every_builtin_dataset_loads_with_its_task():
    seen = {}
    for name, b in BUILTINS.items():
        data = load_data(build_config({}, [f"data.builtin={name}"]).data)
        seen[name] = (data.task.name, len(data.train), len(data.test))
        assert data.task.name == b.task
    assert seen["sts_b"] == ("regression", 5749, 1379)
    assert seen["wnut16"][0] == "token_classification" and seen["wnut16"][1] + seen["wnut16"][2] == 2394
    assert seen["rotten_tomatoes"][1] + seen["rotten_tomatoes"][2] == 12808
    assert len({t for t, _, _ in seen.values()}) >= 3


# -- bad input: one line each ------------------------------------------------------------


def _cli_error(capsys, out, *sets: str) -> str:
    code = cli_main(["run", "--no-progress", "--out", str(out), *sum((["--set", s] for s in sets), [])])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_bad_task_inputs_fail_in_one_line(tiny_model_dir, pair_csv, tmp_path, capsys):
    base = [f"model.path={tiny_model_dir}"]
    outs = (tmp_path / f"out{i}" for i in range(10))
    line = _cli_error(capsys, next(outs), *base, f"data.path={pair_csv}", "data.text_column=first",
                      "data.label_column=relation", "task=pair_classification")
    assert "data.text_pair_column" in line
    bad = tmp_path / "bad.csv"
    bad.write_text("text,label\n" + "".join(f"sentence {i},{'high' if i % 2 else 1.5}\n" for i in range(30)))
    line = _cli_error(capsys, next(outs), *base, f"data.path={bad}", "task=regression")
    assert "numeric labels" in line and "'high'" in line
    mismatch = tmp_path / "mismatch.jsonl"
    mismatch.write_text("\n".join(json.dumps({"tokens": ["a", "b"], "tags": ["O"] * (1 + i % 2)}) for i in range(20)))
    line = _cli_error(capsys, next(outs), *base, f"data.path={mismatch}")
    assert "tokens but" in line and "tags" in line
    train = tmp_path / "split"
    from datasets import Dataset, DatasetDict

    DatasetDict(train=Dataset.from_dict({"tokens": [["a", "b"]] * 20, "tags": [["B-x", "O"]] * 20}),
                test=Dataset.from_dict({"tokens": [["a"]] * 5, "tags": [["B-zzz"]] * 5})).save_to_disk(str(train))
    line = _cli_error(capsys, next(outs), *base, f"data.path={train}")
    assert "B-zzz" in line and "training split never" in line
    line = _cli_error(capsys, next(outs), *base, "data.builtin=sts_b", "task=classification")
    assert "regression dataset" in line
    line = _cli_error(capsys, next(outs), *base, "task=regression", "metric=accuracy")
    assert "metric=accuracy is not a regression metric" in line


@pytest.mark.parametrize("method", ["lora", "federa"])
def test_saved_adapter_loads_with_auto_peft_alone(tiny_cfg, sts_csv, tmp_path, method):
    """AutoPeftModel needs nothing but the folder: head size and labels travel with it (regression: 1 output)."""
    import torch
    from peft import AutoPeftModelForSequenceClassification

    cfg = tiny_cfg(f"data.path={sts_csv}", "data.text_pair_column=text_pair", f"methods={method}", "rounds=1")
    job = prepare_job(cfg)
    rd = RunDir(tmp_path)
    from federa.engines.server import ServerRun

    server = ServerRun(job, method, rd, log=lambda *_: None)
    assert server.finish()["status"] == "done"
    loaded = AutoPeftModelForSequenceClassification.from_pretrained(str(rd.final_model(method)))
    assert loaded.config.num_labels == 1 and loaded.config.problem_type == "regression"
    batch = {k: v for k, v in job.collate([job.test[i] for i in range(4)]).items() if k != "labels"}
    server.model.eval()
    loaded.eval()
    with torch.no_grad():
        assert torch.allclose(loaded(**batch).logits, server.model(**batch).logits, atol=1e-5)


METHODS = ["fft", "lora", "federa", "bitfit", "ia3", "prompt", "prefix", "adapter"]


@pytest.fixture(scope="module")
def task_cfgs(small_csv, pair_csv, sts_csv, ner_jsonl):
    return {
        "classification": [f"data.path={small_csv}"],
        "pair_classification": [f"data.path={pair_csv}", "data.text_column=first", "data.text_pair_column=second",
                                "data.label_column=relation"],
        "regression": [f"data.path={sts_csv}", "data.text_pair_column=text_pair"],
        "token_classification": [f"data.path={ner_jsonl}", "data.tokens_column=words", "data.tags_column=ner"],
    }


@pytest.mark.parametrize("task", ["classification", "pair_classification", "regression", "token_classification"])
def test_every_method_trains_on_every_task_or_refuses_in_one_line(tiny_cfg, task_cfgs, task):
    """One local update per method: it trains (finite loss, the trainables move) or says in one line why not."""
    import torch

    from federa.client import local_update
    from federa.errors import ModelError
    from federa.methods.base import trainable_state

    job = prepare_job(tiny_cfg(*task_cfgs[task], f"task={task}", "methods=" + ",".join(METHODS)))
    outcome = {}
    for m in METHODS:
        try:
            _, model, _ = job.server_model(m)
        except ModelError as err:
            assert "\n" not in str(err)
            outcome[m] = "refused"
            continue
        before = trainable_state(model)
        upd = local_update(model, before, job.shard(0), job.collate, job.train_settings(m))
        assert math.isfinite(upd.metrics["train_loss"]), m
        assert any(not torch.equal(before[k], upd.state[k]) for k in before), m
        outcome[m] = "trains"
    print(f"\n{task}: {outcome}")
    refused = {"prefix"}  # transformers 5: BERT's forward takes no past_key_values (methods/prefix.py)
    if task == "token_classification":
        refused.add("prompt")  # virtual tokens would shift every position against its tag
    assert {m for m, o in outcome.items() if o == "refused"} == refused, outcome


def test_flower_driver_logs_the_tasks_main_metric_for_a_task_without_accuracy(tiny_cfg, sts_csv, tmp_path,
                                                                               monkeypatch):
    """The ServerApp's per-round line names the task's main metric (a regression task has no accuracy)."""
    from flwr.app import Context, RecordDict
    from flwr.supercore.task_identity import TaskIdentity

    from federa.engines.flower import client_app
    from federa.engines.flower.driver import drive_method

    for name in ("_run_id", "_task_id", "_node_id"):
        monkeypatch.setattr(TaskIdentity, name, 1)

    class Grid:  # node 100+i holds client i; every message answered by federa's ClientApp in this process
        contexts = {100 + i: Context(run_id=1, node_id=100 + i, state=RecordDict(), run_config={},
                                     node_config={"partition-id": i, "num-partitions": 4}) for i in range(4)}

        def get_node_ids(self):
            return list(self.contexts)

        def send_and_receive(self, msgs, timeout=None):
            return [client_app.app(m, self.contexts[m.metadata.dst_node_id]) for m in msgs]

    cfg = tiny_cfg(f"data.path={sts_csv}", "data.text_pair_column=text_pair", "methods=lora", "rounds=1")
    logs: list[str] = []
    result = drive_method(Grid(), prepare_job(cfg), "lora", RunDir(tmp_path), log=logs.append)
    assert result["status"] == "done"
    pearson = [r for r in RunDir(tmp_path).read_metrics() if r["round"] == 1][0]["pearson"]
    assert f"[lora] round 1/1: 2/2 replies, pearson {pearson:.4f}" in logs
