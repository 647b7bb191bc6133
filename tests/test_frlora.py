"""FRLoRA (…+frlora): each round's averaged LoRA product goes into the weights, the adapter restarts."""

from __future__ import annotations

import pytest
import torch

from federa.config import build_config
from federa.engines.inprocess import run_method
from federa.errors import ConfigError
from federa.job import prepare_job
from federa.results_dir import RunDir
from federa.strategies.frlora import FRLoRA
from federa.types import Update

A, B, H = "m.lora_A.default.weight", "m.lora_B.default.weight", "head.modules_to_save.default.weight"


def _state(b, a, h):
    return {A: torch.tensor(a), B: torch.tensor(b), H: torch.tensor(h)}


def test_rule_on_hand_made_tensors_matches_the_authors_loop():
    s = FRLoRA(clients_per_round=2, seed=0, scaling=2.0)
    start = _state([[1.0], [0.0]], [[1.0, 1.0]], [0.0])  # B0 (2×1), A0 (1×2): the built factors
    c1, c2 = _state([[2.0], [1.0]], [[1.0, 3.0]], [1.0]), _state([[0.0], [1.0]], [[2.0, -1.0]], [5.0])
    new = s.aggregate(1, start, {0: Update(c1, 3), 1: Update(c2, 1)})
    # label_skew_ours.py: delta_w = B̄·Ā·scale − B0·A0·scale, added to the base weight; A, B ← init_base.
    b_mean, a_mean = (3 * c1[B] + c2[B]) / 4, (3 * c1[A] + c2[A]) / 4
    expected = 2.0 * (b_mean.double() @ a_mean.double() - start[B].double() @ start[A].double())
    assert torch.allclose(s.fold["m.base_layer.weight"], expected, atol=1e-12)
    assert torch.equal(new[A], start[A]) and torch.equal(new[B], start[B])  # the adapter restarts
    assert torch.allclose(new[H], torch.tensor([2.0]))  # the head is averaged and kept
    # The fold is cumulative over rounds.
    s.aggregate(2, start, {0: Update(c2, 1)})
    second = 2.0 * (c2[B].double() @ c2[A].double() - start[B].double() @ start[A].double())
    assert torch.allclose(s.base_fold()["m.base_layer.weight"].double(), expected + second, atol=1e-6)


def test_refusals():
    with pytest.raises(ConfigError, match="server_opt"):
        build_config({}, ["methods=federa+frlora", "server_opt.name=fedadam"])
    with pytest.raises(ConfigError, match="dp.enabled"):  # the fold is not a mean of the clients' states
        build_config({}, ["methods=federa+frlora", "dp.enabled=true", "dp.noise_multiplier=1.0"])


@pytest.mark.parametrize("init", ["lora", "federa"])
def test_end_to_end_folds_the_average_product_and_restarts(tiny_cfg, tmp_path, init):
    from federa.client import local_update
    from federa.engines.server import ServerRun
    from federa.methods.lora_math import lora_pairs

    method = f"{init}+frlora"
    cfg = tiny_cfg(f"methods={method}", f"lr.{init}=0.05")
    job = prepare_job(cfg)
    server = ServerRun(job, method, RunDir(tmp_path), log=lambda *_: None)
    s = cfg.lora.alpha / cfg.lora.r
    params = dict(server.model.named_parameters())
    module, (a_key, b_key) = next(iter(lora_pairs(server.state).items()))
    w0 = params[module + ".base_layer.weight"].detach().double().clone()
    start = {k: v.clone() for k, v in server.state.items()}
    updates = {cid: local_update(server.model, server.state, job.shard(cid), job.collate, st)
               for cid, st in server.configure(1).items()}
    n = [u.num_examples for u in updates.values()]
    b_mean = sum(u.state[b_key].double() * w for u, w in zip(updates.values(), n)) / sum(n)
    a_mean = sum(u.state[a_key].double() * w for u, w in zip(updates.values(), n)) / sum(n)
    record = server.complete_round(1, updates, started=0.0)
    # The server's model: W_res + s·(B̄Ā − B0A0) as frozen weight, the adapter back at (B0, A0).
    got = params[module + ".base_layer.weight"].detach().double()
    want = w0 + s * (b_mean @ a_mean - start[b_key].double() @ start[a_key].double())
    assert torch.allclose(got, want, atol=1e-5)
    assert torch.equal(server.state[a_key], start[a_key]) and torch.equal(server.state[b_key], start[b_key])
    assert record["lora_agg_error"] > 0  # the fold is the product of the averages
    # The rest of the run: round 2 ships the cumulative fold to each sampled client.
    rd = RunDir(tmp_path / "run")
    assert run_method(job, method, rd, progress=False, log=lambda *_: None)["status"] == "done"
    rounds = [r for r in rd.read_metrics() if r["method"] == method and r["round"] > 0]
    fold_bytes = 4 * sum(p.numel() for k, p in params.items() if k.endswith("base_layer.weight")
                         and k.removesuffix(".base_layer.weight") in lora_pairs(server.state))
    setup = 4 * sum(t.numel() for t in server.setup.values())
    new2 = set(rounds[1]["clients"]) - set(rounds[0]["clients"])
    assert rounds[1]["bytes_down"] - rounds[0]["bytes_down"] == 2 * fold_bytes + setup * (len(new2) - 2)
