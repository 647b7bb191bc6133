"""benchmarks/claims.py: the profiles' plans and their estimated cost (printed without running)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("claims_benchmark", ROOT / "benchmarks" / "claims.py")
claims = importlib.util.module_from_spec(spec)
sys.modules["claims_benchmark"] = claims  # its dataclasses look their module up by name
spec.loader.exec_module(claims)


def test_estimate_prices_steps_grid_and_evaluation_by_hand():
    cpu = claims.PROFILES["cpu"]
    step = sum(claims.COSTS["cpu"]["step_s"].values())  # one optimiser step of each of fft, lora, federa
    row = claims.COSTS["cpu"]["eval_s_per_row"]
    e = claims.estimate(cpu, "bbc_news", 5)
    # One cell: 6 rounds × 5 clients × 8 steps of training, plus evaluation every round: rounds 0–3 on the
    # 150-row subset, rounds 4–6 on all 445 rows, for 3 methods.
    assert e["cell_s"] == pytest.approx(6 * 5 * 8 * step + (4 * 150 + 3 * 445) * 3 * row)
    # The grid per alpha: 3 multipliers × 2 seeds × (3 rounds × 40 steps + (300 val rows at the end + 8 rows
    # at round 0) × 3 methods).
    assert e["grid"] == pytest.approx(2 * 3 * 2 * (3 * 40 * step + 308 * 3 * row))
    assert e["total"] == pytest.approx(2 * (5 * e["cell_s"]) + e["grid"] + 30.0)


@pytest.mark.parametrize("profile, limit_min", [("cpu", 120), ("gpu", 10)])
def test_plan_prints_without_running_and_fits_its_limit(profile, limit_min, capsys, monkeypatch):
    monkeypatch.setattr(claims, "run_compare", lambda *a, **k: pytest.fail("--plan must not run anything"))
    assert claims.main(["--profile", profile, "--plan"]) == 0
    out = capsys.readouterr().out
    assert f"fits the profile's {limit_min} min" in out and "NOT" not in out
    assert "why:" in out and "estimated seconds of runs" in out


def test_plan_flags_a_plan_that_does_not_fit(capsys):
    assert claims.main(["--profile", "gpu", "--plan", "--looks", "3,8", "--seeds", "0,1,2,3,4,5,6,7"]) == 0
    assert "does NOT fit the profile's 10 min" in capsys.readouterr().out
    assert claims.main(["--profile", "cpu", "--plan", "--seeds", "0,1"]) == 2  # fewer seeds than the last look


def test_verdicts_record_is_plain_json_with_each_comparison():
    import json

    from federa.compare.claims import Claim, Comparison
    from federa.compare.stats import paired_verdict

    v = paired_verdict([0.03, 0.02, 0.04], ">", 0.0)
    claim = Claim("FeDeRA beats LoRA", v.verdict, ["..."], [Comparison("iid", "federa − lora", v, v.verdict)])
    rec = claims.verdicts_record({"claims": [claim], "learned": {"iid": {"federa": v}}}, run_s=120.0)
    back = json.loads(json.dumps(rec))
    comp = back["claims"][0]["comparisons"][0]
    assert back["claims"][0]["verdict"] == "supported" and comp["decided"] == "supported"
    assert comp["n"] == 3 and comp["mean"] == pytest.approx(0.03) and comp["lo"] > 0
    assert back["learned"] == {"iid": {"federa": "supported"}} and back["decided"] == [1, 1]
