"""llama.cpp reference outputs for the Gemma 3 270M (GGUF Q4_K_M) decoder runtime tests.

Run (after scripts/fetch-assets.sh, which puts the GGUF under assets/models/):
    python3 -m venv ~/.cache/lmcompare/venv-llamacpp
    ~/.cache/lmcompare/venv-llamacpp/bin/pip install llama-cpp-python==0.3.36 gguf==0.19.0
    ~/.cache/lmcompare/venv-llamacpp/bin/python scripts/gen_gemma_reference.py

Writes tests/fixtures/models/gemma3_llamacpp_reference.json with:
- "tokenize": {"text", "ids"} with ids = llm.tokenize(text.encode(), add_bos=True,
  special=False): hand-picked edge cases, the first 300 test reviews of
  assets/data/rotten_tomatoes_binary.jsonl, and the "Review: {text}\nSentiment:" prompt form of
  the first 50;
- "vocab_check": n_vocab and the vocabulary text / detokenized piece / attributes of a few ids;
- "loglik": for the first 40 test reviews, the summed llama.cpp log-probabilities of
  " positive" and " negative" after BOS + "Review: {text}\nSentiment:" (continuation tokenized
  without BOS and appended; the whole sequence decoded as one batch), per-token log-probs, the
  top-5 logits after the prompt and "logprob_incremental" (prompt decoded alone, continuation
  one token per call: llama.cpp's own spread across batch shapes, a tolerance hint); plus
  "perplexity": per-token log-probs of 3 longer BOS+text sequences;
- "greedy": 10 argmax tokens (eval + argmax over the last row, no sampler) for 3 prompts;
- "meta": typed GGUF key/values (the big tokenizer arrays left out), every tensor's ggml type
  and shape, norm-weight statistics, and the non-normal token types (counts, first 20 each).

Log-probs are log_softmax in float64 of llama.cpp's float32 logits (logits_all=True, n_ctx 512,
n_batch 512, 2 threads, CPU). Deterministic: no sampling, fixed inputs and thread count; two
runs on the same machine give the same file (another CPU, e.g. without AVX-512, may pick other
kernels and change the last digits). llama.cpp multiplies the 4/5/6/8-bit weights with 8-bit
quantized activations and its logits move by up to ~1 (log-probs by a few tenths) with the
batch shape alone, so consumers must compare with a tolerance, not bit-exactly.
"""
import hashlib
import json
import math
import os
import sys

import gguf
import llama_cpp
import numpy as np
from llama_cpp import Llama

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
ASSETS = os.environ.get("LMCOMPARE_ASSETS", os.path.join(ROOT, "assets"))
MODEL = os.path.join(ASSETS, "models", "gemma-3-270m-q4_k_m.gguf")
DATA = os.path.join(ASSETS, "data", "rotten_tomatoes_binary.jsonl")
OUT = os.path.join(ROOT, "tests", "fixtures", "models", "gemma3_llamacpp_reference.json")
THREADS = 2

EDGE_CASES = [
    "",
    " ",
    "Hello world",
    " leading space",
    "trailing space ",
    "multiple   spaces   between",
    "    four leading spaces",
    "line one\nline two",
    "para one\n\npara two",
    "\n\n\n",
    "tab\tseparated\tvalues",
    "\t\tdouble tab",
    "12345 3.14159",
    "1,000,000 and 2024-01-31 at 10:45",
    "Wait... what?!?! (really) -- yes;;",
    "!!!???...,,,---",
    "https://example.com/path?query=1&x=y#frag",
    "email me at someone@example.org",
    "café naïve résumé",
    "日本語のテキスト",
    "Привет, мир",
    "👍🏽 great 🎉🎉",
    "MiXeD CaSe and ALLCAPS",
    "a <bos> token written literally",
    "<start_of_turn>user\nhi<end_of_turn>",
    "supercalifragilisticexpialidocious" * 3,
    "don't won't it's we're",
    "C++ and f(x) = x^2 + {a: [1, 2]}",
    "Ω≈ç√∫ ∑ and ½ ¼ ™ ©",
    "end with newline\n",
]

