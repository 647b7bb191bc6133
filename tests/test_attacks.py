"""One malicious or broken client, through the strategy API, the server's round and the Flower wire.

Five honest clients train LoRA on the tiny model from one global state; client 0 is then
replaced by an attacker (a forged count, absurd values, forged metrics, a NaN loss). Each test
asserts the distance of the new global state from the aggregate of the replies that should
count (all honest replies, or the honest ones without the attacker): ≤ 1e-6 after rejection.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from federa.client import local_update
from federa.config import build_config
from federa.engines.server import ServerRun
from federa.errors import NonFiniteLossError
from federa.job import prepare_job
from federa.results_dir import RunDir
from federa.strategies.robust import delta, global_norm
from federa.strategies.fedavg import weighted_average
from federa.strategies.stack import build_stack
from federa.strategies.validate import check_count, check_metrics, outliers
from federa.types import Update

_BASE = ["methods=lora", "rounds=2", "num_clients=5", "clients_per_round=5", "local_steps=3", "batch_size=8",
         "max_length=32", "lora.r=4", "partition.kind=size", "lr.lora=0.01", "model.num_threads=1"]


@pytest.fixture(scope="module")
def honest(tiny_model_dir, small_csv, tmp_path_factory):
    """(config, job, initial global state, the 5 honest replies of round 1)."""
    cfg = build_config({}, [f"model.path={tiny_model_dir}", f"data.path={small_csv}", *_BASE])
    job = prepare_job(cfg)
    server = ServerRun(job, "lora", RunDir(tmp_path_factory.mktemp("attacks")), log=lambda *_: None)
    g = {k: v.clone() for k, v in server.state.items()}
    updates = {cid: local_update(server.model, g, job.shard(cid), job.collate, s, client_id=cid)
               for cid, s in server.configure(1).items()}
    return cfg, job, g, updates


def _server(honest, tmp_path, logs=None) -> ServerRun:
    cfg, job, g, _ = honest
    server = ServerRun(job, "lora", RunDir(tmp_path), log=(logs.append if logs is not None else lambda *_: None))
    assert all(torch.equal(server.state[k], g[k]) for k in g)
    return server


def _dist(a, b) -> float:
    return global_norm(delta(a, b))


def _fedavg(updates, cids) -> dict:
    return weighted_average([updates[c].state for c in cids], [updates[c].num_examples for c in cids])


def _stack(honest, *overrides):
    cfg, job, _, _ = honest
    stack = build_stack(build_config(cfg.model_dump(mode="json"), list(overrides)))
    stack.register_shards({c: len(p) for c, p in enumerate(job.parts)})
    return stack


def _scaled(g, u, factor):
    return {k: g[k] + factor * (u.state[k] - g[k]) for k in g}


# -- weights ----------------------------------------------------------------------------------


def test_shard_sizes_differ_so_weights_matter(honest):
    _, job, _, updates = honest
    sizes = [len(p) for p in job.parts]
    assert len(set(sizes)) == 5  # kind=size: 1:2:3:4:5, a forged weight would show
    assert [updates[c].num_examples for c in sorted(updates)] == sizes  # honest claims = registered shards


def test_huge_count_is_capped_at_the_registered_shard(honest):
    _, _, g, updates = honest
    honest_avg = _fedavg(updates, sorted(updates))
    forged = {**updates, 0: replace(updates[0], num_examples=10**9)}
    uncapped = weighted_average([u.state for u in forged.values()], [u.num_examples for u in forged.values()])
    assert _dist(uncapped, honest_avg) > 0.5 * _dist(updates[0].state, honest_avg)  # the attack, unbounded
    stack = _stack(honest)
    got = stack.aggregate_round(1, g, forged)
    assert _dist(got, honest_avg) <= 1e-6
    assert stack.round_metrics(1)["weight_capped"] == [{"client": 0, "counted": updates[0].num_examples}]


def test_without_registered_shards_the_cap_is_steps_times_batch(honest):
    cfg, _, g, updates = honest
    stack = build_stack(cfg)  # nothing registered: as for a Flower node with its own data file
    forged = {**updates, 0: replace(updates[0], num_examples=10**9)}
    got = stack.aggregate_round(1, g, {c: forged[c] for c in (0, 1, 2)})
    cap = cfg.local_steps * cfg.batch_size  # 24: the most examples 3 steps of 8 can read
    expected = weighted_average([updates[c].state for c in (0, 1, 2)],
                                [min(forged[c].num_examples, cap) for c in (0, 1, 2)])
    assert _dist(got, expected) <= 1e-6
    assert [c["client"] for c in stack.round_metrics(1)["weight_capped"]] == [
        c for c in (0, 1, 2) if forged[c].num_examples > cap]


@pytest.mark.parametrize("count", [3.7, 3.0, True, -5, 0, "7", None, 10**400, float("nan")])
def test_forged_counts_are_rejected(honest, count):
    _, _, g, updates = honest
    got = _stack(honest).aggregate_round(1, g, {**updates, 0: replace(updates[0], num_examples=count)})
    assert _dist(got, _fedavg(updates, [1, 2, 3, 4])) <= 1e-6


# -- values -------------------------------------------------------------------------------------


def test_finite_but_absurd_values_never_reach_the_model(honest):
    _, _, g, updates = honest
    k0 = sorted(g)[0]
    bad = {**updates[0].state, k0: updates[0].state[k0].clone()}
    bad[k0].view(-1)[0] = 3e38  # finite in float32
    # Two replies: the outlier rule needs three, the magnitude check does not.
    got = _stack(honest).aggregate_round(1, g, {0: replace(updates[0], state=bad), 1: updates[1]})
    assert _dist(got, updates[1].state) <= 1e-6
    assert all(bool(torch.isfinite(t).all()) for t in got.values())


@pytest.mark.parametrize("times_median", [10.01, 100.0, 1e4])
def test_outlier_delta_is_rejected_and_honest_ones_never(honest, times_median):
    _, _, g, updates = honest
    honest_norms = {c: _dist(u.state, g) for c, u in updates.items()}
    assert outliers(honest_norms, 10.0) == {}  # no honest client is near the bound
    med = sorted(honest_norms.values())[2]
    ratio = max(honest_norms.values()) / med
    assert ratio < 2.0, ratio  # the honest spread the default k=10 leaves room for
    # The attacker also claims a huge weight: rejected, not capped. Its own norm is one of the
    # five the median is taken over, so the round's median is at most the largest honest norm.
    factor = times_median * max(honest_norms.values()) / honest_norms[0]
    attacked = {**updates, 0: replace(updates[0], state=_scaled(g, updates[0], factor), num_examples=10**9)}
    stack = _stack(honest)
    got = stack.aggregate_round(1, g, attacked)
    assert _dist(got, _fedavg(updates, [1, 2, 3, 4])) <= 1e-6
    assert "robust.outlier_k=10" in stack.round_metrics(1)["rejected"][0]["reason"]


def test_an_attacker_just_under_the_bound_moves_the_model_by_at_most_its_share(honest):
    _, job, g, updates = honest
    norms = sorted(_dist(u.state, g) for u in updates.values())
    med = norms[2]
    # Client 0 sends a delta of norm 9.9 × the median (just under k=10) with a forged count.
    d0 = delta(updates[0].state, g)
    scale = 9.9 * med / global_norm(d0)
    attacked = {**updates, 0: replace(updates[0], state=_scaled(g, updates[0], scale), num_examples=10**9)}
    got = _stack(honest).aggregate_round(1, g, attacked)
    weight_share = len(job.parts[0]) / sum(len(p) for p in job.parts)
    moved = _dist(got, _fedavg(updates, sorted(updates)))
    # The documented bound: share × (its delta − its honest delta) ≤ share × (k + 1) × median.
    assert moved <= weight_share * (9.9 * med + norms[-1]) + 1e-6
    assert moved <= weight_share * 11 * med


def test_outlier_rule_can_be_turned_off(honest):
    _, _, g, updates = honest
    attacked = {**updates, 0: replace(updates[0], state=_scaled(g, updates[0], 100.0))}
    got = _stack(honest, "robust.outlier_k=null").aggregate_round(1, g, attacked)
    assert _dist(got, _fedavg(updates, [1, 2, 3, 4])) > 1.0  # accepted when the rule is off


# -- metrics -------------------------------------------------------------------------------------


@pytest.mark.parametrize("metrics, why", [
    ({}, "lack train_loss"),
    ({"train_loss": float("nan")}, "not finite"),
    ({"train_loss": 0.5, "samples": -100}, "expected >= 0"),
    ({"train_loss": "0.5"}, "not a number"),
    ({"train_loss": 0.5, "samples": 10**400}, "beyond 2**53"),
])
def test_forged_metrics_are_rejected_not_written(honest, tmp_path, metrics, why):
    _, _, g, updates = honest
    assert why in check_metrics(metrics)
    server = _server(honest, tmp_path)
    record = server.complete_round(1, {**updates, 0: replace(updates[0], metrics=metrics)}, started=0.0)
    assert _dist(server.state, _fedavg(updates, [1, 2, 3, 4])) <= 1e-6
    assert record["rejected"][0]["client"] == 0 and why in record["rejected"][0]["reason"]
    honest_loss = (sum(updates[c].metrics["train_loss"] * updates[c].num_examples for c in (1, 2, 3, 4))
                   / sum(updates[c].num_examples for c in (1, 2, 3, 4)))
    assert record["train_loss"] == pytest.approx(honest_loss, rel=1e-12)
    assert record["examples_seen"] == sum(updates[c].metrics["samples"] for c in (1, 2, 3, 4))


def test_server_round_with_forged_count_logs_capped_train_loss(honest, tmp_path):
    _, _, _, updates = honest
    server = _server(honest, tmp_path)
    forged = {**updates, 0: replace(updates[0], num_examples=10**9, metrics={**updates[0].metrics, "train_loss": 50.0})}
    record = server.complete_round(1, forged, started=0.0)
    assert _dist(server.state, _fedavg(updates, sorted(updates))) <= 1e-6
    n = {c: u.num_examples for c, u in updates.items()}
    expected = (50.0 * n[0] + sum(updates[c].metrics["train_loss"] * n[c] for c in (1, 2, 3, 4))) / sum(n.values())
    assert record["train_loss"] == pytest.approx(expected, rel=1e-12)  # weighted by the cap, not by 1e9


# -- a client that fails -------------------------------------------------------------------------


def test_nan_loss_client_is_dropped_and_the_run_goes_on(honest, tmp_path, monkeypatch):
    import federa.engines.inprocess as inprocess

    cfg, job, _, _ = honest
    real = inprocess.local_update

    def flaky(*args, client_id, **kw):
        if client_id == 2:
            raise NonFiniteLossError(f"client {client_id}: loss became nan at step 1; lower the learning rate")
        return real(*args, client_id=client_id, **kw)

    monkeypatch.setattr(inprocess, "local_update", flaky)
    logs: list[str] = []
    result = inprocess.run_method(job, "lora", RunDir(tmp_path / "one"), progress=False, log=logs.append)
    assert result["status"] == "done" and result["rounds"] == 2
    assert sum("dropped client 2: client 2: loss became nan" in line for line in logs) == 2
    last = [r for r in RunDir(tmp_path / "one").read_metrics() if r["round"] == 2][-1]
    assert last["clients"] == [0, 1, 3, 4]


def test_too_few_clients_left_stops_the_method_naming_them(honest, tmp_path, monkeypatch):
    import federa.engines.inprocess as inprocess

    cfg, job, _, _ = honest

    def broken(*args, client_id, **kw):
        raise NonFiniteLossError(f"client {client_id}: loss became inf at step 2; lower the learning rate")

    monkeypatch.setattr(inprocess, "local_update", broken)
    result = inprocess.run_method(job, "lora", RunDir(tmp_path / "all"), progress=False, log=lambda *_: None)
    assert result["status"] == "failed" and result["rounds"] == 0
    reason = result["reason"]
    assert "\n" not in reason and "round 1: only 0 of 5" in reason and "flower.min_replies=3" in reason
    assert "clients [0, 1, 2, 3, 4] failed" in reason and "loss became inf" in reason


# -- the Flower wire ------------------------------------------------------------------------------


def _through_wire(update: Update, **metric_overrides):
    """``update`` as a ClientApp sends it, with MetricRecord entries replaced, as the server reads it."""
    from federa.engines.flower import wire

    content = wire.update_content(update)
    rec = content.metric_records[wire.METRICS]
    for k, v in metric_overrides.items():
        if v is None:
            del rec[k]
        else:
            rec[k] = v
    return wire.content_update(content)


def test_wire_round_trip_keeps_honest_replies_exact(honest, tmp_path):
    _, _, _, updates = honest
    server = _server(honest, tmp_path)
    server.complete_round(1, {c: _through_wire(u) for c, u in updates.items()}, started=0.0)
    assert _dist(server.state, _fedavg(updates, sorted(updates))) == 0.0


@pytest.mark.parametrize("overrides, counted", [
    ({"num_examples": 3.7}, False),  # a float count is not truncated to 3
    ({"num_examples": 10**9}, True),  # capped at the registered shard
    ({"num_examples": None}, False),  # no count at all
    ({"train_loss": None}, False),  # no train_loss: rejected, no KeyError
    ({"train_loss": float("nan")}, False),
    ({"samples": -1000}, False),  # negative examples_seen
])
def test_forged_replies_through_the_flower_wire(honest, tmp_path, overrides, counted):
    _, _, _, updates = honest
    server = _server(honest, tmp_path)
    replies = {c: _through_wire(u) for c, u in updates.items()}
    replies[0] = _through_wire(updates[0], **overrides)
    record = server.complete_round(1, replies, started=0.0)
    expected = _fedavg(updates, sorted(updates) if counted else [1, 2, 3, 4])
    assert _dist(server.state, expected) <= 1e-6
    assert (record["rejected"] == []) == counted
    assert record["examples_seen"] >= 0 and record["train_loss"] == record["train_loss"]  # not NaN


def test_flower_round_drops_a_nan_loss_client_and_a_malformed_reply(honest, tmp_path, flower_identity):
    """The driver's reply handling on hand-made Flower messages (no deployment)."""
    from flwr.app import ConfigRecord, Message, RecordDict

    from federa.engines.flower import wire
    from federa.engines.flower.driver import GridTransport

    _, _, _, updates = honest
    server = _server(honest, tmp_path)

    class Grid:  # answers each train message as the node holding that client would
        def send_and_receive(self, msgs, timeout):
            out = []
            for m in msgs:
                cid = int(m.content.config_records[wire.SETTINGS]["client_id"])
                if cid == 1:
                    content = RecordDict({wire.ERROR: ConfigRecord({
                        "kind": "NonFiniteLossError", "message": "client 1: loss became nan at step 1"})})
                elif cid == 2:
                    content = RecordDict({wire.STATE: wire.state_record(updates[2].state)})  # no metrics
                else:
                    content = wire.update_content(updates[cid])
                out.append(Message(content, reply_to=m))
            return out

    class Nodes:
        node_of = {c: 100 + c for c in range(5)}

    rnd = GridTransport(Grid(), server, Nodes(), None)
    got = rnd.plain(1, server.plan(1, with_rules=False))
    assert sorted(got) == [0, 2, 3, 4] and rnd.nonfinite == [1]
    record = server.complete_round(1, got, started=0.0)
    assert [r["client"] for r in record["rejected"]] == [2]  # no count, no train_loss
    assert _dist(server.state, _fedavg(updates, [0, 3, 4])) <= 1e-6


