"""The reference baselines ``<method>+local`` (each client alone) and ``<method>+centralized`` (data pooled)."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from federa.checkpoint import load_checkpoint
from federa.client import local_update
from federa.config import build_config
from federa.engines import inprocess
from federa.engines.inprocess import run_method
from federa.errors import ConfigError
from federa.job import prepare_job
from federa.methods.base import load_trainable_state, trainable_state
from federa.results_dir import RunDir
from federa.strategies.base import derive_seed
from federa.strategies.centralized import Centralized
from crash_resume import run_and_crash_resume

quiet = lambda *_: None  # noqa: E731


def test_any_method_takes_a_baseline_and_nonsense_is_refused():
    cfg = build_config({}, ["methods=fft+local,lora+centralized,bitfit+local,federa+centralized,adapter+local"])
    assert cfg.methods[0] == "fft+local"
    assert cfg.partition.client_val_fraction is None  # +local is personalised: 0.1 held out by default
    for method in ("lora+local", "lora+centralized"):
        with pytest.raises(ConfigError, match=r"is a baseline, not a protocol: .* not on engine=flower"):
            build_config({}, [f"methods={method}", "engine=flower"])
        with pytest.raises(ConfigError, match="dp.enabled acts on what a round aggregates, and the .* baseline aggregates nothing"):
            build_config({}, [f"methods={method}", "dp.enabled=true", "dp.noise_multiplier=1"])
        with pytest.raises(ConfigError, match="server_opt acts on what a round aggregates"):
            build_config({}, [f"methods={method}", "server_opt.name=adam"])
    with pytest.raises(ConfigError, match="'slora\\+local': variant local cannot follow slora: its stage switch"):
        build_config({}, ["methods=slora+local"])
    with pytest.raises(ConfigError, match="strategy=local is the local baseline's rule and needs its variant"):
        build_config({}, ["methods=lora", "strategy=local"])
    with pytest.raises(ConfigError, match=r"variants apply to lora and federa only.*baselines \+local and \+centralized"):
        build_config({}, ["methods=fft+ffa"])


@pytest.mark.parametrize("init", ["federa", "fft"])
def test_local_is_each_client_training_alone(tiny_cfg, tmp_path, init):
    """Bit for bit: the +local run equals a plain loop in which every client trains its own model on its
    own shard in the rounds it is sampled; nothing travels; scores are each client's own model's."""
    method = f"{init}+local"
    cfg = tiny_cfg(f"methods={method}", "rounds=3", "lr.federa=0.05", "lr.fft=1e-3")
    job = prepare_job(cfg)
    assert all(len(v) >= 1 for v in job.val_parts)  # personalised: clients hold examples out
    rd = RunDir(tmp_path)
    result = run_method(job, method, rd, progress=False, log=quiet)
    assert result["status"] == "done"
    assert result["bytes_per_client_round"] == 0 and result["setup_bytes_per_client"] == 0
    payload = load_checkpoint(rd.checkpoint(method))[0]
    assert payload["state"] == {}  # no global state at all
    kept = payload["strategy"]["inner"]["kept"]

    # The reference: the plain method, one model per client, no server.
    _, model, _ = job.server_model(init)
    initial = trainable_state(model)
    own = {c: initial for c in range(cfg.num_clients)}
    sampled_each_round = []
    for rnd in range(1, cfg.rounds + 1):
        sampled = _sampled(cfg, rnd)
        sampled_each_round.append(sampled)
        for c in sampled:
            settings = replace(job.train_settings(method), seed=derive_seed(cfg.seed, rnd, c))
            own[c] = local_update(model, own[c], job.shard(c), job.collate, settings).state
    assert set(kept) == {c for s in sampled_each_round for c in s}
    assert result["trainable_params"] == sum(t.numel() for t in initial.values())
    for c in kept:
        assert kept[c].keys() == initial.keys()
        for k in initial:
            assert torch.equal(kept[c][k], own[c][k]), (c, k)

    records = [r for r in rd.read_metrics() if r["method"] == method]
    for r, sampled in zip(records[1:], sampled_each_round):
        assert r["clients"] == sampled and r["bytes_up"] == r["bytes_down"] == 0
        assert r["client_bytes_up"] == r["client_bytes_down"] == [0, 0]
        assert r["examples_seen"] == len(sampled) * cfg.local_steps * cfg.batch_size
    last = records[-1]
    assert last["cum_bytes_up"] == last["cum_bytes_down"] == 0
    # Test set: the mean over all clients of each client's own model (the untrained ones: the initial model).
    accs, client_scores = [], []
    for c in range(cfg.num_clients):
        load_trainable_state(model, own[c])
        accs.append(job.task.evaluate(model, job.test, job.collate, job.label_names, 64, "cpu")["accuracy"])
        client_scores.append(job.task.evaluate(model, job.client_val(c), job.collate, job.label_names, 64,
                                               "cpu")["accuracy"])
    assert last["accuracy"] == pytest.approx(sum(accs) / len(accs), abs=1e-12)
    assert last["client_score"] == client_scores
    assert last["client_score_worst"] == min(client_scores)
    assert last["client_score_mean"] == pytest.approx(sum(client_scores) / len(client_scores), abs=1e-12)


def _sampled(cfg, rnd: int) -> list[int]:
    # The federated run's sample of round rnd: the baseline gives each client the same rounds of training.
    return Centralized(cfg.clients_per_round, cfg.seed).sample_clients(rnd, range(cfg.num_clients))


def test_local_resumes_exactly_after_a_crash(tiny_cfg, tmp_path, monkeypatch):
    cfg = tiny_cfg("methods=lora+local", "rounds=4", "lr.lora=0.05")
    job = prepare_job(cfg)
    ref, crash = run_and_crash_resume(job, "lora+local", tmp_path, monkeypatch, 3)
    ka = load_checkpoint(ref.checkpoint("lora+local"))[0]["strategy"]["inner"]["kept"]
    kb = load_checkpoint(crash.checkpoint("lora+local"))[0]["strategy"]["inner"]["kept"]
    assert ka.keys() == kb.keys() and len(ka) >= 2
    for c in ka:
        assert all(torch.equal(ka[c][k], kb[c][k]) for k in ka[c]), c
    la, lb = ref.read_metrics(), crash.read_metrics()
    assert [r["round"] for r in lb] == [0, 1, 2, 3, 4]
    for x, y in zip(la, lb):
        assert (x["accuracy"], x["loss"], x["client_score"]) == (y["accuracy"], y["loss"], y["client_score"])


@pytest.mark.parametrize("schedule", ["local_steps=3", "local_epochs=0.5"])
def test_centralized_trains_one_model_on_pooled_data_with_the_federated_budget(tiny_cfg, tmp_path, monkeypatch,
                                                                             schedule):
    method = "lora+centralized"
    cfg = tiny_cfg(f"methods={method}", schedule, "lr.lora=0.05", "partition.client_val_fraction=0.1")
    job = prepare_job(cfg)
    pooled = job.pooled_id
    assert pooled == cfg.num_clients
    pool = job.shard(pooled)
    assert len(pool) == sum(len(p) for p in job.parts)  # every client's training rows, none held out
    assert sorted(map(tuple, pool["input_ids"])) == sorted(
        tuple(r) for c in range(cfg.num_clients) for r in job.shard(c)["input_ids"])
    seen = []
    real = inprocess.local_update

    def spy(model, state, shard, collate, settings, *args, **kwargs):
        seen.append((len(shard), settings))
        return real(model, state, shard, collate, settings, *args, **kwargs)

    monkeypatch.setattr(inprocess, "local_update", spy)
    rd = RunDir(tmp_path)
    result = run_method(job, method, rd, progress=False, log=quiet)
    assert result["status"] == "done" and result["bytes_per_client_round"] == 0

    # The budget: per round, the sum of the sampled clients' local steps, on the pool.
    base = job.train_settings(method)
    _, model, _ = job.server_model("lora")
    state = trainable_state(model)
    records = [r for r in rd.read_metrics() if r["method"] == method]
    assert len(seen) == cfg.rounds
    for rnd, (r, (n, settings)) in enumerate(zip(records[1:], seen), 1):
        steps = sum(base.num_steps(len(job.parts[c])) for c in _sampled(cfg, rnd))
        assert n == len(pool) and settings.local_steps == steps and settings.local_epochs is None
        assert r["clients"] == [pooled] and r["bytes_up"] == r["bytes_down"] == 0
        assert r["examples_seen"] == steps * cfg.batch_size  # the pool is larger than one round's batches
        assert "weight_capped" not in r  # the pooled machine's reply counts with the pool's size
        assert len(r["client_score"]) == cfg.num_clients  # the one model on every client's held-out split
        # One model, continued from round to round: a plain local_update on the pool.
        state = local_update(model, state, pool, job.collate,
                             replace(base, local_steps=steps, local_epochs=None,
                                     seed=derive_seed(cfg.seed, rnd, pooled))).state
    final = load_checkpoint(rd.checkpoint(method))[0]["state"]
    assert final.keys() == state.keys() and all(torch.equal(final[k], state[k]) for k in state)


def test_centralized_runs_when_the_federated_run_would_need_several_replies(tiny_cfg, tmp_path):
    """3 sampled clients need 2 replies by default (flower.min_replies: half, rounded up); the centralized
    baseline asks its one machine, whose reply is all a round can have (found on the built-in default)."""
    cfg = tiny_cfg("methods=lora+centralized", "clients_per_round=3", "rounds=1")
    assert run_method(prepare_job(cfg), "lora+centralized", RunDir(tmp_path), progress=False,
                      log=quiet)["status"] == "done"
