#!/usr/bin/env bash
# Issue 14's memory check at the sizes people compare: a synthetic 1.1B-parameter
# Llama-shaped GGUF with random Q4_K_M-like weights (bench/make_synthetic_gguf.py, written once
# into the cache, not committed) loaded and used to score Rotten Tomatoes reviews by label
# log-likelihood on the quantised path, 2 threads; prints its peak RSS against the file size
# (target: within 1.5 GB). The f32 path would need 4.4 GB for the weights alone.
#   bash bench/synthetic_llama_1b.sh [REVIEWS] [BATCH]   (needs ~/.cache/lmcompare/venv-llamacpp, or PYTHON=...)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-64}
BATCH=${2:-32}
cache=${LMCOMPARE_CACHE:-$HOME/.cache/lmcompare}
PY=${PYTHON:-$cache/venv-llamacpp/bin/python}
MODEL=$cache/bench/synthetic-llama-1.1b-q4_k_m.gguf
mkdir -p "$cache/bench"
[ -f "$MODEL" ] || "$PY" bench/make_synthetic_gguf.py "$MODEL"
cargo build --release -q -p lmcompare-engine --example llm_score_bench
OURS=$(RAYON_NUM_THREADS=2 target/release/examples/llm_score_bench "$MODEL" assets/data/rotten_tomatoes_binary.jsonl "$N" "$BATCH")
echo "$OURS"
python3 - "$OURS" <<'PYEOF'
import json, sys
r = json.loads(sys.argv[1])
print(f"synthetic Llama 1.1B Q4_K_M-like ({r['file_bytes'] / 1e9:.2f} GB file, {r['weight_bytes'] / 1e9:.2f} GB of weights in memory): "
      f"{r['examples']} reviews scored in {r['seconds']:.1f} s ({r['examples_per_s']:.1f}/s), "
      f"batches of {r['batch']}, peak RSS {r['peak_rss_bytes'] / 1e9:.2f} GB ({r['peak_rss_bytes'] / r['file_bytes']:.2f}x the file)")
PYEOF
