"""llama.cpp reference for Gemma 3 270M with every weight dequantized to F32 and an F32 KV cache.

Companion of scripts/gen_gemma_reference.py (same venv, same inputs, its helpers reused):
    ~/.cache/lmcompare/venv-llamacpp/bin/python scripts/gen_gemma_f32_reference.py [--rebuild]

Why: with the Q4_K_M file llama.cpp multiplies quantized weights with 8-bit quantized
activations (Q8_0 / Q8_K) and keeps K/V in f16, so its log-probs carry that rounding (and move
by up to a few tenths with the batch shape alone). A runtime that dequantizes the weights to f32
and computes in f32 should instead be compared with llama.cpp running the *same* f32 weights
without activation quantization; this script produces that reference.

Steps:
1. Writes an all-F32 copy of assets/models/gemma-3-270m-q4_k_m.gguf outside the repository
   (default ~/.cache/lmcompare/tmp/gemma-3-270m-f32.gguf, ~1.1 GB; LMCOMPARE_GEMMA_F32 overrides;
   reused if present unless --rebuild): every KV pair copied unchanged (tokenizer arrays and
   general.file_type included: llama.cpp only prints the latter), every tensor replaced by
   gguf.quants.dequantize(...) stored as F32 under the same name and shape. GGUFReader's
   tensor.shape is in ggml order (ne0 first) while dequantize returns the row-major numpy array
   (shape reversed) that GGUFWriter.add_tensor expects. The copy is then read back and every
   tensor compared bit-for-bit with the dequantized original (and every KV pair with the original).
2. Runs llama.cpp on it with type_k = type_v = GGML_TYPE_F32, flash attention off,
   logits_all=True, n_ctx 512, n_batch 512, 2 threads, and computes the "loglik" cases (label
   log-probs of " positive" / " negative" for the first 40 test reviews, one batch, plus the
   prompt-then-one-token-per-call "logprob_incremental") and the 3 "perplexity" sequences exactly
   as gen_gemma_reference.py does (same functions); the first 5 cases are also scored with
   every token in its own decode call ("logprob_token_by_token").
3. Writes tests/fixtures/models/gemma3_llamacpp_f32_reference.json (no tokenize / greedy / meta
   sections: those are in gemma3_llamacpp_reference.json) with the batch-vs-incremental spread and
   the differences to the Q4_K_M llama.cpp reference.

Not bit-exact f32 either: ggml's CPU GELU (GGML_GELU_FP16) rounds its input to f16 and reads an
f16 table, and matmul accumulation order differs from any other implementation.
"""
import hashlib
import json
import os
import sys

import gguf
import llama_cpp
import numpy as np
from llama_cpp import Llama

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gen_gemma_reference as ref  # noqa: E402  (helpers; its main() is not run)

F32_MODEL = os.environ.get(
    "LMCOMPARE_GEMMA_F32",
    os.path.join(os.path.expanduser("~"), ".cache", "lmcompare", "tmp", "gemma-3-270m-f32.gguf"))
REF = ref.OUT
OUT = os.path.join(ref.ROOT, "tests", "fixtures", "models", "gemma3_llamacpp_f32_reference.json")
GGML_TYPE_F32 = int(gguf.GGMLQuantizationType.F32)  # 0
N_TOKEN_BY_TOKEN = 5  # loglik cases also scored with every token in its own decode call


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 24), b""):
            h.update(chunk)
    return h.hexdigest()


def dequantized(t):
    """Row-major float32 array of a GGUFReader tensor (shape = reversed ggml shape)."""
    w = np.ascontiguousarray(gguf.quants.dequantize(t.data, t.tensor_type), dtype=np.float32)
    want = tuple(int(d) for d in reversed(t.shape))
    assert w.shape == want, (t.name, w.shape, want)
    return w


def write_f32_gguf(src, dst):
    reader = gguf.GGUFReader(src)
    arch = reader.fields[gguf.Keys.General.ARCHITECTURE].contents()
    tmp = dst + ".partial"
    writer = gguf.GGUFWriter(tmp, arch)  # writes general.architecture itself
    for name, field in reader.fields.items():
        if name.startswith("GGUF.") or name == gguf.Keys.General.ARCHITECTURE:
            continue
        vtype = field.types[0]
        if vtype == gguf.GGUFValueType.ARRAY:
            assert len(field.types) == 2, f"nested array {name} not supported"
            writer.add_key_value(name, field.contents(), vtype, sub_type=field.types[1])
        else:
            writer.add_key_value(name, field.contents(), vtype)
    for t in reader.tensors:
        writer.add_tensor(t.name, dequantized(t))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    os.replace(tmp, dst)


