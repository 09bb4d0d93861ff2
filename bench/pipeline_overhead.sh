#!/usr/bin/env bash
# What `compare` adds to the models' own inference: `compare` (fresh store, statistics off so
# only the pipeline is measured: data loading, tokenization, store writes, probe fit, scoring)
# against `profile --input` of each model on the same texts, in the same run.
#
#   bash bench/pipeline_overhead.sh [ROWS]
set -euo pipefail
cd "$(dirname "$0")/.."
rows=${1:-1000}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
head -n "$rows" assets/data/rotten_tomatoes_binary.jsonl > "$tmp/data.jsonl"
cargo build --release -q -p lmcompare
bin=target/release/lmcompare
models=(assets/models/all-MiniLM-L6-v2 assets/models/paraphrase-MiniLM-L3-v2-onnx)
run_compare() { # data db
  local t0 t1
  t0=$(date +%s.%N)
  "$bin" compare --model l6="${models[0]}" --model l3="${models[1]}" --data "$1" --task probe \
    --db "$2" --bootstrap 0 --permutations 0 --max-length 128 --format json --quiet > /dev/null
  t1=$(date +%s.%N)
  echo "$t1 - $t0" | bc -l
}
# First run ever against a new store: it also hashes the weights (sha256, ~160 MB).
first_s=$(run_compare "$tmp/data.jsonl" "$tmp/first.db")
# A store that has seen these models before (hashes cached; other texts, so a new run).
tail -n 20 assets/data/rotten_tomatoes_binary.jsonl > "$tmp/other.jsonl"
run_compare "$tmp/other.jsonl" "$tmp/warm.db" > /dev/null
compare_s=$(run_compare "$tmp/data.jsonl" "$tmp/warm.db")
# The models' own work as whole processes: load, tokenize and run every text once
# (`profile --input`, no warm-up), the same work `compare` must do before it adds anything.
infer_s=0
for m in "${models[@]}"; do
  t0=$(date +%s.%N)
  "$bin" profile --model "$m" --input "$tmp/data.jsonl" --batch-size 32 --warmup 0 --runs 1 --format json > /dev/null
  t1=$(date +%s.%N)
  infer_s=$(echo "$infer_s + $t1 - $t0" | bc -l)
done
printf 'rows=%s, 2 models (probe task)\n' "$rows"
printf 'profile --input, both models, whole processes:   %8.2f s\n' "$infer_s"
printf 'compare, store that knows the models:            %8.2f s  (overhead %.1f%%)\n' "$compare_s" "$(echo "($compare_s / $infer_s - 1) * 100" | bc -l)"
printf 'compare, first run on a new store (hashes weights): %5.2f s  (overhead %.1f%%)\n' "$first_s" "$(echo "($first_s / $infer_s - 1) * 100" | bc -l)"
