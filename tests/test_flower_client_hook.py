"""The strategy client hook on the Flower engine: payload down, extra up, memory on the node, base fold.

Fast: federa's ServerApp driver (``drive_method``) and ClientApp (``client_app.app``) run in this
process, over a Grid that hands each message to the ClientApp with that node's own Flower
``Context`` (as a SuperNode does). Everything federa does on Flower runs; only the transport is
replaced. The same strategies on real SuperNodes: ``test_flower.py`` (slow).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from flwr.app import Context, RecordDict

from federa.checkpoint import load_checkpoint
from federa.engines.flower import client_app, wire
from federa.engines.flower.driver import drive_method
from federa.engines.flower.node_memory import NodeMemory, memory_dir
from federa.engines.inprocess import run_method
from federa.job import prepare_job
from federa.results_dir import RunDir

# Wall-clock numbers legitimately differ between engines; nothing else in a metrics line may.
_TIMING = {"round_s", "aggregate_s", "eval_s", "client_compute_s", "client_train_s", "cum_train_wall_s",
           "cum_client_compute_s", "cum_wall_s", "modelled_round_s", "cum_modelled_s"}


@pytest.fixture(autouse=True)
def _task_identity(monkeypatch):
    """Flower stamps messages with the task's identity, which a test process must set itself."""
    from flwr.supercore.task_identity import TaskIdentity

    for name in ("_run_id", "_task_id", "_node_id"):
        monkeypatch.setattr(TaskIdentity, name, 1)


class InProcessGrid:
    """Flower's Grid, with node ``100+i`` holding client ``i`` and keeping its Context between messages
    (a new grid = a new Flower run: fresh Context.state, as after ``federa run --resume``).
    Models are cached across messages as in simulation (a Ray actor serves many nodes); ``fresh``:
    every message builds its model anew, as a deployment SuperNode's new process per message does."""

    def __init__(self, n: int, fresh: bool = False, **node_config: str) -> None:
        self.fresh = fresh
        self.contexts = {100 + i: Context(run_id=1, node_id=100 + i, state=RecordDict(), run_config={},
                                          node_config={"partition-id": i, "num-partitions": n, **node_config})
                         for i in range(n)}
        self.sent: list = []

    def get_node_ids(self) -> list[int]:
        return list(self.contexts)

    def send_and_receive(self, msgs, timeout=None):
        self.sent += msgs
        replies = []
        for m in msgs:
            if self.fresh:
                client_app._MODELS.clear()
            replies.append(client_app.app(m, self.contexts[m.metadata.dst_node_id]))
        return replies


def _flower(cfg, method: str, out: Path, grid: InProcessGrid) -> dict:
    job = prepare_job(cfg)
    return drive_method(grid, job, method, RunDir(out), log=lambda *_: None)


def _inprocess(cfg, method: str, out: Path) -> dict:
    return run_method(prepare_job(cfg), method, RunDir(out), progress=False, log=lambda *_: None)


def _rows(out: Path, method: str) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in _TIMING} for r in RunDir(out).read_metrics()
            if r["method"] == method]


def _assert_same_run(a: Path, b: Path, method: str) -> None:
    """Bit-identical final trainables and strategy state, identical metrics (bytes included)."""
    pa, pb = load_checkpoint(RunDir(a).checkpoint(method))[0], load_checkpoint(RunDir(b).checkpoint(method))[0]
    assert pa["round"] == pb["round"] and pa["state"].keys() == pb["state"].keys()
    for k in pa["state"]:
        assert torch.equal(pa["state"][k], pb["state"][k]), k
    assert _rows(a, method) == _rows(b, method)


@pytest.mark.parametrize("method, strategy", [("lora", "scaffold"), ("lora+fedex", "fedavg"),
                                              ("lora+rolora", "fedavg"), ("federa+ffa", "fedprox"),
                                              ("lora+flora", "fedavg"), ("federa+flora", "fedavg"),
                                              ("federa+fedsb", "fedavg"), ("lora+fedsvd", "fedavg"),
                                              ("federa+frlora", "fedavg"), ("lora+lorafair", "fedavg"),
                                              ("lora+ravan", "fedavg")])
