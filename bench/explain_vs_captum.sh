#!/usr/bin/env bash
# Integrated gradients, 50 Gauss-Legendre steps, on MiniLM-L6 with a classification head
# (bench/make_minilm_classifier.py: the real MiniLM weights, a seeded 2-class head), 200
# Rotten Tomatoes test reviews one at a time, the predicted class's probability, internal
# batch 16: lmcompare explain vs Captum 0.9 on PyTorch, same 2 threads, same run.
#   bash bench/explain_vs_captum.sh [LIMIT]
# Needs scripts/fetch-assets.sh first; torch + transformers + captum in
# ~/.cache/lmcompare/venv-torch (or LMCOMPARE_TORCH_VENV).
set -euo pipefail
cd "$(dirname "$0")/.."
limit=${1:-200}
threads=${BENCH_THREADS:-2}
. bench/torch_venv.sh
torch_venv captum
minilm=assets/models/all-MiniLM-L6-v2
[ -d "$minilm" ] || { echo "run scripts/fetch-assets.sh first" >&2; exit 1; }
model="$cache/bench/minilm-l6-classifier"
[ -f "$model/model.safetensors" ] || "$venv/bin/python" bench/make_minilm_classifier.py "$minilm" "$model"
texts="$cache/bench/rotten_tomatoes_test_$limit.jsonl"
grep -m "$limit" '"split": "test"' assets/data/rotten_tomatoes_binary.jsonl > "$texts"
cargo build --release -q -p lmcompare
export RAYON_NUM_THREADS=$threads OMP_NUM_THREADS=$threads MKL_NUM_THREADS=$threads
start=$(date +%s.%N)
target/release/lmcompare explain --model m="$model" --data "$texts" --limit "$limit" \
  --max-length 256 --format json > "$cache/bench/explain_ours.json"
ours=$(echo "$(date +%s.%N) - $start" | bc -l)
theirs=$("$venv/bin/python" bench/explain_captum_peer.py "$model" "$texts" "$limit" "$threads" 2>/dev/null)
python3 - "$ours" "$theirs" "$limit" "$cache/bench/explain_ours.json" <<'PYEOF'
import json, sys
ours, theirs, n = float(sys.argv[1]), json.loads(sys.argv[2]), int(sys.argv[3])
doc = json.load(open(sys.argv[4]))
gaps = [m["completeness_gap"] / max(abs(m["f_input"] - m["f_baseline"]), 1e-12)
        for e in doc["examples"] for m in e["models"]]
print(f"integrated gradients, 50 steps, MiniLM-L6 classifier, {n} reviews, 2 threads")
print(f"  lmcompare explain (whole process): {ours:8.2f} s  {n / ours:6.2f} reviews/s")
print(f"  Captum 0.9 on PyTorch (in-process): {theirs['seconds']:8.2f} s  {theirs['texts_per_s']:6.2f} reviews/s")
print(f"  ratio (Captum time / lmcompare time): {theirs['seconds'] / ours:.2f}x")
gaps.sort()
print(f"  completeness gap / |F(x) - F(baseline)|: median {gaps[len(gaps)//2]:.4%}, max {gaps[-1]:.4%}")
PYEOF
