"""Write a sentence-pair classification set from BBC News: are two articles on the same topic?

    .venv/bin/python benchmarks/bbc_pairs.py runs/bbc_pairs.csv

No registry package ships a real NLI or paraphrase corpus, so the pair-classification table in
README.md uses these 2,000 pairs of real article openings (300 characters each; half from one
topic, half from two, seed 0): real text, a derived label, not a standard benchmark. Then:

    federa run --out runs/bench-pairs-long --set data.path=runs/bbc_pairs.csv --set data.text_column=first \\
      --set data.text_pair_column=second --set data.label_column=relation --set task=pair_classification \\
      --set rounds=8 --set clients_per_round=5 --set local_steps=8 --set data.max_test_examples=300 \\
      --set model.num_threads=2
"""

from __future__ import annotations

import csv
import sys

import numpy as np

from federa.builtin_data import bbc_news_dataset


def main(out: str) -> None:
    ds = bbc_news_dataset()
    rng = np.random.default_rng(0)
    order = rng.permutation(len(ds))
    by_topic: dict[int, list[int]] = {}
    for i in order:
        by_topic.setdefault(ds[int(i)]["label"], []).append(int(i))
    rows = []
    for k in range(2000):
        a = int(order[k % len(order)])
        topic = ds[a]["label"]
        pool = by_topic[topic] if k % 2 == 0 else [j for t, js in by_topic.items() if t != topic for j in js]
        b = int(pool[rng.integers(len(pool))])
        if b == a:
            b = int(pool[(pool.index(b) + 1) % len(pool)])
        same = ds[b]["label"] == topic
        rows.append((ds[a]["text"][:300], ds[b]["text"][:300], "same_topic" if same else "different_topic"))
    with open(out, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["first", "second", "relation"])
        w.writerows(rows)
    print(f"{out}: {len(rows)} pairs, {sum(r[2] == 'same_topic' for r in rows)} on the same topic")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "runs/bbc_pairs.csv")
