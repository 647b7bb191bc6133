"""federa's overhead over a bare PyTorch loop: local-update examples/s and whole-round time, per method.

    .venv/bin/python benchmarks/throughput.py                       # fft, lora, federa; ~10 min on 2 cores
    .venv/bin/python benchmarks/throughput.py --quick               # a smoke run (~2 min)

For each method, in its own process (so that its peak RSS is its own), on the built-in MiniLM-L6
and BBC News:

- **local update**: federa's ``local_update`` (federa/client.py) against a loop written here with
  torch only: the same model object (the same peft adapter), the same shard and collator, the
  same seeded DataLoader, AdamW at the same rate, gradient clipping, the same thread count.
  The two alternate ``--repeats`` times; the ratio is federa's examples/s over the bare loop's
  (median of each), so 1.00 means no overhead.
- **whole round**: ``--clients`` local updates + aggregation + evaluation + checkpoint, federa's
  in-process round (ServerRun, as engines/inprocess.py drives it) against a bare round written
  here (the same local loops, a float32 FedAvg, a no-grad pass over the same test set, one
  ``torch.save``). The ratio is bare seconds over federa seconds (1.00: no overhead).
- **peak RSS** of the process: model, data, optimiser and both loops.

Absolute figures depend on the machine and its load; the ratios, measured side by side in one
process, are what to compare. Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

METHODS = ("fft", "lora", "federa")


def _config(args: argparse.Namespace, method: str):
    from federa.config import build_config

    return build_config({}, [
        f"methods={method}", f"rounds={args.rounds}", f"num_clients={args.clients}",
        f"clients_per_round={args.clients}", f"local_steps={args.steps}", f"batch_size={args.batch_size}",
        f"max_length={args.max_length}", f"data.max_train_examples={args.max_train}",
        f"data.max_test_examples={args.max_test}", f"model.num_threads={args.threads}", "partition.kind=iid",
    ])


# -- the bare reference: torch only, nothing of federa inside the timed parts --------------


def bare_local_update(model, shard, collate, steps: int, batch_size: int, seed: int, lr: float,
                      max_grad_norm: float) -> int:
    """``steps`` AdamW steps on ``shard``; returns the examples seen."""
    import torch
    from torch.utils.data import DataLoader

    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    g = torch.Generator().manual_seed(seed)
    seen, done = 0, 0
    while done < steps:
        for batch in DataLoader(shard, batch_size=batch_size, shuffle=True, generator=g, collate_fn=collate):
            loss = model(**batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
            opt.step()
            opt.zero_grad(set_to_none=True)
            seen += len(batch["labels"])
            done += 1
            if done == steps:
                break
    return seen


def bare_round(model, shards, collate, test, args, lr: float, out: Path) -> None:
    """Local updates for every client, float32 FedAvg, evaluation, a checkpoint: torch only."""
    import torch
    from torch.utils.data import DataLoader

    start = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    states, weights = [], []
    for i, shard in enumerate(shards):
        with torch.no_grad():
            for n, p in params.items():
                p.copy_(start[n])
        bare_local_update(model, shard, collate, args.steps, args.batch_size, i, lr, 1.0)
        states.append({n: p.detach().clone() for n, p in params.items()})
        weights.append(len(shard))
    total = sum(weights)
    with torch.no_grad():
        for n, p in params.items():
            p.copy_(sum(s[n] * (w / total) for s, w in zip(states, weights)))
        model.eval()
        correct = 0
        for batch in DataLoader(test, batch_size=64, collate_fn=collate):
            labels = batch.pop("labels")
            correct += int((model(**batch).logits.argmax(-1) == labels).sum())
    torch.save({n: p.detach().clone() for n, p in params.items()}, out / "bare_checkpoint.pt")


# -- one method, in its own process -------------------------------------------------------


def measure(args: argparse.Namespace, method: str) -> dict:
    import torch

    from federa.client import local_update
    from federa.engines.server import ServerRun
    from federa.job import prepare_job
    from federa.methods.base import load_trainable_state, trainable_state
    from federa.results_dir import open_run_dir

    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    cfg = _config(args, method)
    job = prepare_job(cfg)  # sets torch's threads to model.num_threads
    _, model, _ = job.server_model(method)
    initial = trainable_state(model)
    settings = job.train_settings(method)
    shard, collate = job.shard(0), job.collate

    federa_rates, bare_rates = [], []
    for r in range(args.repeats):
        load_trainable_state(model, initial)
        t = time.perf_counter()
        update = local_update(model, initial, shard, collate, settings, job.device, client_id=0)
        federa_rates.append(update.metrics["samples"] / (time.perf_counter() - t))
        load_trainable_state(model, initial)
        t = time.perf_counter()
        seen = bare_local_update(model, shard, collate, args.steps, args.batch_size, settings.seed, settings.lr,
                                 settings.max_grad_norm)
        bare_rates.append(seen / (time.perf_counter() - t))

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        run_dir = open_run_dir(cfg, out / "federa", resume=False)
        server = ServerRun(job, method, run_dir, log=lambda *_: None)  # round 0 (eval, checkpoint) untimed
        shards = [job.shard(c) for c in range(cfg.num_clients)]
        federa_round, bare_round_s = [], []
        for rnd in range(1, cfg.rounds + 1):
            t = time.perf_counter()
            updates = {cid: local_update(server.model, server.state, job.shard(cid), collate, s, job.device,
                                         client_id=cid) for cid, s in server.configure(rnd).items()}
            server.complete_round(rnd, updates, t)
            federa_round.append(time.perf_counter() - t)
            t = time.perf_counter()
            bare_round(server.model, shards, collate, job.test, args, settings.lr, out)
            bare_round_s.append(time.perf_counter() - t)

    return {
        "method": method, "threads": torch.get_num_threads(),
        "federa_ex_s": median(federa_rates), "bare_ex_s": median(bare_rates),
        "update_ratio": median(federa_rates) / median(bare_rates),
        "federa_round_s": median(federa_round), "bare_round_s": median(bare_round_s),
        "round_ratio": median(bare_round_s) / median(federa_round),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=20, help="local steps per update")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-length", type=int, default=64)
    p.add_argument("--repeats", type=int, default=5, help="alternating federa/bare local updates")
    p.add_argument("--rounds", type=int, default=3, help="whole rounds timed, each federa then bare")
    p.add_argument("--clients", type=int, default=3, help="clients per round")
    p.add_argument("--max-train", type=int, default=600)
    p.add_argument("--max-test", type=int, default=200)
    p.add_argument("--quick", action="store_true", help="a smoke run: 3 steps, 2 repeats, 1 round, 2 clients")
    p.add_argument("--child", help=argparse.SUPPRESS)  # internal: measure one method in this process
    args = p.parse_args()
    if args.quick:
        args.steps, args.repeats, args.rounds, args.clients = 3, 2, 1, 2
        args.max_train, args.max_test, args.max_length = 200, 50, 32
    if args.child:
        print("RESULT " + json.dumps(measure(args, args.child)), flush=True)
        return

    passthrough = [f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items()
                   if k not in ("methods", "quick", "child")]
    rows = []
    for method in args.methods.split(","):
        proc = subprocess.run([sys.executable, __file__, *passthrough, "--child", method],
                              capture_output=True, text=True)
        line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
        if line is None:
            sys.exit(f"{method} failed:\n{proc.stderr[-3000:]}")
        rows.append(json.loads(line.removeprefix("RESULT ")))

    print(f"\nlocal update: {args.steps} steps x batch {args.batch_size}, max_length {args.max_length}, "
          f"{rows[0]['threads']} threads; whole round: {args.clients} clients + FedAvg + eval + checkpoint\n")
    print(f"| method | federa ex/s | bare ex/s | update ratio | federa round s | bare round s | round ratio "
          f"| peak RSS MiB |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['method']} | {r['federa_ex_s']:.1f} | {r['bare_ex_s']:.1f} | {r['update_ratio']:.3f} "
              f"| {r['federa_round_s']:.2f} | {r['bare_round_s']:.2f} | {r['round_ratio']:.3f} "
              f"| {r['peak_rss_mib']:.0f} |")
    print("\nratios: federa / bare throughput (1.00 = no overhead; above 1 is noise or a faster path)")


if __name__ == "__main__":
    main()
