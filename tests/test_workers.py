"""``inprocess.workers: 2`` trains a round's clients in two spawned processes and gives the same
numbers, bit for bit, as the sequential engine: every metric and the final global state."""

from __future__ import annotations

import pytest
import torch

from federa.checkpoint import load_checkpoint
from federa.engines.workers import worker_threads
from federa.experiment import run_experiment
from federa.results_dir import RunDir, open_run_dir


def _run(make_cfg, out, overrides: list[str]) -> tuple[list[dict], dict[str, dict[str, torch.Tensor]]]:
    cfg = make_cfg(*overrides)
    run_experiment(cfg, open_run_dir(cfg, out, resume=False), progress=False, log=lambda *_: None)
    run_dir = RunDir(out)
    metrics = [{k: v for k, v in r.items() if not k.endswith("_s")} for r in run_dir.read_metrics()]
    states = {m: load_checkpoint(run_dir.checkpoint(m))[0]["state"] for m in cfg.methods}
    return metrics, states


@pytest.mark.parametrize("overrides", [
    ["methods=fft,federa"],
    # SCAFFOLD's client memory travels to the workers in its rule and comes back in the reply;
    # FedEx-LoRA moves frozen weights, which each worker's own model must follow.
    pytest.param(["methods=lora,federa+fedex", "strategy=scaffold", "clients_per_round=3", "rounds=3"],
                 marks=pytest.mark.slow),
], ids=["fedavg", "scaffold-fedex"])
def test_two_workers_match_the_sequential_engine_bit_for_bit(overrides, tiny_cfg, tmp_path):
    seq_metrics, seq_states = _run(tiny_cfg, tmp_path / "seq", overrides)
    par_metrics, par_states = _run(tiny_cfg, tmp_path / "par", [*overrides, "inprocess.workers=2"])
    assert par_metrics == seq_metrics
    assert any(r["round"] > 0 and r["train_loss"] > 0 for r in seq_metrics)  # clients really trained
    for method, state in seq_states.items():
        assert state.keys() == par_states[method].keys()
        assert all(torch.equal(state[k], par_states[method][k]) for k in state), method


def test_thread_budget_is_split_across_workers():
    assert [worker_threads(8, n) for n in (1, 2, 3, 8, 16)] == [8, 4, 2, 1, 1]
