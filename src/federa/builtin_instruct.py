"""``data.builtin=instruct_mix``: instruction data *derived* from the four built-in labelled datasets.

No registry package we could find ships a real instruction or QA set with a licence that allows
it (searched PyPI for alpaca, dolly, squad, triviaqa, instruct, qa data, quiz, jeopardy, faq;
``alpaca-eval`` and ``alpaca-farm`` download their data from the hub at run time). So this set
is built from the real texts and labels federa already ships, each turned into an instruction
with a short answer written from the label:

- ``topic``: a BBC News article's first 80 words → its topic (business, entertainment, ...);
- ``sentiment``: a Rotten Tomatoes snippet → positive (fresh) or negative (rotten);
- ``similarity``: an STS-B sentence pair → its similarity score rounded to a whole number 0-5;
- ``entities``: a WNUT-16 tweet → its entities as ``text (type)`` joined by ``; `` (or ``none``).

The instructions are ours; the texts, labels and licences are the sources'. ``category`` is the
source task, so a Dirichlet partition over categories gives each client a different task mix.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from federa.builtin_data import Builtin

if TYPE_CHECKING:
    from datasets import Dataset

PER_TASK = 500  # examples drawn from each source (seeded): 2,000 in all, tokenised in seconds
ARTICLE_WORDS = 80
SEED = 0

TOPIC = ("What is the topic of this news article? Answer with one word: business, entertainment, politics, "
         "sport or tech.")
SENTIMENT = "Is this movie review positive or negative? Answer with one word."
SIMILARITY = ("On a scale from 0 (unrelated) to 5 (same meaning), how similar are these two sentences? "
              "Answer with a whole number.")
ENTITIES = ("List the named entities in this tweet with their types, as 'entity (type)' separated by "
            "semicolons; answer 'none' if there are none.")


def entities_text(tokens: list[str], tags: list[str]) -> str:
    """BIO tags → ``"Empire State Building (facility); ESB (facility)"``, or ``none``."""
    found: list[tuple[list[str], str]] = []
    prev = "O"
    for word, tag in zip(tokens, tags):
        continues = tag.startswith("I-") and prev != "O" and found and found[-1][1] == tag[2:]
        if continues:
            found[-1][0].append(word)
        elif tag != "O":  # B-x, or a stray I-x that starts an entity (as seqeval reads it)
            found.append(([word], tag[2:]))
        prev = tag
    return "; ".join(f"{' '.join(ws)} ({t})" for ws, t in found) or "none"


def _pick(n: int, k: int, salt: int) -> list[int]:
    import numpy as np

    return sorted(np.random.default_rng([SEED, salt]).permutation(n)[:k].tolist())


def _rows(name: str) -> Dataset:
    from datasets import DatasetDict

    from federa.builtin_data import BUILTINS

    ds = BUILTINS[name].load()
    return ds["train"] if isinstance(ds, DatasetDict) else ds


def instruct_mix() -> Dataset:
    from datasets import Dataset

    rows: dict[str, list[str]] = {"instruction": [], "input": [], "output": [], "category": []}

    def add(instruction: str, inp: str, out: str, category: str) -> None:
        for k, v in zip(rows, (instruction, inp, out, category)):
            rows[k].append(v)

    bbc = _rows("bbc_news")
    names = bbc.features["label"].names
    for i in _pick(len(bbc), PER_TASK, 1):
        add(TOPIC, " ".join(bbc[i]["text"].split()[:ARTICLE_WORDS]), names[bbc[i]["label"]], "topic")
    rt = _rows("rotten_tomatoes")
    for i in _pick(len(rt), PER_TASK, 2):
        add(SENTIMENT, rt[i]["text"], "positive" if rt[i]["label"] == 1 else "negative", "sentiment")
    sts = _rows("sts_b")
    for i in _pick(len(sts), PER_TASK, 3):
        r = sts[i]
        add(SIMILARITY, f"Sentence 1: {r['text']}\nSentence 2: {r['text_pair']}", str(int(r["label"] + 0.5)),
            "similarity")
    wnut = _rows("wnut16")
    for i in _pick(len(wnut), PER_TASK, 4):
        add(ENTITIES, " ".join(wnut[i]["tokens"]), entities_text(wnut[i]["tokens"], wnut[i]["tags"]), "entities")
    return Dataset.from_dict(rows)


@dataclass(frozen=True)
class DerivedBuiltin(Builtin):
    """A built-in dataset made from other built-in ones: installed when all of them are."""

    sources: tuple[str, ...] = ()
    build: Callable[[], Dataset] | None = None

    def _source(self) -> list[Builtin]:
        from federa.builtin_data import BUILTINS

        return [BUILTINS[s] for s in self.sources]

    @property
    def install(self) -> str:
        return "pip install --no-deps " + " ".join(f"{b.package}=={b.version}" for b in self._source())

    @property
    def installed(self) -> bool:
        return all(b.installed for b in self._source())

    def load(self) -> Dataset:
        assert self.build is not None
        return self.build()  # each source's own load names its package when it is missing


INSTRUCT_MIX = DerivedBuiltin(
    "instruct_mix", "instruction", "derived: bbc_news+rotten_tomatoes+sts_b+wnut16", "", "",
    "2,000 instructions derived from the four sets above: topic, sentiment, similarity, entities (500 each)",
    "DERIVED by federa: our instructions over the texts and labels of bbc_news, rotten_tomatoes, sts_b "
    "and wnut16 (their sources' terms apply)",
    lambda root: instruct_mix(),
    sources=("bbc_news", "rotten_tomatoes", "sts_b", "wnut16"), build=instruct_mix,
)