def verify_f32_gguf(src, dst):
    """Same KV pairs (types and values) and, per tensor, same name / ggml shape, type F32 and
    values equal bit-for-bit to gguf-py's dequantization of the original."""
    a, b = gguf.GGUFReader(src), gguf.GGUFReader(dst)
    assert list(a.fields) == list(b.fields), (list(a.fields), list(b.fields))
    for name, fa in a.fields.items():
        if name == "GGUF.version":
            continue
        fb = b.fields[name]
        assert fa.types == fb.types and fa.contents() == fb.contents(), name
    assert [t.name for t in a.tensors] == [t.name for t in b.tensors]
    for ta, tb in zip(a.tensors, b.tensors):
        assert tb.tensor_type == gguf.GGMLQuantizationType.F32, tb.name
        assert [int(d) for d in ta.shape] == [int(d) for d in tb.shape], tb.name
        wa = dequantized(ta)
        wb = np.asarray(tb.data)
        assert wb.shape == wa.shape and np.array_equal(wa.view(np.uint32), wb.view(np.uint32)), \
            tb.name
    return len(b.tensors)


def add_token_by_token(llm, cases):
    """"logprob_token_by_token": BOS+prompt+continuation, one token per decode call (the
    single-row matmul path throughout), for the first N_TOKEN_BY_TOKEN cases."""
    for case in cases[:N_TOKEN_BY_TOKEN]:
        for c in case["continuations"].values():
            ids = case["prompt_ids"] + c["ids"]
            llm.reset()
            for t in ids:
                llm.eval([t])
            scores = np.array(llm.scores[: len(ids)], dtype=np.float32)
            lps = ref.token_logprobs(scores, ids, len(case["prompt_ids"]))
            c["logprob_token_by_token"] = float(sum(lps))


def abs_stats(diffs):
    d = np.abs(np.asarray(diffs, dtype=np.float64))
    return {"n": int(d.size), "mean": float(d.mean()), "max": float(d.max())}


def compare(cases, perplexity, ref_json):
    """Differences F32-llama.cpp minus Q4_K_M-llama.cpp (and batch vs incremental spreads)."""
    rcases = {c["id"]: c for c in ref_json["loglik"]["cases"]}
    d_batch, d_inc, spread_f32, spread_q4, spread_tbt, d_top = [], [], [], [], [], []
    agree = 0
    for c in cases:
        r = rcases[c["id"]]
        assert r["prompt_ids"] == c["prompt_ids"], c["id"]
        agree += r["predicted"] == c["predicted"]
        for cont, x in c["continuations"].items():
            y = r["continuations"][cont]
            assert x["ids"] == y["ids"]
            d_batch.append(x["logprob"] - y["logprob"])
            d_inc.append(x["logprob_incremental"] - y["logprob_incremental"])
            spread_f32.append(x["logprob"] - x["logprob_incremental"])
            spread_q4.append(y["logprob"] - y["logprob_incremental"])
            if "logprob_token_by_token" in x:
                spread_tbt.append(x["logprob"] - x["logprob_token_by_token"])
        rtop = {e["id"]: e["logit"] for e in r["top5_after_prompt"]}
        d_top += [e["logit"] - rtop[e["id"]] for e in c["top5_after_prompt"] if e["id"] in rtop]
    rppl = {p["name"]: p for p in ref_json["loglik"]["perplexity"]}
    d_tok, d_sum = [], {}
    for p in perplexity:
        r = rppl[p["name"]]
        assert r["ids"] == p["ids"], p["name"]
        d_tok += [x - y for x, y in zip(p["token_logprobs"], r["token_logprobs"])]
        d_sum[p["name"]] = p["sum_logprob"] - r["sum_logprob"]
    return {
        "label_logprob_f32_minus_q4": abs_stats(d_batch),
        "label_logprob_incremental_f32_minus_q4": abs_stats(d_inc),
        "label_logprob_batch_minus_incremental_f32": abs_stats(spread_f32),
        "label_logprob_batch_minus_incremental_q4": abs_stats(spread_q4),
        "label_logprob_batch_minus_token_by_token_f32": abs_stats(spread_tbt),
        "top5_after_prompt_logit_f32_minus_q4": abs_stats(d_top),
        "perplexity_token_logprob_f32_minus_q4": abs_stats(d_tok),
        "perplexity_sum_logprob_f32_minus_q4": d_sum,
        "predicted_label_agreement": f"{agree}/{len(cases)}",
    }


