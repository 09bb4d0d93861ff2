#!/usr/bin/env bash
# Times `lmcompare metrics` against scikit-learn on a 300,000-row, 10-class prediction file,
# both as whole processes in the same run, and checks that they agree.
#
#   bash bench/metrics_vs_sklearn.sh [ROWS] [RUNS]
#
# scikit-learn lives in a venv (LMCOMPARE_BENCH_VENV, default
# $LMCOMPARE_CACHE/venv-fixtures, LMCOMPARE_CACHE defaulting to ~/.cache/lmcompare), created
# the first time. The prediction file is generated once into $LMCOMPARE_CACHE/bench/.
# Python gets 2 OpenMP/BLAS threads; lmcompare uses all cores (RAYON_NUM_THREADS unset).
# Timing uses hyperfine when it is installed, else a loop over `date +%s.%N`; each command
# first runs once untimed (its output is kept for the cross-check, and a failure stops here).
# LMCOMPARE_BIN=path skips the cargo build and times that binary instead.
set -euo pipefail
cd "$(dirname "$0")/.."
rows=${1:-300000}
runs=${2:-5}
cache=${LMCOMPARE_CACHE:-$HOME/.cache/lmcompare}
venv=${LMCOMPARE_BENCH_VENV:-$cache/venv-fixtures}
die() { echo "metrics_vs_sklearn: $*" >&2; exit 1; }

mkdir -p "$cache/bench"
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import sklearn, numpy" 2>/dev/null; then
  echo "creating $venv (scikit-learn 1.9.1, numpy)" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q "scikit-learn==1.9.1" numpy || die "pip install into $venv failed"
fi
py="$venv/bin/python"
sk_version=$("$py" -c "import sklearn; print(sklearn.__version__)")

data="$cache/bench/predictions-$rows.jsonl"
if [ ! -s "$data" ]; then
  python3 bench/gen_bench_predictions.py "$data.tmp" "$rows" 10 && mv "$data.tmp" "$data" \
    || die "could not generate $data"
fi

if [ -n "${LMCOMPARE_BIN:-}" ]; then
  bin=$LMCOMPARE_BIN
else
  cargo build --release -q -p lmcompare || die "cargo build --release -p lmcompare failed"
  bin=target/release/lmcompare
fi
[ -x "$bin" ] || die "no executable at $bin"

unset RAYON_NUM_THREADS
sk_cmd=(env OMP_NUM_THREADS=2 OPENBLAS_NUM_THREADS=2 MKL_NUM_THREADS=2 "$py" bench/metrics_sklearn.py "$data")
b0_cmd=("$bin" metrics --pred "$data" --format json --bootstrap 0)
b1_cmd=("$bin" metrics --pred "$data" --format json --bootstrap 1000)

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# One untimed run: keeps the output, and stops with the command's stderr if it fails.
check_run() {
  local name=$1 out=$2; shift 2
  local rc=0
  "$@" > "$out" 2> "$tmp/$name.err" || rc=$?
  if [ "$rc" -ne 0 ]; then
    echo "metrics_vs_sklearn: '$*' failed (exit $rc); its stderr:" >&2
    sed 's/^/  /' "$tmp/$name.err" >&2
    exit 1
  fi
}

# Prints "median min" wall seconds of a command over $runs runs.
time_it() {
  local name=$1; shift
  if command -v hyperfine >/dev/null && [ -z "${LMCOMPARE_BENCH_NO_HYPERFINE:-}" ]; then
    local cmdline
    cmdline=$(printf '%q ' "$@")
    hyperfine --style none --runs "$runs" --export-json "$tmp/$name.hf.json" "$cmdline" \
      > "$tmp/$name.hf.log" 2>&1 || { cat "$tmp/$name.hf.log" >&2; die "hyperfine: '$*' failed"; }
    "$py" -c 'import json,sys; r=json.load(open(sys.argv[1]))["results"][0]; print("%.3f %.3f" % (r["median"], r["min"]))' \
      "$tmp/$name.hf.json"
  else
    local times=() t0 t1
    for _ in $(seq "$runs"); do
      t0=$(date +%s.%N)
      "$@" > /dev/null 2> "$tmp/$name.err" || { sed 's/^/  /' "$tmp/$name.err" >&2; die "'$*' failed"; }
      t1=$(date +%s.%N)
      times+=("$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.6f", b - a}')")
    done
    printf '%s\n' "${times[@]}" | sort -g | awk '{a[NR] = $1}
      END {m = (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2; printf "%.3f %.3f\n", m, a[1]}'
  fi
}

check_run sk "$tmp/sk.json" "${sk_cmd[@]}"
check_run b0 "$tmp/b0.json" "${b0_cmd[@]}"
check_run b1 "$tmp/b1.json" "${b1_cmd[@]}"

# Timings are command substitutions so that a failure inside stops the script (set -e).
sk_t=$(time_it sk "${sk_cmd[@]}")
b0_t=$(time_it b0 "${b0_cmd[@]}")
b1_t=$(time_it b1 "${b1_cmd[@]}")
read -r sk_med sk_min <<< "$sk_t"
read -r b0_med b0_min <<< "$b0_t"
read -r b1_med b1_min <<< "$b1_t"

agree=0
"$py" - "$tmp/sk.json" "$tmp/b0.json" <<'PY' || agree=1
import json, math, sys
sk = json.load(open(sys.argv[1]))
try:
    ours = json.load(open(sys.argv[2]))["models"][0]["metrics"]
except (ValueError, KeyError, IndexError, TypeError) as e:
    sys.exit(f"lmcompare --bootstrap 0 output has no .models[0].metrics: {e!r}")
bad = 0
for k in ["accuracy", "f1_macro", "log_loss", "f1_weighted", "mcc", "cohen_kappa", "brier",
          "average_precision_macro"]:
    a, b = sk.get(k), ours.get(k)
    ok = isinstance(a, float) and isinstance(b, (int, float)) and abs(a - b) <= 1e-9
    bad += not ok
    print(f"  {k:<24} scikit-learn {a!r:<22} lmcompare {b!r:<22} {'OK' if ok else 'MISMATCH'}")
print("agreement with scikit-learn (1e-9):", "OK" if not bad else f"MISMATCH ({bad} keys)")
sys.exit(1 if bad else 0)
PY

ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.1fx", a / b}'; }
echo
echo "rows=$rows, 10 classes, $runs runs each, $(nproc) cores, timing by $(command -v hyperfine >/dev/null && [ -z "${LMCOMPARE_BENCH_NO_HYPERFINE:-}" ] && echo hyperfine || echo 'date loop')"
printf '%-46s %10s %10s %12s\n' "command" "median s" "min s" "sklearn/this"
printf '%-46s %10s %10s %12s\n' "scikit-learn $sk_version (read + one pass)" "$sk_med" "$sk_min" "1.0x"
printf '%-46s %10s %10s %12s\n' "lmcompare metrics --bootstrap 0" "$b0_med" "$b0_min" "$(ratio "$sk_med" "$b0_med")"
printf '%-46s %10s %10s %12s\n' "lmcompare metrics --bootstrap 1000 (all CIs)" "$b1_med" "$b1_min" "$(ratio "$sk_med" "$b1_med")"
exit "$agree"
