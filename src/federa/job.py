"""Everything one experiment needs before the first round, prepared once and shared by engines.

A :class:`Job` holds the tokenised train/test splits, the client partition, the tokenizer and
the model location. The in-process engine builds one for all clients; a Flower node builds
the same one and uses only its own shard (same data source, partitioner and seed).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import import_module
from pathlib import Path

import numpy as np
import torch
from datasets import Dataset
from torch import nn
from transformers import PreTrainedTokenizerBase

from federa.types import TrainSettings
from federa.config import Config
from federa.data import TextData, load_data
from federa.data_checks import foreign_head_warning, unknown_token_share, unknown_token_warning, unseen_classes_warning
from federa.errors import DataError, ModelError
from federa.methods import get_method
from federa.methods.variants import VARIANTS, split_method
from federa.methods.base import Method
from federa.types import State
from federa.model_fit import model_problem
from federa.partition import carve_client_val, client_val_fraction, partition_indices
from federa.pretrained import load_base_model, load_tokenizer, position_limit, resolve_device, resolve_model_path
from federa.tasks.base import Task


@dataclass
class Job:
    cfg: Config
    data: TextData
    model_path: Path
    tokenizer: PreTrainedTokenizerBase
    train: Dataset  # tokenised, same row order as data.train
    test: Dataset  # tokenised
    parts: list[np.ndarray]
    device: torch.device
    strata: np.ndarray  # what label-skewed partitions group train examples by (see Task.strata)
    strata_names: list[str]
    warnings: list[str] = field(default_factory=list)  # one line each: the run goes on, but should it?
    # Each client's held-out examples (indices into ``train``, disjoint from ``parts``), on which
    # every evaluation also scores the model client by client; empty arrays (or none): off.
    val_parts: list[np.ndarray] = field(default_factory=list)
    # Method → names of the tensors its variant keeps on each client (FedSA's B, everything under
    # +local), recorded when its model is placed: afterwards they are frozen like the pretrained weights.
    private_names: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def label_names(self) -> list[str]:
        return self.data.label_names

    @property
    def task(self) -> Task:
        return self.data.task

    @property
    def main_metric(self) -> str:
        return self.task.main_metric(self.cfg.metric)

    @property
    def collate(self):
        return self.task.collator(self.tokenizer)

    @property
    def pooled_id(self) -> int:
        """The id of the one machine of a centralized baseline, which holds every client's training
        data: the first id no client has."""
        return len(self.parts)

    def shard(self, cid: int) -> Dataset:
        idx = np.sort(np.concatenate(self.parts)) if cid == self.pooled_id else self.parts[cid]
        if len(idx) == 0:
            raise DataError(f"client {cid} has no examples; lower num_clients or raise partition.alpha")
        return self.train.select(idx)

    def client_val(self, cid: int) -> Dataset | None:
        """Client ``cid``'s held-out examples, or None when it has none (or none are held out)."""
        if cid >= len(self.val_parts) or len(self.val_parts[cid]) == 0:
            return None
        return self.train.select(self.val_parts[cid])

    def train_settings(self, method: str) -> TrainSettings:
        c = self.cfg
        return TrainSettings(
            lr=c.lr_of(method), batch_size=c.batch_size, seed=c.seed, local_steps=c.local_steps,
            local_epochs=c.local_epochs, max_grad_norm=c.max_grad_norm, weight_decay=c.weight_decay,
            precision=c.model.precision,
        )

    def base_model(self) -> nn.Module:
        return load_base_model(self.task, self.model_path, self.label_names, self.cfg.seed)

    @contextmanager
    def _seeded(self) -> Iterator[None]:
        # Methods draw initial trainables from torch's global stream (peft's LoRA A is
        # Kaiming-random, prompt tuning samples vocabulary ids, adapters init their
        # down-projections): seed it locally, so every process builds the same round-0 model.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.cfg.seed)
            yield

    def server_model(self, method_name: str) -> tuple[Method, nn.Module, State]:
        """The global model of ``method_name`` and the setup the server broadcasts once."""
        method = get_method(split_method(method_name)[0], self.cfg, self.task.peft_task_type)
        with self._seeded():
            base = self.base_model()
            setup = method.server_setup(base)
            model = self._placed(method.apply(base, setup), method_name)
        return method, model, setup

    def client_model(self, method_name: str, setup: State, stage: int = 0) -> nn.Module:
        """What a client builds from the broadcast setup (never its own SVD); for a later stage of a
        multi-stage method (SLoRA), that stage's model from the pretrained one."""
        method = get_method(split_method(method_name)[0], self.cfg, self.task.peft_task_type)
        with self._seeded():
            if stage:
                return self._placed(method.stage_model(stage, self.base_model()), method_name)
            return self._placed(method.apply(self.base_model(), setup), method_name)

    def stage_of(self, method_name: str, rnd: int) -> int:
        """The stage in which round ``rnd`` of ``method_name`` trains (0 but for multi-stage methods)."""
        return get_method(split_method(method_name)[0], self.cfg, self.task.peft_task_type).stage_of(rnd)

    def _placed(self, model: nn.Module, method_name: str) -> nn.Module:
        """On the job's device, with a variant's fixed factors frozen and activation checkpointing
        when the config asks for it."""
        variant = VARIANTS[v] if (v := split_method(method_name)[1]) is not None else None
        frozen, private = (variant.frozen, variant.private) if variant is not None else ((), ())
        if variant is not None and variant.layers is not None:
            model = import_module(variant.layers).insert(model, self.cfg)  # Fed-SB's R between B and A
        # Among what the method trains: +local's EVERYTHING fragment must not reach the pretrained weights.
        self.private_names[method_name] = tuple(n for n, p in model.named_parameters()
                                                if p.requires_grad and any(f in n for f in private))
        for name, p in model.named_parameters():
            if name in self.private_names[method_name] or any(f in name for f in frozen):
                # FFA: A never trains, so it never travels either; FedSA: B trains on each client
                # only (see LocalRule.private), so the global state never holds it.
                p.requires_grad_(False)
        if self.cfg.model.gradient_checkpointing:
            if not getattr(model, "supports_gradient_checkpointing", True):
                raise ModelError(f"model.gradient_checkpointing: {type(model).__name__} does not support it; "
                                 "set model.gradient_checkpointing=false")
            # Non-reentrant checkpointing needs no input that requires grad, so frozen embeddings
            # (every PEFT method) work, and it replays dropout with the same random state.
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        return model.to(self.device)


