"""llama.cpp's side of bench/llm_generate_vs_llamacpp.sh: greedy decoding (argmax of the
logits, no sampler) of NEW tokens for the first PROMPTS test reviews ("Review: {text}\\nSummary:"),
one prompt at a time (llama-cpp-python's one-sequence API: the prompt as one batch, then one
token per decode call), timed in-process from tokenization to the last token, model load
excluded. Prints one JSON line.
"""
import argparse
import ctypes
import json
import os
import sys
import time

import numpy as np
from llama_cpp import Llama

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from llm_llamacpp_peer import ASSETS, test_rows  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=50)
    ap.add_argument("--new", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--model", default=os.path.join(ASSETS, "models", "gemma-3-270m-q4_k_m.gguf"))
    ap.add_argument("--data", default=os.path.join(ASSETS, "data", "rotten_tomatoes_binary.jsonl"))
    args = ap.parse_args()
    rows = test_rows(args.data, args.prompts)
    llm = Llama(model_path=args.model, n_ctx=512, n_batch=512, n_threads=args.threads,
                n_threads_batch=args.threads, logits_all=False, verbose=False)
    llm.reset()
    llm.eval(llm.tokenize(b"warm-up", add_bos=True))
    t0 = time.perf_counter()
    tokens = 0
    first = None
    for r in rows:
        ids = llm.tokenize(("Review: " + r["text"] + "\nSummary:").encode("utf-8"),
                           add_bos=True, special=False)
        llm.reset()
        llm.eval(ids)
        out = []
        for _ in range(args.new):
            # The last decode's logits (llm.scores holds them only with logits_all=True).
            ptr = llm._ctx.get_logits_ith(-1)
            row = np.ctypeslib.as_array(ctypes.cast(ptr, ctypes.POINTER(ctypes.c_float)),
                                        shape=(llm.n_vocab(),))
            nxt = int(np.argmax(row))
            out.append(nxt)
            llm.eval([nxt])
        tokens += len(out)
        if first is None:
            first = llm.detokenize(out).decode("utf-8", "replace")
    seconds = time.perf_counter() - t0
    print(json.dumps({"prompts": len(rows), "new_tokens": tokens, "seconds": round(seconds, 3),
                      "tokens_per_s": round(tokens / seconds, 3), "threads": args.threads,
                      "first": first}))


if __name__ == "__main__":
    main()