def test_client_hook_on_flower_equals_inprocess(tiny_cfg, tmp_path, method, strategy):
    """3 rounds, 2 of 4 clients a round (so clients skip rounds and come back to their memory). FLoRA
    runs at heterogeneous ranks: each node restarts its adapter every round under a growing fold."""
    over = (f"methods={method}", f"strategy={strategy}", "rounds=3", "lr.lora=0.01", "lr.federa=0.01",
            *(("lora.client_ranks=2,4",) if "flora" in method else ()))
    cfg = tiny_cfg(*over, "engine=flower")  # accepted: no refusal left for these
    grid = InProcessGrid(4, fresh=method in ("lora+fedex", "federa+flora", "lora+fedsvd"), **{"memory-dir": str(tmp_path / "mem")})
    assert _flower(cfg, method, tmp_path / "flower", grid)["status"] == "done"
    assert _inprocess(tiny_cfg(*over), method, tmp_path / "inprocess")["status"] == "done"
    _assert_same_run(tmp_path / "flower", tmp_path / "inprocess", method)
    trains = [m.content for m in grid.sent if m.metadata.message_type == "train"]
    if strategy == "scaffold":
        # c went down with every train message after the first round, Δcᵢ came up (bytes in the metrics).
        assert all(wire.PAYLOAD in c.array_records for c in trains)
        assert any(t.abs().sum() > 0 for c in trains[2:] for t in wire.optional_state(c, wire.PAYLOAD).values())
    if any(m in method for m in ("fedex", "flora", "fedsvd", "frlora")):
        # Round 1: no fold yet; afterwards the whole cumulative fold, to every sampled client.
        assert [wire.FOLD in c.array_records for c in trains] == [False, False, True, True, True, True]
    if "flora" in method:  # each node got its own rank's factors: 2 for even clients, 4 for odd ones
        for c in trains:
            cid = int(c.config_records[wire.SETTINGS]["client_id"])
            ranks = {t.shape[0] for k, t in wire.record_state(c.array_records[wire.STATE]).items() if "lora_A" in k}
            assert ranks == {2 if cid % 2 == 0 else 4}, (cid, ranks)
    if method == "lora+fedex":
        rows = _rows(tmp_path / "flower", method)
        fold_bytes = sum(t.numel() * 4 for t in wire.optional_state(trains[-1], wire.FOLD).values())
        assert rows[3]["bytes_down"] - rows[1]["bytes_down"] == 2 * fold_bytes  # the count is what travelled


def test_scaffold_node_memory_survives_a_resume_exactly(tiny_cfg, tmp_path):
    """Stop after round 1, resume in a new Flower run (fresh Context.state): cᵢ comes from the node's
    memory-dir, and the result equals the uninterrupted run (in-process, which equals Flower's) bit for bit."""
    over = ("methods=lora", "strategy=scaffold", "lr.lora=0.01")
    assert _inprocess(tiny_cfg(*over, "rounds=3"), "lora", tmp_path / "whole")["status"] == "done"
    over = (*over, "engine=flower")
    mem = {"memory-dir": str(tmp_path / "mem")}
    split = tmp_path / "split"
    _flower(tiny_cfg(*over, "rounds=1"), "lora", split, InProcessGrid(4, **mem))
    # An attempt at round 2 that the server never completed leaves round-2 entries on the nodes ...
    token = load_checkpoint(RunDir(split).checkpoint("lora"))[0]["run_token"]
    stale = Context(run_id=9, node_id=1, state=RecordDict(), run_config={}, node_config=mem)
    sampled = sorted(load_checkpoint(RunDir(split).checkpoint("lora"))[0]["totals"]["contacted"])
    for cid in sampled:
        NodeMemory(stale, token, "lora", cid).keep(2, {"junk": torch.ones(3)})
    # ... which the resumed run drops: it equals the uninterrupted run.
    assert _flower(tiny_cfg(*over, "rounds=3"), "lora", split, InProcessGrid(4, **mem))["status"] == "done"
    _assert_same_run(split, tmp_path / "whole", "lora")


