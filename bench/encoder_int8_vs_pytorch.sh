#!/usr/bin/env bash
# Issue 14's encoder benchmark: MiniLM-L6 with dynamic int8 quantisation of its linear layers,
# lmcompare (`int8:` spec: Q8_0 weights, int8 activations, the integer kernel the CPU has)
# against PyTorch's `quantize_dynamic` (qint8, fbgemm), same shapes, same threads, same run;
# both f32 paths beside them for scale. Fixed shapes (batch 32 × 128 tokens) and the real
# variable-length workload (the Rotten Tomatoes test split).
#
#   bash bench/encoder_int8_vs_pytorch.sh [RUNS]   (the venv of bench/encoder_vs_pytorch.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-10}
threads=${BENCH_THREADS:-2}
. bench/torch_venv.sh
torch_venv
minilm=assets/models/all-MiniLM-L6-v2
[ -d "$minilm" ] || { echo "run scripts/fetch-assets.sh first" >&2; exit 1; }
texts="$cache/bench/rotten_tomatoes_test.jsonl"
mkdir -p "$cache/bench"
grep '"split": "test"' assets/data/rotten_tomatoes_binary.jsonl > "$texts"
cargo build --release -q -p lmcompare
export RAYON_NUM_THREADS=$threads OMP_NUM_THREADS=$threads MKL_NUM_THREADS=$threads BENCH_THREADS=$threads
ours_fixed() { target/release/lmcompare profile --model "$1" --batch-size 32 --seq-len 128 --runs "$runs" --warmup 2 --format json | python3 -c 'import json,sys; print(json.load(sys.stdin)["throughput_per_s"])'; }
theirs_fixed() { BENCH_INT8=$2 "$venv/bin/python" bench/encoder_pytorch.py fixed "$1" 32 128 "$runs" 2 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["examples_per_s"])'; }
ours_texts() { target/release/lmcompare profile --model "$1" --input "$texts" --batch-size 32 --warmup 1 --format json | python3 -c 'import json,sys; print(json.load(sys.stdin)["throughput_per_s"])'; }
theirs_texts() { BENCH_INT8=$2 "$venv/bin/python" bench/encoder_pytorch.py texts "$1" 32 "$texts" 256 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["examples_per_s"])'; }
printf '%-52s %14s %14s %8s\n' "workload ($threads threads)" "lmcompare ex/s" "PyTorch ex/s" "ratio"
row() { printf '%-52s %14.1f %14.1f %7.2fx\n' "$1" "$2" "$3" "$(echo "$2 / $3" | bc -l)"; }
row "MiniLM-L6 int8, batch 32 x 128 tokens" "$(ours_fixed int8:$minilm)" "$(theirs_fixed $minilm 1)"
row "MiniLM-L6 f32, batch 32 x 128 tokens" "$(ours_fixed $minilm)" "$(theirs_fixed $minilm 0)"
row "MiniLM-L6 int8, Rotten Tomatoes test texts" "$(ours_texts int8:$minilm)" "$(theirs_texts $minilm 1)"
row "MiniLM-L6 f32, Rotten Tomatoes test texts" "$(ours_texts $minilm)" "$(theirs_texts $minilm 0)"
