"""The Flower engine on real processes: a SuperLink and SuperNodes on 127.0.0.1, insecure.

Every test starts its own processes on free ports, in their own process groups, and kills the
groups at the end (the SuperLink and SuperNodes spawn SuperExec/ServerApp/ClientApp children).
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
import torch

from federa.checkpoint import load_checkpoint
from federa.experiment import run_experiment
from federa.results_dir import open_run_dir
from federa.engines.flower import FlowerError, launch
from local_federation import LocalFederation
from federa.results_dir import RunDir

# Wall-clock numbers legitimately differ between engines; everything else in a metrics line
# (accuracy, loss, F1, train loss, bytes, examples, clients) must be identical.
_TIMING = {"round_s", "aggregate_s", "eval_s", "client_compute_s", "client_train_s", "cum_train_wall_s",
           "cum_client_compute_s", "cum_wall_s", "modelled_round_s", "cum_modelled_s"}


@pytest.fixture
def federation(tmp_path):
    """A factory of LocalFederations (SuperLink + n SuperNodes), all killed at the end."""
    made: list[LocalFederation] = []

    def start(n: int) -> LocalFederation:
        made.append(LocalFederation(tmp_path / f"federation{len(made)}", n))
        return made[-1]

    yield start
    for fed in made:
        fed.close()


def _flower_cfg(tiny_cfg, fed: LocalFederation, *overrides: str):
    return tiny_cfg("engine=flower", f"flower.superlink={fed.address}", "model.num_threads=1",
                    "flower.round_timeout_s=120", *overrides)


def _run(cfg, out: Path) -> dict:
    return run_experiment(cfg, open_run_dir(cfg, out, resume=False), progress=False)


def _metrics(run: Path, method: str) -> list[dict]:
    return [r for r in RunDir(run).read_metrics() if r["method"] == method]


def _state(path: Path) -> dict[str, torch.Tensor]:
    payload, _ = load_checkpoint(path)
    return payload["state"]


def _base(tiny_model_dir, small_csv, *overrides: str) -> list[str]:
    return [f"model.path={tiny_model_dir}", f"data.path={small_csv}", "local_steps=2", "batch_size=8",
            "max_length=32", "lora.r=4", "model.num_threads=1", *overrides]


def _flower_vs_inprocess(root: Path, base: list[str], nodes: int) -> tuple[dict, dict, float]:
    """The same job on ``nodes`` real SuperNodes and in-process; (flower summary, in-process summary, s)."""
    from federa.config import build_config

    with LocalFederation(root / "federation", nodes) as fed:
        cfg = build_config({}, [*base, "engine=flower", f"flower.superlink={fed.address}",
                                "flower.round_timeout_s=120"])
        t0 = time.perf_counter()
        flower = _run(cfg, root / "flower")
        seconds = time.perf_counter() - t0
    return flower, _run(build_config({}, base), root / "inprocess"), seconds


def _assert_same(root: Path, method: str, checkpoints: tuple[str, ...]) -> None:
    """Same aggregated trainables (allclose 1e-6) and the same metrics, engine for engine."""
    for name in checkpoints:
        a, b = _state(root / "flower" / method / name), _state(root / "inprocess" / method / name)
        assert a.keys() == b.keys() and a
        for k in a:
            torch.testing.assert_close(a[k], b[k], rtol=1e-6, atol=1e-6, msg=f"{method} {name} {k}")
    fl, ip = _metrics(root / "flower", method), _metrics(root / "inprocess", method)
    assert [r["round"] for r in fl] == [r["round"] for r in ip]
    for x, y in zip(fl, ip, strict=True):
        for k in x.keys() - _TIMING:
            if isinstance(x[k], float):
                assert x[k] == pytest.approx(y[k], rel=1e-6, abs=1e-9), (method, x["round"], k)
            else:
                assert x[k] == y[k], (method, x["round"], k)


def _same_files(root: Path) -> None:
    names = lambda run: sorted(p.name for p in run.rglob("*") if p.name != "flower.log")  # noqa: E731
    assert names(root / "flower") == names(root / "inprocess")


def test_flower_round_one_equals_inprocess(tmp_path, tiny_model_dir, small_csv):
    """FeDeRA (setup shipped to the nodes) on 2 SuperNodes: round 1 matches the in-process engine."""
    base = _base(tiny_model_dir, small_csv, "methods=federa", "rounds=1", "num_clients=2", "clients_per_round=2")
    flower, _, seconds = _flower_vs_inprocess(tmp_path, base, nodes=2)
    print(f"flower: 1 method x 1 round on 2 SuperNodes: {seconds:.1f}s")
    assert flower["methods"]["federa"]["status"] == "done"
    assert [r["round"] for r in _metrics(tmp_path / "flower", "federa")] == [0, 1]
    _assert_same(tmp_path, "federa", ("checkpoint.pt",))
    _same_files(tmp_path)


@pytest.mark.slow
def test_flower_two_rounds_of_federa_and_lora_equal_inprocess(tmp_path, tiny_model_dir, small_csv):
    """3 SuperNodes, 2 of 3 clients sampled per round, 2 rounds of each method."""
    base = _base(tiny_model_dir, small_csv, "methods=federa,lora", "rounds=2", "num_clients=3",
                 "clients_per_round=2")
    flower, _, seconds = _flower_vs_inprocess(tmp_path, base, nodes=3)
    print(f"flower: 2 methods x 2 rounds on 3 SuperNodes: {seconds:.1f}s")
    for m in ("federa", "lora"):
        assert flower["methods"][m]["status"] == "done"
        rows = _metrics(tmp_path / "flower", m)
        assert [r["round"] for r in rows] == [0, 1, 2] and all(len(r["clients"]) == 2 for r in rows[1:])
        # checkpoint.pt.prev holds round 1, checkpoint.pt round 2.
        _assert_same(tmp_path, m, ("checkpoint.pt.prev", "checkpoint.pt"))
    _same_files(tmp_path)


@pytest.mark.slow
def test_flower_client_hook_strategies_equal_inprocess(tmp_path, tiny_model_dir, small_csv):
    """SCAFFOLD (c down, Δcᵢ up, cᵢ on the node), FedEx-LoRA (fold down) and RoLoRA on 3 real SuperNodes."""
    base = _base(tiny_model_dir, small_csv, "methods=lora,lora+fedex,lora+rolora", "strategy=scaffold",
                 "rounds=2", "num_clients=3", "clients_per_round=2", "lr.lora=0.01")
    flower, _, seconds = _flower_vs_inprocess(tmp_path, base, nodes=3)
    print(f"flower: 3 methods x 2 rounds on 3 SuperNodes: {seconds:.1f}s")
    for m in ("lora", "lora+fedex", "lora+rolora"):
        assert flower["methods"][m]["status"] == "done"
        _assert_same(tmp_path, m, ("checkpoint.pt.prev", "checkpoint.pt"))
    # Each node kept its client's cᵢ in its own memory-dir (FLWR_HOME of the test federation).
    assert list((tmp_path / "federation" / "flwr-home" / "federa-memory").rglob("*.safetensors"))
    _same_files(tmp_path)


def _kill_after_round_one(fed: LocalFederation, node: str, out: Path, timeout: float = 300) -> threading.Thread:
    """Kill ``node`` a few seconds into round 2 of lora (its messages are out: it dies with work in hand)."""

    def kill() -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(r["round"] >= 1 for r in _metrics(out, "lora")):
                time.sleep(3)
                fed.kill(node)
                return
            time.sleep(0.5)

    killer = threading.Thread(target=kill, daemon=True)
    killer.start()
    return killer


@pytest.mark.slow
def test_killed_supernode_round_goes_on_with_the_others(tiny_cfg, federation, tmp_path):
    """3 clients sampled per round, 2 replies needed: kill one node during round 2."""
    fed = federation(3)
    cfg = _flower_cfg(tiny_cfg, fed, "methods=lora", "num_clients=3", "clients_per_round=3", "rounds=3",
                      "flower.min_replies=2", "flower.round_timeout_s=60")
    out = tmp_path / "run"
    run_dir = open_run_dir(cfg, out, resume=False)

    killer = _kill_after_round_one(fed, "node2", out)
    summary = run_experiment(cfg, run_dir, progress=False)
    killer.join()
    assert summary["methods"]["lora"]["status"] == "done"
    rows = _metrics(out, "lora")
    assert [r["round"] for r in rows] == [0, 1, 2, 3]
    assert rows[1]["clients"] == [0, 1, 2]
    assert rows[2]["clients"] == [0, 1] and rows[3]["clients"] == [0, 1]


@pytest.mark.slow
def test_too_few_replies_stop_cleanly_and_keep_finished_rounds(tiny_cfg, federation, tmp_path):
    fed = federation(2)
    cfg = _flower_cfg(tiny_cfg, fed, "methods=lora", "num_clients=2", "clients_per_round=2", "rounds=3",
                      "flower.min_replies=2", "flower.round_timeout_s=40")
    out = tmp_path / "run"
    run_dir = open_run_dir(cfg, out, resume=False)

    _kill_after_round_one(fed, "node1", out)
    with pytest.raises(FlowerError) as err:
        run_experiment(cfg, run_dir, progress=False)
    message = str(err.value)
    print(message)
    assert "round 2: 1 of 2 sampled clients replied" in message and "flower.min_replies=2" in message
    assert "rounds up to 1 are saved" in message and "federa run --resume" in message
    assert [r["round"] for r in _metrics(out, "lora")] == [0, 1]
    assert load_checkpoint(out / "lora" / "checkpoint.pt")[0]["round"] == 1
    assert not (out / "lora" / "result.json").exists()  # so that a resume continues the method
    # The node comes back; the resumed run picks up at round 2 and loses or repeats nothing.
    fed.start_node(1)
    summary = run_experiment(cfg, open_run_dir(cfg, out, resume=True), progress=False)
    assert summary["methods"]["lora"]["status"] == "done"
    assert [r["round"] for r in _metrics(out, "lora")] == [0, 1, 2, 3]
    assert not (out / "lora" / "flower_stopped.json").exists()


@pytest.mark.slow
def test_secure_aggregation_equals_fedavg_within_quantisation(tiny_cfg, federation, tmp_path):
    from federa.engines.flower.secagg import error_bound

    fed = federation(3)
    common = ["methods=lora", "num_clients=3", "clients_per_round=3", "rounds=1", "flower.min_replies=2"]
    plain = _run(_flower_cfg(tiny_cfg, fed, *common), tmp_path / "plain")
    secure = _run(_flower_cfg(tiny_cfg, fed, *common, "secure_aggregation=true"), tmp_path / "secure")
    assert plain["methods"]["lora"]["status"] == secure["methods"]["lora"]["status"] == "done"
    a, b = _state(tmp_path / "plain/lora/checkpoint.pt"), _state(tmp_path / "secure/lora/checkpoint.pt")
    before = _state(tmp_path / "plain/lora/checkpoint.pt.prev")
    cfg = tiny_cfg(*common)
    from federa.job import prepare_job

    parts = prepare_job(cfg).parts
    bound = error_bound(3, cfg.flower.secagg_clip_range, max(map(len, parts)), sum(map(len, parts)))
    # Both results are float32: allow their rounding (half an ulp each) on top of quantisation.
    bound += torch.finfo(torch.float32).eps * max(float(a[k].abs().max()) for k in a)
    worst = max(float((a[k] - b[k]).abs().max()) for k in a)
    moved = max(float((a[k] - before[k]).abs().max()) for k in a)
    print(f"SecAgg+ vs FedAvg: max |diff| {worst:.3g}, bound {bound:.3g}, update size {moved:.3g}")
    assert worst <= bound
    assert moved > 100 * bound  # the comparison is not trivially passing on an unchanged state


# -- no processes: the pieces the runs above rely on ---------------------------------------


def test_pyproject_declares_the_same_flower_app_that_federa_submits():
    import tomllib

    from flwr.cli.config_utils import load_and_validate

    root = Path(__file__).resolve().parents[1]
    table = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["flwr"]["app"]
    assert table["components"] == launch.APP_TABLE["components"]
    assert table["config"] == launch.APP_TABLE["config"]
    load_and_validate(root / "pyproject.toml")  # Flower's own validation, modules imported


def test_min_replies_default_and_limits(tiny_cfg):
    from federa.engines.flower.driver import min_replies
    from federa.errors import ConfigError

    assert min_replies(tiny_cfg("num_clients=5", "clients_per_round=5")) == 3
    assert min_replies(tiny_cfg("clients_per_round=2")) == 1
    assert min_replies(tiny_cfg("clients_per_round=4", "flower.min_replies=4")) == 4
    with pytest.raises(ConfigError, match="flower.min_replies=3 > clients_per_round=2"):
        tiny_cfg("clients_per_round=2", "flower.min_replies=3")


def test_secure_aggregation_refuses_what_needs_individual_updates(tiny_cfg):
    from federa.errors import ConfigError

    assert tiny_cfg("engine=flower", "secure_aggregation=true").secure_aggregation
    with pytest.raises(ConfigError, match="strategy=fedavg"):
        tiny_cfg("engine=flower", "secure_aggregation=true", "strategy=median")
    # Refused by capability, naming the part that needs each client's update.
    with pytest.raises(ConfigError, match="but robust.max_update_norm needs each client's update"):
        tiny_cfg("engine=flower", "secure_aggregation=true", "robust.max_update_norm=5")
    with pytest.raises(ConfigError, match="but robust.clip_delta_norm needs"):
        tiny_cfg("engine=flower", "secure_aggregation=true", "robust.clip_delta_norm=5")
    with pytest.raises(ConfigError, match="but dp.enabled needs"):
        tiny_cfg("engine=flower", "secure_aggregation=true", "dp.enabled=true", "dp.noise_multiplier=1")
    # A server optimiser acts on the aggregate only, so it runs under SecAgg+.
    assert tiny_cfg("engine=flower", "secure_aggregation=true", "server_opt.name=adam").server_opt.name == "adam"
    with pytest.raises(ConfigError, match="set engine=flower"):
        tiny_cfg("secure_aggregation=true")  # in-process has no SecAgg+: refuse rather than ignore


def test_wire_round_trip_is_exact():
    from federa.types import TrainSettings, Update
    from federa.engines.flower import wire

    torch.manual_seed(0)
    state = {"a.lora_A.weight": torch.randn(4, 32), "classifier.bias": torch.randn(5)}
    back = wire.content_update(wire.update_content(Update(state, 40, {"train_loss": 1.25, "steps": 2})))
    assert back.num_examples == 40 and back.metrics == {"train_loss": 1.25, "steps": 2.0}
    assert all(torch.equal(back.state[k], state[k]) for k in state)
    settings = TrainSettings(lr=1e-3, batch_size=8, seed=123456789, local_steps=None, local_epochs=0.5)
    rec = wire.settings_record("lora", 3, "rounds: 2\n", settings, ["a", "b"])
    assert wire.record_settings(rec) == settings
    assert rec["client_id"] == 3 and list(rec["label_names"]) == ["a", "b"]


def test_secagg_error_bound_is_one_quantisation_step_for_equal_clients():
    from federa.engines.flower.secagg import QUANTIZATION_RANGE, error_bound

    # n equal clients: max_weight/Σ = 1/n, so the bound is one step 2·clip/2**22.
    assert error_bound(3, 1.0, 40, 120) == pytest.approx(2 / QUANTIZATION_RANGE)


@pytest.mark.slow
def test_simulation_round_one_equals_inprocess(tmp_path, tiny_model_dir, small_csv):
    """Flower's simulation runtime (Ray) runs the same ServerApp/ClientApp: same numbers."""
    pytest.importorskip("ray")
    from federa.config import build_config

    base = _base(tiny_model_dir, small_csv, "methods=federa", "rounds=1", "num_clients=2", "clients_per_round=2")
    t0 = time.perf_counter()
    sim = _run(build_config({}, [*base, "engine=flower", "flower.mode=simulation"]), tmp_path / "flower")
    print(f"flower simulation: 1 method x 1 round, 2 virtual SuperNodes: {time.perf_counter() - t0:.1f}s")
    _run(build_config({}, base), tmp_path / "inprocess")
    assert sim["methods"]["federa"]["status"] == "done"
    _assert_same(tmp_path, "federa", ("checkpoint.pt",))


