"""Writes a random-weight bert-base (110M) folder for speed measurements: bert-base shapes,
the MiniLM tokenizer (same 30,522-token uncased vocabulary). usage: make_bert_base.py OUT TOKENIZER_DIR"""
import shutil
import sys

import torch
from transformers import BertConfig, BertModel

torch.manual_seed(0)
out, tok = sys.argv[1], sys.argv[2]
BertModel(BertConfig()).eval().save_pretrained(out, safe_serialization=True)
for f in ["tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json"]:
    shutil.copy(f"{tok}/{f}", f"{out}/{f}")