class _FakeGrid:
    """Flower's Grid for the driver, answering from this process (no deployment): node 100+c holds
    client c; client 2's node has its own data file; ``train(cid, msg)`` makes each train reply."""

    def __init__(self, train, own_data=(2,)):
        self.train, self.own_data = train, set(own_data)

    def get_node_ids(self):
        return [100 + c for c in range(5)]

    def send_and_receive(self, msgs, timeout):
        from flwr.app import ConfigRecord, Message, RecordDict

        from federa.engines.flower import wire

        out = []
        for m in msgs:
            cid = m.metadata.dst_node_id - 100
            if m.metadata.message_type == wire.DISCOVER:
                content = RecordDict({"node": ConfigRecord({
                    "partition_id": cid, "num_partitions": 5,
                    "data_path": "/node/own.csv" if cid in self.own_data else ""})})
            else:
                content = self.train(cid, m)
            out.append(Message(content, reply_to=m))
        return out


@pytest.fixture
def flower_identity(monkeypatch):
    from flwr.supercore.task_identity import TaskIdentity

    for attr in ("_run_id", "_node_id", "_task_id"):
        monkeypatch.setattr(TaskIdentity, attr, 1)


def _nan_reply(cid: int):
    from flwr.app import ConfigRecord, RecordDict

    from federa.engines.flower import wire

    return RecordDict({wire.ERROR: ConfigRecord({"kind": "NonFiniteLossError",
                                                 "message": f"client {cid}: loss became nan at step 1"})})


