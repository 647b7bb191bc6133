"""Seconds per round of one small job on three engines, and Flower's overhead over in-process.

    .venv/bin/python benchmarks/engines.py --rounds 2 --out runs/bench-engines

Engines: ``inprocess``; ``flower`` deployment (a real SuperLink and one SuperNode per client on
127.0.0.1, insecure, all started here); ``flower`` simulation (Flower's Ray runtime, needs
``pip install 'flwr[simulation]'``). The job is the same everywhere (built-in MiniLM-L6 and a
stratified slice of BBC News unless --model-path/--max-train say otherwise), and so are its
numbers (the engines are equivalent; tests/test_flower.py checks it), so only time differs.

"round s" is ServerRun's ``round_s``: from planning a round to the aggregated state (local
training and transport, no evaluation), averaged over the rounds. "run s" is the whole
experiment as a user waits for it: start-up, round-0 evaluation and the report included.
"""

from __future__ import annotations

import argparse
import sys
import json
import time
from pathlib import Path
from statistics import mean

from federa.config import build_config
from federa.experiment import run_experiment
from federa.results_dir import open_run_dir

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from local_federation import LocalFederation  # noqa: E402


def _job(args: argparse.Namespace) -> list[str]:
    out = [f"methods={args.method}", f"rounds={args.rounds}", f"num_clients={args.clients}",
           f"clients_per_round={args.clients}", f"local_steps={args.local_steps}", "batch_size=16",
           "max_length=64", f"data.max_train_examples={args.max_train}", "data.max_test_examples=200",
           "eval_every=1", "flower.round_timeout_s=600", f"model.num_threads={args.threads}"]
    if args.model_path:
        out.append(f"model.path={args.model_path}")
    return out


def _one(name: str, overrides: list[str], out: Path) -> dict:
    cfg = build_config({}, overrides)
    run_dir = open_run_dir(cfg, out / name, resume=False)
    t0 = time.perf_counter()
    summary = run_experiment(cfg, run_dir, progress=False, log=lambda *_: None)
    wall = time.perf_counter() - t0
    rows = [r for r in run_dir.read_metrics() if r["round"] >= 1]
    status = next(iter(summary["methods"].values()))["status"]
    return {"engine": name, "status": status, "round_s": mean(r["round_s"] for r in rows), "run_s": wall,
            "accuracy": rows[-1]["accuracy"] if rows else None}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--clients", type=int, default=3)
    p.add_argument("--method", default="lora")
    p.add_argument("--local-steps", type=int, default=5)
    p.add_argument("--max-train", type=int, default=300)
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads per process (every engine; Ray gives each actor one CPU anyway)")
    p.add_argument("--model-path", help="a local model folder (default: built-in MiniLM-L6)")
    p.add_argument("--skip-simulation", action="store_true")
    p.add_argument("--out", default="runs/bench-engines")
    args = p.parse_args()
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.logging.set_verbosity_error()
    out = Path(args.out).resolve()
    if out.exists() and any(out.iterdir()):
        raise SystemExit(f"{out} is not empty; pass a new --out")
    job = _job(args)
    results = [_one("inprocess", job, out)]
    print(results[-1], flush=True)
    with LocalFederation(out / "federation", args.clients) as fed:
        results.append(_one("flower-deployment", [*job, "engine=flower", f"flower.superlink={fed.address}"], out))
    print(results[-1], flush=True)
    if not args.skip_simulation:
        results.append(_one("flower-simulation", [*job, "engine=flower", "flower.mode=simulation"], out))
        print(results[-1], flush=True)
    base = results[0]
    print(f"\n{args.method}, {args.clients} clients, {args.rounds} rounds, {args.local_steps} local steps, "
          f"{args.threads} torch thread(s) per process")
    print(f"{'engine':<20} {'round s':>9} {'x inproc':>9} {'run s':>8} {'x inproc':>9} {'accuracy':>9}")
    for r in results:
        print(f"{r['engine']:<20} {r['round_s']:>9.2f} {r['round_s'] / base['round_s']:>9.1f} "
              f"{r['run_s']:>8.1f} {r['run_s'] / base['run_s']:>9.1f} {r['accuracy']:>9.4f}")
    (out / "engines.json").write_text(json.dumps({"args": vars(args), "results": results}, indent=2))


if __name__ == "__main__":
    main()
