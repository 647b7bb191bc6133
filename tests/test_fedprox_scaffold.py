"""FedProx and SCAFFOLD: their update rules on hand-made tensors, end to end on the tiny model,
SCAFFOLD's control variates through a checkpoint, and what they cost on the wire."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from datasets import Dataset
from torch import nn

from federa.checkpoint import load_checkpoint
from federa.client import local_update, proximal_term
from federa.engines.inprocess import run_method
from federa.engines.server import ServerRun
from federa.errors import ConfigError
from federa.job import prepare_job
from federa.methods.base import state_bytes
from federa.results_dir import RunDir
from federa.strategies.base import Strategy
from federa.strategies.scaffold import Scaffold, ScaffoldClient
from federa.strategies.stack import build_stack
from federa.strategies.validate import Validate
from federa.types import TrainSettings, Update

F64 = torch.float64
BETAS, EPS = (0.9, 0.999), 1e-8  # torch's AdamW defaults, which local_update uses


class LinearLoss(nn.Module):
    """One trainable vector w with loss ⟨a, w⟩ (+ ½‖w − b‖² when ``b`` is given): known gradients."""

    def __init__(self, w0: torch.Tensor, a: torch.Tensor, b: torch.Tensor | None = None) -> None:
        super().__init__()
        self.w = nn.Parameter(w0.clone())
        self.a, self.b = a, b

    def grad(self, w: torch.Tensor) -> torch.Tensor:
        return self.a if self.b is None else self.a + (w - self.b)

    def forward(self, labels: torch.Tensor) -> SimpleNamespace:
        loss = (self.a * self.w).sum() + (0.0 if self.b is None else 0.5 * ((self.w - self.b) ** 2).sum())
        return SimpleNamespace(loss=loss + 0.0 * labels.sum())


SHARD = Dataset.from_dict({"labels": [0] * 8})


def _collate(rows):
    return {"labels": torch.tensor([r["labels"] for r in rows])}


def _settings(steps: int, lr: float, **kw) -> TrainSettings:
    return TrainSettings(lr=lr, batch_size=4, seed=0, local_steps=steps, max_grad_norm=None, **kw)


def _adamw(w: torch.Tensor, grads, lr: float, correction: torch.Tensor | None = None) -> torch.Tensor:
    """AdamW (weight decay 0) written out by hand; ``grads(w)`` gives each step's gradient and
    ``correction`` (SCAFFOLD's c − cᵢ) moves every step by −lr·correction after the optimiser."""
    m, v = torch.zeros_like(w), torch.zeros_like(w)
    for t in range(1, len(grads) + 1):
        g = grads[t - 1](w)
        m = BETAS[0] * m + (1 - BETAS[0]) * g
        v = BETAS[1] * v + (1 - BETAS[1]) * g * g
        step = (m / (1 - BETAS[0] ** t)) / ((v / (1 - BETAS[1] ** t)).sqrt() + EPS)
        w = w - lr * step
        if correction is not None:
            w = w - lr * correction
    return w


# -- FedProx -------------------------------------------------------------------------------


def test_proximal_gradient_is_loss_gradient_plus_mu_times_distance_to_global():
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    x = torch.randn(5, 3)
    anchor = {n: p.detach() + torch.randn_like(p) for n, p in model.named_parameters()}
    mu = 0.3

    def custom_loss() -> torch.Tensor:
        return (model(x).tanh() ** 2).sum()

    plain = torch.autograd.grad(custom_loss(), list(model.parameters()))
    named = dict(model.named_parameters())
    prox = torch.autograd.grad(custom_loss() + proximal_term(named, anchor, mu), list(model.parameters()))
    for (n, p), g, gp in zip(model.named_parameters(), plain, prox):
        assert torch.allclose(gp, g + mu * (p.detach() - anchor[n]), atol=1e-6), n


def test_local_update_adds_the_proximal_gradient_at_every_step():
    """Two AdamW steps on ⟨a, w⟩: step 1 starts at w_global (no pull), step 2 feels mu·(w − w_global)."""
    w0, a, lr, mu = torch.tensor([0.5, -1.0, 2.0], dtype=F64), torch.tensor([0.2, -0.1, 0.05], dtype=F64), 0.1, 4.0
    model = LinearLoss(w0, a)
    got = local_update(model, {"w": w0}, SHARD, _collate, _settings(2, lr, prox_mu=mu)).state["w"]
    expected = _adamw(w0, [lambda w: a, lambda w: a + mu * (w - w0)], lr)
    assert torch.allclose(got, expected, rtol=0, atol=1e-12)
    # ... and without the term the second step differs (the check above could not pass by accident).
    plain = local_update(LinearLoss(w0, a), {"w": w0}, SHARD, _collate, _settings(2, lr)).state["w"]
    assert not torch.allclose(plain, expected, rtol=0, atol=1e-6)


def test_fedprox_sends_mu_to_every_client_and_aggregates_like_fedavg(tiny_cfg):
    stack = build_stack(tiny_cfg("strategy=fedprox", "fedprox.mu=0.25"))
    base = TrainSettings(lr=1e-3, batch_size=8, seed=0, local_steps=2)
    plan = stack.configure_round(1, range(4), base)
    assert len(plan) == 2 and {s.prox_mu for s in plan.values()} == {0.25}


def _timeless(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if not k.endswith("_s")} for r in records]


