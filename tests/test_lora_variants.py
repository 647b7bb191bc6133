"""Federated-LoRA variants (``<init>+<variant>``) and the aggregation error of naive LoRA averaging."""

from __future__ import annotations

import math

import pytest
import torch

from federa.config import build_config
from federa.engines.inprocess import run_method
from federa.errors import ConfigError
from federa.job import prepare_job
from federa.methods.base import trainable_state
from federa.results_dir import RunDir
from federa.methods.lora_math import aggregation_error
from federa.strategies.rolora import RoLoRA
from federa.types import TrainSettings


def _pair(b, a):
    return {"m.lora_A.default.weight": torch.tensor(a, dtype=torch.float32),
            "m.lora_B.default.weight": torch.tensor(b, dtype=torch.float32)}


def test_aggregation_error_on_hand_made_factors():
    # Two clients, rank 1, 1x1 matrices: B·A = 1·2 = 2 and 3·4 = 12 → avg(BA) = 7;
    # avg(B)·avg(A) = 2·3 = 6 → error |6 − 7| / 7.
    s1, s2 = _pair([[1.0]], [[2.0]]), _pair([[3.0]], [[4.0]])
    assert aggregation_error([s1, s2], [1, 1]) == pytest.approx(1 / 7, abs=1e-12)
    # Weighted as FedAvg: weights 3:1 → avg(BA) = (3·2 + 12)/4 = 4.5, avg(B)avg(A) = 1.5·2.5 = 3.75.
    assert aggregation_error([s1, s2], [3, 1]) == pytest.approx(0.75 / 4.5, abs=1e-12)
    # One factor shared (FFA: the same A everywhere) → exact.
    assert aggregation_error([_pair([[1.0]], [[2.0]]), _pair([[3.0]], [[2.0]])], [1, 1]) == 0.0
    assert aggregation_error([{"w": torch.ones(2)}], [1]) is None  # not LoRA (FFT)


def test_variant_names_are_validated():
    assert build_config({}, ["methods=federa+ffa,lora+ffa,lora"]).methods == ["federa+ffa", "lora+ffa", "lora"]
    with pytest.raises(ConfigError, match="variants apply to lora and federa only"):
        build_config({}, ["methods=fft+ffa"])
    with pytest.raises(ConfigError, match="unknown federated-LoRA variant 'nope'"):
        build_config({}, ["methods=federa+nope"])
    cfg = build_config({}, ["methods=federa+ffa", "lr.federa=0.003"])
    assert cfg.lr_of("federa+ffa") == 0.003  # a variant trains at its initialisation's rate unless set


@pytest.mark.parametrize("init", ["lora", "federa"])
def test_ffa_trains_and_sends_only_b_and_aggregates_exactly(tiny_cfg, tmp_path, init):
    cfg = tiny_cfg(f"methods={init},{init}+ffa")
    job = prepare_job(cfg)
    _, full, _ = job.server_model(init)
    _, ffa, _ = job.server_model(f"{init}+ffa")
    sent = trainable_state(ffa)
    assert not any("lora_A" in k for k in sent) and any("lora_B" in k for k in sent)
    a_full = sum(v.numel() for k, v in trainable_state(full).items() if "lora_A" in k)
    assert sum(v.numel() * 4 for v in trainable_state(full).values()) - sum(v.numel() * 4 for v in sent.values()) \
        == 4 * a_full  # the upload shrinks by exactly A's bytes
    rd = RunDir(tmp_path)
    for m in (init, f"{init}+ffa"):
        assert run_method(job, m, rd, progress=False, log=lambda *_: None)["status"] == "done"
    rec = {m: [r for r in rd.read_metrics() if r["method"] == m and r["round"] > 0] for m in (init, f"{init}+ffa")}
    # A is shared and fixed: averaging B alone is exact. (No pair in the sent state: reported as None.)
    assert all(r["lora_agg_error"] is None for r in rec[f"{init}+ffa"])
    # Both factors train on every client: the naive average misses a measurable part.
    assert all(r["lora_agg_error"] > 1e-6 for r in rec[init]), [r["lora_agg_error"] for r in rec[init]]


def test_rolora_alternates_the_trained_factor(tiny_cfg, tmp_path):
    s = RoLoRA(clients_per_round=2, seed=0)
    base = TrainSettings(lr=1e-3, batch_size=4, seed=0, local_steps=1)
    assert {v.frozen for v in s.configure_round(1, range(4), base).values()} == {"lora_A"}
    assert {v.frozen for v in s.configure_round(2, range(4), base).values()} == {"lora_B"}
    cfg = tiny_cfg("methods=federa+rolora", "rounds=2")
    job = prepare_job(cfg)
    rd = RunDir(tmp_path)
    assert run_method(job, "federa+rolora", rd, progress=False, log=lambda *_: None)["status"] == "done"
    from federa.checkpoint import load_checkpoint

    # Round by round: after round 1 only B moved, after round 2 only A moved (relative to round 1).
    _, model, _ = job.server_model("federa+rolora")
    start = trainable_state(model)
    final = load_checkpoint(rd.checkpoint("federa+rolora"))[0]["state"]
    moved = {k for k in start if not torch.equal(start[k], final[k])}
    assert any("lora_A" in k for k in moved) and any("lora_B" in k for k in moved)
    errors = [r["lora_agg_error"] for r in rd.read_metrics() if r["round"] > 0]
    assert all(e is not None and e < 1e-6 for e in errors)  # one factor fixed per round: exact up to float32


