"""One client's local update: load the broadcast trainables, train on the private shard, reply.

Pure with respect to its inputs plus ``settings.seed``: the same model, state, shard and
settings give the same reply on any engine (in-process, Flower). Nothing here knows about
rounds, transport or other clients.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
from datasets import Dataset
from torch import nn
from torch.utils.data import DataLoader

from federa.errors import NonFiniteLossError
from federa.precision import autocast, grad_scaler
from federa.methods.base import load_tensors, load_trainable_state, trainable_state
from federa.methods.lora_math import fit_ranks
from federa.types import LocalRule, State, TrainSettings, Update


def _batches(shard: Dataset, collate, batch_size: int, seed: int, pin: bool = False):
    """Endless shuffled batches: each pass over the shard is a new seeded permutation.

    ``pin``: page-locked batches, so the copy to a GPU can overlap with compute."""
    g = torch.Generator().manual_seed(seed)
    while True:
        loader = DataLoader(shard, batch_size=batch_size, shuffle=True, generator=g, collate_fn=collate,
                            pin_memory=pin)
        yield from loader


def proximal_term(params: dict[str, torch.Tensor], anchor: State, mu: float) -> torch.Tensor:
    """FedProx's (mu/2)·Σ‖w − w_global‖² over the trainable tensors; its gradient is mu·(w − w_global)."""
    total = sum(((p - anchor[n]) ** 2).sum() for n, p in params.items())
    return 0.5 * mu * total


def local_update(
    model: nn.Module,
    state: State,
    shard: Dataset,
    collate,
    settings: TrainSettings,
    device: torch.device | str = "cpu",
    client_id: int | str = "?",
    rule: LocalRule | None = None,
    on_step: Callable[[int, int, float], None] | None = None,
) -> Update:
    """Train ``model`` (starting from ``state``) on ``shard`` with a fresh AdamW; return the update.

    A fresh optimiser each round is the FedAvg convention: optimiser moments are local and
    never travel. ``settings.prox_mu`` > 0 adds FedProx's proximal term to the loss; ``rule``
    (a strategy's client side, e.g. SCAFFOLD's) acts after every step and adds ``extra`` and
    ``memory`` to the reply. ``on_step(step, steps, loss)`` follows every step (progress, a
    stop request). Raises :class:`NonFiniteLossError` on a NaN/inf loss.
    """
    if len(shard) == 0:
        raise ValueError(f"client {client_id} has an empty shard")
    # A client of a lower LoRA rank than the model's (FLoRA, FlexLoRA, HetLoRA) receives factors
    # of its own rank: they fill the leading slots, the rest are zero. A zero row of A and zero
    # column of B get exactly zero gradients, so those slots stay zero and it trains at its rank.
    received = {k: v.shape for k, v in state.items()}
    load_trainable_state(model, fit_ranks(state, {n: p.shape for n, p in model.named_parameters() if p.requires_grad}))
    # What this client keeps to itself (FedSA-LoRA's B): frozen in the global model, so it neither
    # arrives nor leaves with the state; loaded from the client's own copy and trained here.
    own = rule.private() if rule is not None else {}
    load_tensors(model, own)
    mine = [p for n, p in model.named_parameters() if n in own]
    for p in mine:
        p.requires_grad_(True)
    model.train()
    fixed = [f for f in settings.frozen.split(",") if f]
    # Tensors held fixed this round (RoLoRA) get no gradient at all: none is computed, and none is
    # left on them for a later round in which they train (the optimiser zeroes only its own).
    held = [p for n, p in model.named_parameters() if p.requires_grad and any(f in n for f in fixed)]
    for p in held:
        p.requires_grad_(False)
    named = {n: p for n, p in model.named_parameters() if p.requires_grad}
    params = list(named.values())
    # The anchor of the proximal term: the broadcast state, on the parameters' device.
    anchor = {n: p.detach().clone() for n, p in named.items()} if settings.prox_mu > 0 else {}
    opt = torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay)
    scaler = grad_scaler(device, settings.precision)  # a no-op unless fp16
    on_gpu = torch.device(device).type == "cuda"
    steps = settings.num_steps(len(shard))
    losses: list[float] = []
    samples = 0
    start = time.perf_counter()
    try:
        # Dropout draws from torch's global stream: fork it so the update depends only on the seed.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(settings.seed)
            batches = _batches(shard, collate, settings.batch_size, settings.seed, pin=on_gpu)
            for _ in range(steps):
                batch = {k: v.to(device, non_blocking=on_gpu) for k, v in next(batches).items()}
                with autocast(device, settings.precision):
                    loss = task_loss = model(**batch).loss.float()
                if anchor:  # only then: without FedProx the graph and the numbers stay as they were
                    loss = task_loss + proximal_term(named, anchor, settings.prox_mu)
                if not torch.isfinite(loss):
                    raise NonFiniteLossError(
                        f"client {client_id}: loss became {loss.item()} at step {len(losses) + 1}; "
                        f"lower the learning rate (lr={settings.lr})"
                    )
                scaler.scale(loss).backward()
                if settings.max_grad_norm is not None:
                    scaler.unscale_(opt)  # clip the true gradients, not the scaled ones
                    torch.nn.utils.clip_grad_norm_(params, settings.max_grad_norm)
                scaler.step(opt)
                scaler.update()
                if rule is not None:
                    rule.after_step(named)
                opt.zero_grad(set_to_none=True)
                losses.append(task_loss.item())  # the task's loss, comparable across strategies
                samples += len(batch["labels"])
                if on_step is not None:
                    on_step(len(losses), steps, losses[-1])
    finally:
        for p in held:  # they stay part of the trainable state, and travel unchanged
            p.requires_grad_(True)
        for p in mine:  # frozen again: the reply carries exactly the broadcast's names
            p.requires_grad_(False)
    seconds = time.perf_counter() - start
    new_state = fit_ranks(trainable_state(model), received)  # on the CPU, at the client's own rank
    trained_own = {n: p.detach().cpu().clone() for n, p in model.named_parameters() if n in own}
    extra, memory = rule.finish({**new_state, **trained_own}, steps) if rule is not None else ({}, {})
    return Update(
        state=new_state,
        num_examples=len(shard),
        metrics={"train_loss": sum(losses) / len(losses), "steps": steps, "samples": samples,
                 "train_seconds": seconds},
        extra=extra,
        memory=memory,
    )