def _run(cfg, out) -> list[dict]:
    rd = RunDir(out)
    assert run_method(prepare_job(cfg), "lora", rd, progress=False, log=lambda *_: None)["status"] == "done"
    return _timeless(rd.read_metrics())


def test_fedprox_end_to_end_with_mu_0_is_fedavg_and_with_mu_moves_the_result(tiny_cfg, tmp_path):
    fedavg = _run(tiny_cfg("methods=lora"), tmp_path / "fedavg")
    prox0 = _run(tiny_cfg("methods=lora", "strategy=fedprox", "fedprox.mu=0"), tmp_path / "prox0")
    prox = _run(tiny_cfg("methods=lora", "strategy=fedprox", "fedprox.mu=10", "lr.lora=0.05"), tmp_path / "prox")
    fast = _run(tiny_cfg("methods=lora", "lr.lora=0.05"), tmp_path / "fast")
    assert prox0 == fedavg and len(prox) == 3  # round 0 and two rounds
    assert prox[-1]["loss"] != fast[-1]["loss"]


def test_prox_mu_travels_on_the_flower_wire():
    from federa.engines.flower import wire

    settings = TrainSettings(lr=1e-3, batch_size=8, seed=7, local_steps=2, prox_mu=0.125)
    rec = wire.settings_record("lora", 1, "rounds: 2\n", settings, ["a"])
    assert rec["s.prox_mu"] == 0.125 and wire.record_settings(rec) == settings


# -- SCAFFOLD ------------------------------------------------------------------------------


def test_scaffold_client_rule_with_sgd_is_the_papers_corrected_gradient_step():
    """Option II with plain SGD on ½‖w − b‖²: y ← y − η(∇f(y) + c − cᵢ), cᵢ⁺ = cᵢ − c + (x − y)/(Kη)."""
    x, b = torch.tensor([1.0, -2.0], dtype=F64), torch.tensor([0.5, 0.5], dtype=F64)
    c, c_i = torch.tensor([0.3, -0.1], dtype=F64), torch.tensor([-0.2, 0.4], dtype=F64)
    lr, steps = 0.1, 3
    rule = ScaffoldClient({"w": x}, {"w": c}, {"w": c_i}, _settings(steps, lr))
    w = nn.Parameter(x.clone())
    expected = x.clone()
    for _ in range(steps):
        with torch.no_grad():
            w -= lr * (w - b)  # SGD on the gradient w − b ...
        rule.after_step({"w": w})  # ... then the rule's drift correction
        expected = expected - lr * ((expected - b) + c - c_i)
    assert torch.allclose(w.detach(), expected, rtol=0, atol=1e-15)
    extra, memory = rule.finish({"w": w.detach()}, steps)
    c_new = c_i - c + (x - expected) / (steps * lr)
    assert torch.allclose(memory["w"], c_new, rtol=0, atol=1e-12)
    assert torch.allclose(extra["w"], c_new - c_i, rtol=0, atol=1e-12)


