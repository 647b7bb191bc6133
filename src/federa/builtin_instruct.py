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
from typing import TYPE_CHECKING

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


def instruct_mix(load: Callable[[str], Dataset]) -> Dataset:
    """The set, from ``load(name)``: a built-in source's examples (its train split where it has splits).
    Passed in, so this module needs nothing of federa.builtin_data, which registers the set."""
    from datasets import Dataset

    _rows = load

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
