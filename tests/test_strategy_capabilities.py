"""Strategy hooks in three capabilities with defaults: a new strategy writes ``aggregate`` alone, and a
wrapper forwards each capability of the strategy inside it (docs/strategies.md, "Adding a strategy")."""

from __future__ import annotations

import inspect

import pytest
import torch

from federa.checkpoint import load_checkpoint
from federa.engines.inprocess import run_method
from federa.job import prepare_job
from federa.methods.base import state_bytes
from federa.results_dir import RunDir
from federa.strategies.base import Strategy, Updates, Wrapper
from federa.strategies.capabilities import (
    CAPABILITIES, NO_CLIENT_HOOK, NO_FROZEN_WEIGHTS, NOT_PERSONALISED, ClientHook, FrozenWeights, Personalised,
)
from federa.strategies.registry import _REGISTRY
from federa.strategies.stack import WRAPPERS, build_stack
from federa.types import State


class Midpoint(Strategy):
    """A new strategy as docs/strategies.md writes one: ``aggregate`` and nothing else. The next global
    state is halfway between the old one and the unweighted mean of the replies."""

    name = "midpoint"
    rounds: list[tuple[int, list[int], State]] = []

    def aggregate(self, rnd: int, global_state: State, updates: Updates) -> State:
        new = {k: (g + sum(u.state[k] for u in updates.values()) / len(updates)) / 2 for k, g in global_state.items()}
        Midpoint.rounds.append((rnd, sorted(updates), new))
        return new


def test_a_strategy_with_only_aggregate_runs_end_to_end_in_process(tiny_cfg, tmp_path, monkeypatch):
    monkeypatch.setitem(_REGISTRY, "midpoint", Midpoint)
    cfg = tiny_cfg("methods=lora", "strategy=midpoint")
    core = build_stack(cfg).layers()[-1]
    assert type(core) is Midpoint
    # Every capability answers with its default: the global state, nothing beside, nothing private or folded.
    assert (core.client_hook, core.personal, core.frozen) == (NO_CLIENT_HOOK, NOT_PERSONALISED, NO_FROZEN_WEIGHTS)
    Midpoint.rounds.clear()
    rd, job = RunDir(tmp_path), prepare_job(cfg)
    result = run_method(job, "lora", rd, progress=False, log=lambda *_: None)
    assert result["status"] == "done" and result["rounds"] == 2
    # The default sampling: 2 of 4 clients per round, as any strategy's configure_round draws them.
    sampled = [Strategy.sample_clients(core, rnd, range(4)) for rnd in (1, 2)]
    assert [(rnd, clients) for rnd, clients, _ in Midpoint.rounds] == [(1, sampled[0]), (2, sampled[1])]
    # The server's new state is what aggregate returned, bit for bit.
    final = load_checkpoint(rd.checkpoint("lora"))[0]["state"]
    assert final.keys() == Midpoint.rounds[-1][2].keys()
    assert all(torch.equal(final[k], v) for k, v in Midpoint.rounds[-1][2].items())
    # Each client got the global state and sent its own back, nothing beside: the default client hook.
    per_client = state_bytes(final)
    rounds = [r for r in rd.read_metrics() if r["round"] > 0]
    assert [r["clients"] for r in rounds] == sampled
    assert all(r["client_bytes_up"] == [per_client, per_client] for r in rounds)
    assert all(r["client_bytes_down"] == [per_client, per_client] for r in rounds)  # LoRA has no setup to send


class Everything(Strategy, ClientHook, Personalised, FrozenWeights):
    """A core strategy with every capability, to see each one through a stack of wrappers."""

    def aggregate(self, rnd: int, global_state: State, updates: Updates) -> State:
        return global_state


def test_every_wrapper_forwards_every_capability_of_its_inner_strategy(tiny_cfg):
    cfg = tiny_cfg("robust.clip_delta_norm=1", "dp.enabled=true", "dp.noise_multiplier=1", "server_opt.name=adam")
    core = Everything(clients_per_round=2, seed=0)
    stack: Strategy = core
    for wrapper in reversed(WRAPPERS):  # each wrapper of the registry, nested as build_stack nests them
        stack = wrapper.wrap(stack, cfg)
        for name in CAPABILITIES:
            assert getattr(stack, name) is core, f"{wrapper.__name__} does not forward {name}"
    assert len(stack.layers()) == len(WRAPPERS) + 1


def test_each_capability_is_a_strategy_attribute_with_a_default():
    class Plain(Strategy):
        def aggregate(self, rnd: int, global_state: State, updates: Updates) -> State:
            return global_state

    plain, full = Plain(2, 0), Everything(2, 0)
    for name, kind in CAPABILITIES.items():
        default = getattr(plain, name)
        assert isinstance(default, kind) and default is not plain  # the do-nothing object
        assert getattr(full, name) is full  # a strategy that subclasses the capability is it
    g = {"w": torch.ones(2)}
    assert plain.client_hook.client_state(1, 0, g) is g and plain.client_hook.client_payload(1, 0, g) == {}
    assert plain.personal.test_privates() == [({}, 1)] and plain.frozen.base_fold() == {}
    assert plain.frozen.reparametrise(1, g) is g


def test_a_wrapper_leaves_no_strategy_hook_unforwarded():
    """A hook added to Strategy but not to Wrapper would answer with the wrapper's own default and
    silently hide the inner strategy's: every public method and property of Strategy is the Wrapper's
    own, except sampling (reached through configure_round, which it forwards)."""
    own = vars(Wrapper)
    hooks = [n for n, v in vars(Strategy).items() if not n.startswith("_") and (inspect.isfunction(v) or
                                                                              isinstance(v, property))]
    assert set(CAPABILITIES) <= set(hooks)
    assert [n for n in hooks if n not in own] == ["sample_clients"]


@pytest.mark.parametrize("method", ["lora+fedsa", "lora+fedsvd", "lora+flora"])
def test_the_core_capabilities_reach_the_server_through_the_whole_stack(tiny_cfg, method):
    from federa.strategies.per_method import method_stack

    stack = method_stack(tiny_cfg(f"methods={method}", "robust.clip_delta_norm=1"), method)
    core = stack.layers()[-1]
    assert isinstance(stack, Wrapper) and core is not stack
    assert {n for n, kind in CAPABILITIES.items() if isinstance(core, kind)} == {
        "lora+fedsa": {"client_hook", "personal"}, "lora+fedsvd": {"frozen"},
        "lora+flora": {"client_hook", "frozen"}}[method]
    assert all(getattr(stack, n) is getattr(core, n) for n in CAPABILITIES)
