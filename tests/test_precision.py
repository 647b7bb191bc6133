"""The GPU path's switches, checked on the CPU: mixed precision and activation checkpointing."""

from __future__ import annotations

import pytest
import torch

from federa.client import local_update
from federa.config import build_config
from federa.errors import ConfigError
from federa.job import prepare_job
from federa.methods.base import trainable_state


def _update(tiny_cfg, method: str, *overrides: str):
    job = prepare_job(tiny_cfg(f"methods={method}", *overrides))
    _, model, _ = job.server_model(method)
    seen: set[torch.dtype] = set()
    handles = [m.register_forward_hook(lambda _m, _i, out: seen.add(out.dtype))
               for m in model.modules() if isinstance(m, torch.nn.Linear)]
    start = trainable_state(model)
    upd = local_update(model, start, job.shard(0), job.collate, job.train_settings(method), job.device)
    for h in handles:
        h.remove()
    return job, model, start, upd, seen


@pytest.mark.parametrize("precision, dtype", [("bf16", torch.bfloat16), ("fp16", torch.float16)])
def test_mixed_precision_computes_in_half_and_keeps_float32_state(tiny_cfg, precision, dtype):
    _, _, start, upd, seen = _update(tiny_cfg, "lora", f"model.precision={precision}")
    assert dtype in seen  # the Linear layers really ran in half precision
    assert all(t.dtype == torch.float32 for t in upd.state.values())  # what travels stays float32
    assert torch.isfinite(torch.tensor(upd.metrics["train_loss"]))
    moved = sum(float((upd.state[k] - start[k]).abs().sum()) for k in start)
    assert moved > 0


def test_mixed_precision_stays_close_to_fp32(tiny_cfg):
    _, _, _, full, seen32 = _update(tiny_cfg, "lora")
    _, _, _, half, _ = _update(tiny_cfg, "lora", "model.precision=bf16")
    assert seen32 == {torch.float32}
    # Same data order, same seeds: bf16 rounding changes the losses by at most a few percent.
    assert abs(half.metrics["train_loss"] - full.metrics["train_loss"]) < 0.05 * full.metrics["train_loss"]


@pytest.mark.parametrize("method", ["lora", "fft"])
def test_gradient_checkpointing_changes_memory_not_results(tiny_cfg, method):
    _, _, _, plain, _ = _update(tiny_cfg, method)
    _, model, _, ckpt, _ = _update(tiny_cfg, method, "model.gradient_checkpointing=true")
    assert model.is_gradient_checkpointing
    for k in plain.state:  # recomputation replays dropout with the saved random state
        assert torch.allclose(plain.state[k], ckpt.state[k], atol=1e-6), k


def test_unknown_precision_is_one_config_line():
    with pytest.raises(ConfigError, match="model.precision"):
        build_config({}, ["model.precision=fp8"])
