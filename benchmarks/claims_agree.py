"""Set two seed sets' claim verdicts side by side: do disjoint seeds decide the same?

    .venv/bin/python benchmarks/claims_agree.py docs/results/claims-cpu/seeds-0-4 \\
        docs/results/claims-cpu/seeds-100-104 --out docs/results/claims-cpu/overview.md

Each folder is a ``benchmarks/claims.py --pages`` folder holding ``verdicts.json``. A claim *agrees* when both
sets give it the same verdict; it is *reproduced* when they agree on a decided verdict (supported, refuted or
equivalent per comparison), and a comparison decided in one set and open in the other is a *partial* match
(an open interval does not contradict a decided one; it says the second set's seeds did not close it).
Opposite decisions (supported in one, refuted in the other) are a *contradiction*: the protocol's error
rate was exceeded, or a choice (the learning rates) moved with the seeds.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

DECIDED = ("supported", "refuted", "equivalent")


def agreement(a: str, b: str) -> str:
    """How two verdicts of one comparison or claim relate: same | partial | contradiction | open."""
    if a == b:
        return "same" if a in DECIDED or a in ("mixed", "undecidable") else "open"
    if a in DECIDED and b in DECIDED:
        return "contradiction"
    if "undecidable" in (a, b):
        return "partial" if {a, b} & set(DECIDED) else "open"
    return "partial"  # one decided (or mixed), the other inconclusive


def _comparisons(claim: Mapping[str, Any]) -> dict[tuple[str, str], Mapping[str, Any]]:
    return {(c["alpha"], c["what"]): c for c in claim["comparisons"]}


def _iv(c: Mapping[str, Any] | None) -> str:
    if c is None:
        return "–"
    if c["lo"] is None:
        return f"{c['decided']} ({c['mean']:+.4f}, n={c['n']})" if c["mean"] is not None else c["decided"]
    return f"{c['decided']} ({c['mean']:+.4f} [{c['lo']:+.4f}, {c['hi']:+.4f}], n={c['n']})"


def side_by_side(sets: Sequence[tuple[str, Mapping[str, Any]]]) -> str:
    """Markdown: per dataset and claim, each set's verdict and their agreement; then every comparison."""
    (name_a, a), (name_b, b) = sets
    datasets = [d for d in a["datasets"] if d in b["datasets"]]
    lines = ["# The FeDeRA paper's claims, reproduced on two disjoint seed sets", "",
             f"Profile `{a['profile']}`; budget `{' '.join(a['budget'])}`; looks {a['looks']} seeds per alpha.",
             f"Set A: seeds {', '.join(map(str, a['seeds']))} ([pages]({name_a}/overview.md)); set B: seeds "
             f"{', '.join(map(str, b['seeds']))} ([pages]({name_b}/overview.md)). Each set ran its own lr grids "
             "(one-SE rule over its first two seeds) and its own sequential looks; nothing is shared but the protocol.",
             "", "Agreement: **same** (both sets gave this verdict), **partial** (decided in one, open in the "
             "other: not a contradiction, the other set's seeds did not close it), **contradiction** (opposite "
             "decisions), **open** (inconclusive in both).", ""]
    head, lines = lines, []
    counts: dict[str, int] = {}
    for d in datasets:
        ca, cb = a["datasets"][d]["claims"], b["datasets"][d]["claims"]
        lines += [f"## {d}", "", "| claim | set A | set B | agreement |", "|---|---|---|---|"]
        for i, (x, y) in enumerate(zip(ca, cb), 1):
            ag = agreement(x["verdict"], y["verdict"])
            counts[ag] = counts.get(ag, 0) + 1
            lines.append(f"| {i}. {x['title']} | {x['verdict']} | {y['verdict']} | {ag} |")
        lines += ["", "Every comparison (decided verdict, mean difference [interval], seeds):", "",
                  "| claim | alpha | comparison | set A | set B | agreement |", "|---|---|---|---|---|---|"]
        for i, (x, y) in enumerate(zip(ca, cb), 1):
            cx, cy = _comparisons(x), _comparisons(y)
            for key in list(cx) + [k for k in cy if k not in cx]:
                u, v = cx.get(key), cy.get(key)
                ag = agreement(u["decided"], v["decided"]) if u and v else "–"
                lines.append(f"| {i} | {key[0]} | {key[1]} | {_iv(u)} | {_iv(v)} | {ag} |")
        la, lb = a["datasets"][d]["learned"], b["datasets"][d]["learned"]
        learned = "; ".join(f"alpha={al}: " + ", ".join(
            f"{m} {la[al][m][:3]}/{lb.get(al, {}).get(m, '–')[:3]}" for m in la[al]) for al in la)
        lines += ["", f"Did each method learn (set A/set B; sup = yes): {learned}.",
                  f"Runs: set A {a['datasets'][d]['run_s'] / 60:.0f} min, set B {b['datasets'][d]['run_s'] / 60:.0f} "
                  f"min; comparisons decided: set A {a['datasets'][d]['decided'][0]}/{a['datasets'][d]['decided'][1]}, "
                  f"set B {b['datasets'][d]['decided'][0]}/{b['datasets'][d]['decided'][1]}.", ""]
    total = "Claims over all datasets: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) + "."
    return "\n".join([*head, total, "", *lines])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("set_a", help="pages folder of the first seed set (holds verdicts.json)")
    p.add_argument("set_b", help="pages folder of the second, disjoint seed set")
    p.add_argument("--out", help="write the side-by-side overview here (default: print it)")
    args = p.parse_args(argv)
    sets = []
    for folder in (args.set_a, args.set_b):
        path = Path(folder) / "verdicts.json"
        if not path.is_file():
            print(f"error: {path} not found; run benchmarks/claims.py with --pages {folder} first", file=sys.stderr)
            return 2
        sets.append((Path(folder).name, json.loads(path.read_text(encoding="utf-8"))))
    if set(sets[0][1]["seeds"]) & set(sets[1][1]["seeds"]):
        print("error: the two seed sets overlap; a reproduction needs disjoint seeds", file=sys.stderr)
        return 2
    text = side_by_side(sets)
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
