"""llama.cpp peer for zero-shot log-likelihood classification with Gemma 3 270M (GGUF).

usage: llm_llamacpp_peer.py [--limit N] [--threads T] [--out predictions.jsonl] [--n-ctx 256]
                            [--model PATH] [--data PATH] [--flash-attn]
Run with ~/.cache/lmcompare/venv-llamacpp/bin/python (llama-cpp-python 0.3.36, in-process).

Scores the Rotten Tomatoes test split (rows with split == "test" of
assets/data/rotten_tomatoes_binary.jsonl, file order) exactly like the Rust runtime: for each
review, BOS + tokens("Review: {text}\\nSentiment:") (add_bos=True, special=False), then the
continuations " positive" and " negative" (tokenized without BOS, appended); a continuation's
score is the sum of the log-softmax (float64) log-probabilities of its tokens; the prediction is
the higher one (" positive" -> fresh, " negative" -> rotten; a tie goes to fresh).

Efficient but the same work: the prompt is decoded once per review (one llama_decode of the
whole prompt, logits for its last position only), and each continuation reuses the prompt's
KV cache. Gemma's " positive" and " negative" are one token each, so the prompt's last logits
score both and there is one decode per review; longer continuations take the general path
(KV cache truncated back to the prompt, continuation[:-1] decoded as one batch with logits for
every position). No prefix reuse across reviews, no batching across reviews. Tokenization is
inside the timed loop; model load and one warm-up decode are not.

Prints one JSON line: {"examples", "seconds", "examples_per_s", "accuracy", ...}.
--out writes one JSON line per review: id, label (gold), prediction, logprob_positive,
logprob_negative. Deterministic (no sampling; fixed thread count).
"""
import argparse
import ctypes
import json
import resource
import os
import sys
import time

import llama_cpp
import numpy as np
from llama_cpp import Llama

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
ASSETS = os.environ.get("LMCOMPARE_ASSETS", os.path.join(ROOT, "assets"))
CONTINUATIONS = [(" positive", "fresh"), (" negative", "rotten")]


def test_rows(path, limit):
    rows = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            r = json.loads(line)
            if r["split"] == "test":
                rows.append(r)
                if limit is not None and len(rows) == limit:
                    break
    return rows


class Scorer:
    def __init__(self, llm):
        self.llm = llm
        self.ctx = llm._ctx
        self.batch = llm._batch
        self.n_vocab = llm.n_vocab()

    def decode(self, tokens, n_past, all_logits):
        """Decodes tokens at positions n_past.. after dropping the KV cache from n_past on."""
        self.ctx.kv_cache_seq_rm(-1, n_past, -1)
        self.batch.set_batch(batch=tokens, n_past=n_past, logits_all=all_logits)
        self.ctx.decode(self.batch)
        self.llm.input_ids[n_past:n_past + len(tokens)] = tokens
        self.llm.n_tokens = n_past + len(tokens)

    def logprobs(self, i):
        """log_softmax (float64) of the logits of output row i (-1 = last)."""
        ptr = self.ctx.get_logits_ith(i)
        x = np.ctypeslib.as_array(ctypes.cast(ptr, ctypes.POINTER(ctypes.c_float)),
                                  shape=(self.n_vocab,)).astype(np.float64)
        m = x.max()
        return x - (m + np.log(np.exp(x - m).sum()))

    def score(self, prompt_ids, conts):
        """Summed log-probabilities of each continuation after prompt_ids."""
        n = len(prompt_ids)
        self.decode(prompt_ids, 0, False)
        first = self.logprobs(-1)
        out = []
        for cids in conts:
            lp = float(first[cids[0]])
            if len(cids) > 1:
                # positions n.. hold cids[:-1]; row j predicts cids[j + 1]
                self.decode(cids[:-1], n, True)
                for j in range(len(cids) - 1):
                    lp += float(self.logprobs(j)[cids[j + 1]])
                self.ctx.kv_cache_seq_rm(-1, n, -1)
                self.llm.n_tokens = n
            out.append(lp)
        return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None)
    ap.add_argument("--model", default=os.path.join(ASSETS, "models",
                                                     "gemma-3-270m-q4_k_m.gguf"))
    ap.add_argument("--data", default=os.path.join(ASSETS, "data",
                                                   "rotten_tomatoes_binary.jsonl"))
    ap.add_argument("--n-ctx", type=int, default=256)
    ap.add_argument("--flash-attn", action="store_true")
    args = ap.parse_args()

    rows = test_rows(args.data, args.limit)
    if not rows:
        sys.exit("no test rows")
    llm = Llama(model_path=args.model, n_ctx=args.n_ctx, n_batch=args.n_ctx,
                n_threads=args.threads, n_threads_batch=args.threads, logits_all=False,
                flash_attn=args.flash_attn, verbose=False)
    scorer = Scorer(llm)
    conts = [llm.tokenize(c.encode("utf-8"), add_bos=False, special=False)
             for c, _ in CONTINUATIONS]
    scorer.score(llm.tokenize(b"Review: warm-up\nSentiment:", add_bos=True), conts)

    results = []
    t0 = time.perf_counter()
    for r in rows:
        prompt = "Review: " + r["text"] + "\nSentiment:"
        pids = llm.tokenize(prompt.encode("utf-8"), add_bos=True, special=False)
        if len(pids) + max(len(c) for c in conts) > args.n_ctx:
            sys.exit(f"{r['id']}: {len(pids)} prompt tokens do not fit --n-ctx {args.n_ctx}")
        results.append(scorer.score(pids, conts))
    seconds = time.perf_counter() - t0

    correct = 0
    lines = []
    for r, (pos, neg) in zip(rows, results):
        pred = "fresh" if pos >= neg else "rotten"
        correct += pred == r["label"]
        lines.append(json.dumps({"id": r["id"], "label": r["label"], "prediction": pred,
                                 "logprob_positive": pos, "logprob_negative": neg}))
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write("".join(line + "\n" for line in lines))
    print(json.dumps({
        "examples": len(rows),
        "seconds": round(seconds, 3),
        "examples_per_s": round(len(rows) / seconds, 3),
        "accuracy": round(correct / len(rows), 4),
        "threads": args.threads,
        "continuation_ids": {c: ids for (c, _), ids in zip(CONTINUATIONS, conts)},
        "llama_cpp_python": llama_cpp.__version__,
        # ru_maxrss is in KiB on Linux.
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }))


if __name__ == "__main__":
    main()
