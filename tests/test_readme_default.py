"""README's default-run table is machine-checkable: the checker parses it and flags drift."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("readme_default", ROOT / "benchmarks" / "readme_default.py")
readme_default = importlib.util.module_from_spec(spec)
spec.loader.exec_module(readme_default)


def test_readme_table_parses_and_a_drift_is_caught():
    table = readme_default.readme_table()
    assert table is not None and sorted(table) == ["federa", "fft", "lora"]
    assert readme_default.differences(table, table) == []
    drifted = {m: dict(row) for m, row in table.items()}
    drifted["lora"]["final accuracy"] = f"{float(table['lora']['final accuracy']) + 0.03:.4f}"
    drifted["federa"]["trainable params"] = "75,654"
    found = readme_default.differences(table, drifted)
    assert len(found) == 2 and found[0].startswith(("lora / final accuracy", "federa / trainable params"))
    within = {m: dict(row) for m, row in table.items()}
    within["fft"]["best accuracy"] = f"{float(table['fft']['best accuracy']) - 0.015:.4f}"
    assert readme_default.differences(table, within) == []
