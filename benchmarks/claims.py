"""Check the FeDeRA paper's claims on every built-in dataset, with seeds, tuned lrs and modelled networks.

    .venv/bin/python benchmarks/claims.py --threads 2      # the benchmark (designed for <= 2 h on 2 idle cores)
    .venv/bin/python benchmarks/claims.py --quick          # the same code path on slivers: proves it runs
    python benchmarks/claims.py --jobs 4 --threads 4       # a GPU machine: four datasets at once on one card

For each built-in dataset (``federa datasets``: bbc_news, rotten_tomatoes, sts_b, wnut16) it runs
``federa compare`` with methods fft, lora, federa at Dirichlet alpha 0.1, 0.5 and IID, three seeds,
each method's lr picked per (method, alpha) by ``--lr-grid`` on validation rows carved from the
clients' training shards, and evaluation on the dataset's whole held-out test split. Verdicts follow
the paired-interval rule (see ``federa.compare.claims``); claim 3 is judged on modelled time under
``network.preset=edge-4g``. It writes one page per dataset and an overview table (for each claim, the
verdict per dataset) to ``--pages`` and prints its wall time. Re-running the command resumes: every
finished (method, cell) is read back, never re-run.

The budget (what was cut to fit two hours on two idle CPU cores, and why) is ``BUDGET`` below; the
estimate it rests on is printed before the run (``estimate_s``) so a slower machine shows up at once.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from federa.cli import _quiet_libraries
from federa.compare import IID, Plan, parse_alphas, parse_seeds, run_compare
from federa.config import build_config
from federa.errors import FederaError

METHODS = ("fft", "lora", "federa")
ALPHAS = ("0.1", "0.5", IID)
SEEDS = (0, 1, 2)
DATASETS = ("bbc_news", "rotten_tomatoes", "sts_b", "wnut16")
NETWORK = "edge-4g"  # the paper timed clients on an edge device: claim 3 is judged on this link

# The budget, common to every dataset. What was cut to fit <= 2 h on 2 idle cores, with the reason:
# - 10 rounds of 3 sampled clients (of 10) × 3 local steps × 8 examples × 48 tokens: 72 examples per round
#   and method, 90 optimiser steps per run (the earlier single-dataset benchmark took 200 steps of 16 × 64).
# - evaluation every 2nd round (6 evaluations: rounds 0, 2, ..., 10) on the *whole* held-out test split:
#   evaluation is most of the cost (36 cells × 3 methods × 6 passes), so it is spaced out, not subsampled;
#   final-3 = mean of rounds 6, 8, 10; FFT's plateau rule can fire at round 10 at the earliest.
# - at most 1,500 training examples per dataset (stratified), shared by the 10 clients.
# - the lr grid: ×0.3/×1/×3 of each method's default lr, half the rounds, on 20% of the clients' shards,
#   once per (dataset, method, alpha) on the alpha's first seed (not per seed).
ROUNDS, EVAL_EVERY, PER_ROUND, STEPS, MAX_TRAIN = 10, 2, 3, 3, 1500
BUDGET = [
    f"rounds={ROUNDS}", f"eval_every={EVAL_EVERY}", "num_clients=10", f"clients_per_round={PER_ROUND}",
    f"local_steps={STEPS}", "batch_size=8", "max_length=48", "eval_batch_size=128",
    f"data.max_train_examples={MAX_TRAIN}", f"network.preset={NETWORK}",
]
# Per dataset: Rotten Tomatoes holds out 10% (1,281 snippets, all evaluated) instead of 20% (2,562) to fit.
PER_DATASET: dict[str, list[str]] = {"rotten_tomatoes": ["data.test_size=0.1"]}
# Quick: the same path on slivers, two seeds (so intervals exist), to prove it runs end to end.
QUICK = [
    "rounds=3", "eval_every=1", "num_clients=3", "clients_per_round=2", "local_steps=1", "batch_size=4",
    "max_length=24", "eval_batch_size=64", "data.max_train_examples=60", "data.max_test_examples=30",
    f"network.preset={NETWORK}",
]
QUICK_SEEDS = (0, 1)

# Design-time cost model (seconds, two threads on an idle 2-core machine, MiniLM-L6; from the earlier
# single-thread measurements FFT ~1.0 s and LoRA ~0.65 s per step of 16×64 tokens, 16 ms per evaluated
# 64-token example, scaled to 8×48 tokens and ×1/1.8 for the second thread). Only to print a plan.
STEP_S = {"fft": 0.21, "lora": 0.135, "federa": 0.135}
EVAL_S_PER_EXAMPLE = 0.0067
TEST_SIZES = {"bbc_news": 445, "rotten_tomatoes": 1281, "sts_b": 1379, "wnut16": 479}


def estimate_s(datasets: Sequence[str], alphas: Sequence[str], seeds: Sequence[int], lr_grid: bool = True) -> float:
    """The budget's design estimate: training steps, grid runs and evaluation passes, priced as above."""
    train = sum(STEP_S.values()) * ROUNDS * PER_ROUND * STEPS  # the three methods of one cell
    evals = ROUNDS // EVAL_EVERY + 1
    val = 0.2 * MAX_TRAIN
    total = 0.0
    for d in datasets:
        cell = train + evals * len(METHODS) * TEST_SIZES.get(d, 1000) * EVAL_S_PER_EXAMPLE
        grid = 3 * (train / 2 + 2 * len(METHODS) * val * EVAL_S_PER_EXAMPLE) if lr_grid else 0.0
        total += len(alphas) * (len(seeds) * cell + grid)
    return total