LONG_TEXT = (
    "The history of the city begins with a small settlement on the banks of the river. Over the "
    "centuries it grew into a busy trading port, attracting merchants from distant lands who "
    "brought spices, silk and new ideas. In the nineteenth century the arrival of the railway "
    "transformed the economy: factories replaced workshops, the population tripled within a "
    "generation, and the old walls were torn down to make room for wide avenues. Today the city "
    "is known for its museums, its parks and its lively markets, although many residents worry "
    "that rising rents are pushing families out of the historic centre."
)

GREEDY_PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):",
    "Once upon a time, there was a",
]


def test_rows():
    rows = []
    with open(DATA, encoding="utf-8") as f:
        for line in f:
            r = json.loads(line)
            if r["split"] == "test":
                rows.append(r)
    return rows


def prompt_of(text):
    return "Review: " + text + "\nSentiment:"


def log_softmax(row):
    x = np.asarray(row, dtype=np.float64)
    m = x.max()
    return x - (m + np.log(np.exp(x - m).sum()))


def run_scores(llm, ids):
    """Evaluates ids from scratch; returns the (len(ids), n_vocab) float32 logits."""
    llm.reset()
    llm.eval(ids)
    return np.array(llm.scores[: len(ids)], dtype=np.float32)


def token_logprobs(scores, ids, start):
    """log p(ids[t] | ids[:t]) for t in [start, len(ids)), float64."""
    return [float(log_softmax(scores[t - 1])[ids[t]]) for t in range(start, len(ids))]


def label_continuations(llm):
    """Token ids of the two label continuations (no BOS), appended after the prompt ids."""
    return {" positive": llm.tokenize(b" positive", add_bos=False, special=False),
            " negative": llm.tokenize(b" negative", add_bos=False, special=False)}


def score_loglik(llm, rows):
    """The "loglik" cases: label log-probs for the first 40 test reviews.

    Returns (continuation ids, cases). Shared with scripts/gen_gemma_f32_reference.py."""
    conts = label_continuations(llm)
    loglik = []
    for r in rows[:40]:
        prompt = prompt_of(r["text"])
        pids = llm.tokenize(prompt.encode("utf-8"), add_bos=True, special=False)
        case = {"id": r["id"], "label": r["label"], "prompt": prompt, "prompt_ids": pids,
                "continuations": {}}
        for cont, cids in conts.items():
            ids = pids + cids
            scores = run_scores(llm, ids)
            lps = token_logprobs(scores, ids, len(pids))
            case["continuations"][cont] = {"ids": cids, "token_logprobs": lps,
                                           "logprob": float(sum(lps))}
            if "top5_after_prompt" not in case:
                last = scores[len(pids) - 1]
                top = np.argsort(-last.astype(np.float64), kind="stable")[:5]
                case["top5_after_prompt"] = [{"id": int(i), "logit": float(last[i])} for i in top]
        # the same quantity the way a scorer with a KV cache computes it: the prompt decoded
        # alone (one batch), continuation tokens appended one eval at a time. llama.cpp's
        # numbers depend on the batch shape (CPU matmul paths, 8-bit activation quantization
        # for quantized weights), so with the Q4_K_M file this differs from "logprob" by up to
        # a few tenths: a tolerance hint (with all-F32 weights and KV cache it nearly vanishes,
        # see scripts/gen_gemma_f32_reference.py).
        llm.reset()
        llm.eval(pids)
        first = log_softmax(llm.scores[len(pids) - 1])
        for cont, cids in conts.items():
            llm.n_tokens = len(pids)
            lp = float(first[cids[0]])
            for j in range(1, len(cids)):
                llm.eval([cids[j - 1]])
                lp += float(log_softmax(llm.scores[llm.n_tokens - 1])[cids[j]])
            case["continuations"][cont]["logprob_incremental"] = lp
        pos = case["continuations"][" positive"]["logprob"]
        neg = case["continuations"][" negative"]["logprob"]
        case["predicted"] = "fresh" if pos > neg else "rotten"
        loglik.append(case)
    return conts, loglik


