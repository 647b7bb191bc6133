"""Trackers: a tiny run logged to TensorBoard, MLflow (local SQLite store) and W&B (offline), every
logged value read back through the tracker's own reader and compared with metrics.jsonl."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

import federa
from federa.errors import ConfigError
from federa.trackers import tracker_problem

METHODS = ("lora", "federa")
ROUNDS = 2


@pytest.fixture(scope="module")
def tracked(tmp_path_factory, tiny_model_dir, small_csv, monkeypatch_module):
    names = [n for n in ("tensorboard", "mlflow", "wandb") if tracker_problem(n) is None]
    if not names:
        pytest.skip("no tracker library installed: pip install 'federa[tensorboard,mlflow,wandb]'")
    monkeypatch_module.delenv("WANDB_API_KEY", raising=False)
    monkeypatch_module.delenv("WANDB_MODE", raising=False)
    out = tmp_path_factory.mktemp("trackers") / "run"
    cfg = federa.Config(
        {"model": {"path": str(tiny_model_dir), "num_threads": 1}, "data": {"path": str(small_csv)}},
        methods=list(METHODS), rounds=ROUNDS, num_clients=4, clients_per_round=2, local_steps=2, batch_size=8,
        max_length=32, lora={"r": 4}, trackers=names, name="tracked")
    result = federa.run(cfg, out=out, log=None)
    return result, names


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


def _expected(result, key: str) -> dict[str, list[tuple[int, float]]]:
    return {m: [(r["round"], r[key]) for r in result.metrics if r["method"] == m] for m in METHODS}


def test_tensorboard_scalars_text_and_plots(tracked):
    result, names = tracked
    if "tensorboard" not in names:
        pytest.skip("pip install 'federa[tensorboard]'")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    root = result.run_dir / "tensorboard"
    for m in METHODS:
        acc = EventAccumulator(str(root / m), size_guidance={"scalars": 0}).Reload()
        for key in ("accuracy", "loss", "cum_bytes_up"):
            got = [(e.step, e.value) for e in acc.Scalars(key)]
            want = _expected(result, key)[m]
            assert [s for s, _ in got] == [s for s, _ in want] == list(range(ROUNDS + 1))
            assert [v for _, v in got] == pytest.approx([v for _, v in want], rel=1e-6)
    run = EventAccumulator(str(root), size_guidance={"images": 0, "tensors": 0, "scalars": 0}).Reload()
    tags = run.Tags()
    assert {"plots/score_vs_round", "plots/score_vs_time", "plots/score_vs_bytes"} <= set(tags["images"])
    sizes = [e.value for e in run.Scalars("partition/client_examples")]
    stats = json.loads((result.run_dir / "partition.json").read_text())
    assert sizes == [c["num_examples"] for c in stats["clients"]]
    config_text = run.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "rounds: 2" in config_text and "- tensorboard" in config_text


def test_mlflow_runs_params_metrics_and_artifacts(tracked):
    result, names = tracked
    if "mlflow" not in names:
        pytest.skip("pip install 'federa[mlflow]'")
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{(result.run_dir / 'mlflow.db').resolve()}")
    exp = client.get_experiment_by_name("federa")
    runs = client.search_runs([exp.experiment_id])
    parent = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)
    assert parent.info.run_name == "tracked" and parent.info.status == "FINISHED"
    assert parent.data.params["rounds"] == "2" and parent.data.params["lora.r"] == "4"
    assert parent.data.params["trackers"] == str(names)
    skew = json.loads((result.run_dir / "partition.json").read_text())["label_skew_tv"]
    assert parent.data.metrics["partition.label_skew_tv"] == pytest.approx(skew)
    arts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"config.yaml", "partition.json", "report.md", "plots"} <= arts
    children = {r.info.run_name: r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id}
    assert set(children) == set(METHODS)
    for m in METHODS:
        got = sorted((h.step, h.value) for h in client.get_metric_history(children[m].info.run_id, "loss"))
        want = _expected(result, "loss")[m]
        assert [s for s, _ in got] == [s for s, _ in want] == list(range(ROUNDS + 1))
        assert [v for _, v in got] == pytest.approx([v for _, v in want], rel=1e-6)
        assert children[m].data.metrics["summary.final_score"] == result.methods[m]["final_score"]
    assert (result.run_dir / "mlflow-artifacts").is_dir()  # nothing written outside the results folder


def _wandb_records(path: Path):
    """The records of a W&B run file: a LevelDB-style log (32 KiB blocks of CRC/length/type chunks)
    after a 7-byte header, each record a ``wandb_internal_pb2.Record``."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, block, buf = 7, 32768, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk = data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind == 0 and length == 0:
            continue
        buf += chunk
        if kind in (1, 4):  # full, or last piece
            rec = pb.Record()
            rec.ParseFromString(buf)
            buf = b""
            yield rec


