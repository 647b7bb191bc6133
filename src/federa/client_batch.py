"""K clients' local updates in one pass: the frozen base once over their stacked batches.

:func:`batched_local_update` returns what :func:`federa.client.local_update` returns for each of
K clients (the same :class:`Update`), computing one forward/backward per step for all of them:

- The model runs on the K clients' batches concatenated along the batch dimension, so every
  frozen matrix multiplies K·B rows at once (bigger matmuls, one Python/kernel-launch overhead
  instead of K).
- Each module that owns trainable tensors (a LoRA factor, the classifier head, a bias) is called
  under ``torch.func.vmap`` over the clients: its input is viewed as [K, B, ...] and each client's
  slice meets that client's own tensors, stacked as [K, ...] leaves (grouped matmuls).
- One AdamW per client: AdamW is elementwise, so one update over the stacked leaves with per-client
  step counts, rates and masks is K optimisers; clipping divides each client's slice by its own norm.
- Dropout draws each client's rows from that client's own generator, seeded as ``local_update``
  seeds torch's global one, in the same order and shapes: on the CPU, batched and one-at-a-time
  clients see the same dropout masks, so they agree to float rounding with dropout on too.

Only trainable tensors and their optimiser moments are stacked (3 × K × trainable size, plus the
activations of K·B rows); the frozen model is never copied.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from datasets import Dataset
from torch import nn
from torch.utils._pytree import tree_map

from federa.client import _batches
from federa.errors import NonFiniteLossError
from federa.precision import autocast
from federa.methods.lora_math import fit_ranks
from federa.types import LocalRule, State, TrainSettings, Update

# torch.optim.AdamW's defaults, which local_update uses.
_BETA1, _BETA2, _EPS = 0.9, 0.999, 1e-8


@dataclass
class ClientTask:
    """One client's orders for the round: what :func:`local_update` takes for that client."""

    client_id: int
    state: State
    shard: Dataset
    settings: TrainSettings
    rule: LocalRule | None = None


def batch_reason(model: nn.Module, tasks: Sequence[ClientTask], gradient_checkpointing: bool = False) -> str | None:
    """Why these clients cannot train together on ``model`` (then one at a time), or None."""
    first = tasks[0].settings
    if first.precision == "fp16":
        return "model.precision=fp16 scales each client's loss by its own dynamic factor"
    if gradient_checkpointing:
        return "model.gradient_checkpointing replays the forward outside the batched modules"
    if any((t.settings.precision, t.settings.frozen) != (first.precision, first.frozen) for t in tasks):
        return "the sampled clients train at different precisions or hold different tensors fixed"
    own = [frozenset(t.rule.private()) if t.rule is not None else frozenset() for t in tasks]
    if len(set(own)) > 1:
        return "the sampled clients keep different private tensors"
    try:
        _owners(model, _trainable_names(model, own[0]))
    except ValueError as err:
        return str(err)
    return None


def _trainable_names(model: nn.Module, own: frozenset[str]) -> list[str]:
    return [n for n, p in model.named_parameters() if p.requires_grad or n in own]


def _owners(model: nn.Module, names: Sequence[str]) -> dict[str, list[str]]:
    """The modules to call per client: module path → the trainable names it owns (full names).

    A tensor's owner is the module that holds it, or, for a ParameterDict/List (peft's IA³
    vectors), the module whose forward reads it. An owner inside another owner cannot be split."""
    owners: dict[str, list[str]] = {}
    for n in names:
        path = n.rpartition(".")[0]
        if isinstance(model.get_submodule(path), (nn.ParameterDict, nn.ParameterList)):
            path = path.rpartition(".")[0]
        owners.setdefault(path, []).append(n)
    paths = sorted(owners)
    for a in paths:
        for b in paths:
            if a != b and (a == "" or b.startswith(a + ".")):
                raise ValueError(f"module '{a or 'the model'}' holds trainable tensors and calls a module that "
                                 f"holds more ('{b}')")
    for path in paths:
        if isinstance(model.get_submodule(path), nn.Embedding):
            # Position embeddings and prompt encoders are looked up once for all rows, so a client's
            # table would meet every client's rows.
            raise ValueError(f"an embedding table trains ('{path}'), and embeddings are looked up by position, "
                             "not per client's rows")
    return owners


class _Group:
    """The clients of the forward under way: how many, their rows each, their generators."""

    k = 0
    rows = 0
    generators: list[torch.Generator] = []
    params: dict[str, torch.Tensor] = {}


def _split(x: torch.Tensor, g: type[_Group]) -> bool:
    return isinstance(x, torch.Tensor) and x.dim() > 0 and x.shape[0] == g.k * g.rows


