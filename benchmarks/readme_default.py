"""Check README's default-run table against the code: run the shipped default (or read a finished
run) and compare every column, exactly where the figure is deterministic, within a tolerance where
two torch threads make it vary (accuracies) — so the README's first table cannot silently drift.

    .venv/bin/python benchmarks/readme_default.py                 # runs `federa run` (~4.5 min, 2 cores)
    .venv/bin/python benchmarks/readme_default.py --run runs/X    # checks a finished default run

Exit code 0: the table matches; 1: it drifted (each difference printed); 2: no table found.
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
    report = (run / "report.md").read_text(encoding="utf-8")
    table = report[report.index("| method |"):]
    return parse_table(table.split("\n\n")[0])


def differences(readme: dict[str, dict[str, str]], measured: dict[str, dict[str, str]]) -> list[str]:
    out = []
    if readme.keys() != measured.keys():
        out.append(f"methods: README {sorted(readme)} vs run {sorted(measured)}")
    for m in readme.keys() & measured.keys():
        for col in EXACT:
            if readme[m].get(col) != measured[m].get(col):
                out.append(f"{m} / {col}: README {readme[m].get(col)} vs run {measured[m].get(col)}")
        for col in SCORES:
            a, b = float(readme[m][col]), float(measured[m][col])
            if abs(a - b) > SCORE_TOL:
                out.append(f"{m} / {col}: README {a:.4f} vs run {b:.4f} (tolerance {SCORE_TOL})")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", type=Path, help="a finished default run to check instead of running one")
    args = ap.parse_args()
    readme = readme_table()
    if readme is None:
        print(f"no table between {BEGIN} and {END} in README.md", file=sys.stderr)
        return 2
    run = args.run
    if run is None:
        run = Path(tempfile.mkdtemp(prefix="federa-default-")) / "run"
        subprocess.run([sys.executable, "-m", "federa.cli", "run", "--out", str(run), "--no-progress"], check=True)
    diffs = differences(readme, run_table(run))
    summary = json.loads((run / "summary.json").read_text())
    print(f"checked {run} ({len(summary['methods'])} methods) against README.md")
    for d in diffs:
        print("DRIFT:", d)
    print("README table matches" if not diffs else f"{len(diffs)} difference(s)")
    return 1 if diffs else 0


if __name__ == "__main__":
    sys.exit(main())
