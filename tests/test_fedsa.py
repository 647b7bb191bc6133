"""FedSA-LoRA (``lora+fedsa``, ``federa+fedsa``): A is averaged, B and the head stay on each client."""

from __future__ import annotations

import pytest
import torch

from federa.checkpoint import load_checkpoint
from federa.client import local_update
from federa.config import build_config
from federa.engines import inprocess
from federa.engines.inprocess import run_method
from federa.errors import ConfigError
from federa.job import prepare_job
from federa.results_dir import RunDir
from federa.strategies.fedsa import FedSA, FedSAClient
from federa.types import TrainSettings, Update
from crash_resume import run_and_crash_resume

A, B, H = "m.lora_A.default.weight", "m.lora_B.default.weight", "classifier.modules_to_save.default.weight"
quiet = lambda *_: None  # noqa: E731


def _t(*rows):
    return torch.tensor(rows, dtype=torch.float32)


def test_rule_on_hand_made_tensors_matches_the_paper():
    """A ← Σ nᵢAᵢ / Σ nᵢ over the round's replies; each Bᵢ is the client's own, untouched by the server."""
    s = FedSA(clients_per_round=2, seed=0)
    s.start_private({B: _t([0.0], [0.0]), H: _t([0.5, 0.5])})
    assert s.client_memory(7) == s.client_private(7) == s.initial  # never trained: B as built
    b1, b3 = {B: _t([1.0], [2.0]), H: _t([1.0, 0.0])}, {B: _t([-3.0], [5.0]), H: _t([0.0, 1.0])}
    s.keep_client_memory(1, b1)
    s.keep_client_memory(3, b3)
    updates = {1: Update(state={A: _t([1.0, 2.0])}, num_examples=30),
               3: Update(state={A: _t([5.0, -2.0])}, num_examples=10)}
    new = s.aggregate(1, {A: _t([0.0, 0.0])}, updates)
    assert new.keys() == {A}  # the global state is A alone: B never reaches the server's state
    assert torch.allclose(new[A], _t([(30 * 1 + 10 * 5) / 40, (30 * 2 - 10 * 2) / 40]), atol=1e-6)
    assert torch.equal(s.client_private(1)[B], b1[B]) and torch.equal(s.client_private(3)[B], b3[B])
    assert torch.equal(s.client_private(0)[B], s.initial[B])
    # The global model's B (evaluation only): the mean of the trained clients' B, each counted once.
    glob = s.client_private(None)
    assert torch.allclose(glob[B], _t([-1.0], [3.5]), atol=1e-6)
    assert torch.allclose(glob[H], _t([0.5, 0.5]), atol=1e-6)
    # Checkpoint round trip.
    t = FedSA(clients_per_round=2, seed=0)
    t.start_private(s.initial)
    t.load_state_dict(s.state_dict())
    assert torch.equal(t.client_private(None)[B], glob[B]) and torch.equal(t.client_private(3)[H], b3[H])
    # The client side: trains from its own memory, sends nothing extra, keeps its new B and head.
    rule = FedSAClient({A: _t([0.0, 0.0])}, {}, b1, TrainSettings(lr=1e-3, batch_size=1, seed=0, local_steps=1))
    assert rule.private() is b1
    extra, memory = rule.finish({A: _t([9.0, 9.0]), B: _t([4.0], [4.0]), H: _t([2.0, 2.0])}, steps=1)
    assert extra == {} and memory.keys() == {B, H} and torch.equal(memory[B], _t([4.0], [4.0]))