def prepare_job(cfg: Config) -> Job:
    if cfg.model.num_threads is not None:
        torch.set_num_threads(cfg.model.num_threads)
    device = resolve_device(cfg.model.device)
    model_path = resolve_model_path(cfg.model.path, cfg.model.builtin)
    limit = position_limit(model_path)
    if limit is not None and cfg.max_length > limit:
        raise ModelError(f"max_length={cfg.max_length} is above what the model at {model_path} can read "
                         f"({limit} positions); set max_length<={limit}")
    data = load_data(cfg.data, cfg.task)
    data.task.main_metric(cfg.metric)  # a metric the task does not have: refuse before any work
    if (why := model_problem(data.task, model_path)) is not None:
        raise ModelError(why)
    tokenizer = load_tokenizer(model_path, for_words=data.task.peft_task_type == "TOKEN_CLS")
    strata, strata_names = data.task.strata(data.train, data.label_names)
    parts = partition_indices(Dataset.from_dict({"label": strata}), cfg.partition, cfg.num_clients, cfg.seed)
    parts, val_parts = carve_client_val(parts, client_val_fraction(cfg), cfg.seed)
    train = data.task.tokenize(data.train, tokenizer, cfg.max_length)
    return Job(
        cfg=cfg, data=data, model_path=model_path, tokenizer=tokenizer, train=train,
        test=data.task.tokenize(data.test, tokenizer, cfg.max_length),
        parts=parts, device=device, strata=strata, strata_names=strata_names, val_parts=val_parts,
        warnings=_warnings(data, train, tokenizer, model_path),
    )


def _warnings(data: TextData, train: Dataset, tokenizer: PreTrainedTokenizerBase, model_path: Path) -> list[str]:
    share = unknown_token_share(train, tokenizer.unk_token_id, tokenizer.all_special_ids)
    found = [unknown_token_warning(share, model_path)]
    if data.task.name != "regression":
        found.append(foreign_head_warning(model_path, len(data.label_names)))
    if data.task.name in ("classification", "pair_classification"):
        found.append(unseen_classes_warning(data.train["label"], data.test["label"], data.label_names))
    return [w for w in found if w is not None]
