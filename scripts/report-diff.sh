#!/usr/bin/env bash
# Refactoring guard: runs a fixed set of commands (compare on every task, local and remote
# models, tune, metrics, report, demo) on the committed fixtures and the fetched assets,
# saves each JSON document, and diffs two such sets with the timing fields removed. Keep it
# for the next refactor: every number a user sees must survive one.
#
#   bash scripts/report-diff.sh save DIR [LMCOMPARE_BIN]   # the documents of one binary
#   bash scripts/report-diff.sh diff DIR_A DIR_B           # differences, timing fields removed
#   bash scripts/report-diff.sh rev REV                    # build REV in a worktree, save both, diff
#
# Needs jq, the assets (bash scripts/fetch-assets.sh) and the toy OpenAI server example
# (cargo build --example toy_openai_server -p lmcompare), which this script builds.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

# Fields that measure time or the machine, not results.
timing='walk(if type == "object" then del(.wall_seconds, .started, .finished, .latency_ms_p50,
  .latency_ms_p95, .latency_ms_p99, .throughput_per_s, .tokens_per_s, .peak_rss_bytes,
  .peak_rss_source, .db, .threads) else . end)'

save() {
  local out bin work url server
  out=$(mkdir -p "$1" && cd "$1" && pwd)
  bin=${2:-$root/target/debug/lmcompare}
  cargo build -q --example toy_openai_server -p lmcompare
  # Fixed paths and port: they are part of the documents (data paths, remote specs, run keys).
  work=/tmp/lmcompare-report-diff
  rm -rf "$work"; mkdir -p "$work"
  trap 'kill "${server:-0}" 2>/dev/null || true; rm -rf "$work"' RETURN
  "$root/target/debug/examples/toy_openai_server" --seconds 900 --port 47613 > "$work/url" &
  server=$!
  for _ in $(seq 50); do [ -s "$work/url" ] && break; sleep 0.1; done
  url=$(head -1 "$work/url")
  local fx=$root/tests/fixtures models=$root/tests/fixtures/models a=$root/assets
  local rt=$a/data/rotten_tomatoes_binary.jsonl
  cat > "$work/mc.jsonl" <<'JSONL'
{"id": "q1", "question": "The film is [great]", "choices": ["great", "bad", "long"], "answer": 0}
{"id": "q2", "question": "The cast was [superb]", "choices": ["superb", "a waste"], "answer": 0}
{"id": "q3", "question": "A gripping [film]", "choices": ["thriller", "bore", "film", "plot"], "answer": 2}
JSONL
  printf 'A gorgeous, witty, seductive movie. The cast is superb and the plot never drags.\n\nDull, lifeless and far too long.\n\nThe film is great, and the cast shines in every scene of this gripping thriller.\n' > "$work/text.txt"
  cat > "$work/qa.jsonl" <<'JSONL'
{"id": "1", "prompt": "Q: What is the capital of France? [Paris]\nA:", "answer": "Paris"}
{"id": "2", "prompt": "Q: What color is the sky on a clear day? [blue]\nA:", "answer": ["blue", "light blue"]}
JSONL
  local st=(--bootstrap 200 --permutations 200)
  run() { # name, args...
    local name=$1; shift
    (cd "$work" && "$bin" "$@" --format json > "$out/$name.json" 2> "$out/$name.stderr") ||
      echo "exit $? for $name" >> "$out/$name.stderr"
  }
  run classify compare --quiet --task classify "${st[@]}" --model "roberta=$models/tiny-roberta-cls" \
    --model "distil=$models/tiny-distilbert-cls" --data "$fx/data/reviews.jsonl" --db c.db
  run classify-resumed compare --quiet --task classify "${st[@]}" --model "roberta=$models/tiny-roberta-cls" \
    --model "distil=$models/tiny-distilbert-cls" --data "$fx/data/reviews.jsonl" --db c.db
  run report report --run 1 --db c.db
  run probe compare --quiet --task probe "${st[@]}" --model "l6=$a/models/all-MiniLM-L6-v2" \
    --model "int8=$a/models/all-MiniLM-L6-v2-int8-onnx" --model "gemma=$a/models/gemma-3-270m-q4_k_m.gguf" \
    --template 'Review: {text}\nSentiment:' --verbalizer 'fresh= positive' --verbalizer 'rotten= negative' \
    --data "$rt" --limit 40 --db p.db
  run zero-shot compare --quiet --task zero-shot "${st[@]}" --model "l6=$a/models/all-MiniLM-L6-v2" \
    --model "l3=$a/models/paraphrase-MiniLM-L3-v2-onnx" --model "llama=$models/tiny-llama" --shots 2 \
    --label-desc 'fresh=a positive review' --data "$rt" --limit 30 --db z.db
  run classify-generate compare --quiet --task classify "${st[@]}" --model "gemma=$a/models/gemma-3-270m-q4_k_m.gguf" \
    --model "llama=$models/tiny-llama" --decoder-scoring generate --max-tokens 4 --limit 8 \
    --template 'Review: {text}\nIs this review positive or negative? Answer:' \
    --verbalizer 'fresh= positive' --verbalizer 'rotten= negative' --data "$rt" --db g.db
  run multiple-choice compare --quiet --task multiple-choice "${st[@]}" --model "llama=$models/tiny-llama" \
    --model "gpt2=$models/tiny-gpt2" --data "$work/mc.jsonl" --batch-size 2 --db m.db
  run multiple-choice-circular compare --quiet --task multiple-choice "${st[@]}" --model "llama=$models/tiny-llama" \
    --model "qwen=$models/tiny-qwen2" --data "$work/mc.jsonl" --circular \
    --template 'Question: {question}\n{choices}\nAnswer:' --db m.db
  run perplexity compare --quiet --task perplexity "${st[@]}" --model "qwen=$models/tiny-qwen2" \
    --model "gemma3=$models/tiny-gemma3" --data "$work/text.txt" --window-chars 40 --context-chars 20 --db x.db
  run generate compare --quiet --task generate "${st[@]}" --model "gemma=$a/models/gemma-3-270m-q4_k_m.gguf" \
    --model "gpt2=$models/tiny-gpt2" --data "$work/qa.jsonl" --max-tokens 8 --db q.db
  run remote-classify compare --quiet --task classify "${st[@]}" --model "good=openai:$url#toy-good" \
    --model "weak=openai:$url#toy-weak" --model "distil=$models/tiny-distilbert-cls" \
    --template '{text}\nSentiment:' --verbalizer 'fresh= positive' --verbalizer 'rotten= negative' \
    --data "$fx/data/reviews.jsonl" --db r.db
  run remote-multiple-choice compare --quiet --task multiple-choice "${st[@]}" --model "good=openai:$url#toy-good" \
    --model "biased=openai:$url#toy-biased" --data "$work/mc.jsonl" --circular \
    --template 'Question: {question}\n{choices}\nAnswer:' --db r.db
  run remote-perplexity compare --quiet --task perplexity "${st[@]}" --model "good=openai:$url#toy-good" \
    --model "qwen=$models/tiny-qwen2" --data "$work/text.txt" --window-chars 40 --context-chars 20 --db r.db
  run remote-generate compare --quiet --task generate "${st[@]}" --model "good=openai:$url#toy-good" \
    --model "weak=openai:$url#toy-weak" --data "$work/qa.jsonl" --db r.db
  run tune tune --quiet --search grid --space 'lr=[1e-3,1e-2];epochs=[2];batch_size=[2]' --bootstrap 100 --permutations 100 \
    --model "bert=$models/tiny-bert-cls" --model "distil=$models/tiny-distilbert-cls" \
    --data "$fx/data/reviews.jsonl" --folds 2 --baseline 'lr=5e-5;batch_size=2;epochs=1;optimizer=adamw;scheduler=constant;weight_decay=0' \
    --save "$work/tuned" --db t.db
  run metrics metrics "${st[@]}" --pred "$root/examples/sentiment-large.jsonl" --pred "$root/examples/sentiment-small.jsonl"
  (cd "$root" && "$bin" demo --limit 60 --quiet --db "$work/demo.db" --format json > "$out/demo.json" 2> "$out/demo.stderr") ||
    echo "exit $? for demo" >> "$out/demo.stderr"
  echo "saved $(ls "$out"/*.json | wc -l) documents in $out"
}

