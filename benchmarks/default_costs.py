"""Where `make run`'s time goes: unit costs of the built-in default, measured in one process.

    .venv/bin/python benchmarks/default_costs.py [THREADS]      # default 2; a few minutes

Measures imports, ``prepare_job`` (tokenizer, data, partition), and per method (fft, lora, federa) the
model build, one local step (mean of 2, after a warm-up update) and one evaluation pass over the test
split; then prices the default (5 rounds x 3 clients x 8 steps, an evaluation before round 1 and after
every round) from them and prints each part's share. On a shared machine only the shares mean much.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import replace

t0 = time.perf_counter()
import torch  # noqa: E402

from federa.client import local_update  # noqa: E402
from federa.config import build_config  # noqa: E402
from federa.job import prepare_job  # noqa: E402
from federa.methods.base import trainable_state  # noqa: E402
from federa.tasks.base import predictions  # noqa: E402

IMPORTS_S = time.perf_counter() - t0


def main() -> None:
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.logging.set_verbosity_error()
    threads = int(sys.argv[1]) if len(sys.argv) > 1 else 2
    cfg = build_config({}, [f"model.num_threads={threads}"])  # the default experiment
    t = time.perf_counter()
    job = prepare_job(cfg)
    out: dict[str, float] = {"imports": IMPORTS_S, "prepare_job": time.perf_counter() - t}
    steps = cfg.rounds * cfg.clients_per_round * cfg.local_steps
    evals = cfg.rounds // cfg.eval_every + 1
    for m in cfg.methods:
        t = time.perf_counter()
        _, model, _ = job.server_model(m)
        out[f"{m} model build"] = time.perf_counter() - t
        settings = replace(job.train_settings(m), local_steps=2)
        start = trainable_state(model)
        local_update(model, start, job.shard(0), job.collate, settings, job.device)  # warm-up
        t = time.perf_counter()
        local_update(model, start, job.shard(1), job.collate, settings, job.device)
        out[f"{m} training ({steps} steps)"] = (time.perf_counter() - t) / 2 * steps
        t = time.perf_counter()
        with torch.no_grad():
            for _ in predictions(model, job.test, job.collate, cfg.eval_batch_size, job.device, cfg.model.precision):
                pass
        out[f"{m} evaluation ({evals} passes)"] = (time.perf_counter() - t) * evals
        del model
    total = sum(out.values())
    print(json.dumps({k: round(v, 1) for k, v in out.items()}))
    print(f"\npriced default: {total:.0f} s at {threads} threads")
    for k, v in out.items():
        print(f"  {k:32s} {v:8.1f} s  {100 * v / total:5.1f}%")


if __name__ == "__main__":
    main()
