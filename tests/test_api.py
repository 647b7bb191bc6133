"""The Python API: ``federa.Config``, ``run``, ``RunResult``, ``compare``, ``load_model``.

The README's notebook example runs as written (on the tiny model), and a loaded final model
must score exactly what the run's last evaluation recorded.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

import federa
from federa.errors import ConfigError, FederaError, ModelError

ROOT = Path(__file__).resolve().parents[1]


def _tiny(model_dir: Path, csv: Path) -> dict:
    return {"model": {"path": str(model_dir), "num_threads": 1}, "data": {"path": str(csv)}, "num_clients": 4,
            "clients_per_round": 2, "local_steps": 2, "batch_size": 8, "max_length": 32, "lora": {"r": 4}}


def test_public_api_is_exactly_all_and_import_is_cheap():
    assert federa.__all__ == ["Config", "RunResult", "compare", "load_model", "run"]
    assert dir(federa) == sorted(federa.__all__)
    code = ("import sys, federa; heavy = [m for m in ('torch', 'transformers', 'peft', 'datasets') if m in sys.modules];"
            "print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    with pytest.raises(AttributeError):
        federa.ServerRun  # noqa: B018 - internal names are not exported


def test_config_front_merges_sections_dotted_keys_and_overrides(tmp_path):
    cfg = federa.Config(rounds=3, partition={"alpha": 0.1}, overrides=["lora.alpha=8"], **{"lora.r": 4})
    assert (cfg.rounds, cfg.partition.alpha, cfg.partition.kind, cfg.lora.r, cfg.lora.alpha) == (3, 0.1, "dirichlet", 4, 8)
    assert cfg.replace(rounds=5).rounds == 5 and cfg.rounds == 3  # a copy
    saved = cfg.save(tmp_path / "exp.yaml")
    again = federa.Config(saved, seed=7)
    assert again.partition.alpha == 0.1 and again.seed == 7 and again.replace(seed=0) == cfg
    assert federa.Config.from_dict({"methods": "lora,federa"}).methods == ["lora", "federa"]
    with pytest.raises(ConfigError, match="unknown config key 'partition.alfa'"):
        federa.Config(partition={"alfa": 0.1})
    with pytest.raises(ConfigError, match="clients_per_round"):
        federa.Config(num_clients=2, clients_per_round=3)


def _readme_example() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    m = re.search(r"<!-- python-api example.*?-->\n```python\n(.*?)```", text, re.S)
    assert m, "README lost its Python API example"
    return m.group(1)


def test_readme_example_runs(tmp_path, monkeypatch, tiny_model_dir, small_csv):
    code = _readme_example()
    assert len(code.strip().splitlines()) <= 12
    # The example as written, on the tiny model: its Config gets the tiny model and data first.
    code = code.replace("federa.Config(", "federa.Config(TINY, ")
    monkeypatch.chdir(tmp_path)
    ns = {"TINY": _tiny(tiny_model_dir, small_csv)}
    exec(compile(code, "README.md", "exec"), ns)
    result, scores, model, adapter, grid = (ns[k] for k in ("result", "scores", "model", "adapter", "grid"))
    assert result.run_dir == Path("runs/notebook") and result.failed == []
    assert sorted(result.models) == ["federa", "lora"] and all(p.is_dir() for p in result.models.values())
    # metrics: every metrics.jsonl line; the frame pivots to rounds 0..3 × methods.
    assert len(result.metrics) == 2 * 4 and list(scores.index) == [0, 1, 2, 3]
    fed = [r["score"] for r in result.metrics if r["method"] == "federa"]
    assert list(scores["federa"]) == fed and result.methods["federa"]["final_score"] == fed[-1]
    assert federa.RunResult.read(result.run_dir).metrics == result.metrics
    from peft import PeftModel
    from transformers import PreTrainedModel

    assert isinstance(model, PreTrainedModel) and not any("lora_" in n for n, _ in model.named_parameters())
    assert isinstance(adapter, PeftModel)
    assert {r["alpha"] for r in grid.rows} == {"0.1", "iid"} and len(grid.claims) == 5
    assert (tmp_path / "runs/notebook-compare/summary.md").is_file()


@pytest.fixture(scope="module")
def finished(tmp_path_factory, tiny_model_dir, small_csv):
    out = tmp_path_factory.mktemp("api") / "run"
    cfg = federa.Config(_tiny(tiny_model_dir, small_csv), methods=["fft", "lora", "federa", "bitfit", "prompt"],
                        rounds=1)
    return federa.run(cfg, out=out, log=None)


@pytest.mark.parametrize("method,as_peft", [("fft", False), ("lora", False), ("lora", True), ("federa", False),
                                            ("federa", True), ("bitfit", False), ("prompt", True)])
def test_loaded_model_scores_what_the_run_recorded(finished, method, as_peft):
    from federa.job import prepare_job

    job = prepare_job(finished.config.settings)
    model = federa.load_model(finished.run_dir, method, peft=as_peft).eval()
    got = job.task.evaluate(model, job.test, job.collate, job.label_names, 64, "cpu")
    last = [r for r in finished.metrics if r["method"] == method][-1]
    assert last["round"] == 1
    assert got["accuracy"] == last["accuracy"]
    assert got["loss"] == pytest.approx(last["loss"], abs=1e-5)


def test_load_model_refuses_with_the_fix(finished):
    with pytest.raises(ModelError, match="peft=True"):
        federa.load_model(finished.run_dir, "prompt")
    with pytest.raises(ModelError, match="peft=False"):
        federa.load_model(finished.run_dir, "fft", peft=True)
    with pytest.raises(FederaError, match="finished here: bitfit, federa, fft, lora, prompt"):
        federa.load_model(finished.run_dir, "ia3")


def test_load_model_shows_no_false_untrained_head_alarm_but_keeps_real_reports(finished, monkeypatch):
    import logging
    import warnings

    import torch
    import transformers
    from safetensors.torch import load_file

    import federa.loading

    class Seen(logging.Handler):  # what transformers' own handler would print
        def __init__(self):
            super().__init__()
            self.lines: list[str] = []

        def emit(self, record):
            self.lines.append(record.getMessage())

    seen, root = Seen(), logging.getLogger("transformers")
    before = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_warning()  # as a user's session has it (the tests quiet it)
    root.addHandler(seen)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model = federa.load_model(finished.run_dir, "federa")
        # The head the base lacks is the one the adapter brings: no "newly initialized" report, no peft
        # deprecation noise, and the loaded head is the trained one.
        assert not [line for line in seen.lines if "MISSING" in line or "LOAD REPORT" in line], seen.lines
        assert not [w for w in caught if "is_gradient_checkpointing" in str(w.message)]
        saved = load_file(str(finished.run_dir / "federa/final/adapter_model.safetensors"))
        assert torch.equal(model.classifier.weight, saved["base_model.model.classifier.weight"])
        # A key the adapter does not bring is a real problem: transformers' report stays visible.
        monkeypatch.setattr(federa.loading, "_adapter_keys", lambda final: set())
        federa.load_model(finished.run_dir, "lora")
        assert [line for line in seen.lines if "LOAD REPORT" in line and "classifier.weight" in line
                and "MISSING" in line]
    finally:
        root.removeHandler(seen)
        transformers.logging.set_verbosity(before)
