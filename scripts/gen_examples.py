"""Writes the example prediction files in examples/ (standard library only, seeded).

Two sentiment classifiers scored on the same 600 movie-review snippets: model "large" is a
little more accurate than model "small" (which is sharper), so `lmcompare metrics` has a real
difference to find.
"""
import json
import math
import random

LABELS = ["negative", "neutral", "positive"]
PRIOR = [0.4, 0.2, 0.4]


def model(rng, gold, skill, temperature):
    logits = []
    for j, _ in enumerate(LABELS):
        base = rng.gauss(0.0, 1.0)
        if j == gold:
            base += skill
        logits.append(base / temperature)
    m = max(logits)
    exp = [math.exp(v - m) for v in logits]
    s = sum(exp)
    probs = [round(e / s, 6) for e in exp]
    probs[-1] = round(1.0 - sum(probs[:-1]), 6)
    pred = max(range(len(LABELS)), key=lambda j: probs[j])
    return LABELS[pred], dict(zip(LABELS, probs))


def main():
    rng = random.Random(20261128)
    golds = rng.choices(range(3), weights=PRIOR, k=600)
    for name, skill, temp in [("large", 2.0, 0.9), ("small", 1.6, 0.6)]:
        r = random.Random(len(name) * 7919)
        with open(f"examples/sentiment-{name}.jsonl", "w", encoding="utf-8") as f:
            for i, g in enumerate(golds):
                pred, probs = model(r, g, skill, temp)
                f.write(json.dumps({"id": f"review-{i:04d}", "label": LABELS[g],
                                    "prediction": pred, "probabilities": probs}) + "\n")


if __name__ == "__main__":
    main()