def test_flower_driver_caps_an_own_data_node_and_drops_a_nan_client(honest, tmp_path, flower_identity):
    from federa.engines.flower import wire
    from federa.engines.flower.driver import drive_method

    cfg, job, g, updates = honest
    job1 = replace(job, cfg=build_config(cfg.model_dump(mode="json"), ["rounds=1"]))

    def train(cid, msg):
        if cid == 1:
            return _nan_reply(cid)
        forged = replace(updates[cid], num_examples=10**9) if cid == 2 else updates[cid]
        return wire.update_content(forged)

    logs: list[str] = []
    result = drive_method(_FakeGrid(train), job1, "lora", RunDir(tmp_path), log=logs.append)
    assert result["status"] == "done"
    assert any("round 1: client 1: client 1: loss became nan" in line for line in logs)
    line = [r for r in RunDir(tmp_path).read_metrics() if r["round"] == 1][-1]
    assert line["clients"] == [0, 2, 3, 4] and line["rejected"] == []
    cap = cfg.local_steps * cfg.batch_size  # client 2 has no registered shard: its node brought its data
    assert line["weight_capped"] == [{"client": 2, "counted": cap}]
    from federa.checkpoint import load_checkpoint

    state = load_checkpoint(RunDir(tmp_path).checkpoint("lora"))[0]["state"]
    expected = weighted_average([updates[c].state for c in (0, 2, 3, 4)],
                                [updates[0].num_examples, cap, updates[3].num_examples, updates[4].num_examples])
    assert _dist(state, expected) <= 1e-6