def test_without_node_memory_a_client_restarts_from_zero_and_the_run_is_well_defined(tiny_cfg, tmp_path):
    """memory-dir=off: a resume loses every cᵢ (Context.state lasts one Flower run); each client then
    starts again from cᵢ = 0, as SCAFFOLD does for a client never sampled: the run equals, bit for
    bit, an in-process resume whose checkpoint lost every cᵢ (c, on the server, is kept)."""
    from federa.checkpoint import save_checkpoint

    over = ("methods=lora", "strategy=scaffold", "lr.lora=0.01")
    off = {"memory-dir": "off"}
    _flower(tiny_cfg(*over, "engine=flower", "rounds=1"), "lora", tmp_path / "flower", InProcessGrid(4, **off))
    grid = InProcessGrid(4, **off)
    assert _flower(tiny_cfg(*over, "engine=flower", "rounds=3"), "lora", tmp_path / "flower", grid)["status"] == "done"
    assert memory_dir(off) is None  # nothing on disk
    # The same loss, in-process: drop the simulated clients' cᵢ from the round-1 checkpoint.
    rd = RunDir(tmp_path / "inprocess")
    _inprocess(tiny_cfg(*over, "rounds=1"), "lora", rd.root)
    payload = load_checkpoint(rd.checkpoint("lora"))[0]
    assert payload["strategy"]["inner"].pop("c_clients")  # Validate(Scaffold): there were some
    save_checkpoint(rd.checkpoint("lora"), payload)
    assert _inprocess(tiny_cfg(*over, "rounds=3"), "lora", rd.root)["status"] == "done"
    _assert_same_run(tmp_path / "flower", rd.root, "lora")
    # Within the resumed Flower run node memory works again: the nodes hold their cᵢ.
    assert any(k.startswith("federa.memory") for ctx in grid.contexts.values() for k in ctx.state.array_records)


def test_node_memory_uses_the_newest_completed_round_and_drops_the_rest(tmp_path):
    ctx = Context(run_id=1, node_id=1, state=RecordDict(), run_config={}, node_config={"memory-dir": str(tmp_path)})
    mem = NodeMemory(ctx, "tok", "lora", 3)
    assert mem.load(1) == {}  # first round: nothing yet
    mem.keep(1, {"c": torch.full((2,), 1.0)})
    mem.keep(3, {"c": torch.full((2,), 3.0)})
    assert torch.equal(mem.load(3)["c"], torch.full((2,), 1.0))  # round 3 is being (re)run: its old entry is void
    assert mem._rounds() == {1}
    mem.keep(3, {"c": torch.full((2,), 3.5)})
    assert torch.equal(mem.load(5)["c"], torch.full((2,), 3.5)) and mem._rounds() == {3}
    # The disk copy alone (a new Flower run, or a restarted node) gives the same answer.
    fresh = NodeMemory(Context(run_id=2, node_id=1, state=RecordDict(), run_config={}, node_config=ctx.node_config),
                       "tok", "lora", 3)
    assert torch.equal(fresh.load(5)["c"], torch.full((2,), 3.5))
    # Another run (token), method or client sees none of it.
    assert NodeMemory(ctx, "other", "lora", 3).load(5) == {} and NodeMemory(ctx, "tok", "lora", 2).load(5) == {}


def test_wire_carries_extra_up_and_never_memory():
    from federa.types import Update

    extra = {"a.lora_A.weight": torch.randn(4, 8, dtype=torch.float64)}
    content = wire.update_content(Update({"a.lora_A.weight": torch.randn(4, 8)}, 7, extra=extra,
                                         memory={"secret": torch.ones(1)}))
    assert set(content.array_records) == {wire.STATE, wire.EXTRA}
    back = wire.content_update(content)
    assert back.extra.keys() == extra.keys() and torch.equal(back.extra["a.lora_A.weight"], extra["a.lora_A.weight"])
    assert back.memory == {}


def test_base_fold_is_the_unfolded_weight_plus_the_fold_however_it_got_there(tiny_cfg):
    """Server (fold after fold) and a node (one fold, on a fresh model) hold bit-identical weights."""
    from federa.strategies.fedex import apply_base_fold

    job = prepare_job(tiny_cfg("methods=lora"))
    _, server_model, _ = job.server_model("lora")
    _, node, _ = job.server_model("lora")
    name = next(n for n, _ in server_model.named_parameters() if n.endswith("base_layer.weight"))
    w0 = dict(node.named_parameters())[name].detach().clone()
    torch.manual_seed(0)
    folds = [{name: torch.randn(w0.shape) * 1e-3}]
    folds.append({name: folds[0][name] + torch.randn(w0.shape) * 1e-3})
    applied: dict = {}
    for f in folds:
        applied = apply_base_fold(server_model, f, applied)
    apply_base_fold(node, folds[-1], {})
    got = dict(server_model.named_parameters())[name]
    assert torch.equal(got, dict(node.named_parameters())[name])
    assert torch.equal(got, w0 + folds[-1][name])
    apply_base_fold(server_model, {}, applied)  # no fold any more: back to the unfolded weight
    assert torch.equal(dict(server_model.named_parameters())[name], w0)


