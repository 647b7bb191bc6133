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
    e = claims.estimate(cpu, "bbc_news", 5)
    # One cell: 8 rounds × 10 clients × 5 steps × (0.38 + 0.25 + 0.25) s = 352 s of training, plus evaluation
    # at rounds 0, 2 (150-row subset) and 4, 6, 8 (445 rows): (2·150 + 3·445) × 3 methods × 0.012 s = 58.9 s.
    assert e["cell_s"] == pytest.approx(352 + 1635 * 3 * 0.012)
    # The grid per alpha: 3 multipliers × 2 seeds × (4 rounds × 50 steps × 0.88 s + (300 val rows at the end
    # + 8 rows at round 0) × 3 methods × 0.012 s).
    assert e["grid"] == pytest.approx(2 * 3 * 2 * (176 + 308 * 3 * 0.012))
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
