"""The same 12 labelled reviews in every dataset format lmcompare reads.

Run: python3 -m venv /tmp/pa && /tmp/pa/bin/pip install pyarrow && /tmp/pa/bin/python scripts/gen_data_fixtures.py
(pyarrow only for the Parquet copy; the rest is the standard library.)
"""
import bz2
import csv
import gzip
import io
import json
import os

import pyarrow as pa
import pyarrow.parquet as pq

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "data")
ROWS = [{"id": f"r{i:02d}", "text": t, "label": l, "split": "test" if i % 4 == 0 else "train"}
        for i, (t, l) in enumerate([
            ("A gripping, beautifully shot thriller.", "fresh"), ("Dull and lifeless.", "rotten"),
            ("Funny, warm, \"unmissable\".", "fresh"), ("Overlong, with a script full of holes.", "rotten"),
            ("Café society, brilliantly observed.", "fresh"), ("무척 지루했다", "rotten"),
            ("A triumph 😍", "fresh"), ("Tedious, loud; a mess.", "rotten"),
            ("Charming from start to finish.", "fresh"), ("Nothing works here.", "rotten"),
            ("Superb performances all round.", "fresh"), ("A waste of a great cast.", "rotten")])]


def main():
    os.makedirs(OUT, exist_ok=True)
    jsonl = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in ROWS)
    open(os.path.join(OUT, "reviews.jsonl"), "w", encoding="utf-8").write(jsonl)
    with gzip.open(os.path.join(OUT, "reviews.jsonl.gz"), "wt", encoding="utf-8") as f:
        f.write(jsonl)
    for name, delim in [("reviews.csv", ","), ("reviews.tsv", "\t")]:
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=["id", "text", "label", "split"], delimiter=delim)
        w.writeheader()
        w.writerows(ROWS)
        open(os.path.join(OUT, name), "w", encoding="utf-8", newline="").write(buf.getvalue())
        if name.endswith(".csv"):
            with bz2.open(os.path.join(OUT, name + ".bz2"), "wt", encoding="utf-8", newline="") as f:
                f.write(buf.getvalue())
    pq.write_table(pa.Table.from_pylist(ROWS), os.path.join(OUT, "reviews.parquet"))


if __name__ == "__main__":
    main()