def _pages_for(name: str, out: Path, pages: Path, outcome: Mapping[str, Any], budget: Sequence[str]) -> None:
    """One results page per dataset: budget, summary (with CIs, tuned lrs, modelled times), claims, plots."""
    plots = pages / name
    plots.mkdir(parents=True, exist_ok=True)
    for a in ALPHAS:
        for stem in (f"acc_vs_round_a{a}", f"acc_vs_modelled_a{a}", f"update_cos_a{a}"):
            src = out / "plots" / f"{stem}.png"
            if src.is_file():
                shutil.copyfile(src, plots / f"{stem}.png")
    for stem in ("acc_vs_alpha", "time_to_target_vs_fft"):
        if (out / "plots" / f"{stem}.png").is_file():
            shutil.copyfile(out / "plots" / f"{stem}.png", plots / f"{stem}.png")
    summary = (out / "summary.md").read_text(encoding="utf-8").replace("# federa compare", f"# Claims on {name}", 1)
    claims = (out / "claims.md").read_text(encoding="utf-8").replace("# ", "## ", 1).replace("\n## ", "\n### ")
    lr = (out / "lr_grid.csv").read_text(encoding="utf-8") if (out / "lr_grid.csv").is_file() else ""
    imgs = "\n".join(f"![{p.stem}]({name}/{p.name})" for p in sorted(plots.glob("*.png")))
    text = [summary, "", f"Budget: `{' '.join(budget)}`", "", claims, ""]
    if lr:
        text += ["## Learning-rate grid (`lr_grid.csv`)", "", "```", lr.strip(), "```", ""]
    text += ["## Plots", "", imgs, ""]
    (pages / f"{name}.md").write_text("\n".join(text), encoding="utf-8")


def measured_s(out: Path) -> float:
    """Seconds the runs under ``out`` took (every cell's and lr-grid run's methods, as logged in their
    metrics.jsonl): what the dataset cost however many invocations it took (a resume re-runs nothing)."""
    import json

    total = 0.0
    for path in out.glob("**/metrics.jsonl"):
        last: dict[str, float] = {}
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                row = json.loads(line)
                last[row["method"]] = row.get("cum_wall_s") or 0.0
        total += sum(last.values())
    return total


def where() -> str:
    """The machine the runs used, as the pages should name it: the GPU's name, else the CPU's core count."""
    import os

    import torch

    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)} (cuda, torch {torch.__version__})"
    return f"CPU, {os.cpu_count()} cores (torch {torch.__version__})"


def machines(out_root: Path, run_s: Mapping[str, float]) -> str:
    """Which machine(s) computed the runs: each dataset's folder keeps machines.json (seconds of runs per
    machine), so a benchmark resumed elsewhere, or read back on another machine, still names its card."""
    import json

    here, total = where(), {}
    for name, seconds in run_s.items():
        path = out_root / name / "machines.json"
        seen: dict[str, float] = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
        if seconds - sum(seen.values()) > 1.0:  # runs no machine was credited with: this invocation's
            seen[here] = seen.get(here, 0.0) + seconds - sum(seen.values())
            path.write_text(json.dumps(seen, indent=1), encoding="utf-8")
        for m, s in seen.items():
            total[m] = total.get(m, 0.0) + s
    return "; ".join(f"{m} ({s / 60:.0f} min of runs)" for m, s in total.items()) or here