def test_scaffold_client_through_local_update_with_adamw():
    """⟨a, w⟩ under AdamW: the step is corrected by −η(c − cᵢ), and cᵢ⁺ is the mean AdamW direction."""
    x, a = torch.tensor([1.0, -2.0, 0.0], dtype=F64), torch.tensor([0.3, -0.01, 2.0], dtype=F64)
    c, c_i = torch.tensor([0.5, -0.25, 0.0], dtype=F64), torch.tensor([0.0, 0.75, -1.0], dtype=F64)
    lr, steps = 0.05, 3
    rule = ScaffoldClient({"w": x}, {"w": c}, {"w": c_i}, _settings(steps, lr))
    u = local_update(LinearLoss(x, a), {"w": x}, SHARD, _collate, _settings(steps, lr), rule=rule)
    expected = _adamw(x, [lambda w: a] * steps, lr, correction=c - c_i)
    assert torch.allclose(u.state["w"], expected, rtol=0, atol=1e-12)
    c_new = c_i - c + (x - expected) / (steps * lr)
    assert torch.allclose(u.memory["w"], c_new, rtol=0, atol=1e-12)
    assert torch.allclose(u.extra["w"], c_new - c_i, rtol=0, atol=1e-12)
    # The correction cancels in cᵢ⁺: what is left is AdamW's direction on a constant gradient.
    assert torch.allclose(u.memory["w"], a / (a.abs() + EPS), rtol=0, atol=1e-9)


def test_scaffold_server_update_on_hand_made_tensors():
    x = {"w": torch.tensor([1.0, 2.0]), "b": torch.tensor([[0.5]])}
    c = {"w": torch.tensor([0.1, -0.1]), "b": torch.tensor([[0.2]])}
    ys = [{"w": torch.tensor([2.0, 0.0]), "b": torch.tensor([[1.5]])},
          {"w": torch.tensor([0.0, 6.0]), "b": torch.tensor([[0.5]])}]
    dcs = [{"w": torch.tensor([0.4, 0.8]), "b": torch.tensor([[-0.2]])},
           {"w": torch.tensor([-0.2, 0.4]), "b": torch.tensor([[0.6]])}]
    s = Scaffold(clients_per_round=2, seed=0, num_clients=4, server_lr=0.5)
    s.load_state_dict({"c": c, "c_clients": {}})
    # Example counts differ on purpose: SCAFFOLD's means are over clients, not examples.
    new = s.aggregate(1, x, {3: Update(ys[0], 10, extra=dcs[0]), 7: Update(ys[1], 90, extra=dcs[1])})
    for k in x:
        mean_dy = ((ys[0][k] - x[k]) + (ys[1][k] - x[k])) / 2
        assert torch.allclose(new[k], x[k] + 0.5 * mean_dy, rtol=0, atol=1e-7), k
        assert torch.allclose(s.c[k], c[k] + (2 / 4) * (dcs[0][k] + dcs[1][k]) / 2, rtol=0, atol=1e-7), k
    assert s.client_payload(2, 5, x) is s.c  # the next round sends the new c


def test_scaffold_reply_without_or_with_bad_control_variates_is_rejected():
    x = {"w": torch.tensor([1.0, 2.0])}
    stack = Validate(Scaffold(2, 0, num_clients=2))
    m = {"train_loss": 0.5}  # validation also wants a reply's train loss
    good = Update({"w": torch.tensor([1.5, 2.5])}, 4, m, extra={"w": torch.tensor([0.1, 0.2])})
    missing = Update({"w": torch.tensor([1.5, 2.5])}, 4, m)
    nan = Update({"w": torch.tensor([1.5, 2.5])}, 4, m, extra={"w": torch.tensor([float("nan"), 0.0])})
    stack.aggregate_round(1, x, {0: good, 1: missing, 2: nan})
    assert set(stack.rejected) == {1, 2}
    assert "extra" in stack.rejected[1] and "NaN" in stack.rejected[2]


