"""Sequence classification: one text (topic, sentiment, CoLA-style) or a pair of texts (NLI,
paraphrase, QA-sentence: MNLI/QNLI/RTE/MRPC-style), a class label, cross-entropy loss."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from federa.errors import DataError
from federa.tasks.base import Task, predictions, rename_to, require_columns

if TYPE_CHECKING:
    import datasets
    import numpy as np
    import torch
    from datasets import ClassLabel, Dataset
    from torch import nn
    from transformers import AutoModelForSequenceClassification, DataCollatorWithPadding, PreTrainedTokenizerBase
    from federa.config import DataConfig


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> float:
    """Unweighted mean of per-class F1; a class absent from both truth and prediction is skipped."""
    import numpy as np

    f1s = []
    for c in range(num_classes):
        tp = int(np.sum((y_pred == c) & (y_true == c)))
        fp = int(np.sum((y_pred == c) & (y_true != c)))
        fn = int(np.sum((y_pred != c) & (y_true == c)))
        if tp + fp + fn == 0:
            continue
        f1s.append(2 * tp / (2 * tp + fp + fn))
    return float(np.mean(f1s)) if f1s else 0.0


def mcc(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> float:
    """Matthews correlation (Gorodkin's multi-class form; the binary MCC for two classes), 0 when undefined."""
    import numpy as np

    c = np.zeros((num_classes, num_classes), dtype=np.float64)
    np.add.at(c, (y_true, y_pred), 1)
    t, p, n, s = c.sum(1), c.sum(0), np.trace(c), c.sum()
    denom = math.sqrt((s * s - p @ p) * (s * s - t @ t))
    return float((n * s - t @ p) / denom) if denom > 0 else 0.0


def as_text(ds: Dataset, col: str, src: str, key: str, where: str) -> Dataset:
    import datasets

    if ds.features[col] != datasets.Value("string"):
        # Numbers or booleans read from a csv are still text; lists or structs are not.
        try:
            ds = ds.cast_column(col, datasets.Value("string"))
        except Exception:  # arrow raises several types for an impossible cast
            raise DataError(f"{where}: column '{src}' holds {ds.features[col]}, not text; "
                            f"point {key} at a column of strings") from None
    return ds


def is_missing(v: Any) -> bool:
    # A NaN label is how pandas/JSON spell a missing one; as a class it would never equal itself.
    return v is None or (isinstance(v, float) and math.isnan(v))


class Classification(Task):
    name = "classification"
    metrics = ("accuracy", "macro_f1", "mcc")

    def source_columns(self) -> dict[str, tuple[str, str]]:
        """Standard column → (the source's column, the config key that names it)."""
        d = self.data
        return {"text": (d.text_column, "data.text_column"), "label": (d.label_column, "data.label_column")}

    @property
    def columns(self) -> tuple[str, ...]:
        return tuple(self.source_columns())

    def normalise(self, ds: Dataset, where: str) -> Dataset:
        cols = self.source_columns()
        require_columns(ds, {src: key for src, key in cols.values()}, where)
        ds = rename_to(ds, {src: std for std, (src, _) in cols.items()})
        if len(ds) == 0:
            raise DataError(f"{where} has no rows")
        for std, (src, key) in cols.items():
            if std != "label":
                ds = as_text(ds, std, src, key, where)
        texts = [c for c in cols if c != "label"]
        missing = sum(1 for row in zip(*(ds[c] for c in texts), ds["label"]) if any(is_missing(v) for v in row))
        if missing:
            raise DataError(f"{where}: {missing} rows have an empty text or label cell (or a NaN label); "
                            "drop or fill them")
        return ds

    def encode_labels(self, splits: Mapping[str, Dataset]) -> tuple[dict[str, Dataset], list[str]]:
        """ClassLabel names if present, else the sorted distinct values, as class ids."""
        import datasets
        from datasets import ClassLabel

        first = next(iter(splits.values()))
        feature = first.features["label"]
        if isinstance(feature, ClassLabel):
            names = list(feature.names)
            for k, v in splits.items():
                # ClassLabel does not police stored ints (-1 marks "unlabelled" in hub test splits).
                bad = sum(1 for y in v["label"] if not 0 <= y < len(names))
                if bad:
                    raise DataError(
                        f"split '{k}': {bad} labels lie outside the {len(names)} classes {names[:5]} "
                        "(e.g. -1 = unlabelled); drop those rows or use a labelled split"
                    )
            return {k: v.cast_column("text", datasets.Value("string")) for k, v in splits.items()}, names
        values = sorted({y for s in splits.values() for y in s["label"]}, key=lambda y: (str(type(y)), y))
        if len(values) < 2:
            raise DataError(f"the label column has {len(values)} distinct value(s); classification needs at least 2")
        index = {v: i for i, v in enumerate(values)}
        names = [str(v) for v in values]
        text_cols = [c for c in self.columns if c != "label"]
        out = {}
        for k, s in splits.items():
            s = s.map(lambda b: {"label": [index[y] for y in b["label"]],
                                 **{c: [str(t) for t in b[c]] for c in text_cols}}, batched=True)
            out[k] = s.cast_column("label", ClassLabel(names=names))
        return out, names

    def strata(self, train: Dataset, label_names: list[str]) -> tuple[np.ndarray, list[str]]:
        import numpy as np

        return np.asarray(train["label"]), list(label_names)

    def tokenize(self, ds: Dataset, tokenizer: PreTrainedTokenizerBase, max_length: int) -> Dataset:
        texts = [c for c in self.columns if c != "label"]

        def enc(batch: dict) -> dict:
            return tokenizer(*(batch[c] for c in texts), truncation=True, max_length=max_length)

        return ds.map(enc, batched=True, remove_columns=texts)

    def collator(self, tokenizer: PreTrainedTokenizerBase) -> DataCollatorWithPadding:
        from transformers import DataCollatorWithPadding

        return DataCollatorWithPadding(tokenizer)

    def auto_model_class(self) -> Any:
        from transformers import AutoModelForSequenceClassification

        return AutoModelForSequenceClassification

    def evaluate(self, model: nn.Module, test: Dataset, collate: Any, label_names: list[str],
                 batch_size: int, device: torch.device | str, precision: str = "fp32") -> dict[str, float]:
        import numpy as np
        from torch import nn

        preds, labels, loss_sum = [], [], 0.0
        for logits, y in predictions(model, test, collate, batch_size, device, precision):
            loss_sum += nn.functional.cross_entropy(logits, y, reduction="sum").item()
            preds.append(logits.argmax(-1).cpu().numpy())
            labels.append(y.cpu().numpy())
        y_pred, y_true = np.concatenate(preds), np.concatenate(labels)
        k = len(label_names)
        return {
            "accuracy": float(np.mean(y_pred == y_true)),
            "macro_f1": macro_f1(y_true, y_pred, k),
            "mcc": mcc(y_true, y_pred, k),
            "loss": loss_sum / len(y_true),
        }


    def constant_score(self, test: Dataset, label_names: list[str], metric: str) -> float | None:
        import numpy as np

        y = np.asarray(test["label"])
        k = len(label_names)
        score = {"accuracy": lambda p: float(np.mean(p == y)), "macro_f1": lambda p: macro_f1(y, p, k),
                 "mcc": lambda p: mcc(y, p, k)}.get(metric)
        return None if score is None or len(y) == 0 else max(score(np.full_like(y, c)) for c in range(k))


class PairClassification(Classification):
    name = "pair_classification"

    def source_columns(self) -> dict[str, tuple[str, str]]:
        d = self.data
        if d.text_pair_column is None:
            raise DataError("task=pair_classification needs the second text's column: set data.text_pair_column")
        return {"text": (d.text_column, "data.text_column"), "text_pair": (d.text_pair_column, "data.text_pair_column"),
                "label": (d.label_column, "data.label_column")}
