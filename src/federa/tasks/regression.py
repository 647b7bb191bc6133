"""Regression (STS-B-style): one text or a pair, a real-valued label, one output, MSE loss;
scored by Pearson and Spearman correlation."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from federa.errors import DataError
from federa.tasks.base import predictions
from federa.tasks.classification import Classification

if TYPE_CHECKING:
    import datasets
    import numpy as np
    import torch
    from datasets import Dataset
    from scipy import stats
    from torch import nn

STRATA_BINS = 5  # label-skewed partitions group examples by quintile of the training labels


class Regression(Classification):
    name = "regression"
    metrics = ("pearson", "spearman")

    def source_columns(self) -> dict[str, tuple[str, str]]:
        d = self.data  # one text, or a pair when data.text_pair_column is set (STS-B)
        cols = {"text": (d.text_column, "data.text_column")}
        if d.text_pair_column is not None:
            cols["text_pair"] = (d.text_pair_column, "data.text_pair_column")
        return {**cols, "label": (d.label_column, "data.label_column")}

    def normalise(self, ds: Dataset, where: str) -> Dataset:
        import datasets

        ds = super().normalise(ds, where)
        bad = next((y for y in ds["label"] if not _is_number(y)), None)
        if bad is not None:
            raise DataError(f"{where}: task=regression needs numeric labels, found {bad!r} in "
                            f"'{self.data.label_column}'; fix the column or use task=classification")
        return ds.cast_column("label", datasets.Value("float32"))

    def encode_labels(self, splits: Mapping[str, Dataset]) -> tuple[dict[str, Dataset], list[str]]:
        return dict(splits), ["score"]  # one output unit

    def strata(self, train: Dataset, label_names: list[str]) -> tuple[np.ndarray, list[str]]:
        import numpy as np

        y = np.asarray(train["label"], dtype=np.float64)
        edges = np.unique(np.quantile(y, np.linspace(0, 1, STRATA_BINS + 1)[1:-1]))
        ids = np.searchsorted(edges, y, side="right")
        bounds = [float(y.min()), *edges.tolist(), float(y.max())]
        return ids, [f"{lo:.3g}-{hi:.3g}" for lo, hi in zip(bounds, bounds[1:])]

    def head_config(self, label_names: list[str]) -> dict[str, Any]:
        return {"num_labels": 1, "problem_type": "regression"}

    def evaluate(self, model: nn.Module, test: Dataset, collate: Any, label_names: list[str],
                 batch_size: int, device: torch.device | str, precision: str = "fp32") -> dict[str, float]:
        import numpy as np
        from scipy import stats

        preds, labels = [], []
        for logits, y in predictions(model, test, collate, batch_size, device, precision):
            preds.append(logits.squeeze(-1).cpu().numpy())
            labels.append(y.float().cpu().numpy())
        y_pred, y_true = np.concatenate(preds).astype(np.float64), np.concatenate(labels).astype(np.float64)
        constant = np.ptp(y_pred) == 0 or np.ptp(y_true) == 0  # a correlation is undefined: report 0
        return {
            "pearson": 0.0 if constant else float(stats.pearsonr(y_pred, y_true).statistic),
            "spearman": 0.0 if constant else float(stats.spearmanr(y_pred, y_true).statistic),
            "loss": float(np.mean((y_pred - y_true) ** 2)),  # MSE, the training loss
        }


    def constant_score(self, test: Dataset, label_names: list[str], metric: str) -> float | None:
        return 0.0  # a constant prediction has no correlation (evaluate scores it 0)


def _is_number(y: Any) -> bool:
    if isinstance(y, bool):
        return False
    if isinstance(y, (int, float)):
        return math.isfinite(y)
    try:
        return math.isfinite(float(y))
    except (TypeError, ValueError):
        return False