def perplexity_texts(rows):
    """(name, text) of the 3 longer "perplexity" sequences."""
    longest = max(rows[:300], key=lambda r: len(r["text"]))["text"]
    joined = "\n".join(r["text"] for r in rows[:8])
    return [("longest_review", longest), ("eight_reviews", joined), ("paragraph", LONG_TEXT)]


def score_perplexity(llm, rows):
    """Per-token log-probs of each BOS+text sequence, decoded as one batch."""
    perplexity = []
    for name, text in perplexity_texts(rows):
        ids = llm.tokenize(text.encode("utf-8"), add_bos=True, special=False)
        scores = run_scores(llm, ids)
        lps = token_logprobs(scores, ids, 1)
        perplexity.append({"name": name, "text": text, "ids": ids, "token_logprobs": lps,
                           "sum_logprob": float(sum(lps)),
                           "perplexity": float(np.exp(-np.mean(lps)))})
    return perplexity


def piece(llm, i, special):
    return llm.detokenize([i], special=special).decode("utf-8", errors="backslashreplace")


def gguf_value(field):
    """Typed value of a scalar / small-array GGUF field."""
    types = field.types
    if types[0] == gguf.GGUFValueType.ARRAY:
        vals = [field.parts[i] for i in field.data]
        if types[-1] == gguf.GGUFValueType.STRING:
            return [bytes(v).decode("utf-8") for v in vals]
        return [v.tolist()[0] for v in vals]
    v = field.parts[field.data[0]]
    if types[0] == gguf.GGUFValueType.STRING:
        return bytes(v).decode("utf-8")
    v = v.tolist()[0]
    if types[0] in (gguf.GGUFValueType.FLOAT32, gguf.GGUFValueType.FLOAT64):
        return float(v)
    if types[0] == gguf.GGUFValueType.BOOL:
        return bool(v)
    return int(v)