@pytest.mark.slow
def test_flwr_run_from_the_checkout_writes_a_complete_run(tmp_path, tiny_model_dir, small_csv):
    """`flwr run .` with federa's pyproject.toml: the ServerApp runs every method and the report."""
    import tomli_w

    from federa.engines.flower.settings import FlowerSettings

    repo = Path(__file__).resolve().parents[1]
    with LocalFederation(tmp_path / "federation", 2) as fed:
        env = launch.flower_env(launch.write_flwr_home(tmp_path / "home", FlowerSettings(superlink=fed.address)))
        sets = ";".join(_base(tiny_model_dir, small_csv, "methods=lora", "rounds=1", "num_clients=2",
                              "clients_per_round=2"))
        run_config = tmp_path / "run_config.toml"
        run_config.write_text(tomli_w.dumps({"out": str(tmp_path / "run"), "set": sets}))
        out = launch._json_tail(launch._flwr(["run", str(repo), launch.CONNECTION, "--run-config", str(run_config),
                                              "--format", "json"], env))
        deadline = time.monotonic() + 300
        while not (status := launch.run_status(int(out["run-id"]), env)).startswith("finished"):
            assert time.monotonic() < deadline
            time.sleep(5)
    assert status == "finished:completed"
    run = tmp_path / "run"
    assert json.loads((run / "summary.json").read_text())["methods"]["lora"]["status"] == "done"
    assert (run / "report.md").is_file() and (run / "lora" / "final").is_dir()
    assert "engine: flower" in (run / "config.yaml").read_text()