def test_report_plots_the_aggregation_error(tiny_cfg, tmp_path):
    from federa.pending import run_info, write_report

    cfg = tiny_cfg("methods=federa", "rounds=2")
    job = prepare_job(cfg)
    rd = RunDir(tmp_path)
    run_method(job, "federa", rd, progress=False, log=lambda *_: None)
    summary = write_report(rd, cfg, run_info(job))
    err = summary["methods"]["federa"]["mean_lora_agg_error"]
    assert err is not None and err > 0 and math.isfinite(err)
    assert (rd.root / "lora_agg_error_vs_round.png").stat().st_size > 5_000


def test_fedex_makes_the_global_model_the_average_of_the_clients(tiny_cfg, tmp_path):
    """After aggregation, frozen + fold + s·avg(B)·avg(A) equals the mean of the clients' W + s·Bᵢ·Aᵢ."""
    from federa.client import local_update
    from federa.engines.server import ServerRun
    from federa.methods.lora_math import lora_pairs

    cfg = tiny_cfg("methods=federa+fedex", "rounds=2", "lr.federa=0.05")
    job = prepare_job(cfg)
    server = ServerRun(job, "federa+fedex", RunDir(tmp_path), log=lambda *_: None)
    s = cfg.lora.alpha / cfg.lora.r
    params = dict(server.model.named_parameters())
    module, (a_key, b_key) = next(iter(lora_pairs(server.state).items()))
    base_name = module + ".base_layer.weight"
    w0 = params[base_name].detach().double().clone()
    updates = {cid: local_update(server.model, server.state, job.shard(cid), job.collate, st)
               for cid, st in server.configure(1).items()}
    n = {c: u.num_examples for c, u in updates.items()}
    clients = [w0 + s * u.state[b_key].double() @ u.state[a_key].double() for u in updates.values()]
    expected = sum(w * n[c] for w, c in zip(clients, updates)) / sum(n.values())
    record = server.complete_round(1, updates, started=0.0)
    after = params[base_name].detach().double() + s * server.state[b_key].double() @ server.state[a_key].double()
    assert torch.allclose(after, expected, atol=1e-5)  # float32 storage of W and of the factors
    naive = w0 + s * server.state[b_key].double() @ server.state[a_key].double()
    assert (naive - expected).abs().max() > 10 * (after - expected).abs().max()  # the fold mattered
    assert record["lora_agg_error"] > 0  # what the fold repaired
    fold_bytes = sum(t.numel() * 4 for t in server.strategy.frozen.base_fold().values())
    assert fold_bytes > 0
    # Resume: a fresh server rebuilds the model with the checkpointed fold applied.
    again = ServerRun(job, "federa+fedex", RunDir(tmp_path), log=lambda *_: None)
    assert again.round == 1
    assert torch.equal(dict(again.model.named_parameters())[base_name], params[base_name])


def test_fedex_is_refused_where_it_cannot_run():
    # On Flower it runs (its fold travels: tests/test_flower_client_hook.py); not under SecAgg+ or DP,
    # which need a mean of the updates.
    build_config({}, ["methods=lora+fedex", "engine=flower"])
    with pytest.raises(ConfigError, match="secure_aggregation needs a strategy that averages"):
        build_config({}, ["methods=lora+fedex", "engine=flower", "secure_aggregation=true"])


def test_fedex_final_model_carries_its_fold(tiny_cfg, tmp_path):
    from safetensors.torch import load_file

    from federa.engines.server import ServerRun

    cfg = tiny_cfg("methods=lora+fedex", "rounds=2")
    job = prepare_job(cfg)
    rd = RunDir(tmp_path)
    assert run_method(job, "lora+fedex", rd, progress=False, log=lambda *_: None)["status"] == "done"
    fold = load_file(str(rd.final_model("lora+fedex") / "base_fold.safetensors"))
    server = ServerRun(job, "lora+fedex", rd, log=lambda *_: None)
    assert fold.keys() == server.strategy.frozen.base_fold().keys() and all(t.abs().sum() > 0 for t in fold.values())
    # The function base_fold.json names exists and rebuilds the trained frozen weights on a fresh model.
    import importlib
    import json
    import re

    how = json.loads((rd.final_model("lora+fedex") / "base_fold.json").read_text())["how"]
    module, _, name = re.search(r"(federa(?:\.\w+)+)\(model, fold, \{\}\)", how).group(1).rpartition(".")
    apply = getattr(importlib.import_module(module), name)
    fresh = job.server_model("lora+fedex")[1]
    before = {n: p.detach().clone() for n, p in fresh.named_parameters() if n in fold}
    apply(fresh, fold, {})
    for n, p in fresh.named_parameters():
        if n in fold:
            assert torch.equal(p, before[n] + fold[n].to(p.dtype)), n


def test_held_factor_gets_no_gradient_and_trains_normally_next_round(tiny_cfg):
    """A factor held fixed in one round leaves no stale gradient for the round in which it trains."""
    from dataclasses import replace

    from federa.client import local_update

    job = prepare_job(tiny_cfg("methods=federa+rolora"))
    _, model, _ = job.server_model("federa+rolora")
    start = trainable_state(model)
    held_b = local_update(model, start, job.shard(0), job.collate,
                          replace(job.train_settings("federa+rolora"), frozen="lora_A"))
    a_params = [p for n, p in model.named_parameters() if "lora_A" in n]
    assert all(p.grad is None and p.requires_grad for p in a_params)
    assert all(torch.equal(held_b.state[k], start[k]) for k in start if "lora_A" in k)
    assert any(not torch.equal(held_b.state[k], start[k]) for k in start if "lora_B" in k)