def test_flower_driver_stops_the_method_when_too_many_clients_diverge(honest, tmp_path, flower_identity):
    from federa.engines.flower import wire
    from federa.engines.flower.driver import drive_method

    _, job, _, updates = honest
    train = lambda cid, msg: _nan_reply(cid) if cid < 3 else wire.update_content(updates[cid])  # noqa: E731
    result = drive_method(_FakeGrid(train), job, "lora", RunDir(tmp_path), log=lambda *_: None)
    assert result["status"] == "failed"  # not "stopped": resuming would diverge again
    assert "only 2 of 5 sampled clients trained, fewer than flower.min_replies=3" in result["reason"]
    assert "clients [0, 1, 2] failed" in result["reason"] and "\n" not in result["reason"]


# -- figures of a rejected reply (issue 25, items 1 and 2) ---------------------------------------


def _strict_json_lines(path) -> list[dict]:
    """metrics.jsonl read as strict JSON: NaN and Infinity (which Python's json writes) are refused."""
    import json

    def refuse(name):
        raise AssertionError(f"{name} in {path}")

    return [json.loads(line, parse_constant=refuse) for line in path.read_text().splitlines() if line.strip()]


@pytest.mark.parametrize("seconds", [float("nan"), float("inf"), float("-inf"), 1e308])
def test_forged_train_seconds_count_nowhere(honest, tmp_path, seconds):
    _, _, _, updates = honest
    server = _server(honest, tmp_path)
    forged = {**updates, 0: replace(updates[0], metrics={**updates[0].metrics, "train_seconds": seconds})}
    record = server.complete_round(1, forged, started=0.0)
    assert [r["client"] for r in record["rejected"]] == [0] and "train_seconds" in record["rejected"][0]["reason"]
    assert _dist(server.state, _fedavg(updates, [1, 2, 3, 4])) <= 1e-6
    honest_s = [updates[c].metrics["train_seconds"] for c in (1, 2, 3, 4)]
    assert record["client_train_s"] == [0.0, *honest_s]  # the rejected client's claim counts as nothing
    assert record["client_compute_s"] == pytest.approx(sum(honest_s), rel=1e-12)
    assert 0 < record["modelled_round_s"] < 1e6 and 0 < record["cum_modelled_s"] < 1e6
    lines = _strict_json_lines(RunDir(tmp_path).metrics)
    assert [r["round"] for r in lines] == [0, 1]


