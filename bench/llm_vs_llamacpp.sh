#!/usr/bin/env bash
# Issue 6's benchmark: Gemma 3 270M Q4_K_M, the Rotten Tomatoes test split (956 reviews) as
# 0-shot classification by label log-likelihood ("Review: {text}\nSentiment:" → " positive" /
# " negative"), lmcompare's local decoder vs llama-cpp-python in-process doing the same
# scoring (bench/llm_llamacpp_peer.py: one decode per review, KV cache reused across the
# continuations), both on 2 threads, in the same run. Each side times its scoring loop
# in-process (tokenization included, model load excluded).
#   bash bench/llm_vs_llamacpp.sh [LIMIT]   (needs ~/.cache/lmcompare/venv-llamacpp, or PYTHON=...)
set -euo pipefail
cd "$(dirname "$0")/.."
LIMIT=${1:-100000}
PY=${PYTHON:-${LMCOMPARE_CACHE:-$HOME/.cache/lmcompare}/venv-llamacpp/bin/python}
MODEL=assets/models/gemma-3-270m-q4_k_m.gguf
DATA=assets/data/rotten_tomatoes_binary.jsonl
cargo build --release -q -p lmcompare-engine --example llm_score_bench
OURS=$(RAYON_NUM_THREADS=2 target/release/examples/llm_score_bench "$MODEL" "$DATA" "$LIMIT" 32)
THEIRS=$("$PY" bench/llm_llamacpp_peer.py --threads 2 --limit "$LIMIT" --model "$MODEL" --data "$DATA")
echo "lmcompare: $OURS"
echo "llama.cpp: $THEIRS"
python3 - "$OURS" "$THEIRS" <<'PYEOF'
import json, sys
ours, theirs = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print(f"Gemma 3 270M Q4_K_M, {ours['examples']} reviews, 0-shot label log-likelihood, 2 threads: "
      f"lmcompare {ours['seconds']:.1f} s ({ours['examples_per_s']:.1f}/s, accuracy {ours['accuracy']:.4f}), "
      f"llama-cpp-python {theirs['seconds']:.1f} s ({theirs['examples_per_s']:.1f}/s, accuracy {theirs['accuracy']:.4f}); "
      f"lmcompare is {theirs['seconds'] / ours['seconds']:.2f}x llama.cpp")
PYEOF