diff_dirs() {
  local a=$1 b=$2 status=0
  for f in "$a"/*.json; do
    local n; n=$(basename "$f")
    if [ ! -s "$b/$n" ]; then echo "== $n: missing or empty in $b"; status=1; continue; fi
    if ! diff <(jq -S "$timing" "$f") <(jq -S "$timing" "$b/$n") > /tmp/report-diff.$$ 2>&1; then
      echo "== $n differs:"; head -40 /tmp/report-diff.$$; status=1
    fi
  done
  rm -f /tmp/report-diff.$$
  [ $status = 0 ] && echo "no differences in $(ls "$a"/*.json | wc -l) documents (timing fields removed)"
  return $status
}

case "${1:-}" in
  save) save "$2" "${3:-}" ;;
  diff) diff_dirs "$2" "$3" ;;
  rev)
    wt=$(mktemp -d); git worktree add -q --detach "$wt" "$2"
    (cd "$wt" && ln -s "$root/assets" assets && CARGO_TARGET_DIR="$root/target/base" cargo build -q -p lmcompare)
    save "$root/target/report-diff/base" "$root/target/base/debug/lmcompare"
    git worktree remove --force "$wt"
    cargo build -q -p lmcompare
    save "$root/target/report-diff/head"
    diff_dirs "$root/target/report-diff/base" "$root/target/report-diff/head" ;;
  *) sed -n '2,12p' "$0"; exit 2 ;;
esac
