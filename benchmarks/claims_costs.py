"""Measure the per-step and per-evaluated-example costs that ``benchmarks/claims.py --plan`` prices.

    PYTHONPATH=src .venv/bin/python benchmarks/claims_costs.py --dataset bbc_news --out benchmarks/claims_costs.json

CPU seconds (``time.process_time``, one torch thread), not wall seconds: on a shared machine the wall
clock measures the neighbours, the CPU time of a one-thread process what an idle core would take.
Each method runs three short federated runs on one client (rounds=1, so a round-0 and a round-1
evaluation): (2 local steps, 64 test rows), (10 steps, 64 rows), (2 steps, 192 rows); differences
give seconds per optimiser step and per evaluated example, free of the fixed start-up cost.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

BASE = ["rounds=1", "eval_every=1", "num_clients=2", "clients_per_round=2", "partition.kind=iid", "batch_size=8",
        "max_length=48", "eval_batch_size=128", "model.num_threads=1", "data.max_train_examples=200"]


def _cpu_s(dataset: str, method: str, steps: int, test_rows: int, tmp: Path) -> float:
    from federa.config import build_config
    from federa.engines.inprocess import run_method
    from federa.job import prepare_job
    from federa.results_dir import RunDir

    cfg = build_config({"name": "costs"}, [*BASE, f"data.builtin={dataset}", f"local_steps={steps}",
                                           f"data.max_test_examples={test_rows}", f"methods={method}"])
    job = prepare_job(cfg)
    rd = RunDir(tmp / f"{method}-{steps}-{test_rows}")
    rd.root.mkdir(parents=True)
    job.server_model(method)  # built once outside the timing (the start-up cost the differences cancel)
    t0 = time.process_time()
    run_method(job, method, rd, progress=False, log=lambda *_: None)
    return time.process_time() - t0


def measure(dataset: str, methods: list[str]) -> dict:
    out: dict = {"dataset": dataset, "unit": "CPU seconds, 1 torch thread", "settings": BASE, "methods": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for m in methods:
            a = _cpu_s(dataset, m, 2, 64, Path(tmp))
            b = _cpu_s(dataset, m, 10, 64, Path(tmp))
            c = _cpu_s(dataset, m, 2, 192, Path(tmp))
            # Two clients train per round: 2 × 8 extra steps; two evaluations × 128 extra rows.
            out["methods"][m] = {"step_s": (b - a) / 16, "eval_s_per_example": (c - a) / 256,
                                 "runs_cpu_s": [a, b, c]}
            print(m, out["methods"][m], flush=True)
    return out


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", default="bbc_news")
    p.add_argument("--methods", default="fft,lora,federa")
    p.add_argument("--out", default="benchmarks/claims_costs.json")
    args = p.parse_args()
    from federa.cli import _quiet_libraries

    _quiet_libraries()
    res = measure(args.dataset, args.methods.split(","))
    Path(args.out).write_text(json.dumps(res, indent=1), encoding="utf-8")
