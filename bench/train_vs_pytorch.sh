#!/usr/bin/env bash
# Head training, lmcompare vs PyTorch, same data, same loop, same run (issue 5's benchmark):
# 10,000 cached 384-d embeddings, 5 classes, 20 epochs, AdamW, batch 32. PyTorch gets 2
# threads; lmcompare's head loop runs on one. Each side times its training loop in-process
# (median of REPEATS), so interpreter start-up and imports are not counted against PyTorch.
#   bash bench/train_vs_pytorch.sh [REPEATS]   (needs the venv-torch of bench/README or PYTHON=...)
set -euo pipefail
cd "$(dirname "$0")/.."
REPEATS=${1:-5}
PY=${PYTHON:-${LMCOMPARE_CACHE:-$HOME/.cache/lmcompare}/venv-torch/bin/python}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
"$PY" bench/make_train_bench_data.py 10000 384 5 "$WORK/data"
cargo build --release -q -p lmcompare-tune --example train_head_bench
OURS=$(target/release/examples/train_head_bench "$WORK/data.emb.f32" "$WORK/data.labels.u32" 384 5 20 32 "$REPEATS")
THEIRS=$(OMP_NUM_THREADS=2 "$PY" bench/train_head_pytorch.py "$WORK/data.emb.f32" "$WORK/data.labels.u32" \
  --dim 384 --classes 5 --epochs 20 --batch-size 32 --threads 2 --repeats "$REPEATS")
echo "lmcompare: $OURS"
echo "pytorch:   $THEIRS"
"$PY" - "$OURS" "$THEIRS" <<'PYEOF'
import json, sys
ours, theirs = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print(f"head training, 10000x384, 5 classes, 20 epochs, AdamW, batch 32: "
      f"lmcompare {ours['median_seconds']:.3f} s (final loss {ours['final_loss']:.4f}), "
      f"PyTorch {theirs.get('torch', '')} {theirs['median_seconds']:.3f} s (final loss {theirs['final_loss']:.4f}); "
      f"lmcompare is {theirs['median_seconds'] / ours['median_seconds']:.2f}x PyTorch")
PYEOF
