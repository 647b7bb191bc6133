"""The ``federa compare`` command line: its options, the plan they describe, and the run.

Wired in :mod:`federa.cli`.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from federa.compare.lr_grid import LR_MULTIPLIERS
from federa.compare.plan import (
    DEFAULT_ALPHAS, DEFAULT_LAST_K, DEFAULT_MARGIN, Plan, parse_alphas, parse_methods, parse_seeds,
)
from federa.compare.sequential import parse_looks
from federa.config import load_config
from federa.errors import ConfigError
from federa.methods import available_methods

if TYPE_CHECKING:
    from federa.compare.stats import Verdict


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML config file (default: the built-in default)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key for every cell, e.g. --set rounds=5 (repeatable)")
    p.add_argument("--methods", help="comma-separated methods (default: the config's `methods`); "
                                     f"available: {','.join(available_methods())}")
    p.add_argument("--alphas", default=DEFAULT_ALPHAS,
                   help=f"Dirichlet alphas and/or 'iid', comma-separated (default: {DEFAULT_ALPHAS})")
    p.add_argument("--seeds", help="comma-separated seeds, each a new partition and init (default: the config's seed)")
    p.add_argument("--target", type=float, help="absolute target of the main metric (default: 99%% of FFT's best per cell)")
    p.add_argument("--lr-grid", action="store_true",
                   help=f"pick each method's lr from x{{{', '.join(f'{m:g}' for m in LR_MULTIPLIERS)}}} "
                        "on a validation split of the clients' training data")
    p.add_argument("--last-k", type=int, default=DEFAULT_LAST_K,
                   help=f"final score = mean of the last k evaluations in the claims (default {DEFAULT_LAST_K})")
    p.add_argument("--looks", help="sequential plan: seed counts per alpha at which the claims are read, e.g. 3,5,8; "
                                   "an alpha with an open comparison gets the next look's seeds (intervals "
                                   "Bonferroni-corrected over the looks; --seeds lists at least the last count)")
    p.add_argument("--margin", type=float, default=DEFAULT_MARGIN,
                   help=f"equivalence band ±margin of the main metric (default {DEFAULT_MARGIN:g}: one point)")
    p.add_argument("--out", help="results folder (default: runs/compare-<name>); re-run the command to resume")
    p.add_argument("--keep-checkpoints", action="store_true",
                   help="keep each finished run's checkpoint.pt (and the lr grid's final models); by default only "
                        "unfinished runs keep them, to resume")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (logs, CI)")


def plan_from_args(args: argparse.Namespace) -> Plan:
    base = load_config(args.config, args.set)
    if args.target is not None and not 0 < args.target <= 1:
        raise ConfigError(f"--target must be a score in (0, 1], got {args.target}; e.g. --target 0.85")
    if args.last_k < 1:
        raise ConfigError(f"--last-k must be at least 1, got {args.last_k}; e.g. --last-k 3")
    if not 0 < args.margin < 1:
        raise ConfigError(f"--margin must lie in (0, 1), got {args.margin}; e.g. --margin 0.01")
    looks = parse_looks(args.looks) if args.looks else ()
    seeds = parse_seeds(args.seeds) if args.seeds else (tuple(range(looks[-1])) if looks else (base.seed,))
    if looks and len(seeds) < looks[-1]:
        raise ConfigError(f"--looks {args.looks} needs {looks[-1]} seeds, --seeds lists {len(seeds)}; "
                          f"list more seeds or drop --looks")
    return Plan(
        base=base,
        methods=parse_methods(args.methods) if args.methods else tuple(base.methods),
        alphas=parse_alphas(args.alphas),
        seeds=seeds, looks=looks, margin=args.margin,
        out=Path(args.out) if args.out else Path("runs") / f"compare-{base.name}",
        target=args.target, lr_grid=args.lr_grid, last_k=args.last_k, keep_checkpoints=args.keep_checkpoints,
    )


def main(args: argparse.Namespace) -> list[str]:
    """Run ``federa compare``; returns the (method, alpha) pairs that did not finish."""
    from federa.compare.execute import run_compare  # heavy (jobs, training): not needed to parse options

    plan = plan_from_args(args)
    print(f"results: {plan.out}")
    outcome = run_compare(plan, progress=not args.no_progress)
    print((plan.out / "summary.md").read_text(encoding="utf-8"))
    for i, c in enumerate(outcome["claims"], 1):
        print(f"claim {i}: {c.verdict}: {c.title}")
    print(f"details: {plan.out / 'claims.md'}")
    for line in not_learned(outcome.get("learned", {})):
        print(line)
    return outcome["failed"]


def not_learned(learnt: Mapping[str, Mapping[str, Verdict]]) -> list[str]:
    """One warning per alpha where no method learned (so every verdict there is inconclusive)."""
    return [f"warning: at alpha={a} no method beat its untrained score and the label prior (claims.md, 'Did the "
            "runs learn?'), so its verdicts decide nothing: raise local_steps or rounds, or check the lrs"
            for a, per in learnt.items() if per and all(v.verdict != "supported" for v in per.values())]
