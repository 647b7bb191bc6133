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

With ``--batched``, a second table: batched clients (``inprocess.batch_clients``,
federa/client_batch.py) against one-at-a-time clients, for K = 1, 3, 10, 30 sampled clients at the
claims benchmark's budget (3 steps x 8 examples x 48 tokens) and the default's (8 x 16 x 64).
Each cell trains the same K clients (64 examples each, so every batch is full) both ways, side by
side in one process, alternating; it reports client-examples/s and the seconds of the round's
local training (aggregation and evaluation are the same either way), and batched / sequential.

    .venv/bin/python benchmarks/throughput.py --batched --threads 1      # lora, federa; a few minutes

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


# -- batched clients against one at a time ------------------------------------------------

BUDGETS = {"claims": (3, 8, 48), "default": (8, 16, 64)}  # local steps, batch size, max_length
# Examples per client: a multiple of both batch sizes, so every batch has one shape (30 clients fit in BBC News).
PER_CLIENT = 48


def measure_batched(args: argparse.Namespace, method: str) -> list[dict]:
    """Rows of (budget, K): K clients' local updates, one at a time and batched, alternating."""
    from dataclasses import replace

    import torch

    from federa.client import local_update
    from federa.client_batch import ClientTask, batch_reason, batched_local_update
    from federa.config import build_config
    from federa.job import prepare_job
    from federa.methods.base import trainable_state

    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    rows = []
    ks = [int(k) for k in args.ks.split(",")]
    for budget in args.budgets.split(","):
        steps, batch_size, max_length = BUDGETS[budget]
        cfg = build_config({}, [
            f"methods={method}", f"num_clients={max(ks)}", f"clients_per_round={max(ks)}", f"local_steps={steps}",
            f"batch_size={batch_size}", f"max_length={max_length}", "data.max_train_examples=null",
            "data.max_test_examples=10", f"model.num_threads={args.threads}", "partition.kind=iid",
            *([f"model.path={args.model}"] if args.model else []),
        ])
        job = prepare_job(cfg)
        _, model, _ = job.server_model(method)
        state = trainable_state(model)
        trainable = sum(t.numel() * t.element_size() for t in state.values())
        settings = job.train_settings(method)
        for k in ks:
            tasks = [ClientTask(c, state, job.shard(c).select(range(PER_CLIENT)), replace(settings, seed=c))
                     for c in range(k)]
            assert batch_reason(model, tasks) is None
            seq_s, bat_s = [], []
            for _ in range(1 if k >= 10 else args.repeats):
                t = time.perf_counter()
                for task in tasks:
                    local_update(model, task.state, task.shard, job.collate, task.settings, job.device)
                seq_s.append(time.perf_counter() - t)
                t = time.perf_counter()
                batched_local_update(model, tasks, job.collate, job.device)
                bat_s.append(time.perf_counter() - t)
            examples = k * steps * batch_size
            rows.append({"method": method, "budget": budget, "k": k, "model": Path(str(job.model_path)).name,
                         "threads": torch.get_num_threads(),
                         "seq_s": median(seq_s), "batched_s": median(bat_s),
                         "seq_ex_s": examples / median(seq_s), "batched_ex_s": examples / median(bat_s),
                         "ratio": median(seq_s) / median(bat_s),
                         # per client, stacked: its tensors, their gradients and AdamW's two moments
                         "state_mib_per_client": 4 * trainable / 2**20})
            print(f"  {method} {budget} K={k}: {rows[-1]['ratio']:.2f}x", file=sys.stderr, flush=True)
    return rows


def print_batched(rows: list[dict]) -> None:
    print(f"\nbatched clients (federa/client_batch.py) vs one at a time, {rows[0]['threads']} threads, "
          f"model {rows[0]['model']}; "
          f"budgets: claims = 3 steps x 8 x 48 tokens, default = 8 steps x 16 x 64\n")
    print("| method | budget | K | sequential round s | batched round s | sequential client-ex/s "
          "| batched client-ex/s | batched / sequential | stacked state MiB per client |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['method']} | {r['budget']} | {r['k']} | {r['seq_s']:.2f} | {r['batched_s']:.2f} "
              f"| {r['seq_ex_s']:.1f} | {r['batched_ex_s']:.1f} | {r['ratio']:.2f}x "
              f"| {r['state_mib_per_client']:.2f} |")
    print("\nround s: the K clients' local training only (aggregation and evaluation do not change); "
          "ratios are measured side by side in one process, absolute figures depend on the machine's load")


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
    p.add_argument("--batched", action="store_true", help="the batched-clients table instead (lora, federa)")
    p.add_argument("--ks", default="1,3,10,30", help="--batched: clients trained together")
    p.add_argument("--budgets", default="claims,default", help="--batched: claims and/or default")
    p.add_argument("--model", help="--batched: another model folder (e.g. a tiny BERT, where Python and kernel "
                                   "launches dominate, as on a GPU)")
    p.add_argument("--child", help=argparse.SUPPRESS)  # internal: measure one method in this process
    args = p.parse_args()
    if args.quick:
        args.steps, args.repeats, args.rounds, args.clients = 3, 2, 1, 2
        args.max_train, args.max_test, args.max_length = 200, 50, 32
    if args.child:
        kind, _, method = args.child.rpartition(":")
        print("RESULT " + json.dumps(measure_batched(args, method) if kind else measure(args, method)), flush=True)
        return
    if args.batched and args.methods == ",".join(METHODS):
        args.methods = "lora,federa"  # fft trains its embeddings: one at a time (client_batch.batch_reason)

    passthrough = [f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items()
                   if k not in ("methods", "quick", "child", "batched") and v is not None]
    rows = []
    for method in args.methods.split(","):
        proc = subprocess.run([sys.executable, __file__, *passthrough,
                               "--child", f"batched:{method}" if args.batched else method],
                              stdout=subprocess.PIPE, text=True)
        line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
        if line is None:
            sys.exit(f"{method} failed (its errors are above)")
        result = json.loads(line.removeprefix("RESULT "))
        rows.extend(result) if args.batched else rows.append(result)
    if args.batched:
        print_batched(rows)
        return

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
