"""Adding a method as docs/methods.md says: one module, one registry line, no traps.

A LoRA-family method (a subclass of ``Lora``) takes the ``+variants`` without any list to edit
elsewhere, and a subclass that defines no settings of its own grows no config section that
nothing would read; a misspelt method name is answered with every name a method may take.
"""

from __future__ import annotations

import pytest

from federa import methods
from federa.config import build_config
from federa.engines.inprocess import run_method
from federa.errors import ConfigError
from federa.job import prepare_job
from federa.methods.lora import Lora
from federa.results_dir import RunDir


class ScaledLora(Lora):
    """A new LoRA-family method: LoRA's shape (``lora:``), its own name, nothing else declared."""

    name = "scaledlora"


@pytest.fixture
def registered(monkeypatch):
    monkeypatch.setitem(methods._REGISTRY, "scaledlora", f"{__name__}:ScaledLora")


def test_a_new_lora_family_method_runs_with_the_variants(registered, tiny_cfg, tmp_path):
    assert "scaledlora" in methods.lora_methods() and "slora" not in methods.lora_methods()
    cfg = tiny_cfg("methods=scaledlora+ffa,scaledlora+fedex", "rounds=1")
    job = prepare_job(cfg)
    for m in cfg.methods:
        assert run_method(job, m, RunDir(tmp_path), progress=False, log=lambda *_: None)["status"] == "done"
    lines = {r["method"]: r for r in RunDir(tmp_path).read_metrics() if r["round"] == 1}
    # +ffa: only B trains and travels, so the upload is exactly half of +fedex's A and B (tiny BERT's
    # query/value adapters are square, and the head travels in both).
    server = job.server_model("scaledlora+ffa")[1]
    head = sum(p.numel() * 4 for n, p in server.named_parameters() if "classifier" in n and p.requires_grad)
    ffa, fedex = (lines[m]["bytes_up"] // 2 for m in ("scaledlora+ffa", "scaledlora+fedex"))
    assert ffa - head == (fedex - head) // 2 and ffa > head


def test_a_subclass_without_settings_grows_no_config_section(registered):
    # Its settings are lora:'s; a scaledlora: section would be accepted and read by nothing.
    assert "scaledlora" not in methods.method_sections()
    assert methods.method_sections()["federa"].__name__ == "FederaSettings"  # one of its own: kept


@pytest.mark.parametrize("override", ["methods=lroa", "methods=lora+fa", "lr.lora+fa=1"])
def test_a_misspelt_method_is_told_every_name_a_method_may_take(override):
    with pytest.raises(ConfigError) as err:
        build_config({}, [override])
    text = str(err.value)
    for name in ("federa", "+ffa", "+fedsa", "+local", "@fedavg", "@fedadam", "@scaffold"):
        assert name in text, (name, text)