def _client_forward(module: nn.Module, local: dict[str, str], g: type[_Group]) -> Callable:
    """``module``'s forward, run under vmap over the clients with each client's own tensors."""
    original = module.forward
    inside = [False]

    def forward(*args, **kwargs):
        if inside[0]:  # functional_call below re-enters through module.__call__
            return original(*args, **kwargs)
        flat = [*args, *kwargs.values()]
        dims = tuple(0 if _split(a, g) else None for a in flat)
        flat = [a.unflatten(0, (g.k, g.rows)) if d == 0 else a for a, d in zip(flat, dims)]
        keys = list(kwargs)

        def one(params, *xs):
            pos, kw = xs[:len(args)], dict(zip(keys, xs[len(args):]))
            return torch.func.functional_call(module, params, pos, kw)

        inside[0] = True
        try:
            out = torch.func.vmap(one, in_dims=(0, *dims))({k: g.params[n] for k, n in local.items()}, *flat)
        finally:
            inside[0] = False
        return tree_map(lambda t: t.flatten(0, 1) if isinstance(t, torch.Tensor) else t, out)

    return forward


def _client_dropout(g: type[_Group]) -> Callable:
    """F.dropout with each client's rows masked from its own generator (CPU ``at::dropout``'s draw:
    ``empty_like(x).bernoulli_(1 - p)``, divided by 1 - p)."""

    def dropout(x: torch.Tensor, p: float = 0.5, training: bool = True, inplace: bool = False) -> torch.Tensor:
        if p == 0 or not training or x.numel() == 0:
            return x
        if not _split(x, g):
            raise RuntimeError(f"dropout on a tensor of {x.shape[0]} rows, not {g.k} clients × {g.rows}")
        masks = [torch.empty_like(c).bernoulli_(1 - p, generator=gen).div_(1 - p)
                 for c, gen in zip(x.chunk(g.k), g.generators)]
        return x * torch.cat(masks)

    return dropout


