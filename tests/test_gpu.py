"""The CUDA path, run for real where a GPU is visible (skipped elsewhere; CI has none).

The CPU suite checks the GPU path's switches (test_precision.py); these tests put the model on the
card and drive whole federated runs, so a tensor left on the wrong device (the server's global state,
an update, an evaluation batch) fails here rather than in a user's first GPU job.
"""

from __future__ import annotations

import math

import pytest
import torch

from federa.engines.inprocess import run_method
from federa.job import prepare_job
from federa.methods.base import trainable_state
from federa.results_dir import RunDir

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _run(tiny_cfg, tmp_path, method: str, device: str, *overrides: str) -> list[dict]:
    job = prepare_job(tiny_cfg(f"methods={method}", f"model.device={device}", *overrides))
    assert job.device.type == device
    rd = RunDir(tmp_path / device)
    result = run_method(job, method, rd, progress=False, log=lambda *_: None)
    assert result["status"] == "done", result
    return rd.read_metrics()


@pytest.mark.parametrize("method", ["fft", "lora", "federa", "lora@fedadam", "lora@scaffold"])
def test_a_run_on_the_gpu_starts_where_the_cpu_does_and_trains(tiny_cfg, tmp_path, method):
    cpu = _run(tiny_cfg, tmp_path, method, "cpu")
    gpu = _run(tiny_cfg, tmp_path, method, "cuda")
    # Round 0 is the untrained model: same predictions on either device (fp32, no TF32 for matmuls).
    assert gpu[0]["accuracy"] == cpu[0]["accuracy"]
    assert gpu[0]["loss"] == pytest.approx(cpu[0]["loss"], abs=1e-4)
    # Dropout draws from the card's own generator, so trained numbers differ; they must be real ones.
    assert [r["round"] for r in gpu] == [r["round"] for r in cpu] == [0, 1, 2]
    assert all(math.isfinite(r["loss"]) for r in gpu)
    assert gpu[-1]["cum_bytes_up"] == cpu[-1]["cum_bytes_up"] > 0  # the same tensors travelled


def test_global_state_lives_on_the_cpu_whatever_the_model_device(tiny_cfg):
    job = prepare_job(tiny_cfg("methods=federa", "model.device=cuda"))
    _, model, _ = job.server_model("federa")
    assert next(model.parameters()).device.type == "cuda"
    state = trainable_state(model)
    assert state and {t.device.type for t in state.values()} == {"cpu"}
