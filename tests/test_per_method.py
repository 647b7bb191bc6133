"""``<method>@<aggregator>``: each method of one run aggregates its own way, and exactly as a run
that sets the same strategy or server optimiser for everyone."""

from __future__ import annotations

import pytest
import torch

from federa.checkpoint import load_checkpoint
from federa.engines.flower.client_app import client_rule
from federa.engines.inprocess import run_method
from federa.errors import ConfigError
from federa.job import prepare_job
from federa.results_dir import RunDir
from federa.strategies.per_method import method_config, method_stack
from federa.strategies.scaffold import Scaffold
from federa.strategies.server_opt import ServerOptimizer


def _final(cfg, method: str, out) -> dict[str, torch.Tensor]:
    assert run_method(prepare_job(cfg), method, RunDir(out), progress=False, log=lambda *_: None)["status"] == "done"
    return load_checkpoint(RunDir(out).checkpoint(method))[0]["state"]


@pytest.mark.parametrize("method, run_wide", [
    ("lora@fedadam", ("server_opt.name=adam",)),
    ("lora@scaffold", ("strategy=scaffold",)),
    ("lora+ffa@fedprox", ("strategy=fedprox", "fedprox.mu=0.1")),
])
def test_a_method_at_an_aggregator_equals_the_run_wide_setting(tiny_cfg, tmp_path, method, run_wide):
    """Bit for bit: ``lora@fedadam`` in a FedAvg run trains exactly as ``lora`` in a run with server_opt=adam."""
    own = _final(tiny_cfg(f"methods=lora,{method}", "fedprox.mu=0.1", "lr.lora=0.01"), method, tmp_path / "own")
    plain = method.partition("@")[0]
    wide = _final(tiny_cfg(f"methods={plain}", "lr.lora=0.01", *run_wide), plain, tmp_path / "wide")
    assert own.keys() == wide.keys()
    for k in own:
        assert torch.equal(own[k], wide[k]), k
    # ... and the aggregator mattered: plain FedAvg ends elsewhere.
    fedavg = _final(tiny_cfg(f"methods={plain}", "lr.lora=0.01", "fedprox.mu=0.1"), plain, tmp_path / "fedavg")
    assert max((own[k] - fedavg[k]).abs().max().item() for k in own) > 1e-6


def test_the_stack_and_the_client_rule_follow_the_suffix(tiny_cfg):
    cfg = tiny_cfg("methods=lora,lora@scaffold,federa@fedavgm,lora+ffa@fedprox")

    def layers(method: str) -> list[str]:  # outermost first; Validate is always on
        return [type(s).__name__ for s in method_stack(cfg, method).layers()]

    assert layers("lora") == ["Validate", "FedAvg"]
    assert layers("lora@scaffold") == ["Validate", "Scaffold"]
    assert layers("lora+ffa@fedprox") == ["Validate", "FedProx"]
    assert layers("federa@fedavgm") == ["Validate", "ServerOptimizer", "FedAvg"]
    opt = method_stack(cfg, "federa@fedavgm").layers()[1]
    assert isinstance(opt, ServerOptimizer) and opt.opt.name == "sgd" and opt.opt.momentum == 0.9
    # A momentum the user set is kept; the run's own config is never changed.
    assert method_config(tiny_cfg("server_opt.momentum=0.5"), "lora@fedavgm").server_opt.momentum == 0.5
    assert cfg.server_opt.name == "none" and cfg.strategy == "fedavg"
    # A Flower node builds the same client rule from the same name.
    assert client_rule(cfg, "lora@scaffold") is Scaffold.client_rule
    assert client_rule(cfg, "lora") is None


@pytest.mark.parametrize("methods, message", [
    ("lora@bogus", "unknown aggregator '@bogus' in 'lora@bogus'; choose from fedavg"),
    ("lora+fedex@scaffold", "+fedex brings its own aggregation (fedex), so @scaffold cannot replace it"),
    ("lora@fedsa", "unknown aggregator '@fedsa'"),
    ("lora+flora@fedadam", "server_opt"),  # heterogeneous ranks cannot take a server optimiser
    ("fft+ffa@fedadam", "variants apply to lora and federa only"),
])
def test_bad_suffixes_are_one_line_errors(tiny_cfg, methods, message):
    with pytest.raises(ConfigError) as err:
        tiny_cfg(f"methods={methods}")
    assert message in str(err.value) and "\n" not in str(err.value)
