"""The config edge: YAML + --set parse into one validated, re-runnable Config."""

from pathlib import Path

import pytest

from federa.config import Config, build_config, load_config
from federa.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def test_set_overrides_nested_lists_and_scalars():
    cfg = build_config({}, ["methods=federa,lora", "partition.alpha=0.1", "lora.target_modules=query,key",
                            "lr.federa=2e-3", "local_epochs=1.5", "federa.svd_niter=4"])
    assert cfg.methods == ["federa", "lora"]
    assert cfg.partition.alpha == 0.1 and cfg.partition.kind == "dirichlet"
    assert cfg.lora.target_modules == ["query", "key"]
    assert cfg.lr["federa"] == 2e-3 and cfg.lr["lora"] == Config().lr["lora"]
    assert cfg.local_epochs == 1.5 and cfg.federa.svd_niter == 4


def test_resolved_config_yaml_round_trips(tmp_path):
    cfg = build_config({}, ["methods=lora", "partition.kind=iid", "rounds=3", "seed=7"])
    p = tmp_path / "config.yaml"
    p.write_text(cfg.to_yaml())
    assert load_config(p) == cfg


def test_shipped_default_yaml_is_the_built_in_default():
    assert load_config(ROOT / "configs" / "default.yaml") == Config()


@pytest.mark.parametrize("overrides,needle", [
    (["lora.r=-3"], "lora.r must be a positive integer"),
    (["partition.kind=zipf"], "config key 'partition.kind'"),
    (["data.path=a.csv", "data.hub=ag_news"], "set either data.path or data.hub"),
    (["lr.fft=0"], "lr.fft must be > 0"),
    (["lr.nope=1"], "lr.nope: unknown method"),
    (["methods=lora,lora"], "lists a method twice"),
    (["partition.sizes=[1,2]"], "partition.sizes has 2 entries for 10 clients"),
    (["alpha"], "expected key=value"),
])
def test_invalid_values_name_the_key(overrides, needle):
    with pytest.raises(ConfigError, match=needle.replace("(", r"\(").replace("[", r"\[")):
        build_config({}, overrides)


def test_yaml_that_is_not_a_mapping(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_config(p)
