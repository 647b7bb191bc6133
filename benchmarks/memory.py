"""Does a long simulation grow? Resident memory after rounds 1, 10 and the last of a long in-process run.

    .venv/bin/python benchmarks/memory.py                  # 30 rounds x 10 sampled clients of 100, lora
    .venv/bin/python benchmarks/memory.py --quick          # 12 rounds, a smoke run
    .venv/bin/python benchmarks/memory.py --method federa --workers 2

The budgets are tiny (few local steps, short sequences, a small test set) so that the run is
about rounds, not training. RSS is read from /proc/self/status after each round completes
(aggregated, evaluated, checkpointed), in the process that runs the server (and, with
workers=1, every client). The goal: growth from round 10 to the last under 5%.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status (Linux only)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--method", default="lora")
    p.add_argument("--rounds", type=int, default=30)
    p.add_argument("--clients", type=int, default=100)
    p.add_argument("--per-round", type=int, default=10)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--quick", action="store_true", help="12 rounds (enough to pass round 10), 1 step")
    args = p.parse_args()
    if args.quick:
        args.rounds, args.steps = 12, 1

    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    from federa.config import build_config
    from federa.engines import server
    from federa.experiment import run_experiment
    from federa.results_dir import open_run_dir

    after: dict[int, float] = {}
    complete_round = server.ServerRun.complete_round

    def measured(self, rnd, *a, **kw):  # the engine's own round, then a reading
        record = complete_round(self, rnd, *a, **kw)
        after[rnd] = rss_mib()
        return record

    server.ServerRun.complete_round = measured
    cfg = build_config({}, [
        f"methods={args.method}", f"rounds={args.rounds}", f"num_clients={args.clients}",
        f"clients_per_round={args.per_round}", f"local_steps={args.steps}", "batch_size=8", "max_length=32",
        "data.max_test_examples=50", "partition.kind=iid", f"model.num_threads={args.threads}",
        f"inprocess.workers={args.workers}",
    ])
    with tempfile.TemporaryDirectory() as tmp:
        run_experiment(cfg, open_run_dir(cfg, Path(tmp) / "run", resume=False), progress=False, log=lambda *_: None)

    last = max(after)
    print(f"{args.method}: {args.rounds} rounds x {args.per_round} sampled clients of {args.clients}, "
          f"{args.steps} local steps, workers={args.workers}")
    for rnd in sorted({1, 10, last} & set(after)):
        print(f"RSS after round {rnd:>2}: {after[rnd]:8.1f} MiB")
    if 10 in after and last > 10:
        growth = 100 * (after[last] - after[10]) / after[10]
        print(f"growth round 10 -> {last}: {growth:+.2f}% (goal < 5%): {'ok' if growth < 5 else 'GROWS'}")


if __name__ == "__main__":
    main()
