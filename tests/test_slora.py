"""SLoRA: sparse warm-up with a shared mask, then LoRA from the truncated SVD of the sparse update.

The stage-2 factors are checked against the formula computed independently (numpy SVD of a
hand-made ΔW); the model right after the switch against W0 + best rank-r approximation of ΔW;
masked training against W0 entry by entry; and a run across the boundary end to end and
through a crash on either side of it.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from transformers.pytorch_utils import Conv1D

from federa.checkpoint import load_checkpoint
from federa.client import local_update
from federa.config import build_config
from federa.engines.inprocess import run_method
from federa.engines.server import ServerRun
from federa.errors import ConfigError
from federa.job import prepare_job
from federa.methods.base import load_trainable_state, trainable_state
from federa.methods.lora import find_target_linears
from federa.methods.slora_layers import SparseDelta, stored_index
from federa.results_dir import RunDir
from crash_resume import run_and_crash_resume

quiet = lambda *_: None  # noqa: E731
DELTA = ".parametrizations.weight.0.delta"


def _stage1(tiny_cfg, *overrides):
    cfg = tiny_cfg("methods=slora", "slora.warmup_rounds=1", "slora.density=0.2", *overrides)
    job = prepare_job(cfg)
    method, model, setup = job.server_model("slora")
    return cfg, job, method, model, setup


def _hand_made_state(model, seed: int = 3) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {k: (torch.randn(v.shape, generator=g) * 0.05 if k.endswith(DELTA) else v) for k, v in
            trainable_state(model).items()}


def _dense(mask: torch.Tensor, values: torch.Tensor, shape) -> np.ndarray:
    """ΔW by hand: zeros except ``values`` at the flat (out x in) positions ``mask``."""
    d = np.zeros(shape[0] * shape[1])
    d[mask.numpy().astype(np.int64)] = values.double().numpy()
    return d.reshape(shape)


def _batch(job, n: int = 8):
    return job.collate([job.train[i] for i in range(n)])


def test_stage2_factors_are_the_svd_of_the_sparse_update(tiny_cfg):
    """B = U_r·√(S_r/s), A = √(S_r/s)·V_rᵀ for each ΔW: checked by sign-free invariants of a numpy SVD."""
    cfg, job, method, model, setup = _stage1(tiny_cfg)
    state = _hand_made_state(model)
    pm, new_state, new_setup = method.next_stage(1, model, state, setup)
    r, s = cfg.lora.r, cfg.lora.alpha / cfg.lora.r
    assert new_setup == {}
    names = [k.removesuffix(".slora_mask") for k in setup]
    assert len(names) == 4  # query and value in 2 layers
    for name in names:
        a = new_state[f"base_model.model.{name}.lora_A.default.weight"].double().numpy()
        b = new_state[f"base_model.model.{name}.lora_B.default.weight"].double().numpy()
        dw = _dense(setup[name + ".slora_mask"], state[name + DELTA], (32, 32))
        u, sv, vt = np.linalg.svd(dw)
        u, sv, vt = u[:, :r], sv[:r], vt[:r]
        np.testing.assert_allclose(s * b @ a, (u * sv) @ vt, atol=1e-6)  # best rank-r approximation
        np.testing.assert_allclose(b @ b.T, (u * (sv / s)) @ u.T, atol=1e-6)  # B = U·√(S/s) up to signs
        np.testing.assert_allclose(a.T @ a, (vt.T * (sv / s)) @ vt, atol=1e-6)  # A = √(S/s)·Vᵀ up to signs
        np.testing.assert_allclose(np.linalg.norm(b, axis=0), np.sqrt(sv / s), atol=1e-6)  # balanced split
    head = [k for k in new_state if "classifier" in k]
    assert head and all(torch.equal(new_state[k], state[k.replace("base_model.model.", "").replace(
        ".modules_to_save.default", "")]) for k in head)  # the stage-1 head carries over


@pytest.mark.parametrize("rank", [4, 32])
def test_model_after_the_switch_is_w0_plus_the_rank_r_update(tiny_cfg, rank):
    """Logits right after the switch equal the pretrained model with W0 + rank-r(ΔW) on each target
    (base reset to W0); at full rank (32) they equal the stage-1 model's exactly as far as float32 allows."""
    cfg, job, method, model, setup = _stage1(tiny_cfg, f"lora.r={rank}")
    state = _hand_made_state(model)
    batch = _batch(job)
    model.eval()
    load_trainable_state(model, state)
    with torch.no_grad():
        stage1 = model(**batch).logits
    pm, _, _ = method.next_stage(1, model, state, setup)
    pm.eval()
    with torch.no_grad():
        after = pm(**batch).logits

    ref = job.base_model()  # the pretrained W0, same seeded head init
    targets = find_target_linears(ref, cfg.lora.target_modules, rank)
    with torch.no_grad():
        for name, layer in targets.items():
            dw = _dense(setup[name + ".slora_mask"], state[name + DELTA], (32, 32))
            u, sv, vt = np.linalg.svd(dw)
            low = (u[:, :rank] * sv[:rank]) @ vt[:rank]
            layer.weight.add_(torch.from_numpy(low).float())
        ref.classifier.weight.copy_(state["classifier.weight"])
        ref.classifier.bias.copy_(state["classifier.bias"])
        ref.eval()
        expected = ref(**batch).logits
    assert torch.allclose(after, expected, atol=1e-5), (after - expected).abs().max()
    gap = (after - stage1).abs().max()
    if rank == 32:
        assert gap < 1e-5  # nothing truncated: the switch is lossless
    else:
        assert gap > 1e-4  # the truncation is real (and the test can tell)


