#!/usr/bin/env bash
# lmcompare's encoder against HF transformers on PyTorch, in the same run, same thread count:
# fixed shapes (batch 32 × 128 tokens) for MiniLM-L6 and bert-base, and the real
# variable-length workload (the Rotten Tomatoes test split through MiniLM-L6).
#
#   bash bench/encoder_vs_pytorch.sh [RUNS]
#
# Needs scripts/fetch-assets.sh first. Installs torch + transformers into a venv under the
# cache the first time (LMCOMPARE_TORCH_VENV to reuse one).
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-10}
threads=${BENCH_THREADS:-2}
. bench/torch_venv.sh
torch_venv
minilm=assets/models/all-MiniLM-L6-v2
[ -d "$minilm" ] || { echo "run scripts/fetch-assets.sh first" >&2; exit 1; }
bert_base="$cache/bench/bert-base-random"
[ -f "$bert_base/model.safetensors" ] || "$venv/bin/python" bench/make_bert_base.py "$bert_base" "$minilm"
texts="$cache/bench/rotten_tomatoes_test.jsonl"
grep '"split": "test"' assets/data/rotten_tomatoes.jsonl > "$texts"
cargo build --release -q -p lmcompare
export RAYON_NUM_THREADS=$threads OMP_NUM_THREADS=$threads MKL_NUM_THREADS=$threads BENCH_THREADS=$threads

ours_fixed() { target/release/lmcompare profile --model "$1" --batch-size 32 --seq-len 128 --runs "$runs" --warmup 2 --format json | python3 -c 'import json,sys; print(json.load(sys.stdin)["throughput_per_s"])'; }
theirs_fixed() { "$venv/bin/python" bench/encoder_pytorch.py fixed "$1" 32 128 "$runs" 2 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["examples_per_s"])'; }

printf '%-46s %14s %14s %8s\n' "workload ($threads threads)" "lmcompare ex/s" "PyTorch ex/s" "ratio"
row() { printf '%-46s %14.1f %14.1f %7.2fx\n' "$1" "$2" "$3" "$(echo "$2 / $3" | bc -l)"; }
row "MiniLM-L6, batch 32 x 128 tokens" "$(ours_fixed $minilm)" "$(theirs_fixed $minilm)"
row "bert-base, batch 32 x 128 tokens" "$(ours_fixed "$bert_base")" "$(theirs_fixed "$bert_base")"
ours_rt=$(target/release/lmcompare profile --model $minilm --input "$texts" --batch-size 32 --warmup 1 --format json | python3 -c 'import json,sys; print(json.load(sys.stdin)["throughput_per_s"])')
theirs_rt=$("$venv/bin/python" bench/encoder_pytorch.py texts $minilm 32 "$texts" 256 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["examples_per_s"])')
row "MiniLM-L6, Rotten Tomatoes test (988 texts)" "$ours_rt" "$theirs_rt"