def test_fedex_resume_is_exact_in_process_too(tiny_cfg, tmp_path):
    """Frozen weights are unfolded + fold on every party, so a resumed FedEx-LoRA run (a fresh model,
    folded once) equals the uninterrupted one (folded round after round) bit for bit."""
    over = ("methods=lora+fedex", "lr.lora=0.05")
    assert _inprocess(tiny_cfg(*over, "rounds=3"), "lora+fedex", tmp_path / "whole")["status"] == "done"
    _inprocess(tiny_cfg(*over, "rounds=2"), "lora+fedex", tmp_path / "split")
    assert _inprocess(tiny_cfg(*over, "rounds=3"), "lora+fedex", tmp_path / "split")["status"] == "done"
    _assert_same_run(tmp_path / "split", tmp_path / "whole", "lora+fedex")


# -- FedSA-LoRA: each client's B and head stay on its node -----------------------------------

# Test-set metrics: in-process they score the mean-B model, on Flower the mean of the personalised
# models' scores (no party may build the mean B); everything else in a metrics line must be equal.
_TEST_SET = {"accuracy", "macro_f1", "mcc", "loss", "score", "personal_test_clients"}


def _private(model) -> dict:
    """FedSA's private tensors, found by name fragment (independently of Job.private_names)."""
    return {n: p.detach().cpu().clone() for n, p in model.named_parameters()
            if any(f in n for f in ("lora_B", "modules_to_save"))}


@pytest.mark.parametrize("method", ["lora+fedsa", "federa+fedsa"])
def test_a_node_builds_the_private_start_values_the_server_holds(tiny_cfg, method):
    """A client's first round starts from its node's freshly built B and head: bit for bit the tensors
    the server's strategy starts every simulated client from (FeDeRA's B from the broadcast SVD)."""
    job = prepare_job(tiny_cfg(f"methods={method}"))
    _, server_model, setup = job.server_model(method)
    on_server = _private(server_model)
    on_node = client_app.node_model(("k",), job, method, setup).initial_private
    assert on_server.keys() == on_node.keys() and any("lora_B" in k for k in on_node)
    assert any("modules_to_save" in k for k in on_node)  # the head is private too
    assert all(torch.equal(on_server[k], on_node[k]) for k in on_server)
    if method == "federa+fedsa":  # not a trivial zero: FeDeRA's B is the SVD factor
        assert any(t.abs().sum() > 0 for k, t in on_node.items() if "lora_B" in k)
    client_app._MODELS.clear()