def test_wandb_offline_history_and_config(tracked):
    result, names = tracked
    if "wandb" not in names:
        pytest.skip("pip install 'federa[wandb]'")
    files = list((result.run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(files) == 1
    history: dict[str, list[float]] = {}
    config_keys = set()
    for rec in _wandb_records(files[0]):
        kind = rec.WhichOneof("record_type")
        if kind == "history":
            for item in rec.history.item:
                key = item.key or "/".join(item.nested_key)
                history.setdefault(key, []).append(json.loads(item.value_json))
        elif kind == "config":
            config_keys |= {u.key for u in rec.config.update}
    for m in METHODS:
        want = _expected(result, "loss")[m]
        assert history[f"{m}/round"] == [r for r, _ in want] == list(range(ROUNDS + 1))
        assert history[f"{m}/loss"] == pytest.approx([v for _, v in want], rel=1e-6)
    assert {"rounds", "partition", "run"} <= config_keys
    assert history["partition/clients/ncols"] == [2 + 5]  # client, examples, one column per label
    assert history["partition/clients/nrows"] == [4]
    assert any(k.startswith("plots/score_vs_round") for k in history)


def test_missing_extra_is_one_error_line_naming_pip(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    with pytest.raises(ConfigError) as err:
        federa.Config(trackers="tensorboard,mlflow")
    assert str(err.value) == "config key 'trackers': tracker mlflow needs its library: pip install 'federa[mlflow]'"


def test_resumed_run_continues_the_same_tracker_runs_without_resending(tmp_path, monkeypatch):
    from types import SimpleNamespace

    import federa.trackers as registry
    from federa.results_dir import RunDir
    from federa.trackers.base import Tracker, Trackers

    sent: list[tuple[str, int, float]] = []
    made: list[dict] = []

    class Recording(Tracker):
        name = "tensorboard"

        def __init__(self, *args):
            super().__init__(*args)
            made.append(self.saved)

        def start(self, config, info, partition):
            sent.append(("start", 0, 0.0))

        def log_round(self, method, rnd, values):
            sent.append((method, rnd, values["loss"]))

        def finish(self, summary, report, plots):
            pass

        def close(self, status):
            pass

        def state(self):
            return {"run_id": "abc"}

    monkeypatch.setattr(registry, "tracker_class", lambda name: Recording)
    rd = RunDir(tmp_path)
    cfg = SimpleNamespace(trackers=["tensorboard"])
    for r in range(3):
        rd.append_metrics({"method": "lora", "round": r, "loss": 1.0 - r / 10, "clients": [0, 1], "accuracy": None})
    first = Trackers(cfg, rd, "run", print)
    first.start({}, {}, {})
    first.sync()
    first.close("interrupted")
    rd.append_metrics({"method": "lora", "round": 3, "loss": 0.7})
    again = Trackers(cfg, rd, "run", print)  # the resumed session
    again.start({}, {}, {})  # not sent twice
    again.sync()
    assert made == [{}, {"run_id": "abc"}]
    assert sent == [("start", 0, 0.0), ("lora", 0, 1.0), ("lora", 1, 0.9), ("lora", 2, 0.8), ("lora", 3, 0.7)]


def test_a_failing_tracker_is_dropped_with_one_warning(tmp_path, monkeypatch):
    from types import SimpleNamespace

    import federa.trackers as registry
    from federa.results_dir import RunDir
    from federa.trackers.base import Tracker, Trackers

    class Broken(Tracker):
        name = "mlflow"
        start = finish = close = lambda self, *a: None

        def log_round(self, method, rnd, values):
            raise ConnectionError("tracking server at http://x:5000 did not answer")

    monkeypatch.setattr(registry, "tracker_class", lambda name: Broken)
    logged: list[str] = []
    t = Trackers(SimpleNamespace(trackers=["mlflow"]), RunDir(tmp_path), "run", logged.append)
    t.send({"method": "lora", "round": 0, "loss": 1.0})
    t.send({"method": "lora", "round": 1, "loss": 0.9})
    assert logged == ["warning: tracker mlflow failed (ConnectionError: tracking server at http://x:5000 did not "
                      "answer); it logs nothing more this run"]
    assert not t
