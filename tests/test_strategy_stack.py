"""The composable server side: a strategy from a registry, wrappers around it, FedOpt, no import cycles."""

from __future__ import annotations

import ast
import math
from pathlib import Path

import pytest
import torch

from federa.config import build_config
from federa.engines.inprocess import run_method
from federa.errors import ConfigError
from federa.job import prepare_job
from federa.results_dir import RunDir
from federa.strategies import register_strategy
from federa.strategies.base import Strategy, Updates
from federa.strategies.clip import ClipDeltas
from federa.strategies.dp import DpNoise
from federa.strategies.server_opt import ServerOptimizer, ServerOptSettings
from federa.strategies.stack import build_stack
from federa.strategies.validate import Validate
from federa.types import State, Update

SRC = Path(__file__).resolve().parents[1] / "src" / "federa"


class FirstClient(Strategy):
    """A toy strategy from a test module: the next global state is the lowest client id's reply."""

    name = "first_client"
    linear = True  # a weighted mean with all weight on one client, so DP may wrap it
    seen: list[list[int]] = []

    def aggregate(self, rnd: int, global_state: State, updates: Updates) -> State:
        FirstClient.seen.append(sorted(updates))
        return dict(updates[min(updates)].state)


def test_a_registered_toy_strategy_runs_a_round_inside_dp_and_clipping(tiny_cfg, tmp_path):
    register_strategy("first_client", FirstClient)
    cfg = tiny_cfg("methods=lora", "rounds=1", "strategy=first_client", "robust.clip_delta_norm=0.01",
                   "dp.enabled=true", "dp.noise_multiplier=0.0", "dp.clip_norm=1000")
    stack = build_stack(cfg)
    assert [type(s) for s in stack.layers()] == [Validate, ClipDeltas, DpNoise, FirstClient]
    FirstClient.seen.clear()
    rd = RunDir(tmp_path)
    job = prepare_job(cfg)
    result = run_method(job, "lora", rd, progress=False, log=lambda *_: None)
    assert result["status"] == "done"
    # DP hands the strategy the m=2 sampled replies (weight 1 each), after clipping to 0.01.
    assert len(FirstClient.seen) == 1 and len(FirstClient.seen[0]) == 2
    from federa.checkpoint import load_checkpoint
    from federa.strategies.robust import delta, global_norm

    _, model, _ = job.server_model("lora")
    start = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
    final = load_checkpoint(rd.checkpoint("lora"))[0]["state"]
    moved = global_norm(delta(final, start))
    assert 0 < moved <= 0.01 * (1 + 1e-5)  # the toy's choice, clipped; no noise at z=0
    assert rd.read_metrics()[-1]["epsilon"] == math.inf  # z=0: no privacy, and the record says so


def test_dp_around_a_median_is_refused_by_capability():
    with pytest.raises(ConfigError, match="dp.enabled needs a strategy that averages the updates"):
        build_config({}, ["strategy=median", "dp.enabled=true", "dp.noise_multiplier=1"])


def _opt(name: str, **kw) -> ServerOptimizer:
    class Mean(Strategy):
        linear = True

        def aggregate(self, rnd, global_state, updates):
            return updates[0].state

    return ServerOptimizer(Mean(1, 0), ServerOptSettings(name=name, **kw))


@pytest.mark.parametrize("name", ["sgd", "adam", "yogi", "adagrad"])
def test_server_optimisers_follow_reddi_et_al_on_hand_made_tensors(name):
    """Two rounds on a 2-vector against the paper's update rules written out by hand."""
    lr, b1, b2, tau, mom = 0.1, 0.9, 0.99, 1e-3, 0.5
    opt = _opt(name, lr=lr, beta1=b1, beta2=b2, tau=tau, momentum=mom)
    x = torch.tensor([1.0, -2.0], dtype=torch.float64)
    deltas = [torch.tensor([0.5, 0.1], dtype=torch.float64), torch.tensor([-0.2, 0.3], dtype=torch.float64)]
    m = torch.zeros(2, dtype=torch.float64)
    v = torch.full((2,), tau**2, dtype=torch.float64)
    expected = x.clone()
    for rnd, d in enumerate(deltas, 1):
        got = opt.aggregate_round(rnd, {"w": x}, {0: Update({"w": x + d}, 1)})["w"]
        if name == "sgd":
            m = mom * m + d if rnd > 1 else d
            expected = x + lr * m
        else:
            m = b1 * m + (1 - b1) * d
            if name == "adam":
                v = b2 * v + (1 - b2) * d * d
            elif name == "yogi":
                v = v - (1 - b2) * d * d * torch.sign(v - d * d)
            else:
                v = v + d * d
            expected = x + lr * m / (v.sqrt() + tau)
        assert torch.allclose(got, expected, rtol=0, atol=1e-15), (name, rnd, got, expected)
        x = got
    # The moments are checkpointed: a fresh optimiser loaded from state_dict takes the same next step.
    fresh = _opt(name, lr=lr, beta1=b1, beta2=b2, tau=tau, momentum=mom)
    fresh.load_state_dict(opt.state_dict())
    d3 = {0: Update({"w": x + 0.05}, 1)}
    assert torch.equal(fresh.aggregate_round(3, {"w": x}, d3)["w"], opt.aggregate_round(3, {"w": x}, d3)["w"])


def test_sgd_server_optimiser_at_lr_1_without_momentum_is_fedavg():
    x = {"w": torch.tensor([0.25, -1.5])}
    new = {"w": torch.tensor([0.75, 2.0])}
    assert torch.equal(_opt("sgd").aggregate_round(1, x, {0: Update(new, 1)})["w"], new["w"])


def test_fedadam_trains_end_to_end_and_resumes_its_moments(tiny_cfg, tmp_path):
    cfg = tiny_cfg("methods=lora", "rounds=2", "server_opt.name=adam", "server_opt.lr=0.01")
    rd = RunDir(tmp_path)
    assert run_method(prepare_job(cfg), "lora", rd, progress=False, log=lambda *_: None)["status"] == "done"
    from federa.checkpoint import load_checkpoint

    saved = load_checkpoint(rd.checkpoint("lora"))[0]["strategy"]
    opt = saved["inner"]  # Validate(ServerOptimizer(FedAvg))
    assert set(opt["m"]) == set(opt["v"]) != set() and opt["inner"] == {}


# -- the package's shape ------------------------------------------------------------------


def _imports(path: Path, module: str, known: set[str]) -> set[str]:
    """federa modules ``path`` imports, inside functions too, but not under ``if TYPE_CHECKING``."""
    pkg = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    out: set[str] = set()
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            node.body = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            out |= {f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names}
    return out & known


def test_no_import_cycles_inside_federa():
    mods = {}
    for p in SRC.rglob("*.py"):
        parts = list(p.relative_to(SRC.parent).with_suffix("").parts)
        mods[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = p
    graph = {m: _imports(p, m, set(mods)) for m, p in mods.items()}
    # Depth-first search for a back edge; report the cycle it closes.
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                return stack[stack.index(n):] + [n]
            if n not in state and (cycle := visit(n)):
                return cycle
        state[m] = 2
        stack.pop()
        return None

    for m in sorted(graph):
        if m not in state and (cycle := visit(m)):
            pytest.fail("import cycle: " + " -> ".join(cycle))
    assert len(graph) > 50  # the walk really saw the package
