"""What a task type owns, so that methods, strategies and engines never ask which task is running:
its columns and label vocabulary, its tokenisation and collator, its model head (hence its loss),
its metrics and the main one, and what a non-IID partition groups examples by."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from federa.errors import DataError, ModelError

if TYPE_CHECKING:
    import numpy as np
    import torch
    from datasets import Dataset
    from torch import nn
    from torch.utils.data import DataLoader
    from transformers import PreTrainedTokenizerBase
    from federa.config import DataConfig


class Task(ABC):
    name: ClassVar[str]
    # Metrics this task reports; the first is its default main metric (time-to-target, claims,
    # plots and reports use the main one). All are "higher is better".
    metrics: ClassVar[tuple[str, ...]]
    peft_task_type: ClassVar[str] = "SEQ_CLS"  # peft's TaskType: which head module trains with the adapter

    def __init__(self, data: DataConfig) -> None:
        self.data = data  # where the source's columns are (data.text_column, ...)

    @abstractmethod
    def normalise(self, ds: Dataset, where: str) -> Dataset:
        """The task's standard columns under their standard names; bad rows give one DataError line."""

    @abstractmethod
    def encode_labels(self, splits: Mapping[str, Dataset]) -> tuple[dict[str, Dataset], list[str]]:
        """Labels as the model needs them, one vocabulary over all splits: (splits, label names)."""

    @abstractmethod
    def strata(self, train: Dataset, label_names: list[str]) -> tuple[np.ndarray, list[str]]:
        """What a label-skewed (Dirichlet, shards) partition groups examples by: (ids, names)."""

    @abstractmethod
    def tokenize(self, ds: Dataset, tokenizer: PreTrainedTokenizerBase, max_length: int) -> Dataset:
        """Token ids and ``label``/``labels`` per example (unpadded; :meth:`collator` pads batches)."""

    @abstractmethod
    def collator(self, tokenizer: PreTrainedTokenizerBase) -> Any:
        ...

    @abstractmethod
    def auto_model_class(self) -> Any:
        ...

    def head_config(self, label_names: list[str]) -> dict[str, Any]:
        """``from_pretrained`` keyword arguments that shape the head (and so the loss)."""
        return {"num_labels": len(label_names), "id2label": dict(enumerate(label_names)),
                "label2id": {n: i for i, n in enumerate(label_names)}}

    def load_model(self, path: Path, label_names: list[str], seed: int) -> nn.Module:
        """Pretrained body + a fresh head initialised from ``seed`` (so every party builds the same one)."""
        import torch
        from safetensors import SafetensorError

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            try:
                # A checkpoint fine-tuned elsewhere may carry a head for another label set: it is
                # replaced by this task's fresh head (prepare_job says so in one warning line).
                model, info = self.auto_model_class().from_pretrained(
                    str(path), ignore_mismatched_sizes=True, output_loading_info=True,
                    **self.head_config(label_names))
            except (OSError, ValueError, SafetensorError) as err:
                # SafetensorError: a weight file damaged in a way resolve_model_path's size check missed.
                raise ModelError(f"cannot load model from {path}: {str(err).splitlines()[0]}") from None
        if (why := backbone_problem(model.base_model_prefix, info)) is not None:
            raise ModelError(f"model.path {path}: {why}; config.json does not describe these weights: "
                             "restore the model's own config.json")
        return model

    @abstractmethod
    def evaluate(self, model: nn.Module, test: Dataset, collate: Any, label_names: list[str],
                 batch_size: int, device: torch.device | str, precision: str = "fp32") -> dict[str, float]:
        """Every metric of :attr:`metrics` plus ``loss`` on the held-out set."""

    def constant_score(self, test: Dataset, label_names: list[str], metric: str) -> float | None:
        """The best ``metric`` any constant prediction scores on ``test``: the floor a run must beat to
        have learned anything beyond the label prior (None: not known for this task)."""
        return None

    @classmethod
    def main_metric(cls, chosen: str | None) -> str:
        if chosen is None:
            return cls.metrics[0]
        if chosen not in cls.metrics:
            raise DataError(f"metric={chosen} is not a {cls.name} metric; choose from {', '.join(cls.metrics)}")
        return chosen


def backbone_problem(prefix: str, info: Mapping[str, Any]) -> str | None:
    """Why a pretrained load left the body (not the head) untrained, or None.

    ``ignore_mismatched_sizes`` is there for the head only (a checkpoint fine-tuned on another label
    set); a body weight of another shape, or one missing from the files, would silently train a
    randomly initialised model. The head is whatever lies outside the base model (``prefix``).
    BERT's pooler is exempt: it is trained only by next-sentence prediction, and checkpoints saved
    without it are common; transformers itself starts it fresh.
    """
    def in_body(key: str) -> bool:
        return key.startswith(f"{prefix}.") and not key.startswith(f"{prefix}.pooler.")

    for key, saved, wanted in sorted(info.get("mismatched_keys") or []):  # a stable first one to name
        if in_body(key):
            return (f"weight {key} is {tuple(saved)} in the files but the config asks for {tuple(wanted)} "
                    f"(only the classification head may differ)")
    missing = sorted(k for k in info.get("missing_keys") or [] if in_body(k))
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        return f"weight {missing[0]}{more} is missing from the files (only the classification head may be new)"
    return None


def require_columns(ds: Dataset, wanted: Mapping[str, str], where: str) -> None:
    """``wanted``: column name → the config key that names it."""
    for col, key in wanted.items():
        if col not in ds.column_names:
            raise DataError(f"{where} has no column '{col}' (set {key}); available columns: {', '.join(ds.column_names)}")


def rename_to(ds: Dataset, mapping: Mapping[str, str]) -> Dataset:
    """Keep only ``mapping``'s source columns, renamed to their standard names."""
    ds = ds.select_columns(list(mapping))
    for src, std in mapping.items():
        if src != std:
            ds = ds.rename_column(src, std)
    return ds


def predictions(model: nn.Module, test: Dataset, collate: Any, batch_size: int, device: torch.device | str,
                precision: str = "fp32") -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(float32 logits, labels) per batch of ``test``, in order, with the model in eval mode."""
    import torch

    # torch.no_grad() wraps a generator function so that only its own steps run without grad.
    return torch.no_grad()(_predictions)(model, test, collate, batch_size, device, precision)


def _predictions(model: nn.Module, test: Dataset, collate: Any, batch_size: int, device: torch.device | str,
                 precision: str) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    from torch.utils.data import DataLoader

    from federa.precision import autocast

    model.eval()
    for batch in DataLoader(test, batch_size=batch_size, shuffle=False, collate_fn=collate):
        batch = {k: v.to(device) for k, v in batch.items()}
        labels = batch.pop("labels")
        with autocast(device, precision):
            logits = model(**batch).logits
        yield logits.float(), labels
