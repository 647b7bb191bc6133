"""RAVAN (…+ravan): frozen B_i, A_i; the heads H_i and scales s_i train; s_i·H_i averaged exactly."""

from __future__ import annotations

import peft
import pytest
import torch

from federa.checkpoint import load_checkpoint
from federa.engines.inprocess import run_method
from federa.job import prepare_job
from federa.methods.base import trainable_state
from federa.methods.ravan_layers import HeadsA
from federa.results_dir import RunDir
from federa.strategies.ravan import Ravan
from federa.types import Update


def test_rule_on_hand_made_tensors_matches_the_reference():
    # FedLLM-Factory alg/ravan.py Server.aggregate: H_i ← Σ_k n_k/n · s_ik·H_ik, s_i ← 1.
    h = "m.lora_A.default.lora_H.0"
    s = h.replace("lora_H", "lora_s")
    c1 = {h: torch.tensor([[1.0, 2.0], [0.0, 1.0]]), s: torch.tensor([2.0])}
    c2 = {h: torch.tensor([[3.0, 0.0], [1.0, 1.0]]), s: torch.tensor([0.5])}
    new = Ravan(clients_per_round=2, seed=0, heads=1).aggregate(1, c1, {0: Update(c1, 1), 1: Update(c2, 3)})
    assert torch.allclose(new[h], (2.0 * c1[h] + 3 * 0.5 * c2[h]) / 4)
    assert torch.equal(new[s], torch.ones(1))
    # Exact: with B, A shared, the averaged head gives the mean of the clients' Σ s·B·H·A.
    b, a = torch.randn(5, 2, dtype=torch.float64), torch.randn(2, 3, dtype=torch.float64)
    mean_update = (b @ (2.0 * c1[h].double()) @ a + 3 * b @ (0.5 * c2[h].double()) @ a) / 4
    assert torch.allclose(b @ new[h].double() @ a, mean_update, atol=1e-6)
    # The module: x ↦ diag(s_1·H_1, s_2·H_2)·(A·x).
    layer = HeadsA(torch.nn.Linear(3, 4, bias=False), heads=2, identity=False)
    with torch.no_grad():
        layer.lora_H[0].copy_(torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
        layer.lora_H[1].copy_(torch.eye(2))
        layer.lora_s[1].fill_(3.0)
    x = torch.randn(2, 3)
    blocks = torch.block_diag(torch.tensor([[1.0, 2.0], [3.0, 4.0]]), 3 * torch.eye(2))
    assert torch.allclose(layer(x), x @ (blocks @ layer.weight).T, atol=1e-6)


def _logits(model, job):
    batch = job.collate([job.test[i] for i in range(4)])
    model.eval()
    with torch.no_grad():
        return model(**batch).logits


@pytest.mark.parametrize("init", ["lora", "federa"])
def test_trains_heads_only_starts_at_the_pretrained_model_and_saves_a_plain_adapter(tiny_cfg, tmp_path, init):
    method = f"{init}+ravan"
    cfg = tiny_cfg(f"methods={method}", "ravan.heads=2", f"lr.{init}=0.05")
    job = prepare_job(cfg)
    _, model, _ = job.server_model(method)
    _, plain, _ = job.server_model(init)
    assert torch.allclose(_logits(model, job), _logits(plain, job), atol=1e-5)  # the start changes nothing
    sent = trainable_state(model)
    heads = {k: v for k, v in sent.items() if "lora_H" in k}
    scales = {k: v for k, v in sent.items() if "lora_s" in k}
    head = {k: v for k, v in sent.items() if "modules_to_save" in k}
    assert sent.keys() == heads.keys() | scales.keys() | head.keys()
    assert all(v.shape == (2, 2) for v in heads.values()) and len(scales) == len(heads)
    per_client = 4 * sum(v.numel() for v in sent.values())
    rd = RunDir(tmp_path)
    result = run_method(job, method, rd, progress=False, log=lambda *_: None)
    assert result["status"] == "done"
    rounds = [r for r in rd.read_metrics() if r["method"] == method and r["round"] > 0]
    assert all(r["client_bytes_up"] == [per_client] * 2 and r["lora_agg_error"] is None for r in rounds)
    state = load_checkpoint(rd.checkpoint(method))[0]["state"]
    assert all(torch.equal(v, torch.ones(1)) for k, v in state.items() if "lora_s" in k)  # folded into H
    # The saved adapter (heads merged into A) reproduces the trained model.
    _, trained, _ = job.server_model(method)
    with torch.no_grad():
        for name, p in trained.named_parameters():
            if name in state:
                p.copy_(state[name])
    reloaded = peft.PeftModel.from_pretrained(job.base_model(), result["final_model"])
    assert (_logits(reloaded, job) - _logits(trained, job)).abs().max().item() < 1e-4
