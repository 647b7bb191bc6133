"""Check README's default-run table against the code: run the shipped default (or read a finished
run) and compare every column, exactly where the figure is deterministic, within a tolerance where
two torch threads make it vary (accuracies) — so the README's first table cannot silently drift.

    .venv/bin/python benchmarks/readme_default.py                 # runs `federa run` (~4.5 min, 2 cores)
    .venv/bin/python benchmarks/readme_default.py --run runs/X    # checks a finished default run
    .venv/bin/python benchmarks/readme_default.py --write --set partition.client_val_fraction=0.1
                                                  # runs it (extra --set pass through) and rewrites the table

The per-client columns (mean and worst client accuracy, from summary.json's per-client metrics) appear
when the run held client examples out (``partition.client_val_fraction``); the check covers them when the
README's table has them.

Exit code 0: the table matches (or was written); 1: it drifted (each difference printed); 2: no table found.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BEGIN, END = "<!-- default-table -->", "<!-- /default-table -->"
# Accuracies of the 2-thread default vary by up to ~1.5 points from run to run (README explains).
SCORE_TOL = 0.02
EXACT = ("trainable params", "trainable %", "sent per client per round", "initial accuracy", "total communicated")
SCORES = ("final accuracy", "best accuracy")
# From summary.json's per-client metrics (federa.client_eval), when the run held client examples out.
CLIENT_SCORES = {"mean client accuracy": "final_client_score_mean", "worst client accuracy": "final_client_score_worst"}
# The README's columns, in order, out of report.md's main table (which has more).
COLUMNS = ("method", "trainable params", "trainable %", "sent per client per round", "initial accuracy",
           "final accuracy", "best accuracy", "time to target (training wall)", "total communicated")


def parse_table(text: str) -> dict[str, dict[str, str]]:
    """method → column → cell, from the first markdown table whose header starts with `method`."""
    lines = [ln for ln in text.splitlines() if ln.startswith("|")]
    head = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = {}
    for ln in lines[2:]:
        cells = [c.strip() for c in ln.strip("|").split("|")]
        rows[cells[0]] = dict(zip(head, cells))
    return rows


def readme_table() -> dict[str, dict[str, str]] | None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    if BEGIN not in text or END not in text:
        return None
    return parse_table(text[text.index(BEGIN) + len(BEGIN):text.index(END)])


def run_table(run: Path) -> dict[str, dict[str, str]]:
    """report.md's main table, plus the per-client columns from summary.json where it has them."""
    report = (run / "report.md").read_text(encoding="utf-8")
    table = report[report.index("| method |"):]
    rows = parse_table(table.split("\n\n")[0])
    methods = json.loads((run / "summary.json").read_text())["methods"]
    for m, row in rows.items():
        for col, key in CLIENT_SCORES.items():
            if methods.get(m, {}).get(key) is not None:
                row[col] = f"{methods[m][key]:.4f}"
    return rows


def render_table(rows: dict[str, dict[str, str]]) -> str:
    """The README's table from a run's rows: :data:`COLUMNS`, then the per-client ones every row has."""
    head = [*COLUMNS, *(c for c in CLIENT_SCORES if rows and all(c in r for r in rows.values()))]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r.get(c, "–") for c in head) + " |" for r in rows.values()]
    return "\n".join(lines)


def with_table(readme: str, table: str) -> str:
    """``readme`` with the text between the markers replaced by ``table``."""
    start, end = readme.index(BEGIN) + len(BEGIN), readme.index(END)
    return readme[:start] + "\n" + table + "\n" + readme[end:]


def differences(readme: dict[str, dict[str, str]], measured: dict[str, dict[str, str]]) -> list[str]:
    out = []
    if readme.keys() != measured.keys():
        out.append(f"methods: README {sorted(readme)} vs run {sorted(measured)}")
    for m in readme.keys() & measured.keys():
        for col in EXACT:
            if readme[m].get(col) != measured[m].get(col):
                out.append(f"{m} / {col}: README {readme[m].get(col)} vs run {measured[m].get(col)}")
        for col in [*SCORES, *(c for c in CLIENT_SCORES if c in readme[m])]:
            if col not in measured[m]:
                out.append(f"{m} / {col}: in README, not in the run (run it with partition.client_val_fraction>0)")
                continue
            a, b = float(readme[m][col]), float(measured[m][col])
            if abs(a - b) > SCORE_TOL:
                out.append(f"{m} / {col}: README {a:.4f} vs run {b:.4f} (tolerance {SCORE_TOL})")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", type=Path, help="a finished default run to check instead of running one")
    ap.add_argument("--write", action="store_true", help="rewrite README's table from the run instead of checking it")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="passed to `federa run`")
    args = ap.parse_args()
    readme = readme_table()
    if readme is None:
        print(f"no table between {BEGIN} and {END} in README.md", file=sys.stderr)
        return 2
    run = args.run
    if run is None:
        run = Path(tempfile.mkdtemp(prefix="federa-default-")) / "run"
        sets = [a for kv in args.set for a in ("--set", kv)]
        subprocess.run([sys.executable, "-m", "federa.cli", "run", "--out", str(run), "--no-progress", *sets],
                       check=True)
    if args.write:
        path = ROOT / "README.md"
        path.write_text(with_table(path.read_text(encoding="utf-8"), render_table(run_table(run))), encoding="utf-8")
        print(f"wrote README.md's table from {run}; update the prose around it by hand")
        return 0
    diffs = differences(readme, run_table(run))
    summary = json.loads((run / "summary.json").read_text())
    print(f"checked {run} ({len(summary['methods'])} methods) against README.md")
    for d in diffs:
        print("DRIFT:", d)
    print("README table matches" if not diffs else f"{len(diffs)} difference(s)")
    return 1 if diffs else 0


if __name__ == "__main__":
    sys.exit(main())
