"""Fixed-seed runs give the same metrics, bit for bit, as the code before the aggregation redesign.

``tests/data/golden_metrics.json`` was written by this module (``FEDERA_WRITE_GOLDEN=1 pytest tests/test_golden.py``) on
the code *before* strategies, wrappers and engines were rebuilt as composable parts; the
redesign promised no change in behaviour, so every number except wall-clock times must match
exactly. Regenerate only for a change that is meant to move the numbers, and say so.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

GOLDEN = Path(__file__).parent / "data" / "golden_metrics.json"

# Each case: overrides on top of the tiny config of conftest.py. Together they cover FedAvg on
# three methods, both robust rules with validation and clipping, and DP-FedAvg.
CASES: dict[str, list[str]] = {
    "fedavg": ["methods=fft,lora,federa"],
    "median_clip": ["methods=lora", "strategy=median", "robust.clip_delta_norm=0.05"],
    "trimmed_norm": ["methods=federa", "strategy=trimmed_mean", "clients_per_round=4",
                     "trimmed_mean.trim_fraction=0.25", "robust.max_update_norm=100"],
    "dp": ["methods=lora", "dp.enabled=true", "dp.noise_multiplier=0.5", "dp.clip_norm=0.1"],
}


def _timeless(record: dict) -> dict:
    # Wall-clock figures differ from run to run; everything else is a function of the seed.
    return {k: v for k, v in record.items() if not k.endswith("_s")}


def run_case(make_cfg, overrides: list[str], out: Path) -> list[dict]:
    from federa.experiment import run_experiment
    from federa.runlog import RunDir, open_run_dir

    cfg = make_cfg(*overrides)
    run_experiment(cfg, open_run_dir(cfg, out, resume=False), progress=False, log=lambda *_: None)
    return [_timeless(r) for r in RunDir(out).read_metrics()]


@pytest.mark.parametrize("case", sorted(CASES))
def test_fixed_seed_metrics_match_the_pre_redesign_code(case, tiny_cfg, tmp_path):
    got = run_case(tiny_cfg, CASES[case], tmp_path / case)
    if os.environ.get("FEDERA_WRITE_GOLDEN"):  # regenerate: FEDERA_WRITE_GOLDEN=1 pytest tests/test_golden.py
        golden = json.loads(GOLDEN.read_text()) if GOLDEN.is_file() else {}
        GOLDEN.write_text(json.dumps({**golden, case: got}, indent=1, sort_keys=True) + "\n")
    expected = json.loads(GOLDEN.read_text())[case]
    # Every figure the old code wrote is unchanged; figures added since (the task's main metric as
    # "score", MCC) are extra keys, checked where they are introduced.
    assert len(got) == len(expected)
    assert [{k: r.get(k, "<missing>") for k in e} for r, e in zip(got, expected)] == expected
    assert all(r["score"] == r["accuracy"] for r in got)

