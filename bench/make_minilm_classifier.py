"""MiniLM-L6 with a seeded random classification head (pooler + 2-class classifier), for the
attribution benchmark: the same weights for lmcompare and Captum.
usage: make_minilm_classifier.py MINILM_DIR OUT"""
import shutil
import sys

import torch
from transformers import BertForSequenceClassification

src, out = sys.argv[1], sys.argv[2]
torch.manual_seed(0)
model = BertForSequenceClassification.from_pretrained(
    src, num_labels=2, id2label={0: "rotten", 1: "fresh"}, label2id={"rotten": 0, "fresh": 1}
)
model.eval().save_pretrained(out, safe_serialization=True)
for f in ["tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json"]:
    try:
        shutil.copy(f"{src}/{f}", f"{out}/{f}")
    except FileNotFoundError:
        pass
