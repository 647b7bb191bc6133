"""benchmarks/claims_agree.py: two disjoint seed sets' verdicts side by side, on made-up verdicts."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("claims_agree", ROOT / "benchmarks" / "claims_agree.py")
agree = importlib.util.module_from_spec(spec)
sys.modules["claims_agree"] = agree
spec.loader.exec_module(agree)


def test_agreement_reads_open_intervals_as_no_contradiction():
    assert agree.agreement("supported", "supported") == "same"
    assert agree.agreement("refuted", "supported") == "contradiction"
    assert agree.agreement("equivalent", "refuted") == "contradiction"
    assert agree.agreement("supported", "inconclusive") == "partial"
    assert agree.agreement("inconclusive", "inconclusive") == "open"
    assert agree.agreement("undecidable", "inconclusive") == "open"
    assert agree.agreement("undecidable", "refuted") == "partial"


def _record(seeds, verdict, mean, lo, hi):
    comp = {"alpha": "iid", "what": "federa − lora", "decided": verdict, "outcome": verdict, "n": len(seeds),
            "mean": mean, "lo": lo, "hi": hi}
    return {"profile": "cpu", "seeds": seeds, "looks": [3, 5], "budget": ["rounds=6"],
            "datasets": {"bbc_news": {"claims": [{"title": "beats LoRA", "verdict": verdict, "comparisons": [comp]}],
                                      "learned": {"iid": {"fft": "supported", "lora": "supported"}},
                                      "run_s": 600.0, "decided": [1, 1]}}}


def test_side_by_side_page_and_refusal_of_overlapping_seeds(tmp_path, capsys):
    a, b, c = tmp_path / "seeds-0-2", tmp_path / "seeds-100-102", tmp_path / "seeds-2-4"
    for folder, rec in ((a, _record([0, 1, 2], "supported", 0.021, 0.004, 0.038)),
                        (b, _record([100, 101, 102], "inconclusive", 0.012, -0.003, 0.027)),
                        (c, _record([2, 3, 4], "supported", 0.02, 0.01, 0.03))):
        folder.mkdir()
        (folder / "verdicts.json").write_text(json.dumps(rec), encoding="utf-8")
    out = tmp_path / "overview.md"
    assert agree.main([str(a), str(b), "--out", str(out)]) == 0
    text = out.read_text(encoding="utf-8")
    assert "| 1. beats LoRA | supported | inconclusive | partial |" in text
    assert "supported (+0.0210 [+0.0040, +0.0380], n=3)" in text
    assert "Claims over all datasets: partial 1." in text
    assert "fft sup/sup" in text
    assert agree.main([str(a), str(c)]) == 2  # seed 2 in both sets
    assert "overlap" in capsys.readouterr().err
    assert agree.main([str(a), str(tmp_path / "missing")]) == 2