def _attention(dropout: Callable) -> Callable:
    """SDPA with its dropout through ``dropout`` (per client): the math of CPU SDPA's dropout path."""
    original = torch.nn.functional.scaled_dot_product_attention

    def sdpa(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
        if dropout_p == 0:
            return original(q, k, v, attn_mask=attn_mask, dropout_p=0.0, is_causal=is_causal, scale=scale,
                            enable_gqa=enable_gqa)
        if enable_gqa and k.shape[-3] != q.shape[-3]:
            k = k.repeat_interleave(q.shape[-3] // k.shape[-3], -3)
            v = v.repeat_interleave(q.shape[-3] // v.shape[-3], -3)
        s = (q.shape[-1] ** -0.5) if scale is None else scale
        scores = (q @ k.transpose(-2, -1)) * s
        if is_causal:
            n, m = q.shape[-2], k.shape[-2]
            scores = scores.masked_fill(~torch.ones(n, m, dtype=torch.bool, device=q.device).tril(), float("-inf"))
        if attn_mask is not None:
            scores = scores.masked_fill(~attn_mask, float("-inf")) if attn_mask.dtype == torch.bool \
                else scores + attn_mask
        return dropout(scores.softmax(-1), dropout_p, True) @ v

    return sdpa


@contextlib.contextmanager
def _per_client(model: nn.Module, owners: dict[str, list[str]], g: type[_Group]) -> Iterator[None]:
    """Within: ``model`` computes each client's rows with that client's tensors and dropout."""
    F = torch.nn.functional
    saved = (F.dropout, F.scaled_dot_product_attention)
    modules = {path: model.get_submodule(path) for path in owners}
    try:
        for path, names in owners.items():
            local = {n[len(path) + 1:] if path else n: n for n in names}
            modules[path].forward = _client_forward(modules[path], local, g)
        F.dropout = _client_dropout(g)
        F.scaled_dot_product_attention = _attention(F.dropout)
        yield
    finally:
        F.dropout, F.scaled_dot_product_attention = saved
        for m in modules.values():
            m.__dict__.pop("forward", None)


def _client_loss(model: nn.Module, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """One client's loss from its rows, as Hugging Face's sequence/token classification heads
    compute it (a mean over its rows; -100 labels ignored)."""
    F = torch.nn.functional
    config = model.config
    num = config.num_labels
    if logits.dim() == 3:  # token classification: a label per token
        return F.cross_entropy(logits.reshape(-1, num), labels.reshape(-1))
    kind = config.problem_type or ("regression" if num == 1 else "single_label_classification"
                                   if labels.dtype in (torch.long, torch.int) else "multi_label_classification")
    if kind == "regression":
        return F.mse_loss(logits.squeeze(), labels.squeeze()) if num == 1 else F.mse_loss(logits, labels)
    if kind == "single_label_classification":
        return F.cross_entropy(logits.view(-1, num), labels.view(-1))
    return F.binary_cross_entropy_with_logits(logits, labels)


def _signature(batch: dict[str, torch.Tensor]) -> tuple:
    return tuple((k, tuple(v.shape), v.dtype) for k, v in batch.items())


def batched_local_update(
    model: nn.Module,
    tasks: Sequence[ClientTask],
    collate,
    device: torch.device | str = "cpu",
    on_step: Callable[[int, int, float], None] | None = None,
) -> tuple[dict[int, Update], dict[int, str]]:
    """Train the clients of ``tasks`` together on ``model``; (client → Update, client → why it failed).

    Each reply is what :func:`federa.client.local_update` returns for that client (its state at its
    own rank, its rule's ``extra``/``memory``, its metrics); a client whose loss turns NaN/inf is
    dropped with local_update's message while the others go on. ``model`` keeps its parameters
    (the clients' tensors live outside it). ``train_seconds``: the wall time shared out by steps.
    ``on_step(step, steps, mean loss)`` follows every joint step. Call only when
    :func:`batch_reason` is None."""
    K = len(tasks)
    for t in tasks:
        if len(t.shard) == 0:
            raise ValueError(f"client {t.client_id} has an empty shard")
    own_names = frozenset(tasks[0].rule.private()) if tasks[0].rule is not None else frozenset()
    names = _trainable_names(model, own_names)
    owners = _owners(model, names)
    shapes = {n: p.shape for n, p in model.named_parameters() if p.requires_grad}
    fixed = [f for f in tasks[0].settings.frozen.split(",") if f]
    held = {n for n in names if n not in own_names and any(f in n for f in fixed)}
    train = [n for n in names if n not in held]
    params = dict(model.named_parameters())

    def start(t: ClientTask, n: str) -> torch.Tensor:
        own = t.rule.private() if t.rule is not None else {}
        if n in own:
            return own[n]
        return full[t.client_id][n] if n in full[t.client_id] else params[n].detach()

    full = {t.client_id: fit_ranks(t.state, shapes) for t in tasks}
    P = {n: torch.stack([start(t, n).to(device, params[n].dtype) for t in tasks]).requires_grad_(n in train)
         for n in names}
    m = {n: torch.zeros_like(P[n]) for n in train}
    v = {n: torch.zeros_like(P[n]) for n in train}

    def per(x: list[float]) -> torch.Tensor:
        return torch.tensor(x, dtype=torch.float32, device=device)

    settings = [t.settings for t in tasks]
    lr, wd = per([s.lr for s in settings]), per([s.weight_decay for s in settings])
    max_norm = per([s.max_grad_norm if s.max_grad_norm is not None else float("inf") for s in settings])
    mu = per([s.prox_mu for s in settings])
    anchor = {n: P[n].detach().clone() for n in train} if any(s.prox_mu > 0 for s in settings) else {}
    steps = [s.num_steps(len(t.shard)) for s, t in zip(settings, tasks)]
    done = [0] * K  # optimiser steps taken, per client
    failed: dict[int, str] = {}
    losses: list[list[float]] = [[] for _ in tasks]
    samples = [0] * K
    on_gpu = torch.device(device).type == "cuda"
    g = _Group
    model.train()
    start_time = time.perf_counter()
    with torch.random.fork_rng(devices=[]), _per_client(model, owners, g):
        # local_update seeds torch's global stream with its seed; each client here gets its own.
        gens = [torch.Generator(device=device).manual_seed(s.seed) for s in settings]
        batches = [_batches(t.shard, collate, s.batch_size, s.seed, pin=on_gpu) for t, s in zip(tasks, settings)]
        for step in range(max(steps)):
            live = [i for i in range(K) if step < steps[i] and tasks[i].client_id not in failed]
            if not live:
                break
            got = {i: next(batches[i]) for i in live}
            groups: dict[tuple, list[int]] = {}
            for i in live:  # clients whose batches have one shape run in one forward
                groups.setdefault(_signature(got[i]), []).append(i)
            total = torch.zeros((), device=device)
            stepped = []
            for idx in groups.values():
                sel = torch.tensor(idx, device=device)
                g.k, g.rows = len(idx), len(got[idx[0]]["labels"])
                g.generators = [gens[i] for i in idx]
                g.params = {n: P[n] if len(idx) == K else P[n].index_select(0, sel) for n in names}
                batch = {k: torch.cat([got[i][k] for i in idx]).to(device, non_blocking=on_gpu)
                         for k in got[idx[0]]}
                labels = batch.pop("labels")
                with autocast(device, settings[0].precision):
                    logits = model(**batch).logits
                task = torch.stack([_client_loss(model, lg.float(), lb)
                                    for lg, lb in zip(logits.chunk(g.k), labels.chunk(g.k))])
                loss = task
                if anchor:
                    prox = sum(((g.params[n] - anchor[n].index_select(0, sel)) ** 2).flatten(1).sum(1)
                               for n in train)
                    loss = task + 0.5 * mu.index_select(0, sel) * prox
                finite = torch.isfinite(loss)
                values = loss.detach().tolist()
                for j, i in enumerate(idx):
                    if not finite[j]:
                        failed[tasks[i].client_id] = (
                            f"client {tasks[i].client_id}: loss became {values[j]} at step {len(losses[i]) + 1}; "
                            f"lower the learning rate (lr={settings[i].lr})")
                    else:
                        stepped.append(i)
                        losses[i].append(task[j].item())
                        samples[i] += g.rows
                total = total + torch.where(finite, loss, torch.zeros_like(loss)).sum()
            if not stepped:
                continue
            if total.requires_grad:
                total.backward()
            _adamw_step(P, m, v, train, stepped, done, lr, wd, max_norm)
            for i in stepped:
                if tasks[i].rule is not None:
                    tasks[i].rule.after_step({n: P[n].detach()[i] for n in train})
            if on_step is not None:
                on_step(step + 1, max(steps), sum(losses[i][-1] for i in stepped) / len(stepped))
    seconds = time.perf_counter() - start_time
    updates: dict[int, Update] = {}
    for i, t in enumerate(tasks):
        if t.client_id in failed:
            continue
        mine = {n: P[n].detach()[i].cpu().clone() for n in names}
        new_state = fit_ranks({n: mine[n] for n in names if n not in own_names},
                              {k: x.shape for k, x in t.state.items()})
        trained_own = {n: mine[n] for n in own_names}
        extra, memory = t.rule.finish({**new_state, **trained_own}, steps[i]) if t.rule is not None else ({}, {})
        updates[t.client_id] = Update(
            state=new_state, num_examples=len(t.shard),
            metrics={"train_loss": sum(losses[i]) / len(losses[i]), "steps": steps[i], "samples": samples[i],
                     "train_seconds": seconds * steps[i] / sum(steps)},
            extra=extra, memory=memory)
    return updates, failed


@torch.no_grad()
def _adamw_step(P: dict[str, torch.Tensor], m: State, v: State, train: list[str], stepped: list[int],
                done: list[int], lr: torch.Tensor, wd: torch.Tensor, max_norm: torch.Tensor) -> None:
    """One AdamW step (torch.optim.AdamW's single-tensor arithmetic) for the clients ``stepped``,
    each clipped to its own gradient norm (clip_grad_norm_'s), with its own step count and rate;
    the other clients' tensors and moments stay as they are."""
    K = next(iter(P.values())).shape[0]
    device = lr.device
    active = torch.zeros(K, dtype=torch.bool, device=device)
    active[stepped] = True
    for i in stepped:
        done[i] += 1
    t = torch.tensor([max(d, 1) for d in done], dtype=torch.float32, device=device)
    grads = {n: P[n].grad if P[n].grad is not None else torch.zeros_like(P[n]) for n in train}
    for n in train:
        grads[n] = torch.where(active.view(-1, *[1] * (P[n].dim() - 1)), grads[n], 0.0)
    norms = torch.stack([torch.linalg.vector_norm(grads[n].flatten(1), 2, dim=1) for n in train])
    total = torch.linalg.vector_norm(norms, 2, dim=0)
    coef = torch.clamp(max_norm / (total + 1e-6), max=1.0)
    bc1 = 1 - _BETA1 ** t
    bc2_sqrt = (1 - _BETA2 ** t).sqrt()
    step_size = lr / bc1
    for n in train:
        shape = (-1, *[1] * (P[n].dim() - 1))
        mask = active.view(shape)
        gr = grads[n] * coef.view(shape)
        p, m_old, v_old = P[n], m[n], v[n]
        new_p = p * (1 - lr * wd).view(shape)
        new_m = m_old.lerp(gr, 1 - _BETA1)
        new_v = v_old * _BETA2 + gr * gr * (1 - _BETA2)
        denom = new_v.sqrt() / bc2_sqrt.view(shape) + _EPS
        new_p = new_p - step_size.view(shape) * new_m / denom
        p.copy_(torch.where(mask, new_p, p))
        m_old.copy_(torch.where(mask, new_m, m_old))
        v_old.copy_(torch.where(mask, new_v, v_old))
        P[n].grad = None