def test_masked_training_leaves_unmasked_entries_exactly_unchanged(tiny_cfg):
    cfg, job, method, model, setup = _stage1(tiny_cfg)
    w0 = {n: l.weight.detach().clone() for n, l in find_target_linears(
        job.base_model(), cfg.lora.target_modules, cfg.lora.r).items()}
    start = trainable_state(model)
    assert {k for k in start if not k.startswith("classifier")} == {n + DELTA for n in w0}
    update = local_update(model, start, job.shard(0), job.collate, replace(job.train_settings("slora"), lr=0.05))
    load_trainable_state(model, update.state)
    layers = find_target_linears(model, cfg.lora.target_modules, cfg.lora.r)
    for name, layer in layers.items():
        mask = torch.zeros(32 * 32, dtype=torch.bool)
        mask[setup[name + ".slora_mask"].long()] = True
        mask = mask.view(32, 32)
        w = layer.weight.detach()  # W0 + δ through the parametrisation
        assert torch.equal(w[~mask], w0[name][~mask])  # bit for bit
        assert torch.equal(layer.parametrizations.weight.original, w0[name])  # the stored W0 never moves
        moved = (w[mask] != w0[name][mask]).float().mean()
        assert moved > 0.9, moved
        assert mask.float().mean().item() == pytest.approx(0.2, abs=1 / 1024)


def test_conv1d_mask_maps_to_the_transposed_storage():
    """GPT-2's Conv1D stores (in x out): the mask's (out x in) positions land on the right stored entries."""
    layer = Conv1D(6, 4)  # nf=6 outputs, nx=4 inputs: weight (4, 6)
    w0 = layer.weight.detach().clone()
    mask = torch.tensor([0, 5, 7, 22], dtype=torch.int32)  # flat positions in the (6 x 4) map
    p = SparseDelta(stored_index(mask, layer), torch.float32)
    with torch.no_grad():
        p.delta.copy_(torch.tensor([1.0, 2.0, 3.0, 4.0]))
    delta_map = (p(w0) - w0).T.reshape(-1)  # back to (out x in), flattened
    expected = torch.zeros(24)
    expected[mask.long()] = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert torch.allclose(delta_map, expected)


