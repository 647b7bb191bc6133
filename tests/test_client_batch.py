"""Batched clients (federa.client_batch, ``inprocess.batch_clients``): K clients trained in one
forward/backward per step give the updates one-at-a-time clients give, to float rounding.

Tolerances: on the CPU the only difference is float summation order (a matmul over K·B rows
instead of B; clipping norms summed per client), ~1e-7 relative in a loss. Adam divides by
sqrt(v), which magnifies a 1e-7 difference in a near-zero gradient, so trained tensors are compared
at 2e-4 absolute (the updates themselves are ~1e-2) and metrics at 1e-4 relative."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from federa.client import local_update
from federa.client_batch import ClientTask, batch_reason, batched_local_update
from federa.engines.inprocess import run_method
from federa.job import prepare_job
from federa.methods.base import trainable_state
from federa.results_dir import RunDir
from federa.strategies.fedsa import FedSAClient

STATE_ATOL, METRIC_RTOL = 2e-4, 1e-4
TIMING = ("train_seconds", "round_s", "eval_s", "wall_s", "train_wall_s", "client_compute_s", "modelled_round_s",
          "modelled_s", "seconds")


def _close(a, b, key: str) -> None:
    if any(t in key for t in TIMING) or key.endswith("_s"):
        return
    if isinstance(a, dict):
        assert a.keys() == b.keys(), key
        for k in a:
            _close(a[k], b[k], f"{key}.{k}")
    elif isinstance(a, float) and isinstance(b, float):
        assert math.isclose(a, b, rel_tol=METRIC_RTOL, abs_tol=1e-6), (key, a, b)
    elif isinstance(a, list) and a and isinstance(a[0], float):
        assert a == pytest.approx(b, rel=METRIC_RTOL, abs=1e-6), key
    else:
        assert a == b, (key, a, b)


def _records(tiny_cfg, tmp_path, method: str, k: int, *extra: str) -> list[dict]:
    cfg = tiny_cfg(f"methods={method}", "rounds=2", "num_clients=4", "clients_per_round=3",
                   f"inprocess.batch_clients={k}", *extra)
    run_dir = RunDir(tmp_path / f"{method}-{k}")
    lines: list[str] = []
    result = run_method(prepare_job(cfg), method, run_dir, progress=False, log=lines.append)
    assert result is not None and not any("one at a time" in line for line in lines), lines
    return run_dir.read_metrics()


@pytest.mark.parametrize("method,extra", [
    ("lora", ("lora.dropout=0",)),            # the case: LoRA dropout off (the model's own stays on)
    ("federa", ()),                           # dropout on: every client's masks come from its own seed
    ("federa+fedsa", ()),                     # a variant with private tensors (FedSA's B) and a client rule
    ("lora@fedprox", ("fedprox.mu=0.1",)),    # an @aggregator whose clients add a proximal term
])
def test_run_metrics_match_one_at_a_time(tiny_cfg, tmp_path, method, extra):
    one, three = (_records(tiny_cfg, tmp_path, method, k, *extra) for k in (1, 3))
    assert len(one) == len(three) == 3  # round 0 and two trained rounds
    for a, b in zip(one, three):
        _close(a, b, method)


def _tasks(job, model, method: str, **kw) -> list[ClientTask]:
    base = replace(job.train_settings(method), **kw)
    state = trainable_state(model)
    # Unequal shards under local_epochs: the clients take 2, 3 and 5 steps.
    sizes = (16, 24, 40)
    return [ClientTask(c, state, job.shard(c).select(range(n)), replace(base, seed=10 + c))
            for c, n in zip(range(3), sizes)]


def test_kernel_matches_local_update_with_clipping_decay_and_unequal_steps(tiny_cfg):
    job = prepare_job(tiny_cfg("methods=lora", "local_epochs=1", "local_steps=null", "max_grad_norm=0.05",
                               "weight_decay=0.1"))
    _, model, _ = job.server_model("lora")
    tasks = _tasks(job, model, "lora")
    assert [t.settings.num_steps(len(t.shard)) for t in tasks] == [2, 3, 5]
    assert batch_reason(model, tasks) is None
    got, failed = batched_local_update(model, tasks, job.collate, job.device)
    assert not failed
    for t in tasks:
        want = local_update(model, t.state, t.shard, job.collate, t.settings, job.device, client_id=t.client_id)
        mine = got[t.client_id]
        assert mine.metrics["steps"] == want.metrics["steps"] and mine.metrics["samples"] == want.metrics["samples"]
        assert mine.metrics["train_loss"] == pytest.approx(want.metrics["train_loss"], rel=METRIC_RTOL)
        for n, w in want.state.items():
            moved = (w - t.state[n]).abs().max().item()
            assert moved == 0 or moved > 10 * STATE_ATOL, n  # it trained (or never does: no grad)
            torch.testing.assert_close(mine.state[n], w, atol=STATE_ATOL, rtol=0, msg=n)


def test_fedsa_private_tensors_and_rule(tiny_cfg):
    job = prepare_job(tiny_cfg("methods=lora+fedsa"))
    _, model, _ = job.server_model("lora+fedsa")
    private = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_B" in n}
    assert private
    tasks = _tasks(job, model, "lora+fedsa")
    for t in tasks:
        own = {n: x + 0.01 * (t.client_id + 1) for n, x in private.items()}  # each client's own B
        t.rule = FedSAClient(t.state, {}, own, t.settings)
    got, _ = batched_local_update(model, tasks, job.collate, job.device)
    for t in tasks:
        want = local_update(model, t.state, t.shard, job.collate, t.settings, job.device, client_id=t.client_id,
                            rule=t.rule)
        assert got[t.client_id].state.keys() == want.state.keys() and not private.keys() & want.state.keys()
        for n in want.memory:  # the client's trained B, kept to itself
            torch.testing.assert_close(got[t.client_id].memory[n], want.memory[n], atol=STATE_ATOL, rtol=0)


def test_same_seed_same_numbers_and_a_nan_client_is_dropped(tiny_cfg):
    job = prepare_job(tiny_cfg("methods=lora"))
    _, model, _ = job.server_model("lora")
    tasks = _tasks(job, model, "lora")
    a, _ = batched_local_update(model, tasks, job.collate, job.device)
    b, _ = batched_local_update(model, tasks, job.collate, job.device)
    for cid in a:  # dropout on: run to run, bit for bit on one machine
        assert all(torch.equal(a[cid].state[n], b[cid].state[n]) for n in a[cid].state)
    bad = next(n for n in tasks[1].state if "classifier" in n and n.endswith("weight"))
    tasks[1] = replace(tasks[1], state={**tasks[1].state, bad: torch.full_like(tasks[1].state[bad], float("nan"))})
    c, failed = batched_local_update(model, tasks, job.collate, job.device)
    assert list(failed) == [1] and "client 1: loss became nan at step 1" in failed[1]
    for cid in (0, 2):  # the others train on, exactly as before
        assert all(torch.equal(a[cid].state[n], c[cid].state[n]) for n in a[cid].state)


def test_fallback_says_why(tiny_cfg, tmp_path):
    cfg = tiny_cfg("methods=fft", "rounds=1", "clients_per_round=2", "inprocess.batch_clients=2")
    lines: list[str] = []
    run_method(prepare_job(cfg), "fft", RunDir(tmp_path), progress=False, log=lines.append)
    said = [line for line in lines if "one at a time" in line]
    assert len(said) == 1 and "embedding table trains" in said[0], lines


def test_auto_batches_lora_and_federa_on_a_gpu_only(tiny_cfg):
    s = tiny_cfg().inprocess
    assert s.batch_clients == "auto"
    assert s.clients_at_once("federa+fedsa@fedprox", 30, "cuda:0") == 10  # capped: the gain flattens past 10
    assert s.clients_at_once("lora", 3, "cuda") == 3
    assert s.clients_at_once("lora", 3, "cpu") == 1  # no gain measured on 2 CPU cores
    assert s.clients_at_once("fft", 3, "cuda") == 1
    explicit = tiny_cfg("inprocess.batch_clients=4").inprocess
    assert explicit.clients_at_once("bitfit", 3, "cpu") == 3 and explicit.clients_at_once("lora", 9, "cpu") == 4
