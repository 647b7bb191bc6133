"""Parallel clients on one machine: the in-process engine's round time at ``inprocess.workers`` 1 and 2.

    .venv/bin/python benchmarks/workers.py                 # lora, 4 rounds x 4 clients; ~5 min on 2 cores
    .venv/bin/python benchmarks/workers.py --method federa --rounds 2

Both runs get the same total thread budget (``--threads``, default 2: the 2-core machine): one
process with all of them, or two worker processes with ``threads // 2`` each, training a round's
clients side by side (engines/workers.py). Same config, seed and partition otherwise, run one
after the other in this invocation. Printed: the mean training wall per round (configure →
aggregate, evaluation excluded, from metrics.jsonl) of each, the speed-up, and the largest
difference in the final accuracy (worker processes use fewer threads each, so float sums may
round differently; at equal threads per process the engine is bit-identical, tests/test_workers.py).
Run it on an otherwise idle machine: the speed-up is what it measures.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


def _run(method: str, rounds: int, per_round: int, threads: int, workers: int, out: Path) -> tuple[float, list[dict]]:
    from federa.config import build_config
    from federa.experiment import run_experiment
    from federa.results_dir import open_run_dir

    cfg = build_config({}, [
        f"methods={method}", f"rounds={rounds}", "num_clients=10", f"clients_per_round={per_round}",
        "local_steps=8", "batch_size=16", "max_length=64", "data.max_test_examples=200",
        f"model.num_threads={threads}", f"inprocess.workers={workers}",
    ])
    start = time.perf_counter()
    run_experiment(cfg, open_run_dir(cfg, out, resume=False), progress=False, log=lambda *_: None)
    wall = time.perf_counter() - start
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return wall, [r for r in rows if r["method"] == method and r["round"] > 0]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--method", default="lora")
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--clients", type=int, default=4, help="clients per round (of 10)")
    p.add_argument("--threads", type=int, default=2, help="the total torch thread budget")
    args = p.parse_args()
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.logging.set_verbosity_error()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for workers in (1, 2):
            results[workers] = _run(args.method, args.rounds, args.clients, args.threads, workers,
                                    Path(tmp) / f"w{workers}")
    print(f"{args.method}: {args.rounds} rounds x {args.clients} clients x 8 steps of 16, "
          f"{args.threads} threads in all")
    per_round = {}
    for workers, (wall, rows) in results.items():
        per_round[workers] = sum(r["round_s"] for r in rows) / len(rows)
        print(f"workers={workers} ({args.threads // workers} thread(s) each): {per_round[workers]:.1f} s per round "
              f"(configure -> aggregate), whole run {wall:.0f} s, final accuracy {rows[-1]['accuracy']:.4f}")
    diff = max(abs(a["accuracy"] - b["accuracy"]) for a, b in zip(results[1][1], results[2][1]))
    print(f"speed-up of workers=2 over workers=1: {per_round[1] / per_round[2]:.2f}x per round; "
          f"largest accuracy difference over the rounds: {diff:.4f}")


if __name__ == "__main__":
    main()
