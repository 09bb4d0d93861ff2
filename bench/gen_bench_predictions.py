"""Writes a prediction file for the metrics benchmark (standard library only, seeded).

usage: gen_bench_predictions.py OUT [N=300000] [K=10]
   or: gen_bench_predictions.py N K OUT
Each line: {"id", "label", "prediction", "probabilities": {label: p}} from a noisy softmax
classifier, probabilities printed with 6 significant digits (as model outputs usually are).
"""
import json
import math
import random
import sys


def main():
    args = sys.argv[1:]
    nums = [int(a) for a in args if a.isdigit()]
    paths = [a for a in args if not a.isdigit()]
    if len(paths) != 1 or len(nums) > 2:
        sys.exit(__doc__)
    out = paths[0]
    n = nums[0] if nums else 300_000
    k = nums[1] if len(nums) > 1 else 10
    rng = random.Random(1)
    labels = [f"class_{j}" for j in range(k)]
    with open(out, "w", encoding="utf-8") as f:
        for i in range(n):
            g = rng.randrange(k)
            logits = [rng.gauss(0, 1) + (1.5 if j == g else 0) for j in range(k)]
            m = max(logits)
            e = [math.exp(v - m) for v in logits]
            s = sum(e)
            p = [float("%.6g" % (v / s)) for v in e]
            pred = max(range(k), key=lambda j: p[j])
            f.write(json.dumps({"id": i, "label": labels[g], "prediction": labels[pred],
                                "probabilities": dict(zip(labels, p))}) + "\n")


if __name__ == "__main__":
    main()
