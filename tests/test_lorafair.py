"""LoRA-FAIR (…+lorafair): FedAvg of A and B, then a server-side residual ΔB towards avg(B·A)."""

from __future__ import annotations

import pytest
import torch

from federa.config import build_config
from federa.engines.inprocess import run_method
from federa.errors import ConfigError
from federa.job import prepare_job
from federa.results_dir import RunDir
from federa.methods.lora_math import aggregation_error
from federa.strategies.lorafair import LoraFair, fit_residual, objective
from federa.types import Update

A, B, H = "m.lora_A.default.weight", "m.lora_B.default.weight", "head.modules_to_save.default.weight"


def test_objective_is_the_papers_eq_8_on_hand_made_tensors():
    # 1 − cos(ΔW, (B̄ + ΔB)·Ā) + λ‖ΔB‖_F: B̄ = [1, 0]ᵀ, Ā = [1, 0], ΔB = [0, 1]ᵀ → (B̄+ΔB)Ā = [[1, 0], [1, 0]].
    b, a, d = torch.tensor([[1.0], [0.0]]).double(), torch.tensor([[1.0, 0.0]]).double(), torch.tensor([[0.0], [1.0]])
    orthogonal = torch.tensor([[0.0, 0.0], [0.0, 1.0]]).double()
    assert float(objective(d.double(), b, a, orthogonal, 0.5)) == pytest.approx(1 - 0 + 0.5 * 1, abs=1e-12)
    aligned = torch.tensor([[2.0, 0.0], [2.0, 0.0]]).double()  # same direction, twice the length: cos = 1
    assert float(objective(d.double(), b, a, aligned, 0.01)) == pytest.approx(0.01, abs=1e-12)


def _clients(seed: int):
    g = torch.Generator().manual_seed(seed)
    bs = [torch.randn(6, 2, generator=g, dtype=torch.float64) for _ in range(3)]
    as_ = [torch.randn(2, 5, generator=g, dtype=torch.float64) for _ in range(3)]
    return bs, as_


def test_the_fit_reaches_the_minimum_of_the_objective():
    bs, as_ = _clients(0)
    w = [3.0, 1.0, 2.0]
    b_mean = sum(x * wi for x, wi in zip(bs, w)) / 6
    a_mean = sum(x * wi for x, wi in zip(as_, w)) / 6
    target = sum(b @ a * wi for b, a, wi in zip(bs, as_, w)) / 6
    at_zero = float(objective(torch.zeros(6, 2, dtype=torch.float64), b_mean, a_mean, target, 0.01))
    delta = fit_residual(b_mean, a_mean, target, 0.01, 200, 0.02)
    fitted = float(objective(delta, b_mean, a_mean, target, 0.01))
    long = float(objective(fit_residual(b_mean, a_mean, target, 0.01, 3000, 0.005), b_mean, a_mean, target, 0.01))
    assert fitted < 0.5 * at_zero  # the correction removes most of the misalignment
    assert fitted == pytest.approx(long, abs=1e-4)  # and is the minimum a much longer descent finds
    # Larger λ keeps B̄' closer to B̄ (the paper's initialisation-stability term).
    strong = fit_residual(b_mean, a_mean, target, 1.0, 200, 0.02)
    assert torch.linalg.norm(strong) < torch.linalg.norm(delta)


def test_aggregate_on_hand_made_states():
    bs, as_ = _clients(1)
    states = [{A: a.float(), B: b.float(), H: torch.tensor([float(i)])} for i, (b, a) in enumerate(zip(bs, as_))]
    s = LoraFair(clients_per_round=3, seed=0)
    new = s.aggregate(1, states[0], {i: Update(st, n) for i, (st, n) in enumerate(zip(states, [1, 2, 1]))})
    a_mean = (as_[0] + 2 * as_[1] + as_[2]) / 4
    assert torch.allclose(new[A].double(), a_mean, atol=1e-6)  # Ā: FedAvg, unchanged by the correction
    assert torch.allclose(new[H], torch.tensor([1.0]))  # the head: FedAvg
    naive = aggregation_error(states, [1, 2, 1])
    assert s.round_metrics(1)["lorafair_agg_error"] < naive  # (B̄ + ΔB)·Ā is closer to avg(B·A) than B̄·Ā
    # Clients that share A: B̄·Ā is avg(B·A) already, so the fit leaves B̄ (up to the descent's jitter).
    shared = [{A: as_[0].float(), B: b.float()} for b in bs]
    exact = s.aggregate(2, shared[0], {i: Update(st, 1) for i, st in enumerate(shared)})
    assert torch.allclose(exact[B].double(), sum(bs) / 3, atol=1e-2 * float((sum(bs) / 3).abs().max()))


def test_end_to_end_and_refusals(tiny_cfg, tmp_path):
    with pytest.raises(ConfigError, match="dp.enabled"):
        build_config({}, ["methods=lora+lorafair", "dp.enabled=true", "dp.noise_multiplier=1.0"])
    cfg = tiny_cfg("methods=lora,lora+lorafair", "lr.lora=0.05", "rounds=2")
    job = prepare_job(cfg)
    rd = RunDir(tmp_path)
    for m in ("lora", "lora+lorafair"):
        assert run_method(job, m, rd, progress=False, log=lambda *_: None)["status"] == "done"
    rows = {m: [r for r in rd.read_metrics() if r["method"] == m and r["round"] > 0] for m in ("lora", "lora+lorafair")}
    assert all(r["lorafair_agg_error"] < r["lora_agg_error"] for r in rows["lora+lorafair"])
    # What travels is LoRA's: the same factors and head, both ways.
    assert [r["client_bytes_up"] for r in rows["lora"]] == [r["client_bytes_up"] for r in rows["lora+lorafair"]]
