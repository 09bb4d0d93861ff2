"""llama.cpp on the Q4_K_M file itself with an F32 KV cache and no flash attention.

Companion of scripts/gen_gemma_reference.py (same venv, same inputs, its helpers reused):
    ~/.cache/lmcompare/venv-llamacpp/bin/python scripts/gen_gemma_q4km_f32kv_reference.py

Why: the default reference (gemma3_llamacpp_reference.json) mixes two of llama.cpp's
roundings, the 8-bit activations its quantized matmuls use and its default f16 KV cache (with
flash attention where llama.cpp picks it). lmcompare's quantized path reproduces the first and
keeps attention in f32, so this run, which keeps only the first, is the like-for-like
reference for it; the spread against the default run is what the f16 KV cache alone moves.

Writes tests/fixtures/models/gemma3_llamacpp_q4km_f32kv_reference.json: the same 40 "loglik"
cases (one batch, and prompt-then-one-token-per-call "logprob_incremental") and 3 "perplexity"
sequences as gen_gemma_reference.py computes them (same functions).
"""
import json
import os
import sys

import gguf
import llama_cpp
import numpy as np
from llama_cpp import Llama

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gen_gemma_reference as ref  # noqa: E402  (helpers; its main() is not run)
import gen_gemma_f32_reference as f32ref  # noqa: E402

OUT = os.path.join(ref.ROOT, "tests", "fixtures", "models",
                   "gemma3_llamacpp_q4km_f32kv_reference.json")
GGML_TYPE_F32 = int(gguf.GGMLQuantizationType.F32)


def main():
    if not os.path.exists(ref.MODEL):
        sys.exit(f"missing {ref.MODEL}: run scripts/fetch-assets.sh")
    rows = ref.test_rows()
    llm = Llama(model_path=ref.MODEL, logits_all=True, n_ctx=512, n_threads=ref.THREADS,
                n_threads_batch=ref.THREADS, n_batch=512, type_k=GGML_TYPE_F32,
                type_v=GGML_TYPE_F32, flash_attn=False, verbose=False)
    cp = llm.context_params
    assert (cp.type_k, cp.type_v) == (GGML_TYPE_F32, GGML_TYPE_F32), (cp.type_k, cp.type_v)
    assert cp.flash_attn_type == llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED, cp.flash_attn_type
    conts, cases = ref.score_loglik(llm, rows)
    perplexity = ref.score_perplexity(llm, rows)
    with open(ref.OUT, encoding="utf-8") as f:
        default = json.load(f)
    dcases = {c["id"]: c for c in default["loglik"]["cases"]}
    d_default, spread = [], []
    for c in cases:
        for cont, x in c["continuations"].items():
            d_default.append(x["logprob"] - dcases[c["id"]]["continuations"][cont]["logprob"])
            spread.append(x["logprob"] - x["logprob_incremental"])
    result = {
        "generator": "scripts/gen_gemma_q4km_f32kv_reference.py",
        "llama_cpp_python_version": llama_cpp.__version__,
        "numpy_version": np.__version__,
        "model_file": "gemma-3-270m-q4_k_m.gguf",
        "model_sha256": f32ref.sha256(ref.MODEL),
        "settings": {"n_ctx": 512, "n_batch": 512, "n_threads": ref.THREADS,
                     "logits_all": True, "type_k": "F32", "type_v": "F32",
                     "flash_attn": False, "tokenize": "add_bos=True, special=False",
                     "logprob": "log_softmax(float64(logits[t-1]))[ids[t]]"},
        "comparison": {
            "label_logprob_minus_default_f16_kv": f32ref.abs_stats(d_default),
            "label_logprob_batch_minus_incremental": f32ref.abs_stats(spread),
        },
        "loglik": {"prompt_template": "Review: {text}\\nSentiment:",
                   "continuation_ids": conts, "cases": cases, "perplexity": perplexity},
    }
    with open(OUT, "w", encoding="utf-8") as f:
        f.write(ref.dump(result) + "\n")
    print(f"wrote {OUT}")
    for k, v in result["comparison"].items():
        print(f"  {k}: {v}")


if __name__ == "__main__":
    main()