def test_node_shards_follow_the_node_config(tiny_cfg, small_csv):
    from federa.errors import ConfigError, DataError
    from federa.engines.flower.client_app import node_shard
    from federa.job import prepare_job

    cfg = tiny_cfg("num_clients=3")
    server = prepare_job(cfg)
    labels = list(server.label_names)
    # partition-id K: exactly the server's shard K (same source, partitioner and seed).
    _, _, shard = node_shard(cfg.to_yaml(), {"partition-id": 1, "num-partitions": 3}, 1, labels)
    assert shard["input_ids"] == server.shard(1)["input_ids"]
    # data-path: the node's own file is its whole shard (its train split).
    _, job, own = node_shard(cfg.to_yaml(), {"partition-id": 2, "num-partitions": 3, "data-path": str(small_csv)},
                             2, labels)
    assert len(own) == len(job.train) == len(server.train)
    with pytest.raises(ConfigError, match="num-partitions=4 but the run has num_clients=3"):
        node_shard(cfg.to_yaml(), {"partition-id": 0, "num-partitions": 4}, 0, labels)
    with pytest.raises(ConfigError, match="holds partition-id=0"):
        node_shard(cfg.to_yaml(), {"partition-id": 0, "num-partitions": 3}, 1, labels)
    with pytest.raises(DataError, match="labels"):
        node_shard(cfg.to_yaml(), {"partition-id": 0, "num-partitions": 3}, 0, labels[::-1])


