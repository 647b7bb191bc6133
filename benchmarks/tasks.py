"""FFT, LoRA and FeDeRA on every built-in dataset (one per task type at least), at a fixed budget.

    .venv/bin/python benchmarks/tasks.py [--out DIR] [--threads 1] [--datasets sts_b,wnut16] [--set rounds=8 ...]

Each dataset is one ``federa run`` (built-in MiniLM-L6, real data, Dirichlet alpha=0.5 over 10
clients on the task's strata) into ``DIR/<dataset>/``; re-running resumes. Prints one markdown
table per task type with the task's main metric, as README.md shows them.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from federa.builtin_data import BUILTINS
from federa.cli import _quiet_libraries
from federa.config import build_config
from federa.experiment import run_experiment
from federa.report import human_bytes
from federa.results_dir import RunDir, open_run_dir

# 4 rounds × 4 sampled clients × 4 local steps of 16 examples (64 tokens), 1,500 training and
# 300 test examples per dataset: minutes per dataset on one CPU thread.
BUDGET = ["rounds=4", "num_clients=10", "clients_per_round=4", "local_steps=4", "batch_size=16", "max_length=64",
          "eval_batch_size=128", "data.max_train_examples=1500", "data.max_test_examples=300",
          "methods=fft,lora,federa"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/bench-tasks")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--datasets", default=",".join(BUILTINS))
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="budget overrides, e.g. --set rounds=8 (the tables say which budget ran)")
    args = ap.parse_args()
    _quiet_libraries()
    out = Path(args.out)
    rows = []
    for name in args.datasets.split(","):
        cfg = build_config({}, [*BUDGET, *args.set, f"data.builtin={name}", f"model.num_threads={args.threads}",
                                f"name={name}"])
        d = out / name
        started = time.perf_counter()
        rd = open_run_dir(cfg, d, resume=(d / "config.yaml").is_file())
        summary = run_experiment(cfg, rd, progress=False, log=lambda *_: None)
        run = summary["run"]
        print(f"{name}: {time.perf_counter() - started:.0f} s ({run['num_train']} train / {run['num_test']} test)")
        for m, s in summary["methods"].items():
            rows.append((BUILTINS[name].task, name, run["metric"], m, s, run))
    by_task: dict[str, list] = {}
    for r in rows:
        by_task.setdefault(r[0], []).append(r)
    for task, rs in by_task.items():
        print(f"\n{task}\n")
        print("| dataset | metric | method | trainable % | sent / client / round | initial | final | best | client compute |")
        print("|---|---|---|---|---|---|---|---|---|")
        for _, name, metric, m, s, run in rs:
            f = lambda x: "–" if x is None else f"{x:.4f}"  # noqa: E731
            print(f"| {name} | {metric} | {m} | {s['trainable_pct']:.3f} | {human_bytes(s['bytes_per_client_round'])} | "
                  f"{f(s['initial_score'])} | {f(s['final_score'])} | {f(s['best_score'])} | {s['client_compute_s']:.0f} s |")
    (out / "tables.json").write_text(json.dumps([{"task": t, "dataset": n, "metric": mt, "method": m,
                                                  **{k: s.get(k) for k in ("final_score", "best_score", "initial_score",
                                                                           "trainable_pct", "client_compute_s")}}
                                                 for t, n, mt, m, s, _ in rows], indent=1))


if __name__ == "__main__":
    main()