def test_an_outlying_reply_with_honest_metrics_counts_nowhere_either(honest, tmp_path):
    _, _, g, updates = honest
    server = _server(honest, tmp_path)
    attacked = {**updates, 0: replace(updates[0], state=_scaled(g, updates[0], 1e4))}
    record = server.complete_round(1, attacked, started=0.0)
    assert [r["client"] for r in record["rejected"]] == [0]
    assert record["examples_seen"] == sum(updates[c].metrics["samples"] for c in (1, 2, 3, 4))
    assert record["client_train_s"][0] == 0.0
    assert record["client_compute_s"] == pytest.approx(
        sum(updates[c].metrics["train_seconds"] for c in (1, 2, 3, 4)), rel=1e-12)


def test_flower_driver_survives_a_list_valued_train_seconds(honest, tmp_path, flower_identity):
    """A list is a legal MetricRecord value: it used to reach the network model and raise TypeError."""
    from federa.engines.flower import wire
    from federa.engines.flower.driver import drive_method

    cfg, job, _, updates = honest
    job1 = replace(job, cfg=build_config(cfg.model_dump(mode="json"), ["rounds=1"]))

    def train(cid, msg):
        content = wire.update_content(updates[cid])
        if cid == 0:
            content.metric_records[wire.METRICS]["train_seconds"] = [1.0, 2.0]
        return content

    logs: list[str] = []
    result = drive_method(_FakeGrid(train, own_data=()), job1, "lora", RunDir(tmp_path), log=logs.append)
    assert result["status"] == "done"
    assert any("rejected client 0: metric train_seconds is [1.0, 2.0], not a number" in line for line in logs)
    line = [r for r in _strict_json_lines(RunDir(tmp_path).metrics) if r["round"] == 1][-1]
    assert line["clients"] == [0, 1, 2, 3, 4] and [r["client"] for r in line["rejected"]] == [0]
    assert line["client_train_s"][0] == 0.0 and 0 < line["modelled_round_s"] < 1e6
    from federa.checkpoint import load_checkpoint

    state = load_checkpoint(RunDir(tmp_path).checkpoint("lora"))[0]["state"]
    assert _dist(state, _fedavg(updates, [1, 2, 3, 4])) <= 1e-6


