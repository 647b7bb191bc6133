"""Checks that catch silently useless training before it starts: a model folder without its
vocabulary, text the tokenizer cannot read, a test split with classes training never sees.

Each returns a message (or None) rather than raising, so the caller decides what is fatal
(no tokenizer files) and what is a one-line warning (many unknown tokens).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from datasets import Dataset

# A tokenizer's vocabulary lives in one of these; tokenizer_config.json alone is not enough
# (transformers then builds a near-empty tokenizer that maps every word to [UNK]).
VOCAB_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "spiece.model", "sentencepiece.bpe.model",
               "tokenizer.model")
UNKNOWN_WARN_SHARE = 0.05  # above this share of [UNK] tokens the model reads mostly noise
_SAMPLE = 256  # rows checked for unknown tokens: enough for a stable share, cheap on any corpus


def tokenizer_files_problem(path: Path) -> str | None:
    """Why ``path`` holds no usable tokenizer, or None."""
    if any((path / name).is_file() for name in VOCAB_FILES):
        return None
    return (f"model.path {path} has no tokenizer files (expected one of {', '.join(VOCAB_FILES)}); "
            "copy them from where the model came from (e.g. tokenizer.save_pretrained(folder))")


def unknown_token_share(tokenized: Dataset, unk_id: int | None, special_ids: Sequence[int]) -> float:
    """Share of [UNK] among the non-special tokens of the first rows of ``tokenized``."""
    if unk_id is None or len(tokenized) == 0:
        return 0.0
    special = set(special_ids) - {unk_id}
    unk = total = 0
    for ids in tokenized.select(range(min(_SAMPLE, len(tokenized))))["input_ids"]:
        real = [i for i in ids if i not in special]
        unk += sum(1 for i in real if i == unk_id)
        total += len(real)
    return unk / total if total else 0.0


def unknown_token_warning(share: float, model_path: Path) -> str | None:
    if share <= UNKNOWN_WARN_SHARE:
        return None
    return (f"{share:.0%} of the training tokens are the tokenizer's unknown token: the model at {model_path} "
            "cannot read this text (wrong tokenizer, or another language/script); results will be poor")


def unseen_classes_warning(train_labels: Sequence[int], test_labels: Sequence[int],
                           names: Sequence[str]) -> str | None:
    """A warning when the test split holds classes the training split lacks (never learnable)."""
    missing = sorted(set(test_labels) - set(train_labels))
    if not missing:
        return None
    n = sum(1 for y in test_labels if y in set(missing))
    shown = ", ".join(str(names[i]) if 0 <= i < len(names) else str(i) for i in missing)
    return (f"the test split has class(es) {shown} ({n} of {len(test_labels)} test examples) that no training "
            "example has: the model cannot learn them, so test accuracy on them is meaningless")


def foreign_head_warning(model_path: Path, num_labels: int) -> str | None:
    """A warning when the checkpoint already has a classification head for another number of labels."""
    import json

    try:
        cfg = json.loads((model_path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    heads = [a for a in cfg.get("architectures") or [] if a.endswith(("ForSequenceClassification",
                                                                     "ForTokenClassification"))]
    theirs = len(cfg.get("id2label") or {})
    if not heads or theirs in (0, num_labels):
        return None
    return (f"the model at {model_path} carries a {theirs}-label head ({heads[0]}); federa replaces it with a "
            f"fresh {num_labels}-label head for this data")
