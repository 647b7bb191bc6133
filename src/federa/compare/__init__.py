"""``federa compare``: every method on the same client partitions, across heterogeneity and seeds.

For each (alpha, seed) cell one :class:`~federa.job.Job` is prepared (one partition, pinned in
``partition.json``) and every method runs on it back to back in this process with the same
thread count, so differences in accuracy and time come from the methods alone. Layout::

    DIR/compare.json                    what was asked, plus the run facts (model, data, threads)
    DIR/cells/a0.1-s0/                  a RunDir: config.yaml, partition.json, metrics.jsonl, <method>/
    DIR/cells/a0.1-s0/lr_grid/x0.3/     --lr-grid only: short runs scored on a validation split
    DIR/results.csv summary.csv summary.md claims.md lr_grid.csv plots/*.png

A method whose ``result.json`` exists in a cell is read back, never re-run; an interrupted one
resumes from its checkpoint (ServerRun), so re-running the same command continues the comparison.

The package, one module per idea:

- :mod:`~federa.compare.plan`: what to run: the cells (alpha, seed) and the ``--methods/--alphas/--seeds``
  parsers.
- :mod:`~federa.compare.jobs`: a cell's job: the shared data re-partitioned, one method's lr set.
- :mod:`~federa.compare.lr_grid`: ``--lr-grid``: a validation split carved from the clients' shards,
  short runs per lr multiplier, the best lr each.
- :mod:`~federa.compare.execute`: running every pending (method, cell), resume checks included.
- :mod:`~federa.compare.tables`: results read back into per-round and per-(method, alpha) rows; CSV and
  ``summary.md``.
- :mod:`~federa.compare.stats`: t-intervals over seeds and the paired-difference verdict rule.
- :mod:`~federa.compare.seeds`: per-(method, alpha, seed) results and the convergence target (FFT's plateau).
- :mod:`~federa.compare.claims`: the FeDeRA paper's five claims checked seed by seed (paired intervals).
- :mod:`~federa.compare.plots`: the ``plots/*.png`` files.
- :mod:`~federa.compare.outputs`: every output file rebuilt from the cells on disk.
- :mod:`~federa.compare.cli`: the ``federa compare`` command line (wired in :mod:`federa.cli`).
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

# Name -> the submodule that defines it, imported on first use (PEP 562): `federa compare`'s option
# parser (federa.compare.cli) must not pull in the runner, plots and tables to report a typo.
_EXPORTS: dict[str, str] = {
    "MATCH_TOLERANCE": "claims", "TIME_REDUCTION_CLAIM": "claims", "LEARN_MARGIN": "claims", "learned": "claims",
    "learning": "claims", "Claim": "claims", "check_claims": "claims",
    "claim_matches_fft": "claims", "claim_noniid": "claims", "claim_oscillation": "claims",
    "claim_robustness": "claims", "claim_time": "claims", "claims_markdown": "claims", "headline": "claims",
    "add_arguments": "cli", "main": "cli", "plan_from_args": "cli", "cell_job": "jobs", "with_lr": "jobs",
    "GRID_COLUMNS": "lr_grid", "LR_MULTIPLIERS": "lr_grid", "VAL_FRACTION": "lr_grid",
    "carve_validation": "lr_grid", "choose_lrs": "lr_grid", "grid_scores": "lr_grid",
    "validation_job": "lr_grid", "write_outputs": "outputs", "DEFAULT_ALPHAS": "plan",
    "DEFAULT_LAST_K": "plan", "IID": "plan", "UNPARTITIONABLE": "plan", "Cell": "plan", "Plan": "plan",
    "heterogeneity_order": "plan", "parse_alphas": "plan", "parse_methods": "plan", "parse_seeds": "plan",
    "plot_robustness": "plots", "plot_time_vs_fft": "plots", "write_plots": "plots", "run_compare": "execute",
    "SeedResult": "seeds", "converged_score": "seeds", "convergence_target": "seeds", "Interval": "stats",
    "Verdict": "stats", "combine": "stats", "last_k_mean": "stats", "paired_verdict": "stats",
    "t_interval": "stats", "RESULT_COLUMNS": "tables", "SUMMARY_COLUMNS": "tables", "CellResult": "tables",
    "load_cells": "tables", "results_rows": "tables", "skipped_cells": "tables", "summary_markdown": "tables",
    "summary_rows": "tables",
}


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'federa.compare' has no attribute {name!r}")
    return getattr(importlib.import_module(f"federa.compare.{_EXPORTS[name]}"), name)


__all__ = [
    "DEFAULT_ALPHAS", "DEFAULT_LAST_K", "GRID_COLUMNS", "IID", "UNPARTITIONABLE",
    "Interval", "SeedResult", "Verdict", "claim_oscillation", "combine", "converged_score", "convergence_target",
    "last_k_mean", "paired_verdict", "skipped_cells", "t_interval", "LR_MULTIPLIERS", "MATCH_TOLERANCE", "RESULT_COLUMNS",
    "SUMMARY_COLUMNS", "TIME_REDUCTION_CLAIM", "VAL_FRACTION",
    "Cell", "CellResult", "Claim", "Plan",
    "add_arguments", "carve_validation", "cell_job", "check_claims", "choose_lrs", "claim_matches_fft",
    "claim_noniid", "claim_robustness", "claim_time", "claims_markdown", "grid_scores", "headline",
    "heterogeneity_order", "load_cells", "main", "parse_alphas", "parse_methods", "parse_seeds",
    "plan_from_args",
    "plot_robustness", "plot_time_vs_fft", "results_rows", "run_compare", "summary_markdown", "summary_rows",
    "validation_job", "with_lr", "write_outputs", "write_plots",
]


class _CallableModule(type(sys.modules[__name__])):
    """``federa.compare(...)`` runs a comparison (:func:`federa.api.compare`) while this package
    keeps its parts: the package and the public function share the name ``federa.compare``."""

    def __call__(self, *args, **kwargs):
        from federa.api import compare

        return compare(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