# -- malformed discovery and error replies (issue 25, item 3) ------------------------------------


class _HostileGrid(_FakeGrid):
    """Node 100 (client 0) answers discovery with ``discovery``; node 101's train reply is an error
    record without its message."""

    def __init__(self, train, discovery):
        super().__init__(train, own_data=())
        self.discovery = discovery

    def send_and_receive(self, msgs, timeout):
        from flwr.app import Message

        from federa.engines.flower import wire

        hostile = [m for m in msgs if m.metadata.dst_node_id == 100 and m.metadata.message_type == wire.DISCOVER]
        out = super().send_and_receive([m for m in msgs if m not in hostile], timeout)
        return out + [Message(self.discovery(), reply_to=m) for m in hostile]


def _no_node():
    from flwr.app import RecordDict

    return RecordDict({})


def _abc_partition():
    from flwr.app import ConfigRecord, RecordDict

    return RecordDict({"node": ConfigRecord({"partition_id": "abc", "num_partitions": 5, "data_path": ""})})


def _negative_partition():
    from flwr.app import ConfigRecord, RecordDict

    return RecordDict({"node": ConfigRecord({"partition_id": -1, "num_partitions": 5, "data_path": ""})})


def _error_without_message():
    from flwr.app import ConfigRecord, RecordDict

    from federa.engines.flower import wire

    return RecordDict({wire.ERROR: ConfigRecord({"kind": "ConfigError"})})


