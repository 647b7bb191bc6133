"""Every output file of a comparison, (re)built from the cells on disk.

``results.csv summary.csv summary.md claims.md lr_grid.csv plots/*.png`` in the plan's folder.
"""

from __future__ import annotations

import json
from typing import Any

from federa.checkpoint import atomic_write_bytes
from federa.compare.claims import check_claims, claims_markdown, headline, learning
from federa.compare.lr_grid import (
    GRID_COLUMNS, LEGACY_LR_RULE, choices_markdown, grid_scores, read_choices, recorded_rule,
)
from federa.compare.plan import Plan
from federa.compare.plots import write_plots
from federa.compare.tables import (
    RESULT_COLUMNS,
    SUMMARY_COLUMNS,
    _write_csv,
    load_cells,
    results_rows,
    skipped_cells,
    summary_markdown,
    summary_rows,
)


def write_outputs(plan: Plan) -> dict[str, Any]:
    """(Re)build every output file of ``plan.out`` from the cells on disk."""
    cells = load_cells(plan)
    rows = summary_rows(plan, cells)
    info_path = plan.out / "compare.json"
    info = json.loads(info_path.read_text(encoding="utf-8")) if info_path.is_file() else {}
    _write_csv(plan.out / "results.csv", results_rows(cells), RESULT_COLUMNS)
    _write_csv(plan.out / "summary.csv", rows, SUMMARY_COLUMNS)
    skipped = skipped_cells(plan)
    legacy = plan.lr_grid and recorded_rule(plan.out) == LEGACY_LR_RULE
    choices = {} if legacy else read_choices(plan.out)
    summary = summary_markdown(plan, rows, info, cells, skipped)
    if choices:
        summary += "\n" + choices_markdown(choices, {m: plan.base.lr_of(m) for m in plan.methods})
    atomic_write_bytes(plan.out / "summary.md", summary.encode("utf-8"))
    claims = check_claims(plan, rows, cells)
    learnt = learning(plan, cells)
    atomic_write_bytes(plan.out / "claims.md", claims_markdown(plan, claims, learnt).encode("utf-8"))
    if plan.lr_grid:
        # The one-SE rule marks the alpha's choice on every grid seed; a legacy folder, each cell's best.
        marks = lambda a: None if legacy else {m: c.chosen for m, c in choices.get(a, {}).items()}  # noqa: E731
        grid = [{"alpha": c.alpha, "seed": c.seed, **g} for c in plan.cells
                for g in grid_scores(plan.cell_dir(c), plan.methods, marks(c.alpha))]
        _write_csv(plan.out / "lr_grid.csv", grid, GRID_COLUMNS)
    plots = write_plots(plan, cells, rows)
    failed = [f"{r['method']}@alpha={r['alpha']}" for r in rows if r["done"] < r["seeds"]]
    return {"rows": rows, "claims": claims, "plots": plots, "failed": failed, "headline": headline(rows),
            "cells": cells, "skipped": skipped,
            "learned": learnt}
