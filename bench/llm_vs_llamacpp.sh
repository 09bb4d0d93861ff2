#!/usr/bin/env bash
# Issue 6's benchmark: Gemma 3 270M Q4_K_M, the Rotten Tomatoes test split (956 reviews) as
# 0-shot classification by label log-likelihood ("Review: {text}\nSentiment:" → " positive" /
# " negative"), lmcompare's local decoder vs llama-cpp-python in-process doing the same
# scoring (bench/llm_llamacpp_peer.py: one decode per review, KV cache reused across the
# continuations), both on 2 threads, in the same run. Each side times its scoring loop
# in-process (tokenization included, model load excluded). lmcompare runs twice: its default
# path (the Q4_K_M blocks mapped from the file, int8 activations, the integer kernel the CPU
# has) and `--dequantize` (weights in f32); each reports its peak RSS.
#   bash bench/llm_vs_llamacpp.sh [LIMIT]   (needs ~/.cache/lmcompare/venv-llamacpp, or PYTHON=...)
set -euo pipefail
cd "$(dirname "$0")/.."
LIMIT=${1:-100000}
PY=${PYTHON:-${LMCOMPARE_CACHE:-$HOME/.cache/lmcompare}/venv-llamacpp/bin/python}
MODEL=assets/models/gemma-3-270m-q4_k_m.gguf
DATA=assets/data/rotten_tomatoes_binary.jsonl
cargo build --release -q -p lmcompare-engine --example llm_score_bench
OURS=$(RAYON_NUM_THREADS=2 target/release/examples/llm_score_bench "$MODEL" "$DATA" "$LIMIT" 32)
F32=$(RAYON_NUM_THREADS=2 target/release/examples/llm_score_bench "$MODEL" "$DATA" "$LIMIT" 32 --dequantize)
THEIRS=$("$PY" bench/llm_llamacpp_peer.py --threads 2 --limit "$LIMIT" --model "$MODEL" --data "$DATA")
echo "lmcompare (quantised): $OURS"
echo "lmcompare (f32): $F32"
echo "llama.cpp: $THEIRS"
python3 - "$OURS" "$F32" "$THEIRS" <<'PYEOF'
import json, sys
ours, f32, theirs = (json.loads(a) for a in sys.argv[1:4])
mb = lambda b: f"{b / 1e6:.0f} MB" if b else "n/a"
print(f"Gemma 3 270M Q4_K_M ({mb(ours['file_bytes'])} file), {ours['examples']} reviews, "
      f"0-shot label log-likelihood, 2 threads:")
for name, r in (("lmcompare quantised", ours), ("lmcompare f32", f32), ("llama-cpp-python", theirs)):
    print(f"  {name}: {r['seconds']:.1f} s ({r['examples_per_s']:.1f}/s, accuracy {r['accuracy']:.4f}), "
          f"peak RSS {mb(r.get('peak_rss_bytes'))}")
print(f"  quantised is {theirs['seconds'] / ours['seconds']:.2f}x llama.cpp and "
      f"{f32['seconds'] / ours['seconds']:.2f}x our f32 path; f32 is {theirs['seconds'] / f32['seconds']:.2f}x llama.cpp; "
      f"quantised peak RSS is {ours['peak_rss_bytes'] / ours['file_bytes']:.2f}x the file")
PYEOF