def main():
    if not os.path.exists(ref.MODEL):
        sys.exit(f"missing {ref.MODEL}: run scripts/fetch-assets.sh")
    if not os.path.exists(REF):
        sys.exit(f"missing {REF}: run scripts/gen_gemma_reference.py first")
    os.makedirs(os.path.dirname(F32_MODEL), exist_ok=True)
    if "--rebuild" in sys.argv[1:] or not os.path.exists(F32_MODEL):
        print(f"writing {F32_MODEL}", flush=True)
        write_f32_gguf(ref.MODEL, F32_MODEL)
    n_tensors = verify_f32_gguf(ref.MODEL, F32_MODEL)
    print(f"verified {F32_MODEL}: {n_tensors} F32 tensors equal to the dequantized original",
          flush=True)

    rows = ref.test_rows()
    llm = Llama(model_path=F32_MODEL, logits_all=True, n_ctx=512, n_threads=ref.THREADS,
                n_threads_batch=ref.THREADS, n_batch=512, type_k=GGML_TYPE_F32,
                type_v=GGML_TYPE_F32, flash_attn=False, verbose=False)
    cp = llm.context_params
    assert (cp.type_k, cp.type_v) == (GGML_TYPE_F32, GGML_TYPE_F32), (cp.type_k, cp.type_v)
    assert cp.flash_attn_type == llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED, cp.flash_attn_type

    conts, cases = ref.score_loglik(llm, rows)
    add_token_by_token(llm, cases)
    perplexity = ref.score_perplexity(llm, rows)
    with open(REF, encoding="utf-8") as f:
        ref_json = json.load(f)
    comparison = compare(cases, perplexity, ref_json)

    result = {
        "generator": "scripts/gen_gemma_f32_reference.py",
        "llama_cpp_python_version": llama_cpp.__version__,
        "numpy_version": np.__version__,
        "model_file": "gemma-3-270m-q4_k_m.gguf",
        "model_sha256": sha256(ref.MODEL),
        "f32_model": {"file": os.path.basename(F32_MODEL), "sha256": sha256(F32_MODEL),
                      "bytes": os.path.getsize(F32_MODEL),
                      "how": "every tensor gguf.quants.dequantize'd (gguf-py "
                             "dequantization, float32) and stored as F32 with the same name and "
                             "shape; all KV pairs copied unchanged (general.file_type still 15)"},
        "settings": {"n_ctx": 512, "n_batch": 512, "n_threads": ref.THREADS,
                     "logits_all": True, "type_k": "F32", "type_v": "F32",
                     "flash_attn": False, "tokenize": "add_bos=True, special=False",
                     "logprob": "log_softmax(float64(logits[t-1]))[ids[t]]"},
        "note": "Same cases and definitions as the loglik / perplexity sections of "
                "gemma3_llamacpp_reference.json (Q4_K_M weights, 8-bit activations, f16 KV), "
                "but llama.cpp ran the dequantized F32 weights: F32 x F32 matmuls, F32 KV cache, "
                "no flash attention. logprob = BOS+prompt+continuation as one batch, "
                "logprob_incremental = prompt as one batch then one token per call, "
                "logprob_token_by_token (first 5 cases) = every token in its own call. Remaining "
                "llama.cpp approximations: f16 GELU lookup table (GGML_GELU_FP16), its own "
                "accumulation order.",
        "comparison": comparison,
        "loglik": {"prompt_template": "Review: {text}\\nSentiment:",
                   "continuation_ids": conts, "cases": cases, "perplexity": perplexity},
    }
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w", encoding="utf-8") as f:
        f.write(ref.dump(result) + "\n")
    print(f"wrote {OUT}")
    for k, v in comparison.items():
        print(f"  {k}: {v}")


if __name__ == "__main__":
    main()
