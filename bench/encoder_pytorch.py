"""PyTorch + transformers side of bench/encoder_vs_pytorch.sh.

usage: encoder_pytorch.py fixed MODEL_DIR BATCH SEQ RUNS WARMUP
       encoder_pytorch.py texts MODEL_DIR BATCH FILE MAX_LEN
Prints one JSON line: examples/s and tokens/s (forward passes only, like `lmcompare profile`).
BENCH_INT8=1 applies torch.ao.quantization.quantize_dynamic (int8 weights per tensor, int8
activations quantised at run time) to every nn.Linear first.
`texts` mode does what sentence-transformers' encode does: sort by length, pad each batch to
its longest text.
"""
import json
import sys
import time

import torch
from transformers import AutoModel, PreTrainedTokenizerFast

torch.set_num_threads(int(__import__("os").environ.get("BENCH_THREADS", "2")))


def main():
    mode, model_dir, batch = sys.argv[1], sys.argv[2], int(sys.argv[3])
    model = AutoModel.from_pretrained(model_dir, attn_implementation="sdpa").eval()
    if __import__("os").environ.get("BENCH_INT8") == "1":
        model = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    if mode == "fixed":
        seq, runs, warmup = int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
        ids = torch.full((batch, seq), 2003, dtype=torch.long)
        ids[:, 0], ids[:, -1] = 101, 102
        mask = torch.ones_like(ids)
        with torch.inference_mode():
            for _ in range(warmup):
                model(input_ids=ids, attention_mask=mask)
            t0 = time.perf_counter()
            for _ in range(runs):
                model(input_ids=ids, attention_mask=mask)
            dt = time.perf_counter() - t0
        n = batch * runs
        print(json.dumps({"examples_per_s": n / dt, "tokens_per_s": n * seq / dt}))
    else:
        path, max_len = sys.argv[4], int(sys.argv[5])
        texts = [json.loads(l)["text"] for l in open(path, encoding="utf-8") if l.strip()]
        tok = PreTrainedTokenizerFast(tokenizer_file=f"{model_dir}/tokenizer.json", pad_token="[PAD]")
        tok._tokenizer.no_padding()
        tok._tokenizer.no_truncation()
        enc = tok(texts, truncation=True, max_length=max_len)["input_ids"]
        order = sorted(range(len(enc)), key=lambda i: len(enc[i]))
        batches = []
        for s in range(0, len(order), batch):
            chunk = [enc[i] for i in order[s:s + batch]]
            L = max(len(c) for c in chunk)
            ids = torch.zeros((len(chunk), L), dtype=torch.long)
            mask = torch.zeros_like(ids)
            for j, c in enumerate(chunk):
                ids[j, :len(c)] = torch.tensor(c)
                mask[j, :len(c)] = 1
            batches.append((ids, mask))
        real_tokens = sum(len(c) for c in enc)
        with torch.inference_mode():
            model(input_ids=batches[0][0], attention_mask=batches[0][1])
            t0 = time.perf_counter()
            for ids, mask in batches:
                model(input_ids=ids, attention_mask=mask)
            dt = time.perf_counter() - t0
        print(json.dumps({"examples_per_s": len(enc) / dt, "tokens_per_s": real_tokens / dt}))


if __name__ == "__main__":
    main()
