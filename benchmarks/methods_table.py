"""One markdown table of every method in a run folder (or one ``federa compare`` cell): the README's
all-methods table is this script's output, pasted.

    .venv/bin/federa compare --methods "$(cat benchmarks/all_methods.txt)" --alphas 0.5 \\
        --set lora.client_ranks=2,4,8 --out runs/compare-all
    .venv/bin/python benchmarks/methods_table.py runs/compare-all/cells/a0.5-s0

It runs ``federa report`` on the folder (so ``summary.json`` is the current code's reading of
``metrics.jsonl``) and prints, per method in the order run: trainable share, bytes sent per client
per round, final and best test accuracy, the mean and the worst client's accuracy on their own
held-out examples (final round), the mean aggregation error of the LoRA factors, client compute
and total bytes.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any


def _fmt(x: float | None, spec: str = ".4f") -> str:
    return "–" if x is None else format(x, spec)


def _bytes(n: float | None) -> str:
    if n is None:
        return "–"
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return f"{n:.0f} B"


def row(m: str, s: dict[str, Any]) -> str:
    clients = [c for c in (s.get("final_client_scores") or []) if c is not None]
    cells = [
        f"`{m}`", _fmt(s.get("trainable_pct"), ".3f"), _bytes(s.get("bytes_per_client_round")),
        _fmt(s.get("final_score")), _fmt(s.get("best_score")),
        _fmt(statistics.fmean(clients) if clients else None), _fmt(min(clients) if clients else None),
        _fmt(s.get("mean_lora_agg_error"), ".3f"), _fmt(s.get("client_compute_s"), ".0f"),
        _bytes((s.get("total_bytes_up") or 0) + (s.get("total_bytes_down") or 0)),
        s.get("status", "?") + (" (diverged)" if s.get("diverged") else ""),
    ]
    return "| " + " | ".join(cells) + " |"


def table(run: Path) -> str:
    summary = json.loads((run / "summary.json").read_text(encoding="utf-8"))
    head = ["method", "trainable %", "sent / client / round", "final acc", "best acc", "mean client acc",
            "worst client acc", "LoRA agg. error", "client compute s", "total bytes", "status"]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 2) + "---|"]
    lines += [row(m, s) for m, s in summary["methods"].items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", type=Path, help="a run folder or a compare cell (runs/…/cells/a0.5-s0)")
    args = p.parse_args(argv)
    done = subprocess.run([sys.executable, "-m", "federa", "report", str(args.run)], capture_output=True, text=True)
    if done.returncode != 0:
        print(done.stderr.strip() or done.stdout.strip(), file=sys.stderr)
        return done.returncode
    print(table(args.run))
    return 0


if __name__ == "__main__":
    sys.exit(main())