def run_in_parallel(datasets: Sequence[str], jobs: int, child_args: Sequence[str], out_root: Path) -> dict[str, int]:
    """Run each dataset's compare in its own process, ``jobs`` at a time; their logs go to OUT/<dataset>.log.

    A small model on a large GPU leaves the card mostly idle (one process is bound by Python and kernel
    launches), so datasets run side by side; the parent then reads every finished cell back (a resume)
    to write the pages. Returns each dataset's exit status."""
    out_root.mkdir(parents=True, exist_ok=True)

    def one(name: str) -> int:
        cmd = [sys.executable, __file__, "--datasets", name, "--out", str(out_root),
               "--pages", str(out_root / f"pages-{name}"), *child_args]
        with open(out_root / f"{name}.log", "w", encoding="utf-8") as log:
            code = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT).returncode
        print(f"[{name}] process finished with status {code} (log: {out_root / f'{name}.log'})", flush=True)
        return code

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        return dict(zip(datasets, pool.map(one, datasets)))


def learned_row(learnt: Mapping[str, Mapping[str, Any]]) -> str:
    """Per method, in how many alphas its runs learned (beat their untrained score and the label prior)."""
    methods = {m: 0 for per in learnt.values() for m in per}
    for per in learnt.values():
        for m, v in per.items():
            methods[m] += v.verdict == "supported"
    return ", ".join(f"{m} {k}/{len(learnt)}" for m, k in methods.items()) or "–"


