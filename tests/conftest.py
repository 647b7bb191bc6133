"""Shared fixtures: a tiny BERT (random weights, real tokenizer) and a small slice of the real corpus.

Unit tests use the tiny model so the suite stays fast on 2 CPU cores; the end-to-end tests
use the real built-in model and data.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from federa.config import Config, build_config
from federa.builtin_data import bbc_news_dataset
from federa.pretrained import builtin_model_path


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A 2-layer, 32-wide BERT saved as a Hugging Face folder with the built-in tokenizer."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    out = tmp_path_factory.mktemp("tiny-bert")
    tok = AutoTokenizer.from_pretrained(str(builtin_model_path()))
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=128, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    BertModel(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def small_csv(tmp_path_factory) -> Path:
    """200 real BBC News articles (40 per topic) as a csv with `text`/`label` columns."""
    ds = bbc_news_dataset()
    names = ds.features["label"].names
    out = tmp_path_factory.mktemp("data") / "bbc_small.csv"
    per_class: dict[int, int] = {}
    with open(out, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        for text, y in zip(ds["text"], ds["label"]):
            if per_class.get(y, 0) < 40:
                per_class[y] = per_class.get(y, 0) + 1
                w.writerow([text[:400], names[y]])
    return out


@pytest.fixture
def tiny_cfg(tiny_model_dir, small_csv):
    """A factory: a Config on the tiny model and small csv, plus any ``key=value`` overrides."""

    def make(*overrides: str) -> Config:
        return build_config({}, [
            f"model.path={tiny_model_dir}", f"data.path={small_csv}", "rounds=2", "num_clients=4",
            "clients_per_round=2", "local_steps=2", "batch_size=8", "max_length=32", "lora.r=4",
            # A 32-wide model gains nothing from threads; one keeps parallel processes from fighting.
            "model.num_threads=1",
            *overrides,
        ])

    return make


@pytest.fixture(autouse=True, scope="session")
def _quiet_transformers():
    import transformers

    transformers.logging.set_verbosity_error()  # weight-load reports drown real failures
