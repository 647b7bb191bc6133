"""FedProx: its update rule on hand-made tensors, end to end on the tiny model, and on the wire."""

from __future__ import annotations

from types import SimpleNamespace

import torch
from datasets import Dataset
from torch import nn

from federa.client import local_update, proximal_term
from federa.engines.inprocess import run_method
from federa.job import prepare_job
from federa.runlog import RunDir
from federa.strategies.stack import build_stack
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
