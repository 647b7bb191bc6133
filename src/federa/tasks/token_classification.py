"""Token classification (CoNLL-style NER): a tokens column and a per-token tags column.

Sub-word alignment is the standard one: the first sub-token of each word carries the word's tag,
the rest and the special tokens are ignored (-100). Scoring is entity-level F1 with ``seqeval``
(CoNLL's rule), on the first sub-token of each word.

Non-IID partitions group sentences by their *dominant entity type* (the most frequent entity
type among the sentence's entities, ties to the alphabetically first; "none" when it has no
entity), so a Dirichlet partition gives each client a skewed mix of entity types, as
label skew does for classification.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from federa.errors import DataError
from federa.tasks.base import Task, predictions, rename_to, require_columns

if TYPE_CHECKING:
    import numpy as np
    import torch
    from datasets import ClassLabel, Dataset, Sequence, Value
    from seqeval.metrics import accuracy_score, f1_score, precision_score, recall_score
    from torch import nn
    from transformers import AutoModelForTokenClassification, DataCollatorForTokenClassification, PreTrainedTokenizerBase

IGNORE = -100  # positions the loss and the scores skip


def entity_type(tag: str) -> str | None:
    """``B-PER`` / ``I-PER`` / ``E-PER`` / ``S-PER`` → ``PER``; ``O`` → None."""
    return None if tag == "O" or "-" not in tag else tag.split("-", 1)[1]


class TokenClassification(Task):
    name = "token_classification"
    metrics = ("entity_f1", "entity_precision", "entity_recall", "token_accuracy")
    peft_task_type = "TOKEN_CLS"

    def normalise(self, ds: Dataset, where: str) -> Dataset:
        d = self.data
        require_columns(ds, {d.tokens_column: "data.tokens_column", d.tags_column: "data.tags_column"}, where)
        ds = rename_to(ds, {d.tokens_column: "tokens", d.tags_column: "tags"})
        if len(ds) == 0:
            raise DataError(f"{where} has no rows")
        for i, (tokens, tags) in enumerate(zip(ds["tokens"], ds["tags"])):
            if not isinstance(tokens, list) or not isinstance(tags, list):
                raise DataError(f"{where} row {i}: '{d.tokens_column}' and '{d.tags_column}' must hold lists "
                                "(one entry per token)")
            if len(tokens) != len(tags):
                raise DataError(f"{where} row {i}: {len(tokens)} tokens but {len(tags)} tags; "
                                "each token needs exactly one tag")
        return ds

    def encode_labels(self, splits: Mapping[str, Dataset]) -> tuple[dict[str, Dataset], list[str]]:
        """Tag ids over the training vocabulary; a tag the training split never uses is an error."""
        from datasets import ClassLabel, Sequence, Value

        feature = splits["train" if "train" in splits else next(iter(splits))].features["tags"]
        inner = getattr(feature, "feature", None)
        if isinstance(inner, ClassLabel):  # hub NER sets (conll2003): the names are given
            names = list(inner.names)
            return {k: v.cast_column("tokens", Sequence(Value("string"))) for k, v in splits.items()}, names
        ref = splits["train"] if "train" in splits else next(iter(splits.values()))
        vocab = sorted({str(t) for tags in ref["tags"] for t in tags}, key=lambda t: (t != "O", entity_type(t) or "", t))
        index = {t: i for i, t in enumerate(vocab)}
        out = {}
        for k, s in splits.items():
            unknown = sorted({str(t) for tags in s["tags"] for t in tags} - index.keys())
            if unknown:
                raise DataError(f"split '{k}' uses tag(s) {unknown[:5]} that the training split never does; "
                                "fix the tags or add examples of them to the training data")
            s = s.map(lambda b: {"tags": [[index[str(t)] for t in tags] for tags in b["tags"]],
                                 "tokens": [[str(w) for w in ws] for ws in b["tokens"]]}, batched=True)
            out[k] = s.cast_column("tags", Sequence(ClassLabel(names=vocab)))
        return out, vocab

    def strata(self, train: Dataset, label_names: list[str]) -> tuple[np.ndarray, list[str]]:
        import numpy as np

        types = sorted({t for n in label_names if (t := entity_type(n))})
        names = [*types, "none"]
        ids = []
        for tags in train["tags"]:
            counts = Counter(t for i in tags if (t := entity_type(label_names[i])))
            if counts:
                top = max(counts.values())
                ids.append(names.index(min(t for t, c in counts.items() if c == top)))
            else:
                ids.append(len(types))
        return np.asarray(ids), names

    def tokenize(self, ds: Dataset, tokenizer: PreTrainedTokenizerBase, max_length: int) -> Dataset:
        if not tokenizer.is_fast:
            raise DataError("task=token_classification needs a fast tokenizer (tokenizer.json) to align "
                            "tags with sub-words; this model folder has only a slow one")

        def enc(batch: dict) -> dict:
            out = tokenizer(batch["tokens"], is_split_into_words=True, truncation=True, max_length=max_length)
            labels = []
            for i, tags in enumerate(batch["tags"]):
                row, prev = [], None
                for w in out.word_ids(i):
                    row.append(IGNORE if w is None or w == prev else tags[w])
                    prev = w
                labels.append(row)
            out["labels"] = labels
            return out

        return ds.map(enc, batched=True, remove_columns=["tokens", "tags"])

    def constant_score(self, test: Dataset, label_names: list[str], metric: str) -> float | None:
        from collections import Counter

        if metric.startswith("entity_"):
            return 0.0  # tagging every word "O" finds no entity (a constant B- tag scores about as little)
        counts = Counter(t for tags in test["tags"] for t in tags)  # token_accuracy: the most frequent tag
        return max(counts.values()) / sum(counts.values()) if counts else None

    def collator(self, tokenizer: PreTrainedTokenizerBase) -> DataCollatorForTokenClassification:
        from transformers import DataCollatorForTokenClassification

        return DataCollatorForTokenClassification(tokenizer, label_pad_token_id=IGNORE)

    def auto_model_class(self) -> Any:
        from transformers import AutoModelForTokenClassification

        return AutoModelForTokenClassification

    def evaluate(self, model: nn.Module, test: Dataset, collate: Any, label_names: list[str],
                 batch_size: int, device: torch.device | str, precision: str = "fp32") -> dict[str, float]:
        from seqeval.metrics import accuracy_score, f1_score, precision_score, recall_score
        from torch import nn

        y_true: list[list[str]] = []
        y_pred: list[list[str]] = []
        loss_sum, n_tokens = 0.0, 0
        for logits, labels in predictions(model, test, collate, batch_size, device, precision):
            loss_sum += nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=IGNORE,
                                                    reduction="sum").item()
            n_tokens += int((labels != IGNORE).sum())
            for p, t in zip(logits.argmax(-1).cpu().tolist(), labels.cpu().tolist()):
                keep = [(label_names[pi], label_names[ti]) for pi, ti in zip(p, t) if ti != IGNORE]
                y_pred.append([a for a, _ in keep])
                y_true.append([b for _, b in keep])
        return {
            "entity_f1": float(f1_score(y_true, y_pred, zero_division=0)),
            "entity_precision": float(precision_score(y_true, y_pred, zero_division=0)),
            "entity_recall": float(recall_score(y_true, y_pred, zero_division=0)),
            "token_accuracy": float(accuracy_score(y_true, y_pred)),
            "loss": loss_sum / max(n_tokens, 1),
        }
