"""Validated updates and robust aggregation, on real client updates of the tiny model.

Five honest clients train LoRA for a few steps from the same global state; then one of them
is replaced by an attacker. Distances are measured to the honest FedAvg result and compared
with the honest clients' own delta norms, so the bounds scale with the run, not with magic
numbers.
"""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from federa.client import local_update
from federa.types import Update
from federa.config import build_config
from federa.engines.server import ServerRun
from federa.job import prepare_job
from federa.results_dir import RunDir
from federa.strategies.robust import clip_update, delta, global_norm
from federa.strategies.fedavg import weighted_average
from federa.strategies.median import coordinate_median
from federa.strategies.trimmed_mean import trimmed_mean
from federa.strategies.stack import build_stack
from federa.strategies.validate import check_update, split_valid


@pytest.fixture(scope="module")
def honest(tiny_model_dir, small_csv, tmp_path_factory):
    """(server, initial global state, honest updates of 5 clients from it)."""
    cfg = build_config({}, [
        f"model.path={tiny_model_dir}", f"data.path={small_csv}", "methods=lora", "rounds=2",
        "num_clients=5", "clients_per_round=5", "local_steps=3", "batch_size=8", "max_length=32",
        "lora.r=4", "partition.kind=iid", "lr.lora=0.01",
    ])
    job = prepare_job(cfg)
    server = ServerRun(job, "lora", RunDir(tmp_path_factory.mktemp("robust")), log=lambda *_: None)
    g = {k: v.clone() for k, v in server.state.items()}
    updates = {cid: local_update(server.model, g, job.shard(cid), job.collate, s, client_id=cid)
               for cid, s in server.configure(1).items()}
    return server, g, updates


def _dist(a, b) -> float:
    return global_norm(delta(a, b))


def _attacked(global_state, updates, kind: str) -> list[Update]:
    """Client 0 replaced by an attacker: its delta ×100, or a random state of norm ~100× honest."""
    ups = [updates[c] for c in sorted(updates)]
    u0 = ups[0]
    if kind == "scaled":
        bad = {k: global_state[k] + 100 * (u0.state[k] - global_state[k]) for k in global_state}
    else:
        g = torch.Generator().manual_seed(0)
        bad = {k: global_state[k] + torch.randn(t.shape, generator=g) for k, t in global_state.items()}
    return [replace(u0, state=bad), *ups[1:]]


