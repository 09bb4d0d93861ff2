#!/usr/bin/env bash
# Issue 14's generation benchmark: Gemma 3 270M Q4_K_M, greedy decoding of 64 tokens for the
# first 50 Rotten Tomatoes test reviews, 2 threads, same run: lmcompare (quantised blocks with
# int8 kernels, and --dequantize) vs llama-cpp-python in-process. lmcompare decodes the 50
# prompts together (one packed step per token); llama-cpp-python's API decodes one sequence.
#   bash bench/llm_generate_vs_llamacpp.sh [PROMPTS] [NEW]   (needs ~/.cache/lmcompare/venv-llamacpp)
set -euo pipefail
cd "$(dirname "$0")/.."
PROMPTS=${1:-50}
NEW=${2:-64}
PY=${PYTHON:-${LMCOMPARE_CACHE:-$HOME/.cache/lmcompare}/venv-llamacpp/bin/python}
MODEL=assets/models/gemma-3-270m-q4_k_m.gguf
DATA=assets/data/rotten_tomatoes_binary.jsonl
cargo build --release -q -p lmcompare-engine --example llm_generate_bench
OURS=$(RAYON_NUM_THREADS=2 target/release/examples/llm_generate_bench "$MODEL" "$DATA" "$PROMPTS" "$NEW")
ONE=$(RAYON_NUM_THREADS=2 target/release/examples/llm_generate_bench "$MODEL" "$DATA" "$PROMPTS" "$NEW" --one-at-a-time)
F32=$(RAYON_NUM_THREADS=2 target/release/examples/llm_generate_bench "$MODEL" "$DATA" "$PROMPTS" "$NEW" --dequantize)
THEIRS=$("$PY" bench/llm_generate_llamacpp_peer.py --threads 2 --prompts "$PROMPTS" --new "$NEW" --model "$MODEL" --data "$DATA")
echo "lmcompare (quantised): $OURS"
echo "lmcompare (quantised, one prompt at a time): $ONE"
echo "lmcompare (f32): $F32"
echo "llama.cpp: $THEIRS"
python3 - "$OURS" "$ONE" "$F32" "$THEIRS" <<'PYEOF'
import json, sys
q, one, f, t = (json.loads(a) for a in sys.argv[1:5])
print(f"Gemma 3 270M Q4_K_M, greedy {q['new_tokens'] // q['prompts']} tokens x {q['prompts']} prompts, 2 threads: "
      f"lmcompare quantised {q['tokens_per_s']:.1f} tok/s (prompts together), "
      f"{one['tokens_per_s']:.1f} tok/s (one at a time), f32 {f['tokens_per_s']:.1f} tok/s (together); "
      f"llama-cpp-python {t['tokens_per_s']:.1f} tok/s (one at a time). Quantised is "
      f"{q['tokens_per_s'] / t['tokens_per_s']:.2f}x llama.cpp together, "
      f"{one['tokens_per_s'] / t['tokens_per_s']:.2f}x one at a time")
PYEOF