def test_config_refusals_and_dp(tiny_cfg, tmp_path):
    # Flower carries a client's B on its node (tests/test_flower_client_hook.py); SecAgg+'s legacy
    # messages carry no round tag for it.
    assert build_config({}, ["methods=lora+fedsa,federa+fedsa", "engine=flower"]).engine == "flower"
    with pytest.raises(ConfigError, match="keeps each client's B on its node.*set secure_aggregation=false"):
        build_config({}, ["methods=lora+fedsa", "engine=flower", "secure_aggregation=true"])
    with pytest.raises(ConfigError, match="needs its variant; select methods=lora\\+fedsa"):
        build_config({}, ["methods=lora", "strategy=fedsa"])
    assert build_config({}, ["methods=lora+fedsa,federa+fedsa"]).methods == ["lora+fedsa", "federa+fedsa"]
    with pytest.raises(ConfigError, match="strategy=scaffold's clients also send tensors"):
        build_config({}, ["strategy=scaffold", "dp.enabled=true", "dp.noise_multiplier=1"])
    # FedSA's clients send A alone, inside the state: DP clips and noises exactly what travels.
    cfg = tiny_cfg("methods=lora+fedsa", "rounds=1", "dp.enabled=true", "dp.noise_multiplier=0.5",
                   "dp.clip_norm=0.1")
    rd = RunDir(tmp_path)
    assert run_method(prepare_job(cfg), "lora+fedsa", rd, progress=False, log=quiet)["status"] == "done"
    last = rd.read_metrics()[-1]
    assert last["epsilon"] > 0 and len(last["client_score"]) == cfg.num_clients


def test_a_client_trains_from_its_own_b_and_sends_only_a(tiny_cfg):
    job = prepare_job(tiny_cfg("methods=lora+fedsa"))
    _, model, _ = job.server_model("lora+fedsa")
    state = {k: v.clone() for k, v in ((n, p.detach()) for n, p in model.named_parameters() if p.requires_grad)}
    assert state and all("lora_A" in k for k in state)  # only A is in the global state
    own = {n: torch.randn_like(p) * 0.1 for n, p in model.named_parameters()
           if "lora_B" in n or "modules_to_save" in n}
    settings = TrainSettings(lr=1e-2, batch_size=8, seed=0, local_steps=2)
    u = local_update(model, state, job.shard(0), job.collate, settings, rule=FedSAClient(state, {}, own, settings))
    assert u.state.keys() == state.keys() and u.extra == {}  # A alone travels up
    assert u.memory.keys() == own.keys() and any(not torch.equal(u.memory[k], own[k]) for k in own)  # B trained
    assert not any(p.requires_grad for n, p in model.named_parameters() if n in own)  # frozen again
    # Training really started from the client's own B: with lr=0 nothing moves, and another B gives
    # another loss on the same batches.
    still = TrainSettings(lr=0.0, batch_size=8, seed=0, local_steps=2)
    u0 = local_update(model, state, job.shard(0), job.collate, still, rule=FedSAClient(state, {}, own, still))
    assert all(torch.equal(u0.memory[k], own[k]) for k in own)
    zero = {k: torch.zeros_like(v) for k, v in own.items()}
    uz = local_update(model, state, job.shard(0), job.collate, still, rule=FedSAClient(state, {}, zero, still))
    assert uz.metrics["train_loss"] != u0.metrics["train_loss"]


