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
from federa.runlog import RunDir

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
                                              ("lora+rolora", "fedavg"), ("federa+ffa", "fedprox")])
def test_client_hook_on_flower_equals_inprocess(tiny_cfg, tmp_path, method, strategy):
    """3 rounds, 2 of 4 clients a round (so clients skip rounds and come back to their memory)."""
    over = (f"methods={method}", f"strategy={strategy}", "rounds=3", "lr.lora=0.01", "lr.federa=0.01")
    cfg = tiny_cfg(*over, "engine=flower")  # accepted: no refusal left for these
    grid = InProcessGrid(4, fresh=method == "lora+fedex", **{"memory-dir": str(tmp_path / "mem")})
    assert _flower(cfg, method, tmp_path / "flower", grid)["status"] == "done"
    assert _inprocess(tiny_cfg(*over), method, tmp_path / "inprocess")["status"] == "done"
    _assert_same_run(tmp_path / "flower", tmp_path / "inprocess", method)
    trains = [m.content for m in grid.sent if m.metadata.message_type == "train"]
    if strategy == "scaffold":
        # c went down with every train message after the first round, Δcᵢ came up (bytes in the metrics).
        assert all(wire.PAYLOAD in c.array_records for c in trains)
        assert any(t.abs().sum() > 0 for c in trains[2:] for t in wire.optional_state(c, wire.PAYLOAD).values())
    if method == "lora+fedex":
        # Round 1: no fold yet; afterwards the whole cumulative fold, to every sampled client.
        assert [wire.FOLD in c.array_records for c in trains] == [False, False, True, True, True, True]
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
    from federa.methods.base import apply_base_fold

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