@pytest.mark.parametrize("kind", ["scaled", "random"])
def test_one_attacker_moves_fedavg_far_and_robust_rules_little(honest, kind):
    server, g, updates = honest
    honest_avg = weighted_average([u.state for u in updates.values()], [u.num_examples for u in updates.values()])
    honest_norms = sorted(_dist(u.state, g) for u in updates.values())
    scale = honest_norms[len(honest_norms) // 2]  # median honest delta norm
    assert scale > 0
    attacked = _attacked(g, updates, kind)
    states = [u.state for u in attacked]
    weights = [u.num_examples for u in attacked]

    clip = scale  # clip every delta to the median honest norm
    clipped = [clip_update(s, g, clip) for s in states]
    moved = {
        "fedavg": _dist(weighted_average(states, weights), honest_avg),
        "median": _dist(coordinate_median(states), honest_avg),
        "trimmed_mean(0.2)": _dist(trimmed_mean(states, 0.2), honest_avg),
        "fedavg+clip": _dist(weighted_average(clipped, weights), honest_avg),
    }
    print(f"\n{kind} attacker: median honest delta norm {scale:.4f}; distance to honest FedAvg: "
          + ", ".join(f"{k}={v:.4f}" for k, v in moved.items()))
    # FedAvg is dragged by the attacker's weight share (≥ 1/6 here) of a delta ≥ 20× the honest norm.
    assert moved["fedavg"] > 3 * scale
    for rule in ("median", "trimmed_mean(0.2)", "fedavg+clip"):
        # Robust rules stay within the honest clients' own spread: at most ~1 honest delta away.
        assert moved[rule] < 1.0 * scale, rule
        assert moved[rule] < moved["fedavg"] / 10, rule


def test_robust_rules_on_known_numbers():
    states = [{"w": torch.tensor([1.0, 10.0])}, {"w": torch.tensor([2.0, 20.0])},
              {"w": torch.tensor([3.0, 30.0])}, {"w": torch.tensor([1000.0, -1000.0])}]
    assert coordinate_median(states)["w"].tolist() == [2.5, 15.0]
    assert trimmed_mean(states, 0.25)["w"].tolist() == [2.5, 15.0]  # k=1 per side: mean of the middle two
    assert trimmed_mean(states[:3], 0.0)["w"].tolist() == [2.0, 20.0]  # no trimming = plain mean
    assert torch.equal(coordinate_median([states[0]])["w"], states[0]["w"])


def test_clipped_delta_norm_never_exceeds_bound():
    g = torch.Generator().manual_seed(1)
    base = {"a": torch.randn(50, 3, generator=g), "b": torch.randn(7, generator=g)}
    for scale in (1e-3, 0.5, 3.0, 1e4):
        upd = {k: v + scale * torch.randn(v.shape, generator=g) for k, v in base.items()}
        before = _dist(upd, base)
        after = _dist(clip_update(upd, base, 1.0), base)
        assert after <= 1.0 + 1e-5
        if before <= 1.0:
            assert math.isclose(after, before, rel_tol=1e-5)  # small deltas pass untouched
        else:
            assert math.isclose(after, 1.0, rel_tol=1e-5)


def test_strategy_reads_its_own_section():
    cfg = build_config({}, ["strategy=trimmed_mean", "trimmed_mean.trim_fraction=0.3", "clients_per_round=5"])
    core = build_stack(cfg).layers()[-1]
    assert core.name == "trimmed_mean" and core.trim_fraction == 0.3 and core.clients_per_round == 5
    assert build_stack(build_config({}, ["strategy=median"])).layers()[-1].name == "median"


# -- validation ------------------------------------------------------------------------


def test_check_update_names_each_problem(honest):
    _, g, updates = honest
    good = updates[min(updates)]
    k0 = sorted(g)[0]
    cases = {
        "wrong tensor names": {**{k: v for k, v in good.state.items() if k != k0}, "bogus": good.state[k0]},
        "has shape": {**good.state, k0: torch.zeros(3, 3)},
        "has dtype": {**good.state, k0: good.state[k0].double()},
        "NaN or inf": {**good.state, k0: torch.full_like(good.state[k0], float("nan"))},
    }
    assert check_update(good, g) is None
    for expected, state in cases.items():
        reason = check_update(replace(good, state=state), g)
        assert reason is not None and expected in reason, (expected, reason)
    inf_state = {**good.state, k0: good.state[k0].clone()}
    inf_state[k0].view(-1)[0] = float("inf")
    assert "NaN or inf" in check_update(replace(good, state=inf_state), g)
    assert "num_examples" in check_update(replace(good, num_examples=0), g)
    norm = _dist(good.state, g)
    assert check_update(good, g, max_update_norm=norm * 1.01) is None
    assert "exceeds robust.max_update_norm" in check_update(good, g, max_update_norm=norm * 0.99)


def test_server_rejects_bad_clients_and_carries_on(honest):
    server, g, updates = honest
    cids = sorted(updates)
    bad_nan = replace(updates[cids[0]], state={k: torch.full_like(v, float("nan")) for k, v in g.items()})
    bad_shape = replace(updates[cids[1]], state={**updates[cids[1]].state, sorted(g)[0]: torch.zeros(2)})
    mixed = {cids[0]: bad_nan, cids[1]: bad_shape, **{c: updates[c] for c in cids[2:]}}
    logs: list[str] = []
    server.log = logs.append
    saved = {k: v.clone() for k, v in server.state.items()}
    try:
        record = server.complete_round(1, mixed, started=0.0)
        expected = weighted_average([updates[c].state for c in cids[2:]], [updates[c].num_examples for c in cids[2:]])
        for k in expected:
            assert torch.equal(server.state[k], expected[k])  # the others still aggregated
        assert [r["client"] for r in record["rejected"]] == cids[:2]
        assert "NaN" in record["rejected"][0]["reason"] and "shape" in record["rejected"][1]["reason"]
        assert any(f"rejected client {cids[0]}" in line for line in logs)
        line = [r for r in server.run_dir.read_metrics() if r["round"] == 1][-1]
        assert line["rejected"] == record["rejected"]

        # Nobody valid: the global state is kept, logged, and the run carries on to the next round.
        before = {k: v.clone() for k, v in server.state.items()}
        record2 = server.complete_round(2, {cids[0]: bad_nan}, started=0.0)
        assert all(torch.equal(server.state[k], before[k]) for k in before)
        assert record2["rejected"][0]["client"] == cids[0] and record2["train_loss"] is None
        assert any("no valid update" in line for line in logs)
    finally:
        server.state, server.round = saved, 0


def test_split_valid_norm_bound(honest):
    _, g, updates = honest
    norms = {c: _dist(u.state, g) for c, u in updates.items()}
    bound = sorted(norms.values())[2]  # the median: the two largest are rejected
    accepted, rejected = split_valid(updates, g, max_update_norm=bound)
    assert set(rejected) == {c for c, n in norms.items() if n > bound}
    assert set(accepted) == {c for c, n in norms.items() if n <= bound}
    assert len(rejected) == 2


def test_median_handles_tensors_beyond_quantiles_limit():
    # FFT's embedding matrix × clients exceeds torch.quantile's 2**24-element cap.
    from federa.strategies.median import coordinate_median

    n = 2**22 + 1  # 4 clients × n > 2**24
    states = [{"w": torch.full((n,), float(v))} for v in (1.0, 2.0, 10.0, -5.0)]
    out = coordinate_median(states)["w"]
    assert out.shape == (n,) and torch.all(out == 1.5)  # mean of the middle values 1 and 2