@pytest.mark.parametrize("init", ["lora", "federa"])
def test_end_to_end_bytes_and_personalised_evaluation(tiny_cfg, tmp_path, init):
    method = f"{init}+fedsa"
    cfg = tiny_cfg(f"methods={method}", "rounds=2", "lr.lora=0.05", "lr.federa=0.05")
    job = prepare_job(cfg)
    assert all(len(v) >= 1 for v in job.val_parts)  # a personalised method holds out 0.1 per client by default
    rd = RunDir(tmp_path)
    result = run_method(job, method, rd, progress=False, log=quiet)
    assert result["status"] == "done"
    payload = load_checkpoint(rd.checkpoint(method))[0]
    state, kept = payload["state"], payload["strategy"]["inner"]["kept"]
    a_bytes = sum(t.numel() * t.element_size() for t in state.values())
    assert all("lora_A" in k for k in state) and result["bytes_per_client_round"] == a_bytes
    private_numel = sum(t.numel() for t in next(iter(kept.values())).values())
    assert result["trainable_params"] == sum(t.numel() for t in state.values()) + private_numel
    records = [r for r in rd.read_metrics() if r["method"] == method]
    setup_bytes = result["setup_bytes_per_client"]
    seen: set[int] = set()
    for r in records[1:]:
        n = len(r["clients"])
        assert r["bytes_up"] == n * a_bytes  # A only, never B
        assert r["bytes_down"] == n * a_bytes + setup_bytes * len(set(r["clients"]) - seen)
        seen |= set(r["clients"])
        assert r["lora_agg_error"] is None  # no B in any reply: no product to average
    assert set(kept) == seen
    # Each client's score is its personalised model's: global A + its own B and head, on its own split.
    _, model, _ = job.server_model(method)
    params = dict(model.named_parameters())
    with torch.no_grad():
        for k, v in state.items():
            params[k].copy_(v)
    last = records[-1]["client_score"]
    initial = {n: p.detach().clone() for n, p in params.items() if "lora_B" in n or "modules_to_save" in n}
    for cid in range(cfg.num_clients):
        with torch.no_grad():
            for k, v in kept.get(cid, initial).items():
                params[k].copy_(v)
        m = job.task.evaluate(model, job.client_val(cid), job.collate, job.label_names, 64, "cpu")
        assert last[cid] == m["accuracy"], cid
    # The global model (test set, final adapter) carries the mean of the clients' B:
    # a resumed server holds it, as the finished one did when it evaluated and saved.
    from federa.engines.server import ServerRun

    server = dict(ServerRun(job, method, rd, log=quiet).model.named_parameters())
    for k in next(iter(kept.values())):
        mean = (sum(kept[c][k].double() for c in kept) / len(kept)).float()
        assert torch.allclose(server[k].detach(), mean, atol=1e-6), k
    from safetensors.torch import load_file

    personal = load_file(str(rd.final_model(method) / "client_private.safetensors"))
    assert len(personal) == cfg.num_clients * len(initial)
    for c, own in kept.items():
        assert all(torch.equal(personal[f"client{c}/{k}"], v) for k, v in own.items())
    if init == "lora":  # the saved adapter is that global model (FeDeRA's folds its SVD start in)
        saved = load_file(str(rd.final_model(method) / "adapter_model.safetensors"))
        b_saved = [k for k in saved if "lora_B" in k]
        assert b_saved
        for k in b_saved:  # peft drops the adapter name ("default") from the saved keys
            assert torch.equal(saved[k], server[k.replace("lora_B.weight", "lora_B.default.weight")].detach()), k


def test_crash_mid_round_then_resume_is_exact_including_private_b(tiny_cfg, tmp_path, monkeypatch):
    cfg = tiny_cfg("methods=federa+fedsa", "rounds=4")
    job = prepare_job(cfg)
    ref, crash = run_and_crash_resume(job, "federa+fedsa", tmp_path, monkeypatch, 3)

    a = load_checkpoint(ref.checkpoint("federa+fedsa"))[0]
    b = load_checkpoint(crash.checkpoint("federa+fedsa"))[0]
    for k in a["state"]:
        assert torch.allclose(a["state"][k], b["state"][k], atol=1e-6, rtol=0), k
    ka, kb = a["strategy"]["inner"]["kept"], b["strategy"]["inner"]["kept"]
    assert ka.keys() == kb.keys() and len(ka) >= 2
    for c in ka:
        for k in ka[c]:
            assert torch.allclose(ka[c][k], kb[c][k], atol=1e-6, rtol=0), (c, k)
    la, lb = ref.read_metrics(), crash.read_metrics()
    assert [r["round"] for r in lb] == [0, 1, 2, 3, 4]
    for x, y in zip(la, lb):
        assert (x["accuracy"], x["loss"], x["client_score"]) == (y["accuracy"], y["loss"], y["client_score"])