@pytest.mark.parametrize("method", ["lora+fedsa", "federa+fedsa"])
def test_fedsa_on_flower_equals_inprocess(tiny_cfg, tmp_path, method):
    """3 rounds, 2 of 4 clients a round: clients skip rounds and come back to the B their node kept.
    The global A, the bytes and every client's personalised score equal the in-process run bit for bit;
    the test-set metrics are the mean of the personalised models' (recomputed here from the in-process
    clients' B), and each node holds exactly the B the in-process strategy kept for its client."""
    over = (f"methods={method}", "rounds=3", "lr.lora=0.05", "lr.federa=0.05")
    # lora+fedsa on one cached model (it carries the last client's B: a client must never start from it),
    # federa+fedsa with a fresh model per message, as a deployment SuperNode.
    grid = InProcessGrid(4, fresh=method == "federa+fedsa", **{"memory-dir": str(tmp_path / "mem")})
    assert _flower(tiny_cfg(*over, "engine=flower"), method, tmp_path / "flower", grid)["status"] == "done"
    assert _inprocess(tiny_cfg(*over), method, tmp_path / "inprocess")["status"] == "done"
    pa = load_checkpoint(RunDir(tmp_path / "flower").checkpoint(method))[0]
    pb = load_checkpoint(RunDir(tmp_path / "inprocess").checkpoint(method))[0]
    assert pa["state"].keys() == pb["state"].keys() and all("lora_A" in k for k in pa["state"])
    assert all(torch.equal(pa["state"][k], pb["state"][k]) for k in pa["state"])
    assert pa["strategy"]["inner"]["kept"] == {}  # the server never held a B
    kept = pb["strategy"]["inner"]["kept"]
    flower, inproc = _rows(tmp_path / "flower", method), _rows(tmp_path / "inprocess", method)
    assert flower[0] == inproc[0]  # round 0: every B is the start value, which the server holds too
    assert [{k: v for k, v in r.items() if k not in _TEST_SET} for r in flower] == \
           [{k: v for k, v in r.items() if k not in _TEST_SET} for r in inproc]
    assert len({c for r in flower[1:] for c in r["clients"]}) > 2 and flower[-1]["client_score"]
    # Every node keeps its client's B and head, exactly the in-process strategy's copy.
    for cid, own in kept.items():
        mem = NodeMemory(grid.contexts[100 + cid], pa["run_token"], method, cid).peek(4)
        assert mem.keys() == own.keys() and all(torch.equal(mem[k], own[k]) for k in own), cid
    # The test-set line: the mean over the clients that trained of their personalised models' metrics.
    job = prepare_job(tiny_cfg(*over))
    _, model, _ = job.server_model(method)
    from federa.methods.base import load_tensors, load_trainable_state

    load_trainable_state(model, pb["state"])
    each = []
    for cid in sorted(kept):
        load_tensors(model, kept[cid])
        each.append(job.task.evaluate(model, job.test, job.collate, job.label_names, job.cfg.eval_batch_size, "cpu"))
    last = flower[-1]
    assert last["personal_test_clients"] == sorted(kept)
    for k in ("accuracy", "macro_f1", "mcc", "loss"):
        assert last[k] == sum(m[k] for m in each) / len(each), k
    assert last["score"] == last["accuracy"]
    # Evaluation asked every node (held-out scores for all 4 clients), the test set only of those that trained.
    evals = [m.content for m in grid.sent if m.metadata.message_type == "evaluate"]
    assert len(evals) == 3 * 4
    final = RunDir(tmp_path / "flower").final_model(method)
    assert (final / "private_on_nodes.json").exists() and not (final / "client_private.safetensors").exists()


def test_fedsa_node_memory_survives_a_flower_resume_exactly(tiny_cfg, tmp_path):
    """Stop after round 1, resume in a new Flower run (fresh Context.state): each client's B comes
    from its node's memory-dir, a stale entry of an unfinished round 2 is dropped, and the run equals
    the uninterrupted Flower run bit for bit (metrics, test-set means and global A)."""
    method = "lora+fedsa"
    over = (f"methods={method}", "lr.lora=0.05", "engine=flower")
    whole = tmp_path / "whole"
    assert _flower(tiny_cfg(*over, "rounds=3"), method, whole,
                   InProcessGrid(4, **{"memory-dir": str(tmp_path / "mem-whole")}))["status"] == "done"
    mem = {"memory-dir": str(tmp_path / "mem")}
    split = tmp_path / "split"
    _flower(tiny_cfg(*over, "rounds=1"), method, split, InProcessGrid(4, **mem))
    # An attempt at round 2 that the server never completed left entries for that round's clients
    # (the same ones again: sampling is a pure function of seed and round) ...
    payload = load_checkpoint(RunDir(split).checkpoint(method))[0]
    stale = Context(run_id=9, node_id=1, state=RecordDict(), run_config={}, node_config=mem)
    shapes = NodeMemory(stale, payload["run_token"], method, min(payload["totals"]["contacted"])).peek(2)
    for cid in _rows(whole, method)[2]["clients"]:
        NodeMemory(stale, payload["run_token"], method, cid).keep(2, {k: torch.ones_like(v) for k, v in shapes.items()})
    # ... which the resumed run drops (nodes start their B from disk: a fresh Context.state).
    assert _flower(tiny_cfg(*over, "rounds=3"), method, split, InProcessGrid(4, **mem))["status"] == "done"
    _assert_same_run(split, whole, method)


