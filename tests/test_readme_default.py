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


def test_the_table_is_rendered_from_a_run_with_per_client_columns(tmp_path):
    """--write renders README's columns from a run's report.md, plus mean/worst client accuracy from
    summary.json; the check then covers those columns too."""
    import json

    table = readme_default.readme_table()
    report_head = ["method", "trainable params", "trainable %", "sent per client per round", "initial accuracy",
                   "final accuracy", "best accuracy", "final macro-F1", "time to target (training wall)",
                   "client compute to target", "total communicated", "status"]
    rows = [[m, *(table[m].get(c, "0.9000") for c in report_head[1:])] for m in table]
    (tmp_path / "report.md").write_text("# run\n\n" + "\n".join(
        ["| " + " | ".join(report_head) + " |", "|" + "---|" * len(report_head)]
        + ["| " + " | ".join(r) + " |" for r in rows]) + "\n\nTraining wall = ...\n")
    clients = {"fft": (0.91, 0.75), "lora": (0.88, 0.6), "federa": (0.9, 0.7)}
    (tmp_path / "summary.json").write_text(json.dumps({"methods": {
        m: {"final_client_score_mean": a, "final_client_score_worst": w} for m, (a, w) in clients.items()}}))
    measured = readme_default.run_table(tmp_path)
    assert measured["lora"]["mean client accuracy"] == "0.8800" and measured["lora"]["worst client accuracy"] == "0.6000"
    rendered = readme_default.render_table(measured)
    assert rendered.splitlines()[0].endswith("| total communicated | mean client accuracy | worst client accuracy |")
    readme = f"intro\n{readme_default.BEGIN}\nold\n{readme_default.END}\nafter\n"
    written = readme_default.with_table(readme, rendered)
    assert written.startswith("intro\n") and written.endswith(f"{readme_default.END}\nafter\n") and "old" not in written
    back = readme_default.parse_table(written[written.index(readme_default.BEGIN) + len(readme_default.BEGIN):])
    assert readme_default.differences(back, measured) == []
    drifted = {m: dict(r) for m, r in measured.items()}
    drifted["federa"]["worst client accuracy"] = "0.6500"  # 0.05 below what the README says
    assert readme_default.differences(back, drifted) == ["federa / worst client accuracy: README 0.7000 vs run 0.6500 "
                                                         "(tolerance 0.02)"]
    # A README without the per-client columns (today's) is checked on the columns it has.
    assert readme_default.differences(table, measured) == []
