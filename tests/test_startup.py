"""Startup stays light: reading a config, building the parser and reporting a config error import
neither torch nor flwr nor transformers (nor the compare package), so `federa --help` and a typo
answer in a fraction of a second instead of the seconds those imports take.

Each check runs in a fresh interpreter: this test process has long imported everything.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import federa.errors

HEAVY = ("torch", "flwr", "transformers", "peft", "datasets", "federa.compare", "federa.experiment")


def _fresh_python(code: str) -> subprocess.CompletedProcess:
    src = str(Path(federa.errors.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    check = f"import sys; heavy = [m for m in {HEAVY!r} if m in sys.modules]; assert not heavy, heavy"
    return subprocess.run([sys.executable, "-c", f"{code}\n{check}"], env=env, capture_output=True, text=True,
                          timeout=120)


def test_config_imports_no_torch():
    r = _fresh_python("import federa.config\nfedera.config.build_config({})")
    assert r.returncode == 0, r.stderr


def test_every_task_metric_and_section_known_without_torch():
    # task + metric together make the config look up the task's metrics: still no torch.
    r = _fresh_python(
        "from federa.config import build_config\n"
        "build_config({}, ['task=token_classification', 'metric=entity_f1', 'strategy=scaffold',"
        " 'methods=fft,lora,federa,ia3,prompt,prefix,adapter,bitfit,federa+ffa'])\n"
        "build_config({}, ['strategy=trimmed_mean', 'robust.max_update_norm=1', 'methods=federa+fedex'])\n"
        "build_config({}, ['dp.enabled=true', 'dp.target_epsilon=8', 'server_opt.name=adam'])")
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("argv, message", [
    (["--help"], None),
    (["run", "--help"], None),
    (["run", "--set", "lora.r=0"], "config key 'lora.r'"),
    (["run", "--set", "lora.rank=4"], "unknown config key 'lora.rank'"),
    (["run", "--set", "task=regression", "--set", "metric=accuracy"], "metric=accuracy is not a regression metric"),
])
def test_cli_help_and_config_errors_stay_light(argv, message):
    r = _fresh_python(
        "from federa.cli import main\n"
        f"try:\n    rc = main({argv!r})\nexcept SystemExit as e:\n    rc = e.code\n"
        f"assert rc == {0 if message is None else 2}, rc")
    assert r.returncode == 0, r.stderr
    if message is not None:
        assert message in r.stderr and r.stderr.count("\n") == 1, r.stderr


def test_compare_config_error_stays_light():
    # `federa compare` reads its own options (federa.compare.cli) but not the rest of the package.
    r = _fresh_python(
        "import sys\nfrom federa.cli import main\n"
        "assert main(['compare', '--set', 'lora.r=0']) == 2\n"
        "assert 'federa.compare.execute' not in sys.modules\n"
        "sys.modules.pop('federa.compare')  # imported for its option parser only: allowed here")
    assert r.returncode == 0, r.stderr
    assert "config key 'lora.r'" in r.stderr