def test_scaffold_refuses_wrappers_that_cover_only_the_model_update(tiny_cfg):
    with pytest.raises(ConfigError, match="dp.enabled covers only the model update, but strategy=scaffold"):
        tiny_cfg("strategy=scaffold", "dp.enabled=true", "dp.noise_multiplier=1")
    with pytest.raises(ConfigError, match="secure_aggregation covers only the model update"):
        tiny_cfg("strategy=scaffold", "engine=flower", "secure_aggregation=true")
    tiny_cfg("strategy=fedprox", "dp.enabled=true", "dp.noise_multiplier=1")  # FedProx sends nothing extra


def test_scaffold_runs_on_the_flower_engine(tiny_cfg):
    # Its client hook travels on Flower (tests/test_flower_client_hook.py); only SecAgg+ refuses it.
    assert tiny_cfg("strategy=scaffold", "engine=flower").strategy == "scaffold"
    assert tiny_cfg("strategy=fedprox", "engine=flower").strategy == "fedprox"  # mu travels in the settings


def _core(strategy: Strategy) -> Strategy:
    return strategy.layers()[-1] if hasattr(strategy, "layers") else strategy


def test_scaffold_end_to_end_resumes_its_control_variates_exactly(tiny_cfg, tmp_path):
    over = ("methods=lora", "strategy=scaffold", "lr.lora=0.01")
    whole = _run(tiny_cfg(*over, "rounds=2"), tmp_path / "whole")
    rd = RunDir(tmp_path / "split")
    _run(tiny_cfg(*over, "rounds=1"), rd.root)
    saved = load_checkpoint(rd.checkpoint("lora"))[0]["strategy"]["inner"]  # Validate(Scaffold)
    c, c_clients = saved["c"], saved["c_clients"]
    assert len(c_clients) == 2 and any(t.abs().sum() > 0 for t in c.values())
    # c stays the mean of all N=4 clients' cᵢ (the two unsampled ones are still zero).
    for k, t in c.items():
        assert torch.allclose(t, sum(ci[k] for ci in c_clients.values()) / 4, atol=1e-7), k
    job = prepare_job(tiny_cfg(*over, "rounds=2"))
    server = ServerRun(job, "lora", rd, log=lambda *_: None)
    assert server.round == 1
    core = _core(server.strategy)
    assert c.keys() == core.c.keys() and all(torch.equal(c[k], core.c[k]) for k in c)
    assert c_clients.keys() == core.c_clients.keys()
    assert all(torch.equal(c_clients[i][k], core.c_clients[i][k]) for i in c_clients for k in c)
    # Resuming continues exactly as the uninterrupted run.
    assert run_method(job, "lora", rd, progress=False, log=lambda *_: None)["status"] == "done"
    assert _timeless(rd.read_metrics()) == whole


def test_a_scaffold_round_moves_twice_the_bytes_of_a_fedavg_round(tiny_cfg, tmp_path):
    fedavg = _run(tiny_cfg("methods=lora", "rounds=1"), tmp_path / "fedavg")[-1]
    scaffold = _run(tiny_cfg("methods=lora", "rounds=1", "strategy=scaffold"), tmp_path / "scaffold")[-1]
    job = prepare_job(tiny_cfg("methods=lora"))
    _, model, setup = job.server_model("lora")
    state = {n: p for n, p in model.named_parameters() if p.requires_grad}
    clients = len(fedavg["clients"])
    assert fedavg["bytes_up"] == state_bytes(state) * clients
    assert scaffold["bytes_up"] == 2 * fedavg["bytes_up"]
    assert scaffold["bytes_down"] - state_bytes(setup) * clients == 2 * (fedavg["bytes_down"] - state_bytes(setup) * clients)
    assert scaffold["cum_bytes_up"] == 2 * fedavg["cum_bytes_up"]
