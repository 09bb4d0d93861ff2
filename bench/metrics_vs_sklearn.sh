#!/usr/bin/env bash
# Times `lmcompare metrics` against scikit-learn on a 300,000-row, 10-class prediction file,
# both as whole processes in the same run, and checks that they agree.
#
#   bash bench/metrics_vs_sklearn.sh [ROWS] [RUNS]
#
# Installs scikit-learn into a venv under the cache (LMCOMPARE_CACHE, default
# ~/.cache/lmcompare) the first time. Python gets 2 BLAS threads; lmcompare uses all cores.
set -euo pipefail
cd "$(dirname "$0")/.."
rows=${1:-300000}
runs=${2:-5}
cache=${LMCOMPARE_CACHE:-$HOME/.cache/lmcompare}
venv=${LMCOMPARE_BENCH_VENV:-$cache/venv-bench}
mkdir -p "$cache/bench"
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import sklearn" 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q "scikit-learn==1.9.1" numpy
fi
data="$cache/bench/predictions-$rows.jsonl"
[ -s "$data" ] || python3 bench/gen_bench_predictions.py "$data" "$rows" 10
cargo build --release -q -p lmcompare
bin=target/release/lmcompare

export OMP_NUM_THREADS=2 OPENBLAS_NUM_THREADS=2 MKL_NUM_THREADS=2
# Median and minimum wall time of a command over $runs runs.
time_it() {
  local out=$1; shift
  local times=()
  for _ in $(seq "$runs"); do
    local t0 t1
    t0=$(date +%s.%N)
    "$@" > "$out"
    t1=$(date +%s.%N)
    times+=("$(echo "$t1 - $t0" | bc -l)")
  done
  printf '%s\n' "${times[@]}" | sort -g | awk '{a[NR]=$1} END {printf "%.3f %.3f\n", a[int((NR+1)/2)], a[1]}'
}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
read -r sk_med sk_min < <(time_it "$tmp/sk.json" "$venv/bin/python" bench/metrics_sklearn.py "$data")
read -r b0_med b0_min < <(time_it "$tmp/b0.json" "$bin" metrics --pred "$data" --format json --bootstrap 0)
read -r b1_med b1_min < <(time_it "$tmp/b1.json" "$bin" metrics --pred "$data" --format json --bootstrap 1000)

python3 - "$tmp/sk.json" "$tmp/b0.json" <<'PY'
import json, sys
sk = json.load(open(sys.argv[1]))
ours = json.load(open(sys.argv[2]))["models"][0]["metrics"]
bad = [k for k in ["accuracy", "f1_macro", "f1_weighted", "mcc", "cohen_kappa", "log_loss",
                   "brier", "average_precision_macro"] if abs(sk[k] - ours[k]) > 1e-9]
print("agreement with scikit-learn (1e-9):", "OK" if not bad else "MISMATCH " + ", ".join(bad))
PY
echo
echo "rows=$rows, 10 classes, $runs runs each, $(nproc) cores"
printf '%-44s %10s %10s %12s\n' "command" "median s" "min s" "vs sklearn"
printf '%-44s %10s %10s %12s\n' "scikit-learn 1.9.1 (read + one pass)" "$sk_med" "$sk_min" "1.00x"
printf '%-44s %10s %10s %11.1fx\n' "lmcompare metrics --bootstrap 0" "$b0_med" "$b0_min" "$(echo "$sk_med / $b0_med" | bc -l)"
printf '%-44s %10s %10s %11.1fx\n' "lmcompare metrics --bootstrap 1000 (all CIs)" "$b1_med" "$b1_min" "$(echo "$sk_med / $b1_med" | bc -l)"
