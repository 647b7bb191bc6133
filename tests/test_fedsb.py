"""Fed-SB (federa+fedsb): A and B fixed, an r×r R between them is all that trains and travels."""

from __future__ import annotations

import peft
import pytest
import torch

from federa.config import build_config
from federa.engines.inprocess import run_method
from federa.errors import ConfigError
from federa.job import prepare_job
from federa.methods.base import trainable_state
from federa.methods.latent import LatentA
from federa.results_dir import RunDir
from federa.strategies.fedavg import weighted_average


def test_rule_on_hand_made_tensors_averaging_r_is_exact():
    # The paper's rule (CERT-Lab/fed-sb fed_agg.aggregate_models_fed_sb): the global R is the mean of
    # the clients' R; with A and B shared, B·mean(R)·A is the mean of the clients' B·R_k·A exactly.
    a = torch.tensor([[1.0, 2.0, 0.0], [0.0, 1.0, -1.0]])  # r=2, in=3
    b = torch.tensor([[2.0, 0.0], [1.0, 1.0], [0.0, 3.0], [1.0, -2.0]])  # out=4, r=2
    r1, r2 = torch.tensor([[1.0, 2.0], [0.0, 1.0]]), torch.tensor([[3.0, -1.0], [2.0, 0.0]])
    latent = LatentA(torch.nn.Linear(3, 2, bias=False))
    with torch.no_grad():
        latent.weight.copy_(a)
    assert torch.equal(latent.lora_R.weight, torch.eye(2))  # starts at the identity: the model is unchanged
    with torch.no_grad():
        latent.lora_R.weight.copy_(r1)
    x = torch.tensor([[1.0, -1.0, 2.0]])
    assert torch.allclose(latent(x), x @ (r1 @ a).T)  # x ↦ R·(A·x)
    key = "m.lora_A.default.lora_R.weight"
    mean = weighted_average([{key: r1}, {key: r2}], [3, 1])[key]  # FedAvg's example weights 3:1
    assert torch.allclose(mean, torch.tensor([[1.5, 1.25], [0.5, 0.75]]))
    exact = (3 * b @ r1 @ a + b @ r2 @ a) / 4
    assert torch.allclose(b @ mean @ a, exact, atol=1e-6)


def test_lora_start_is_refused_with_the_reason():
    assert build_config({}, ["methods=federa+fedsb"]).methods == ["federa+fedsb"]
    with pytest.raises(ConfigError, match="B starts at 0.*use federa\\+fedsb"):
        build_config({}, ["methods=lora+fedsb"])


def _logits(model, job):
    batch = job.collate([job.test[i] for i in range(4)])
    model.eval()
    with torch.no_grad():
        return model(**batch).logits


def test_trains_and_sends_only_r_and_the_head_and_saves_a_plain_adapter(tiny_cfg, tmp_path):
    cfg = tiny_cfg("methods=federa+fedsb", "lr.federa=0.05")
    job = prepare_job(cfg)
    _, model, _ = job.server_model("federa+fedsb")
    _, plain, _ = job.server_model("federa")
    assert torch.allclose(_logits(model, job), _logits(plain, job), atol=1e-6)  # R = I: FeDeRA's start
    sent = trainable_state(model)
    rs = {k: v for k, v in sent.items() if "lora_R" in k}
    head = {k: v for k, v in sent.items() if "modules_to_save" in k}
    assert rs and sent.keys() == rs.keys() | head.keys()  # A and B neither train nor travel
    assert all(v.shape == (cfg.lora.r, cfg.lora.r) for v in rs.values())
    per_client = 4 * (len(rs) * cfg.lora.r ** 2 + sum(v.numel() for v in head.values()))
    rd = RunDir(tmp_path)
    result = run_method(job, "federa+fedsb", rd, progress=False, log=lambda *_: None)
    assert result["status"] == "done" and result["bytes_per_client_round"] == per_client
    rounds = [r for r in rd.read_metrics() if r["method"] == "federa+fedsb" and r["round"] > 0]
    assert [r["client_bytes_up"] for r in rounds] == [[per_client] * 2] * 2  # r² per module, and the head
    assert all(r["lora_agg_error"] is None for r in rounds)  # no (A, B) pair travels: exact by construction
    from federa.checkpoint import load_checkpoint

    state = load_checkpoint(rd.checkpoint("federa+fedsb"))[0]["state"]
    assert any(not torch.equal(v, torch.eye(cfg.lora.r)) for k, v in state.items() if "lora_R" in k)  # R trained
    # The saved adapter is a plain peft LoRA (R merged into A) that reproduces the trained model.
    final = job.base_model()
    reloaded = peft.PeftModel.from_pretrained(final, result["final_model"])
    _, trained, _ = job.server_model("federa+fedsb")
    with torch.no_grad():
        for name, p in trained.named_parameters():
            if name in state:
                p.copy_(state[name])
    assert (_logits(reloaded, job) - _logits(trained, job)).abs().max().item() < 1e-4
