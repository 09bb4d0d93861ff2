"""Writes tests/fixtures/models/unfreeze_reference.json: a PyTorch reference run of partial
fine-tuning (last encoder layer + pooler + classifier unfrozen) of the tiny-bert-cls fixture,
which the Rust side replays.

Run:  ~/.cache/lmcompare/venv-torch/bin/python scripts/gen_unfreeze_fixture.py
Deterministic (seeded, CPU, float32, one thread, deterministic algorithms): the same torch and
transformers versions rewrite the file byte for byte. Floats are float32 values widened to
Python floats, written with repr (shortest round-trip), so parsing them as f64 and narrowing to
f32 is exact.

What it records:
  initial_classifier  the fresh classifier (weight N(0, 0.02) from torch.Generator seeded 0,
                      bias zeros), torch layout: weight is num_labels x hidden
  initial_pooler      the checkpoint's bert.pooler.dense (weight out x in, bias)
  input_ids           per text, unpadded ([CLS] ... [SEP]), truncation at max_length
  trainable           names of the trainable parameters, model.named_parameters() order (the
                      AdamW parameter order)
  losses              CrossEntropyLoss (mean) of each batch, read before optimizer.step()
  final               every trainable parameter after training, torch layout
  final_logits        model.eval() logits of all 12 texts in one padded batch after training
"""
import json
import math
import os

import torch
import transformers
from torch import nn
from transformers import AutoTokenizer, BertForSequenceClassification

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
MODEL = os.path.join(ROOT, "tests", "fixtures", "models", "tiny-bert-cls")
OUT = os.path.join(ROOT, "tests", "fixtures", "models", "unfreeze_reference.json")

DATA = [
    ("A gripping, beautifully shot thriller.", 0),
    ("Dull and lifeless.", 1),
    ("Funny, warm, unmissable.", 0),
    ("An overlong mess with a few good scenes that never cohere into anything.", 1),
    ("It's fine.", 2),
    ("Superb acting; the script is weaker, but still worth it.", 0),
    ("Tedious.", 1),
    ("Neither good nor bad, simply there.", 2),
    ("The best film of the year, no question, see it twice.", 0),
    ("I walked out after forty minutes of nothing happening.", 1),
    ("Some parts work, some don't.", 2),
    ("Charming!", 0),
]
CONFIG = {"lr": 0.01, "batch_size": 4, "epochs": 2, "num_labels": 3, "max_length": 32}
UNFROZEN = 1


def values(t):
    """A tensor as (nested) lists of Python floats, torch layout."""
    return t.detach().to(torch.float32).cpu().tolist()


def encode(tok, texts):
    return tok(texts, padding="longest", truncation=True, max_length=CONFIG["max_length"],
               return_tensors="pt")


def run():
    torch.manual_seed(0)
    texts = [t for t, _ in DATA]
    labels = [l for _, l in DATA]

    tok = AutoTokenizer.from_pretrained(MODEL)
    model = BertForSequenceClassification.from_pretrained(
        MODEL, num_labels=CONFIG["num_labels"], hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0, classifier_dropout=0.0, ignore_mismatched_sizes=True)
    model.to(device="cpu", dtype=torch.float32)

    # A fresh classifier, drawn from its own seeded generator (independent of whatever RNG
    # from_pretrained consumed).
    hidden = model.config.hidden_size
    gen = torch.Generator().manual_seed(0)
    clf = nn.Linear(hidden, CONFIG["num_labels"])
    with torch.no_grad():
        clf.weight.copy_(torch.normal(0.0, 0.02, size=(CONFIG["num_labels"], hidden),
                                      generator=gen))
        clf.bias.zero_()
    model.classifier = clf
    initial_classifier = {"weight": values(clf.weight), "bias": values(clf.bias)}
    initial_pooler = {"weight": values(model.bert.pooler.dense.weight),
                      "bias": values(model.bert.pooler.dense.bias)}

    # Unpadded ids per text (what a per-text encode gives), checked against the padded batch.
    input_ids = [tok(t, truncation=True, max_length=CONFIG["max_length"])["input_ids"]
                 for t in texts]
    full = encode(tok, texts)
    for i, ids in enumerate(input_ids):
        row = full["input_ids"][i].tolist()
        mask = full["attention_mask"][i].tolist()
        assert [x for x, m in zip(row, mask) if m] == ids, (i, row, ids)

    # Freeze all but the last encoder layer, the pooler and the classifier.
    for p in model.parameters():
        p.requires_grad_(False)
    for module in (model.bert.encoder.layer[-1], model.bert.pooler, model.classifier):
        for p in module.parameters():
            p.requires_grad_(True)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    trainable = [n for n, _ in named]

    opt = torch.optim.AdamW([p for _, p in named], lr=CONFIG["lr"], betas=(0.9, 0.999),
                            eps=1e-8, weight_decay=0.0, foreach=False)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    bs = CONFIG["batch_size"]
    losses = []
    for _ in range(CONFIG["epochs"]):
        for start in range(0, len(texts), bs):
            enc = encode(tok, texts[start:start + bs])
            y = torch.tensor(labels[start:start + bs], dtype=torch.long)
            opt.zero_grad(set_to_none=True)
            logits = model(**enc).logits
            loss = loss_fn(logits, y)
            losses.append(loss.item())
            loss.backward()
            opt.step()

    model.eval()
    with torch.no_grad():
        final_logits = values(model(**full).logits)
    final = {n: values(p) for n, p in named}

    return {
        "generator": {"script": "scripts/gen_unfreeze_fixture.py", "torch": torch.__version__,
                      "transformers": transformers.__version__},
        "config": CONFIG,
        "layers_total": model.config.num_hidden_layers,
        "unfrozen": UNFROZEN,
        "texts": texts,
        "labels": labels,
        "input_ids": input_ids,
        "tokenizer": {"padding_side": tok.padding_side,
                      "pad_token_id": tok.pad_token_id,
                      "model_input_names": list(tok.model_input_names)},
        "initial_classifier": initial_classifier,
        "initial_pooler": initial_pooler,
        "trainable": trainable,
        "losses": losses,
        "final": final,
        "final_logits": final_logits,
    }


def dump(v, indent=0):
    """JSON with one level of indentation per nesting, lists of scalars on one line."""
    pad = " " * indent
    if isinstance(v, dict):
        if not v:
            return "{}"
        items = [f'{pad} {json.dumps(k, ensure_ascii=False)}: {dump(x, indent + 1)}'
                 for k, x in v.items()]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(v, (list, tuple)):
        if all(not isinstance(x, (list, tuple, dict)) for x in v):
            return "[" + ", ".join(dump(x) for x in v) + "]"
        items = [pad + " " + dump(x, indent + 1) for x in v]
        return "[\n" + ",\n".join(items) + "\n" + pad + "]"
    if isinstance(v, float):
        assert math.isfinite(v), v
        return repr(v)
    return json.dumps(v, ensure_ascii=False)


def main():
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    torch.set_default_dtype(torch.float32)
    obj = run()
    with open(OUT, "w", encoding="utf-8") as f:
        f.write(dump(obj) + "\n")
    print(f"wrote {os.path.normpath(OUT)}")
    print("trainable:", obj["trainable"])
    print("losses:", obj["losses"])


if __name__ == "__main__":
    main()
