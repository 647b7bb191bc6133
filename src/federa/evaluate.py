"""Held-out evaluation of the global model: accuracy, macro-F1 and mean cross-entropy."""

from __future__ import annotations

import numpy as np
import torch
from datasets import Dataset
from torch import nn
from torch.utils.data import DataLoader


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> float:
    """Unweighted mean of per-class F1; a class absent from both truth and prediction is skipped."""
    f1s = []
    for c in range(num_classes):
        tp = int(np.sum((y_pred == c) & (y_true == c)))
        fp = int(np.sum((y_pred == c) & (y_true != c)))
        fn = int(np.sum((y_pred != c) & (y_true == c)))
        if tp + fp + fn == 0:
            continue
        f1s.append(2 * tp / (2 * tp + fp + fn))
    return float(np.mean(f1s)) if f1s else 0.0


@torch.no_grad()
def evaluate(
    model: nn.Module, test: Dataset, collate, num_classes: int, batch_size: int = 64,
    device: torch.device | str = "cpu",
) -> dict[str, float]:
    model.eval()
    preds, labels, loss_sum = [], [], 0.0
    for batch in DataLoader(test, batch_size=batch_size, shuffle=False, collate_fn=collate):
        batch = {k: v.to(device) for k, v in batch.items()}
        logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits.float()
        loss_sum += nn.functional.cross_entropy(logits, batch["labels"], reduction="sum").item()
        preds.append(logits.argmax(-1).cpu().numpy())
        labels.append(batch["labels"].cpu().numpy())
    y_pred, y_true = np.concatenate(preds), np.concatenate(labels)
    return {
        "accuracy": float(np.mean(y_pred == y_true)),
        "macro_f1": macro_f1(y_true, y_pred, num_classes),
        "loss": loss_sum / len(y_true),
    }