def test_run_across_the_boundary(tiny_cfg, tmp_path):
    """Stage 1 sends the masked values + head, stage 2 the LoRA factors + head; the adapter loads on W0."""
    from peft import PeftModel

    cfg = tiny_cfg("methods=slora", "rounds=3", "slora.warmup_rounds=1", "slora.density=0.1")
    job = prepare_job(cfg)
    rd = RunDir(tmp_path)
    result = run_method(job, "slora", rd, progress=False, log=quiet)
    assert result["status"] == "done" and result["lr"] == cfg.lr["slora"]
    rows = {r["round"]: r for r in rd.read_metrics()}
    head = (5 * 32 + 5) * 4
    k = 4 * round(0.1 * 32 * 32)  # masked values over query, value of 2 layers
    lora = 4 * (4 * 32 + 32 * 4)
    n = cfg.clients_per_round
    assert rows[1]["bytes_up"] == n * (4 * k + head)
    assert rows[1]["bytes_down"] == n * (4 * k + head) + 4 * k * len(rows[1]["clients"])  # + the masks, once
    assert rows[2]["bytes_up"] == rows[3]["bytes_up"] == n * (4 * lora + head)
    assert rows[1]["lora_agg_error"] is None and rows[2]["lora_agg_error"] is not None
    assert result["trainable_params"] == lora + (5 * 32 + 5)
    # The final model is a plain LoRA adapter on the original pretrained weights.
    final = rd.final_model("slora")
    server = ServerRun(job, "slora", rd, log=quiet)
    loaded = PeftModel.from_pretrained(job.base_model(), str(final)).eval()
    server.model.eval()
    batch = _batch(job)
    with torch.no_grad():
        assert torch.allclose(loaded(**batch).logits, server.model(**batch).logits, atol=1e-5)


@pytest.mark.parametrize("crash_round", [2, 3], ids=["in-switch-round", "after-switch"])
def test_resume_across_the_boundary_is_exact(tiny_cfg, tmp_path, monkeypatch, crash_round):
    """A crash in the round that switches (after the switch, before its checkpoint) or in a later
    round resumes to exactly the uninterrupted run."""
    cfg = tiny_cfg("methods=slora", "rounds=3", "slora.warmup_rounds=1", "slora.density=0.1",
                   "server_opt.name=adam")
    job = prepare_job(cfg)
    ref, crash = run_and_crash_resume(job, "slora", tmp_path, monkeypatch, crash_round)

    a = load_checkpoint(ref.checkpoint("slora"))[0]
    b = load_checkpoint(crash.checkpoint("slora"))[0]
    assert a["state"].keys() == b["state"].keys() and any("lora_A" in k for k in a["state"])
    for key in a["state"]:
        assert torch.equal(a["state"][key], b["state"][key]), key
    ma, mb = a["strategy"]["inner"]["m"], b["strategy"]["inner"]["m"]  # Validate(ServerOptimizer(FedAvg))
    assert ma.keys() == a["state"].keys()  # the server optimiser restarted at the switch: stage-2 tensors only
    for key in ma:
        assert torch.equal(ma[key], mb[key]), key
    fields = ("accuracy", "loss", "train_loss", "bytes_up", "bytes_down", "clients")
    assert [[r[f] for f in fields if f in r] for r in ref.read_metrics()] == \
           [[r[f] for f in fields if f in r] for r in crash.read_metrics()]


def test_slora_is_refused_where_it_cannot_run():
    # Flower nodes build stage 2 at the switch (tests/test_flower_client_hook.py); SecAgg+ carries no round.
    assert build_config({}, ["methods=slora", "engine=flower"]).engine == "flower"
    with pytest.raises(ConfigError, match="SecAgg\\+ rounds do not carry; set secure_aggregation=false"):
        build_config({}, ["methods=slora", "engine=flower", "secure_aggregation=true"])
    with pytest.raises(ConfigError, match=r"slora.warmup_rounds=3 leaves no LoRA round of rounds=3"):
        build_config({}, ["methods=slora", "rounds=3"])
    with pytest.raises(ConfigError, match="variants apply to lora and federa only"):
        build_config({}, ["methods=slora+ffa"])
    with pytest.raises(ConfigError, match="slora.density"):
        build_config({}, ["methods=slora", "slora.density=0"])