def overview_markdown(verdicts: Mapping[str, Sequence[tuple[str, str]]], budget: Sequence[str], seeds: Sequence[int],
                      wall_s: float, quick: bool, run_s: Mapping[str, float] | None = None,
                      machine: str | None = None, learnt: Mapping[str, str] | None = None) -> str:
    """For each claim, the verdict per dataset; and what each dataset's runs took."""
    names = list(verdicts)
    titles = next((list(v) for v in verdicts.values() if v), [])
    lines = ["# The FeDeRA paper's claims across the built-in datasets", "",
             ("**QUICK run: slivers of data, numbers meaningless; it only proves the pipeline.**\n" if quick else "")
             + f"Methods {', '.join(METHODS)}; alphas {', '.join(ALPHAS)}; seeds {', '.join(map(str, seeds))}; "
             f"lr per (method, alpha) from the validation grid; claim 3 on modelled time (network.preset={NETWORK}). "
             "Verdicts: 95% t-intervals of paired per-seed differences (see each page).", "",
             f"Budget: `{' '.join(budget)}`; this invocation's wall time: {wall_s:.0f} s (finished cells are read "
             "back, not re-run)" + (f". Runs computed on: {machine}." if machine else "."), "",
             "| claim | " + " | ".join(f"[{n}]({n}.md)" for n in names) + " |",
             "|---|" + "---|" * len(names)]
    for i, (title, _) in enumerate(titles):
        row = [f"{i + 1}. {title}"] + [verdicts[n][i][1] if i < len(verdicts[n]) else "–" for n in names]
        lines.append("| " + " | ".join(row) + " |")
    if learnt:
        lines.append("| alphas where each method learned (final-3 score above both its untrained score and the "
                     "label prior's by +0.02, paired over seeds; where neither compared method learned, a verdict "
                     "is inconclusive) | "
                     + " | ".join(learnt.get(n, "–") for n in names) + " |")
    if run_s:
        lines.append("| runs' own wall time (all cells and lr grids, summed) | "
                     + " | ".join(f"{run_s[n] / 60:.0f} min" for n in names) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="slivers of every dataset: check the pipeline, not the claims")
    p.add_argument("--datasets", default=",".join(DATASETS), help=f"comma-separated (default {','.join(DATASETS)})")
    p.add_argument("--alphas", default=",".join(ALPHAS), help="comma-separated alphas and/or iid")
    p.add_argument("--seeds", help="comma-separated seeds (default 0,1,2; --quick: 0,1)")
    p.add_argument("--no-lr-grid", action="store_true", help="use each method's default lr (not the benchmark)")
    p.add_argument("--last-k", type=int, default=3, help="final score = mean of the last k evaluations (default 3)")
    p.add_argument("--out", help="results folder (default: runs/claims-benchmark[-quick])")
    p.add_argument("--pages", help="per-dataset pages + overview (default: docs/results/claims; --quick: OUT/pages)")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default 2: an idle 2-core machine)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a budget key, e.g. --set local_steps=10 (repeatable; use a new --out: finished "
                        "cells of another budget are refused)")
    p.add_argument("--jobs", type=int, default=1,
                   help="datasets run at once, each in its own process (default 1; a GPU machine: 4 with --threads 4)")
    args = p.parse_args(argv)
    _quiet_libraries()
    try:
        seeds = parse_seeds(args.seeds) if args.seeds else (QUICK_SEEDS if args.quick else SEEDS)
        alphas = parse_alphas(args.alphas)
    except FederaError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    datasets = [d.strip() for d in args.datasets.split(",") if d.strip()]
    out_root = Path(args.out or ("runs/claims-benchmark" + ("-quick" if args.quick else "")))
    pages = Path(args.pages) if args.pages else (out_root / "pages" if args.quick else Path("docs/results/claims"))
    pages.mkdir(parents=True, exist_ok=True)
    common = [*(QUICK if args.quick else BUDGET), *args.set, f"model.num_threads={args.threads}"]
    if not args.quick and not args.set:  # the estimate prices the default budget only
        print(f"design estimate on 2 idle cores: {estimate_s(datasets, alphas, seeds, not args.no_lr_grid) / 3600:.2f} h "
              f"({len(datasets)} datasets × {len(alphas)} alphas × {len(seeds)} seeds × {len(METHODS)} methods)")
    started = time.perf_counter()
    if args.jobs > 1 and len(datasets) > 1:
        child = [*(["--quick"] if args.quick else []), *(f"--set={kv}" for kv in args.set), "--alphas", args.alphas,
                 "--seeds", ",".join(map(str, seeds)), "--last-k", str(args.last_k), "--threads", str(args.threads),
                 *(["--no-lr-grid"] if args.no_lr_grid else [])]
        codes = run_in_parallel(datasets, args.jobs, child, out_root)
        # 3 = finished with a failed method or cell (read back and reported); anything else broke the process:
        # re-running it here, serially, would only repeat the failure slowly. Its log says what happened.
        broken = [d for d, c in codes.items() if c not in (0, 3)]
        datasets = [d for d in datasets if d not in broken]
    else:
        broken = []
    verdicts: dict[str, list[tuple[str, str]]] = {}
    learnt: dict[str, str] = {}
    failed: list[str] = [f"{d} (process failed; see {out_root / f'{d}.log'})" for d in broken]
    for name in datasets:
        budget = [*common, f"data.builtin={name}", *PER_DATASET.get(name, [])]
        out = out_root / name
        t0 = time.perf_counter()
        try:
            plan = Plan(base=build_config({"name": f"claims-{name}"}, budget), methods=METHODS, alphas=alphas,
                        seeds=seeds, out=out, lr_grid=not args.no_lr_grid, last_k=args.last_k)
            outcome = run_compare(plan, progress=False)
        except FederaError as err:
            print(f"[{name}] error: {err}", file=sys.stderr)
            failed.append(name)
            continue
        _pages_for(name, out, pages, outcome, budget)
        verdicts[name] = [(c.title, c.verdict) for c in outcome["claims"]]
        learnt[name] = learned_row(outcome["learned"])
        failed += [f"{name}: {f}" for f in outcome["failed"]]
        print(f"[{name}] {time.perf_counter() - t0:.0f} s; " + "; ".join(
            f"claim {i}: {v}" for i, (_, v) in enumerate(verdicts[name], 1))
              + (f"; skipped (un-partitionable): {len(outcome['skipped'])} cell(s)" if outcome["skipped"] else ""))
    wall = time.perf_counter() - started
    run_s = {name: measured_s(out_root / name) for name in verdicts}
    overview = overview_markdown(verdicts, common, seeds, wall, args.quick, run_s, machines(out_root, run_s), learnt)
    (pages / "overview.md").write_text(overview, encoding="utf-8")
    print(f"\n== FeDeRA claims benchmark{' (QUICK: numbers meaningless)' if args.quick else ''} ==")
    print(overview)
    print(f"wall time of this invocation: {wall:.0f} s; results: {out_root}; pages: {pages}")
    if failed:
        print("did not finish: " + ", ".join(failed), file=sys.stderr)
    return 3 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
