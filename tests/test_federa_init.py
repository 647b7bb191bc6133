"""FeDeRA initialisation: exact start, SVD factors as specified, identical residuals everywhere."""

import peft
import pytest
import torch

from federa.client import local_update
from federa.types import TrainSettings
from federa.job import prepare_job
from federa.methods.base import trainable_state
from federa.methods.federa import residual_weight, svd_factors


@pytest.fixture(scope="module")
def job(tiny_model_dir, small_csv):
    from federa.config import build_config

    cfg = build_config({}, [f"model.path={tiny_model_dir}", f"data.path={small_csv}", "num_clients=4",
                            "clients_per_round=2", "max_length=32", "lora.r=4", "lora.alpha=8",
                            "lora.target_modules=query,value,dense"])
    return prepare_job(cfg)


def _logits(model, job, n=16):
    batch = job.collate([job.test[i] for i in range(n)])
    model.eval()
    with torch.no_grad():
        return model(**{k: v for k, v in batch.items() if k != "labels"}).logits


def test_initial_logits_equal_the_base_model(job):
    base = job.base_model()
    _, model, _ = job.server_model("federa")
    diff = (_logits(model, job) - _logits(base, job)).abs().max().item()
    assert diff < 1e-5, diff


def test_factors_are_the_scaled_truncated_svd():
    torch.manual_seed(0)
    w = torch.randn(48, 32)
    r, alpha = 6, 12.0
    scaling = alpha / r
    a, b = svd_factors(w, r, scaling)
    assert a.shape == (r, 32) and b.shape == (48, r)
    u, s, vh = torch.linalg.svd(w.double(), full_matrices=False)
    truncated = (u[:, :r] * s[:r]) @ vh[:r]
    assert torch.allclose(scaling * (b.double() @ a.double()), truncated, atol=1e-5)
    # B = U_r·sqrt(S_r/s), A = sqrt(S_r/s)·V_rᵀ: equal column/row norms, both sqrt(S_r/s).
    assert torch.allclose(b.double().norm(dim=0), (s[:r] / scaling).sqrt(), atol=1e-5)
    assert torch.allclose(a.double().norm(dim=1), (s[:r] / scaling).sqrt(), atol=1e-5)
    # The residual keeps exactly the discarded spectrum.
    res = residual_weight(w, a, b, scaling)
    assert torch.allclose(torch.linalg.svdvals(res.double())[: 32 - r], s[r:], atol=1e-4)


def test_residual_is_bit_identical_across_thread_counts():
    torch.manual_seed(1)
    w = torch.randn(384, 384)
    a, b = svd_factors(w, 8, 2.0)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = residual_weight(w, a, b, 2.0)
        torch.set_num_threads(2)
        two = residual_weight(w, a, b, 2.0)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(one, two)


def test_clients_rebuild_the_servers_base_bit_for_bit(job):
    _, server, setup = job.server_model("federa")
    client = job.client_model("federa", setup)
    s, c = dict(server.named_parameters()), dict(client.named_parameters())
    assert s.keys() == c.keys()
    for name in s:
        assert torch.equal(s[name], c[name]), name
    n_targets = sum(1 for k in setup if k.endswith("lora_A"))
    # 2 layers × (query, value, and the three `dense` Linears) + the pooler's dense.
    assert n_targets == 2 * 5 + 1


def test_saved_adapter_reloads_on_the_original_model(job, tmp_path):
    method, model, setup = job.server_model("federa")
    settings = TrainSettings(lr=5e-3, batch_size=8, seed=0, local_steps=3)
    upd = local_update(model, trainable_state(model), job.shard(0), job.collate, settings)
    assert upd.metrics["steps"] == 3
    method.save(model, tmp_path / "final", setup)
    reloaded = peft.PeftModel.from_pretrained(job.base_model(), str(tmp_path / "final"))
    diff = (_logits(reloaded, job) - _logits(model, job)).abs().max().item()
    assert diff < 1e-4, diff
    assert (tmp_path / "final" / "federa_init.safetensors").is_file()