@pytest.mark.slow
def test_heterogeneous_ranks_on_flower_equal_inprocess(tmp_path, tiny_model_dir, small_csv):
    """FlexLoRA and HetLoRA: each SuperNode is sent, trains and returns its own rank's factors."""
    base = _base(tiny_model_dir, small_csv, "methods=lora+flexlora,federa+hetlora", "rounds=2", "num_clients=2",
                 "clients_per_round=2", "lora.client_ranks=[2,4]")
    flower, _, seconds = _flower_vs_inprocess(tmp_path, base, nodes=2)
    print(f"flower: 2 heterogeneous-rank methods x 2 rounds on 2 SuperNodes: {seconds:.1f}s")
    for m in ("lora+flexlora", "federa+hetlora"):
        assert flower["methods"][m]["status"] == "done"
        _assert_same(tmp_path, m, ("checkpoint.pt.prev", "checkpoint.pt"))
    _same_files(tmp_path)


# A sitecustomize for one SuperNode (and the ClientApp processes it spawns): every train reply it
# sends claims a list as its train_seconds, a legal MetricRecord value that is no number.
_FORGE_METRICS = '''
import federa.engines.flower.wire as _wire

_honest = _wire.update_content


def _forged(update):
    content = _honest(update)
    content.metric_records[_wire.METRICS]["train_seconds"] = [1.0, 2.0]
    return content


_wire.update_content = _forged
'''


