"""Captum's side of bench/explain_vs_captum.sh: LayerIntegratedGradients on the word
embeddings (50 Gauss-Legendre steps, internal batch 16, the predicted class's probability,
baseline = pad tokens between the special tokens), one review at a time, as lmcompare does.
Prints {"texts", "seconds", "texts_per_s"} (model load excluded, tokenization included).
usage: explain_captum_peer.py MODEL_DIR TEXTS.jsonl LIMIT THREADS"""
import json
import sys
import time

import torch
from captum.attr import LayerIntegratedGradients
from tokenizers import Tokenizer
from transformers import AutoModelForSequenceClassification

model_dir, data, limit, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
torch.set_num_threads(threads)
texts = [json.loads(l)["text"] for l in open(data)][:limit]
tok = Tokenizer.from_file(f"{model_dir}/tokenizer.json")
tok.enable_truncation(256)
model = AutoModelForSequenceClassification.from_pretrained(model_dir, attn_implementation="eager").eval()
pad = model.config.pad_token_id


def probs(ids):
    return torch.softmax(model(input_ids=ids).logits, -1)


lig = LayerIntegratedGradients(probs, model.base_model.embeddings.word_embeddings)
start = time.perf_counter()
for t in texts:
    enc = tok.encode(t)
    ids = torch.tensor([enc.ids])
    base = torch.tensor([[i if s else pad for i, s in zip(enc.ids, enc.special_tokens_mask)]])
    with torch.no_grad():
        target = int(probs(ids)[0].argmax())
    lig.attribute(ids, baselines=base, target=target, n_steps=50, method="gausslegendre",
                  internal_batch_size=16, return_convergence_delta=True)
seconds = time.perf_counter() - start
print(json.dumps({"texts": len(texts), "seconds": seconds, "texts_per_s": len(texts) / seconds}))