def gguf_meta(llm):
    reader = gguf.GGUFReader(MODEL)
    big = {"tokenizer.ggml.tokens", "tokenizer.ggml.scores", "tokenizer.ggml.token_type",
           "tokenizer.ggml.merges"}
    kv = {}
    for name, field in reader.fields.items():
        if name.startswith("GGUF.") or name in big:
            continue
        kv[name] = {"type": "/".join(t.name for t in field.types), "value": gguf_value(field)}
    tensors = []
    norm_stats = {}
    for t in reader.tensors:
        tensors.append({"name": t.name, "type": t.tensor_type.name,
                        "shape": [int(d) for d in t.shape]})
        if t.name.endswith("norm.weight"):
            w = np.asarray(gguf.quants.dequantize(t.data, t.tensor_type), dtype=np.float64)
            norm_stats[t.name] = {"mean": round(float(w.mean()), 6),
                                  "min": round(float(w.min()), 6),
                                  "max": round(float(w.max()), 6)}
    type_counts = {}
    for t in tensors:
        type_counts[t["type"]] = type_counts.get(t["type"], 0) + 1

    toks = reader.fields["tokenizer.ggml.tokens"]
    ttype = reader.fields["tokenizer.ggml.token_type"]
    scores = reader.fields["tokenizer.ggml.scores"]
    types = np.array([ttype.parts[i][0] for i in ttype.data])
    token_types = {}
    for ty in sorted(set(types.tolist())):
        ids = np.nonzero(types == ty)[0]
        entry = {"type": int(ty), "name": gguf.TokenType(int(ty)).name, "count": int(len(ids))}
        if ty != gguf.TokenType.NORMAL:
            entry["examples"] = [
                {"id": int(i), "text": bytes(toks.parts[toks.data[i]]).decode("utf-8"),
                 "score": float(scores.parts[scores.data[i]][0])}
                for i in ids[:20]]
        token_types[gguf.TokenType(int(ty)).name] = entry

    return {
        "gguf_kv": kv,
        "llama_cpp_metadata": dict(sorted(llm.metadata.items())),
        "tensor_count": len(tensors),
        "tensor_type_counts": dict(sorted(type_counts.items())),
        "tensors": tensors,
        "norm_weight_stats": norm_stats,
        "token_types": token_types,
        "note": "shapes are in ggml order (ne0 first = the contiguous row length); "
                "norm weights are as stored: convert_hf_to_gguf.py (Gemma3Model, norm_shift "
                "1.0) already added Gemma's +1, llama.cpp multiplies by them directly",
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
    if not os.path.exists(MODEL):
        sys.exit(f"missing {MODEL}: run scripts/fetch-assets.sh")
    rows = test_rows()
    llm = Llama(model_path=MODEL, logits_all=True, n_ctx=512, n_threads=THREADS,
                n_threads_batch=THREADS, n_batch=512, verbose=False)
    n_vocab = llm.n_vocab()

    # --- tokenize
    texts = ([("edge", t) for t in EDGE_CASES]
             + [("review", r["text"]) for r in rows[:300]]
             + [("prompt", prompt_of(r["text"])) for r in rows[:50]])
    tokenize = [{"kind": k, "text": t, "ids": llm.tokenize(t.encode("utf-8"), add_bos=True,
                                                           special=False)}
                for k, t in texts]

    # --- vocab
    vocab = []
    for i in [0, 1, 2, 3, 4, 5, 6, 100, 1000, 10000, 100000, 262143]:
        vocab.append({"id": i, "text": llm._model.token_get_text(i),
                      "piece": piece(llm, i, False), "piece_special": piece(llm, i, True),
                      "score": float(llm._model.token_get_score(i)),
                      "attr": int(llm._model.token_get_attr(i))})

    # --- loglik, perplexity
    conts, loglik = score_loglik(llm, rows)
    spread = max(abs(c["logprob"] - c["logprob_incremental"])
                 for case in loglik for c in case["continuations"].values())
    perplexity = score_perplexity(llm, rows)

    # --- greedy
    greedy = []
    for prompt in GREEDY_PROMPTS:
        pids = llm.tokenize(prompt.encode("utf-8"), add_bos=True, special=False)
        llm.reset()
        llm.eval(pids)
        out = []
        for _ in range(10):
            nxt = int(np.argmax(llm.scores[llm.n_tokens - 1]))
            out.append(nxt)
            llm.eval([nxt])
        greedy.append({"prompt": prompt, "prompt_ids": pids, "generated_ids": out,
                       "generated_text": llm.detokenize(out).decode("utf-8", "replace")})

    with open(MODEL, "rb") as f:
        sha = hashlib.sha256(f.read()).hexdigest()
    result = {
        "generator": "scripts/gen_gemma_reference.py",
        "llama_cpp_python_version": llama_cpp.__version__,
        "numpy_version": np.__version__,
        "model_file": "gemma-3-270m-q4_k_m.gguf",
        "model_sha256": sha,
        "settings": {"n_ctx": 512, "n_batch": 512, "n_threads": THREADS, "logits_all": True,
                     "tokenize": "add_bos=True, special=False",
                     "logprob": "log_softmax(float64(logits[t-1]))[ids[t]]",
                     "batch_shape_note": "llama.cpp CPU logits depend on how the sequence is "
                     "split into decode calls (matmul kernel paths over 8-bit quantized "
                     "activations); loglik logprob = BOS+prompt+continuation decoded as one "
                     "batch, logprob_incremental = prompt as one batch then one token per call",
                     "max_abs_logprob_minus_incremental": spread},
        "tokenize": tokenize,
        "vocab_check": {"n_vocab": n_vocab, "bos": llm.token_bos(), "eos": llm.token_eos(),
                        "tokens": vocab},
        "loglik": {"prompt_template": "Review: {text}\\nSentiment:",
                   "continuation_ids": conts, "cases": loglik, "perplexity": perplexity},
        "greedy": greedy,
        "meta": gguf_meta(llm),
    }
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w", encoding="utf-8") as f:
        f.write(dump(result) + "\n")
    acc = sum(c["predicted"] == c["label"] for c in loglik) / len(loglik)
    print(f"wrote {OUT}: {len(tokenize)} tokenize cases, {len(loglik)} loglik cases "
          f"(accuracy {acc:.3f}), continuation ids {conts}, max |logprob - incremental| "
          f"{spread:.4f}")


if __name__ == "__main__":
    main()