@pytest.mark.slow
def test_a_node_forging_its_metrics_cannot_stop_the_run(tiny_cfg, tmp_path):
    """3 real SuperNodes, node 0 forges its metrics every round: its replies are rejected and the run finishes."""
    import os

    forge = tmp_path / "forge"
    forge.mkdir()
    (forge / "sitecustomize.py").write_text(_FORGE_METRICS)
    # The node runs in the federation's folder: a relative PYTHONPATH entry (src) is made absolute.
    inherited = [os.path.abspath(p) for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    path = os.pathsep.join([str(forge), *inherited])
    with LocalFederation(tmp_path / "federation", 3, node_env={0: {"PYTHONPATH": path}}) as fed:
        cfg = _flower_cfg(tiny_cfg, fed, "methods=lora", "num_clients=3", "clients_per_round=3", "rounds=2")
        out = tmp_path / "run"
        t0 = time.perf_counter()
        summary = _run(cfg, out)
        print(f"flower: 2 rounds on 3 SuperNodes, one forging: {time.perf_counter() - t0:.1f}s")
    assert summary["methods"]["lora"]["status"] == "done"
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert not any("NaN" in line or "Infinity" in line for line in lines)
    rows = _metrics(out, "lora")
    assert [r["round"] for r in rows] == [0, 1, 2]
    for r in rows[1:]:
        assert r["clients"] == [0, 1, 2]
        assert r["rejected"] == [{"client": 0, "reason": "metric train_seconds is [1.0, 2.0], not a number"}]
        assert r["client_train_s"][0] == 0.0 and all(s > 0 for s in r["client_train_s"][1:])
        assert 0 < r["modelled_round_s"] < 1e6
