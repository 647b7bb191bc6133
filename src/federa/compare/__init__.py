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
- :mod:`~federa.compare.run`: running every pending (method, cell), resume checks included.
- :mod:`~federa.compare.tables`: results read back into per-round and per-(method, alpha) rows; CSV and
  ``summary.md``.
- :mod:`~federa.compare.stats`: t-intervals over seeds and the paired-difference verdict rule.
- :mod:`~federa.compare.seeds`: per-(method, alpha, seed) results and the convergence target (FFT's plateau).
- :mod:`~federa.compare.claims`: the FeDeRA paper's five claims checked seed by seed (paired intervals).
- :mod:`~federa.compare.plots`: the ``plots/*.png`` files.
- :mod:`~federa.compare.outputs`: every output file rebuilt from the cells on disk.
- :mod:`~federa.compare.cli`: the ``federa compare`` command line (wired in :mod:`federa.cli`).
"""

from federa.compare.claims import (
    MATCH_TOLERANCE,
    TIME_REDUCTION_CLAIM,
    Claim,
    check_claims,
    claim_matches_fft,
    claim_noniid,
    claim_oscillation,
    claim_robustness,
    claim_time,
    claims_markdown,
    headline,
)
from federa.compare.cli import add_arguments, main, plan_from_args
from federa.compare.jobs import cell_job, with_lr
from federa.compare.lr_grid import (
    GRID_COLUMNS,
    LR_MULTIPLIERS,
    VAL_FRACTION,
    carve_validation,
    choose_lrs,
    grid_scores,
    validation_job,
)
from federa.compare.outputs import write_outputs
from federa.compare.plan import (
    DEFAULT_ALPHAS,
    DEFAULT_LAST_K,
    IID,
    UNPARTITIONABLE,
    Cell,
    Plan,
    heterogeneity_order,
    parse_alphas,
    parse_methods,
    parse_seeds,
)
from federa.compare.plots import plot_robustness, plot_time_vs_fft, write_plots
from federa.compare.run import run_compare
from federa.compare.seeds import SeedResult, converged_score, convergence_target
from federa.compare.stats import Interval, Verdict, combine, last_k_mean, paired_verdict, t_interval
from federa.compare.tables import (
    RESULT_COLUMNS,
    SUMMARY_COLUMNS,
    CellResult,
    load_cells,
    results_rows,
    skipped_cells,
    summary_markdown,
    summary_rows,
)

__all__ = [
    "DEFAULT_ALPHAS", "DEFAULT_LAST_K", "GRID_COLUMNS", "IID", "UNPARTITIONABLE",
    "Interval", "SeedResult", "Verdict", "claim_oscillation", "combine", "converged_score", "convergence_target",
    "last_k_mean", "paired_verdict", "skipped_cells", "t_interval", "LR_MULTIPLIERS", "MATCH_TOLERANCE", "RESULT_COLUMNS",
    "SUMMARY_COLUMNS", "TIME_REDUCTION_CLAIM", "VAL_FRACTION",
    "Cell", "CellResult", "Claim", "Plan",
    "add_arguments", "carve_validation", "cell_job", "check_claims", "choose_lrs", "claim_matches_fft",
    "claim_noniid", "claim_robustness", "claim_time", "claims_markdown", "grid_scores", "headline",
    "heterogeneity_order", "load_cells", "main", "parse_alphas", "parse_methods", "parse_seeds", "plan_from_args",
    "plot_robustness", "plot_time_vs_fft", "results_rows", "run_compare", "summary_markdown", "summary_rows",
    "validation_job", "with_lr", "write_outputs", "write_plots",
]