@pytest.mark.parametrize("discovery, why", [
    (_no_node, "no node record"),
    (_abc_partition, "partition_id is 'abc', not an integer"),
    (_negative_partition, "partition_id=-1"),
    (_error_without_message, "malformed error record"),
])
def test_flower_driver_leaves_out_a_node_with_a_malformed_reply(honest, tmp_path, flower_identity, discovery, why):
    from flwr.app import ConfigRecord, RecordDict

    from federa.engines.flower import wire
    from federa.engines.flower.driver import drive_method

    cfg, job, _, updates = honest
    job1 = replace(job, cfg=build_config(cfg.model_dump(mode="json"), ["rounds=1", "flower.round_timeout_s=1"]))

    def train(cid, msg):
        if cid == 1:  # an error record without its message: a failed reply, not a KeyError
            return RecordDict({wire.ERROR: ConfigRecord({"kind": "ValueError"})})
        return wire.update_content(updates[cid])

    logs: list[str] = []
    result = drive_method(_HostileGrid(train, discovery), job1, "lora", RunDir(tmp_path), log=logs.append)
    assert result["status"] == "done"
    left_out = [line for line in logs if "SuperNode 100 left out: malformed discovery reply" in line]
    assert len(left_out) == 1 and why in left_out[0]  # one line, though discovery runs again each round
    assert any("round 1: client 1: malformed error record" in line for line in logs)
    line = [r for r in RunDir(tmp_path).read_metrics() if r["round"] == 1][-1]
    assert line["clients"] == [2, 3, 4] and line["rejected"] == []
    from federa.checkpoint import load_checkpoint

    state = load_checkpoint(RunDir(tmp_path).checkpoint("lora"))[0]["state"]
    assert _dist(state, _fedavg(updates, [2, 3, 4])) <= 1e-6


# -- two replies (issue 25, item 4) -----------------------------------------------------------------


def test_with_two_replies_the_last_rounds_norms_bound_an_update(honest):
    """Round 1: the five honest replies (their norms are kept). Round 2 has only 2 replies, one of
    them 10⁴× an honest delta: measured against round 1's norms, it is rejected."""
    _, _, g, updates = honest
    stack = _stack(honest)
    stack.aggregate_round(1, g, updates)
    attacked = {0: replace(updates[0], state=_scaled(g, updates[0], 1e4)), 1: updates[1]}
    got = stack.aggregate_round(2, g, attacked)
    assert _dist(got, updates[1].state) <= 1e-6
    reason = stack.round_metrics(2)["rejected"][0]["reason"]
    assert "recent rounds' accepted norms" in reason and "robust.outlier_k=10" in reason
    # Honest pairs and single replies pass the same bound.
    for pair in ({0: updates[0], 1: updates[1]}, {3: updates[3], 4: updates[4]}, {2: updates[2]}):
        stack.aggregate_round(3, g, pair)
        assert stack.round_metrics(3)["rejected"] == []


def test_the_two_reply_bound_survives_a_checkpoint(honest, tmp_path):
    from federa.checkpoint import load_checkpoint, save_checkpoint

    _, _, g, updates = honest
    stack = _stack(honest)
    stack.aggregate_round(1, g, updates)
    save_checkpoint(tmp_path / "c.pt", {"strategy": stack.state_dict()})
    resumed = _stack(honest)
    resumed.load_state_dict(load_checkpoint(tmp_path / "c.pt")[0]["strategy"])
    attacked = {0: replace(updates[0], state=_scaled(g, updates[0], 1e4)), 1: updates[1]}
    assert _dist(resumed.aggregate_round(2, g, attacked), updates[1].state) <= 1e-6


def test_round_one_with_two_replies_and_no_history_stays_unbounded(honest):
    """The documented gap: no history and no median of 3 (docs/reliability.md, threat model)."""
    _, _, g, updates = honest
    honest_step = _dist(_fedavg(updates, [0, 1]), g)
    attacked = {0: replace(updates[0], state=_scaled(g, updates[0], 1e4)), 1: updates[1]}
    got = _stack(honest).aggregate_round(1, g, attacked)
    assert _dist(got, g) > 1000 * honest_step
