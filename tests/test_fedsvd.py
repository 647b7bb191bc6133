"""FedSVD (…+fedsvd): B alone travels up; the server refactors avg(B)·A by SVD into an orthonormal A."""

from __future__ import annotations

import pytest
import torch

from federa.config import build_config
from federa.engines.inprocess import run_method
from federa.errors import ConfigError
from federa.job import prepare_job
from federa.methods.base import trainable_state
from federa.results_dir import RunDir
from federa.strategies.fedsvd import FedSVD
from federa.strategies.per_method import method_stack
from federa.types import Update

A_KEY, B_KEY = "m.lora_A.default.weight", "m.lora_B.default.weight"
A0 = torch.tensor([[1.0, 0.0, 2.0], [0.0, 1.0, 1.0]])  # r=2, in=3
B1 = torch.tensor([[1.0, 2.0], [0.0, 1.0], [3.0, 0.0], [1.0, 1.0]])  # out=4
B2 = torch.tensor([[2.0, -1.0], [1.0, 0.0], [0.0, 1.0], [-1.0, 2.0]])


def _reference(b: torch.Tensor, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    # The authors' misc/utils.reinit_lora, rewritten: V, S, Uh = svd(B @ A); A = Uh[:r]; B = V[:, :r] @ diag(S[:r]).
    v, s, uh = torch.linalg.svd(b.double() @ a.double(), full_matrices=False)
    r = a.shape[0]
    return v[:, :r] @ torch.diag(s[:r]), uh[:r]


def test_rule_on_hand_made_tensors_matches_the_authors_code():
    s = FedSVD(clients_per_round=2, seed=0)
    s.start_frozen({A_KEY: A0})
    updates = {0: Update({B_KEY: B1}, 3), 1: Update({B_KEY: B2}, 1)}
    mean_b = s.aggregate(1, {B_KEY: torch.zeros(4, 2)}, updates)[B_KEY]
    assert torch.allclose(mean_b, (3 * B1 + B2) / 4)  # FedAvg of B: exact, A is shared
    new = s.reparametrise(1, {B_KEY: mean_b})
    a_new = A0 + s.base_fold()[A_KEY]  # what every client holds after applying the shipped change
    b_ref, a_ref = _reference(mean_b, A0)
    assert torch.allclose(new[B_KEY].double(), b_ref, atol=1e-6)
    assert torch.allclose(a_new.double(), a_ref, atol=1e-6)
    assert torch.allclose(a_new @ a_new.T, torch.eye(2), atol=1e-6)  # orthonormal rows
    assert torch.allclose(new[B_KEY] @ a_new, mean_b @ A0, atol=1e-5)  # the model is unchanged
    assert torch.equal(s.current_a(A_KEY), a_new)
    # A second round refactors from the current A, not the built one.
    again = s.reparametrise(2, {B_KEY: B1})
    assert torch.allclose(again[B_KEY] @ s.current_a(A_KEY), B1 @ a_new, atol=1e-5)


def test_under_dp_the_svd_runs_on_the_noised_mean():
    cfg = build_config({}, ["methods=lora+fedsvd", "dp.enabled=true", "dp.noise_multiplier=1.0",
                            "clients_per_round=2", "num_clients=4"])
    stack = method_stack(cfg, "lora+fedsvd")
    stack.frozen.start_frozen({A_KEY: A0})
    g = {B_KEY: torch.zeros(4, 2)}
    updates = {0: Update({B_KEY: 0.1 * B1}, 3), 1: Update({B_KEY: 0.1 * B2}, 1)}
    noised = stack.aggregate_round(1, g, updates)[B_KEY]
    clean = (0.1 * B1 + 0.1 * B2) / 2  # DP-FedAvg: weight 1 each, deltas under the clip norm
    assert not torch.allclose(noised, clean, atol=1e-3)
    new = stack.frozen.reparametrise(1, {B_KEY: noised})
    a_new = stack.layers()[-1].current_a(A_KEY)
    assert torch.allclose(new[B_KEY] @ a_new, noised @ A0, atol=1e-5)  # post-processing of what DP released
    with pytest.raises(ConfigError, match="server_opt"):
        build_config({}, ["methods=lora+fedsvd", "server_opt.name=fedadam"])


@pytest.mark.parametrize("init", ["lora", "federa"])
def test_end_to_end_with_dp_counts_b_up_and_the_new_a_down(tiny_cfg, tmp_path, init):
    method = f"{init}+fedsvd"
    cfg = tiny_cfg(f"methods={method}", "rounds=3", "dp.enabled=true", "dp.noise_multiplier=0.3",
                   "dp.clip_norm=5.0", f"lr.{init}=0.02")
    job = prepare_job(cfg)
    _, model, _ = job.server_model(method)
    sent = trainable_state(model)
    assert not any("lora_A" in k for k in sent) and any("lora_B" in k for k in sent)
    up = 4 * sum(v.numel() for v in sent.values())
    a_bytes = 4 * sum(p.numel() for n, p in model.named_parameters() if "lora_A" in n)
    rd = RunDir(tmp_path)
    assert run_method(job, method, rd, progress=False, log=lambda *_: None)["status"] == "done"
    rounds = [r for r in rd.read_metrics() if r["method"] == method and r["round"] > 0]
    assert all(r["client_bytes_up"] == [up, up] for r in rounds)  # B and the head, nothing else
    assert all(r["lora_agg_error"] is None and r["epsilon"] > 0 for r in rounds)
    # Round 1's clients hold the built A; from round 2 on, each also receives the refactored A.
    setup = sum(t.numel() * 4 for t in job.server_model(method)[2].values())  # FeDeRA's factors; LoRA: none
    contacted: set[int] = set()
    for r in rounds:
        newly = set(r["clients"]) - contacted
        contacted |= newly
        a_down = 2 * a_bytes if r["round"] > 1 else 0
        assert r["bytes_down"] == 2 * up + a_down + setup * len(newly), r["round"]
    # The server's A after the run: orthonormal rows, as every client will rebuild it.
    from federa.engines.server import ServerRun

    server = ServerRun(job, method, rd, log=lambda *_: None)  # resumes after the last round
    assert server.round == 3
    for n, p in server.model.named_parameters():
        if "lora_A" in n:
            assert torch.allclose(p @ p.T, torch.eye(cfg.lora.r), atol=1e-4), n


@pytest.mark.parametrize("method", ["lora+fedsvd", "federa+frlora"])
def test_resume_is_exact(tiny_cfg, tmp_path, method):
    """A resumed run (a fresh model, the checkpointed A change or fold applied once) equals the
    uninterrupted one bit for bit."""
    from federa.checkpoint import load_checkpoint

    over = (f"methods={method}", "lr.lora=0.05", "lr.federa=0.05")
    whole, split = RunDir(tmp_path / "whole"), RunDir(tmp_path / "split")
    assert run_method(prepare_job(tiny_cfg(*over, "rounds=3")), method, whole, progress=False,
                      log=lambda *_: None)["status"] == "done"
    run_method(prepare_job(tiny_cfg(*over, "rounds=2")), method, split, progress=False, log=lambda *_: None)
    assert run_method(prepare_job(tiny_cfg(*over, "rounds=3")), method, split, progress=False,
                      log=lambda *_: None)["status"] == "done"
    a, b = (load_checkpoint(d.checkpoint(method))[0] for d in (whole, split))
    assert a["round"] == b["round"] == 3
    assert all(torch.equal(a["state"][k], b["state"][k]) for k in a["state"])
    def core(state: dict) -> dict:  # the strategy's own state inside its wrappers' ({"inner": ...})
        return core(state["inner"]) if "inner" in state else state

    folds = [core(p["strategy"]).get("a_change") or core(p["strategy"])["fold"] for p in (a, b)]
    assert folds[0].keys() == folds[1].keys() and folds[0]
    assert all(torch.equal(folds[0][k], folds[1][k]) for k in folds[0])
