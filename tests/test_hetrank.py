"""Heterogeneous client ranks: FLoRA, FlexLoRA and HetLoRA, each with plain LoRA and FeDeRA initialisation.

The update rules are checked on hand-made tensors against the papers' formulas (computed here
independently, in NumPy), then on the tiny model: what clients train and send at their own
ranks, the bytes counted at those ranks, and a resumed run equal to an uninterrupted one.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from federa.client import local_update
from federa.config import build_config
from federa.engines.inprocess import run_method
from federa.engines.server import ServerRun
from federa.errors import ConfigError
from federa.job import prepare_job
from federa.methods.base import state_bytes
from federa.results_dir import RunDir
from federa.strategies.flexlora import FlexLoRA
from federa.strategies.flora import FLoRA, stack
from federa.strategies.hetlora import HetLoRA
from federa.methods.lora_math import lora_pairs
from federa.types import Update

A, B, HEAD = "m.lora_A.default.weight", "m.lora_B.default.weight", "classifier.weight"
OUT, IN, R = 7, 6, 5
RANKS = [2, 3, 5]  # clients 0, 1, 2


def _hand_made(seed: int = 0) -> tuple[dict, dict[int, Update]]:
    """A rank-R global state and three replies at ranks 2, 3, 5 with different example counts."""
    g = torch.Generator().manual_seed(seed)
    glob = {A: torch.randn(R, IN, generator=g), B: torch.randn(OUT, R, generator=g),
            HEAD: torch.randn(3, 4, generator=g)}
    updates = {c: Update(state={A: torch.randn(r, IN, generator=g), B: torch.randn(OUT, r, generator=g),
                                HEAD: torch.randn(3, 4, generator=g)}, num_examples=n,
                          metrics={"train_loss": 0.5})
               for c, (r, n) in enumerate(zip(RANKS, [10, 30, 60]))}
    return glob, updates


def _np(t: torch.Tensor) -> np.ndarray:
    return t.double().numpy()


def _shares(updates) -> np.ndarray:
    n = np.array([u.num_examples for u in updates.values()], dtype=float)
    return n / n.sum()


def _head_avg(updates) -> np.ndarray:
    return sum(p * _np(u.state[HEAD]) for p, u in zip(_shares(updates), updates.values()))


def _strategy(cls, scaling: float = 1.5):
    return cls(clients_per_round=3, seed=0, rank=R, client_ranks=RANKS, scaling=scaling)


# -- update rules on hand-made tensors -------------------------------------------------------


def test_flora_stacked_product_is_the_weighted_sum_of_products():
    _, updates = _hand_made()
    p = _shares(updates)
    bs, as_ = [u.state[B] for u in updates.values()], [u.state[A] for u in updates.values()]
    b_stack, a_stack = stack(bs, as_, list(p))
    assert b_stack.shape == (OUT, sum(RANKS)) and a_stack.shape == (sum(RANKS), IN)
    expected = sum(pk * _np(b) @ _np(a) for pk, b, a in zip(p, bs, as_))
    np.testing.assert_allclose(_np(b_stack @ a_stack), expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("zero_start", [True, False], ids=["lora-start", "federa-start"])
def test_flora_folds_each_clients_change_and_restarts_the_adapter(zero_start):
    glob, updates = _hand_made()
    if zero_start:
        glob[B] = torch.zeros_like(glob[B])  # plain LoRA: B = 0, the paper's fresh adapter
    s = 1.5
    strategy = _strategy(FLoRA, s)
    new = strategy.aggregate(1, glob, updates)
    # Client k started from the leading r_k slots of the global adapter; its update is the change.
    expected = s * sum(pk * (_np(u.state[B]) @ _np(u.state[A]) - _np(glob[B][:, :r]) @ _np(glob[A][:r]))
                       for pk, u, r in zip(_shares(updates), updates.values(), RANKS))
    np.testing.assert_allclose(_np(strategy.base_fold()["m.base_layer.weight"]), expected, atol=1e-5, rtol=0)
    assert torch.equal(new[A], glob[A]) and torch.equal(new[B], glob[B])  # the adapter restarts
    np.testing.assert_allclose(_np(new[HEAD]), _head_avg(updates), atol=1e-6)
    # The fold accumulates over rounds (the engines send it to each client beside its state).
    strategy.aggregate(2, glob, updates)
    np.testing.assert_allclose(_np(strategy.base_fold()["m.base_layer.weight"]), 2 * expected,
                               atol=1e-5, rtol=0)


def test_flexlora_gives_each_client_the_best_approximation_at_its_rank():
    glob, updates = _hand_made()
    strategy = _strategy(FlexLoRA)
    new = strategy.aggregate(1, glob, updates)
    delta = sum(pk * _np(u.state[B]) @ _np(u.state[A]) for pk, u in zip(_shares(updates), updates.values()))
    u_, sv, vh = np.linalg.svd(delta)
    for client, r in enumerate(RANKS):
        mine = strategy.client_state(2, client, new)
        assert mine[A].shape == (r, IN) and mine[B].shape == (OUT, r)
        best = (u_[:, :r] * sv[:r]) @ vh[:r]  # Eckart–Young: the best rank-r approximation of ΔW
        np.testing.assert_allclose(_np(mine[B]) @ _np(mine[A]), best, atol=1e-5, rtol=0)
        np.testing.assert_allclose(np.linalg.norm(_np(mine[B]) @ _np(mine[A]) - delta), np.sqrt((sv[r:] ** 2).sum()),
                                   atol=1e-5)
    np.testing.assert_allclose(_np(new[HEAD]), _head_avg(updates), atol=1e-6)
    # The split is the paper's: A = V_rᵀ has orthonormal rows, B = U_r·S_r.
    np.testing.assert_allclose(_np(new[A]) @ _np(new[A]).T, np.eye(R), atol=1e-6)


def test_hetlora_zero_pads_weights_by_norm_and_truncates():
    glob, updates = _hand_made()
    strategy = _strategy(HetLoRA)
    new = strategy.aggregate(1, glob, updates)
    norms = np.array([np.linalg.norm(_np(u.state[B]) @ _np(u.state[A])) for u in updates.values()])
    w = norms / norms.sum()
    a_pad = [np.pad(_np(u.state[A]), ((0, R - r), (0, 0))) for u, r in zip(updates.values(), RANKS)]
    b_pad = [np.pad(_np(u.state[B]), ((0, 0), (0, R - r))) for u, r in zip(updates.values(), RANKS)]
    np.testing.assert_allclose(_np(new[A]), sum(wk * a for wk, a in zip(w, a_pad)), atol=1e-6)
    np.testing.assert_allclose(_np(new[B]), sum(wk * b for wk, b in zip(w, b_pad)), atol=1e-6)
    assert not np.allclose(w, _shares(updates))  # the norm weights are not the example shares here
    np.testing.assert_allclose(_np(new[HEAD]), _head_avg(updates), atol=1e-6)
    mine = strategy.client_state(2, 1, new)
    assert torch.equal(mine[A], new[A][:3]) and torch.equal(mine[B], new[B][:, :3])


def test_each_reply_is_validated_and_clipped_against_its_own_rank():
    from dataclasses import replace

    from federa.strategies.clip import ClipDeltas
    from federa.strategies.validate import Validate

    glob, updates = _hand_made()
    wrong = dict(updates)
    wrong[1] = replace(updates[2], state=dict(updates[2].state))  # client 1 (rank 3) replies at rank 5
    stack_ = Validate(_strategy(HetLoRA))
    stack_.aggregate_round(1, glob, wrong)
    assert stack_.round_metrics(1)["rejected"] == [
        {"client": 1, "reason": f"{A} has shape (5, {IN}), expected (3, {IN})"}]
    # Clipping moves each reply towards the factors its client was sent, at its rank.
    clipped = ClipDeltas(_strategy(HetLoRA), max_norm=0.1).before(1, glob, updates)
    for c, r in enumerate(RANKS):
        start = _strategy(HetLoRA).client_state(1, c, glob)
        d = sum(((clipped[c].state[k].double() - start[k].double()) ** 2).sum() for k in start)
        assert clipped[c].state[A].shape == (r, IN) and float(d.sqrt()) == pytest.approx(0.1, rel=1e-5)


def test_client_ranks_are_validated_at_the_config_edge():
    assert build_config({}, ["lora.client_ranks=2,4"]).lora.rank_of(3) == 4  # cycled over clients
    for sets, match in [
        (["lora.client_ranks=[2,16]"], "above lora.r=8.*set lora.r=16"),
        (["lora.client_ranks=[0,2]"], "positive integer"),
        (["lora.client_ranks=[]"], "is empty"),
        (["methods=lora+flexlora", "num_clients=2", "clients_per_round=2", "lora.client_ranks=[2,4,8]"],
         "3 ranks for 2 clients"),
        (["methods=federa+hetlora", "server_opt.name=adam"], "set server_opt.name=none"),
    ]:
        with pytest.raises(ConfigError, match=match):
            build_config({}, sets)
    # FLoRA runs on Flower (tests/test_flower_client_hook.py checks it equals in-process bit for bit).
    assert build_config({}, ["methods=lora+flora", "engine=flower"]).engine == "flower"


# -- the tiny model ----------------------------------------------------------------------------


def _play(server: ServerRun, rnd: int) -> dict:
    """One in-process round, as engines/inprocess.py plays it."""
    job = server.job
    updates = {cid: local_update(server.model, server.client_state(rnd, cid), job.shard(cid), job.collate, st,
                                 client_id=cid)
               for cid, st in server.configure(rnd).items()}
    return server.complete_round(rnd, updates, started=0.0), updates


def test_a_low_rank_client_trains_and_sends_only_its_slots(tiny_cfg):
    job = prepare_job(tiny_cfg("methods=lora+hetlora", "lora.client_ranks=[2,4]"))
    _, model, _ = job.server_model("lora+hetlora")
    server_state = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    mine = {k: v[:2] if ".lora_A." in k else v[:, :2] if ".lora_B." in k else v for k, v in server_state.items()}
    reply = local_update(model, mine, job.shard(0), job.collate, job.train_settings("lora+hetlora"))
    assert {k: v.shape for k, v in reply.state.items()} == {k: v.shape for k, v in mine.items()}
    for n, p in model.named_parameters():  # the slots above rank 2 never moved from zero
        if ".lora_A." in n:
            assert torch.count_nonzero(p[2:]) == 0 and torch.count_nonzero(p[:2]) > 0
        if ".lora_B." in n:
            assert torch.count_nonzero(p[:, 2:]) == 0
    assert any(not torch.equal(reply.state[k], mine[k]) for k in mine if ".lora_B." in k)  # it trained


@pytest.mark.parametrize("method", ["lora+flora", "federa+flora", "lora+flexlora", "federa+flexlora",
                                    "lora+hetlora", "federa+hetlora"])
def test_heterogeneous_round_counts_bytes_at_each_rank_and_resumes_exactly(tiny_cfg, tmp_path, method):
    cfg = tiny_cfg(f"methods={method}", "lora.client_ranks=[1,2,4,3]", "clients_per_round=3", "rounds=2",
                   "lr.lora=0.02", "lr.federa=0.01")
    job = prepare_job(cfg)
    server = ServerRun(job, method, RunDir(tmp_path / "a"), log=lambda *_: None)
    setup_bytes = state_bytes(server.setup)
    record, updates = _play(server, 1)
    ranks = {c: [1, 2, 4, 3][c] for c in updates}
    assert len(set(ranks.values())) > 1
    for c, u in updates.items():
        for k, v in u.state.items():
            if ".lora_A." in k:
                assert v.shape[0] == ranks[c]
    # Bytes at each client's own rank: the same numbers of floats every way, once per sampled client.
    adapter = {k: v for k, v in server.state.items() if ".lora_" in k}
    head = state_bytes(server.state) - state_bytes(adapter)
    per_rank = {r: head + sum(v.numel() // cfg.lora.r * r * 4 for v in adapter.values()) for r in (1, 2, 3, 4)}
    assert record["bytes_up"] == sum(per_rank[r] for r in ranks.values())
    fold = state_bytes(server.strategy.frozen.base_fold()) if method.endswith("flora") else 0
    assert fold > 0 or not method.endswith("flora")
    assert record["bytes_down"] == sum(per_rank[r] for r in ranks.values()) + setup_bytes * len(updates)
    assert record["bytes_up"] < state_bytes(server.state) * len(updates)  # less than everyone at lora.r
    assert server.info()["bytes_per_client_round"] == sum(per_rank[r] for r in [1, 2, 4, 3]) // 4  # ranks are 1..4
    assert record["lora_agg_error"] > 0  # what naive averaging of the zero-padded factors would lose
    # Resume after round 1, play round 2: identical to an uninterrupted run.
    resumed = ServerRun(job, method, RunDir(tmp_path / "a"), log=lambda *_: None)
    assert resumed.round == 1
    record2, _ = _play(resumed, 2)
    # The reference: the in-process engine, uninterrupted (read back from its last checkpoint).
    assert run_method(job, method, RunDir(tmp_path / "b"), progress=False, log=lambda *_: None)["status"] == "done"
    straight = ServerRun(job, method, RunDir(tmp_path / "b"), log=lambda *_: None)
    assert straight.round == 2
    ref2 = RunDir(tmp_path / "b").read_metrics()[-1]
    if method.endswith("flora"):  # round 2's payload is round 1's fold, sent to each sampled client
        assert record2["bytes_down"] >= fold * len(ref2["clients"])
    for k in straight.state:
        assert torch.equal(resumed.state[k], straight.state[k]), k
    base_a = {n: p for n, p in resumed.model.named_parameters() if not p.requires_grad}
    base_b = {n: p for n, p in straight.model.named_parameters() if not p.requires_grad}
    # FLoRA's fold included. A model rebuilt from a checkpoint adds the cumulative fold at once, a live
    # one added it round by round (apply_base_fold, as for FedEx-LoRA): equal up to float32 rounding.
    for n in base_a:
        torch.testing.assert_close(base_a[n], base_b[n], rtol=0, atol=1e-6, msg=n)
    for k in ("accuracy", "loss", "train_loss", "bytes_up", "bytes_down", "lora_agg_error"):
        assert record2[k] == ref2[k], k


def test_flora_global_model_is_the_clients_average(tiny_cfg, tmp_path):
    """After a FLoRA round the server's model has moved by Σ p_k (client k's move), exactly (no cross terms)."""
    cfg = tiny_cfg("methods=federa+flora", "lora.client_ranks=[2,4]", "lr.federa=0.02")
    job = prepare_job(cfg)
    server = ServerRun(job, "federa+flora", RunDir(tmp_path), log=lambda *_: None)
    s = cfg.lora.alpha / cfg.lora.r
    params = dict(server.model.named_parameters())
    module, (a_key, b_key) = next(iter(lora_pairs(server.state).items()))
    w = params[module + ".base_layer.weight"].detach().double().clone()
    updates = {cid: local_update(server.model, server.client_state(1, cid), job.shard(cid), job.collate, st)
               for cid, st in server.configure(1).items()}
    n = np.array([u.num_examples for u in updates.values()], dtype=float)
    # Each client moved from its start (the leading slots of FeDeRA's factors) to its trained factors;
    # the global model moves from its start by the example-weighted mean of those moves.
    product = lambda st: s * st[b_key].double() @ st[a_key].double()  # noqa: E731
    moves = [product(u.state) - product(server.client_state(1, c)) for c, u in updates.items()]
    expected = w + product(server.state) + sum(pk * m for pk, m in zip(n / n.sum(), moves))
    server.complete_round(1, updates, started=0.0)
    after = params[module + ".base_layer.weight"].detach().double() + s * server.state[b_key].double() @ \
        server.state[a_key].double()
    assert torch.allclose(after, expected, atol=1e-5)