def test_node_metrics_leave_a_silent_client_unscored_and_need_one_test_score():
    from federa.client_eval import node_metrics
    from federa.errors import FederaError

    replies = {0: {"val.accuracy": 0.5, "test.accuracy": 0.6, "test.loss": 1.0},
               2: {"val.accuracy": 1.0, "test.accuracy": 0.8, "test.loss": 3.0},
               3: {"val.accuracy": float("nan")}}  # never trained: scored on its split, not on the test set
    m = node_metrics(replies, [0, 1, 2], 4, "accuracy", held_out=True)
    assert (m["accuracy"], m["loss"], m["score"]) == ((0.6 + 0.8) / 2, 2.0, (0.6 + 0.8) / 2)
    assert m["personal_test_clients"] == [0, 2]  # client 1 trained but its node did not answer
    assert m["client_score"] == [0.5, None, 1.0, None]
    assert (m["client_score_mean"], m["client_score_worst"]) == (0.75, 0.5)
    assert "client_score" not in node_metrics(replies, [0], 4, "accuracy", held_out=False)
    with pytest.raises(FederaError, match="no node scored the test set"):
        node_metrics({1: {"val.accuracy": 0.5}}, [1], 4, "accuracy", held_out=True)


# -- SLoRA: the model changes at round slora.warmup_rounds+1 ----------------------------------


@pytest.mark.parametrize("strategy", ["fedavg", "scaffold"])
def test_slora_switches_stage_on_flower_as_inprocess(tiny_cfg, tmp_path, strategy):
    """Sparse round 1, LoRA rounds 2-3 from the SVD of the sparse update: every node builds the stage-2
    model itself from the pretrained one (with one cached model across nodes), and the run equals the
    in-process one bit for bit. A client first sampled after the switch never gets the masks.
    Under SCAFFOLD a node's cᵢ of the stage-1 tensors is not carried into stage 2 (the server restarts)."""
    over = ("methods=slora", "rounds=3", "slora.warmup_rounds=1", "slora.density=0.1", f"strategy={strategy}")
    grid = InProcessGrid(4, **{"memory-dir": str(tmp_path / "mem")})
    assert _flower(tiny_cfg(*over, "engine=flower"), "slora", tmp_path / "flower", grid)["status"] == "done"
    assert _inprocess(tiny_cfg(*over), "slora", tmp_path / "inprocess")["status"] == "done"
    _assert_same_run(tmp_path / "flower", tmp_path / "inprocess", "slora")
    trains = [m.content for m in grid.sent if m.metadata.message_type == "train"]
    names = [set(wire.record_state(c.array_records[wire.STATE])) for c in trains]
    assert any("lora_A" in k for k in names[-1]) and not any("lora_A" in k for k in names[0])
    rows = _rows(tmp_path / "flower", "slora")
    assert set(rows[2]["clients"]) - set(rows[1]["clients"])  # a node that never received the masks


def test_slora_flower_resume_across_the_switch_is_exact(tiny_cfg, tmp_path):
    """The nodes go silent in round 2 (the first LoRA round): the method stops after the sparse round 1;
    resumed in a new Flower run (fresh node state and model cache), the server switches, the nodes
    build stage 2, and the run equals the uninterrupted in-process run bit for bit."""

    class SilentFromRound2(InProcessGrid):
        def send_and_receive(self, msgs, timeout=None):
            return [] if any(m.metadata.group_id == "slora:2" for m in msgs) else super().send_and_receive(msgs)

    over = ("methods=slora", "slora.warmup_rounds=1", "slora.density=0.1", "rounds=3")
    assert _inprocess(tiny_cfg(*over), "slora", tmp_path / "whole")["status"] == "done"
    cfg = tiny_cfg(*over, "engine=flower")
    assert _flower(cfg, "slora", tmp_path / "split", SilentFromRound2(4))["status"] == "stopped"
    assert load_checkpoint(RunDir(tmp_path / "split").checkpoint("slora"))[0]["round"] == 1
    client_app._MODELS.clear()
    assert _flower(cfg, "slora", tmp_path / "split", InProcessGrid(4))["status"] == "done"
    _assert_same_run(tmp_path / "split", tmp_path / "whole", "slora")
