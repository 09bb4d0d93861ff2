# Sourced by the PyTorch benchmarks (from the repository root): sets $cache and $venv
# (LMCOMPARE_TORCH_VENV, else the cache's venv-torch), and `torch_venv [PACKAGE ...]`
# installs torch, transformers, safetensors and the extra packages there when any is missing.
cache=${LMCOMPARE_CACHE:-$HOME/.cache/lmcompare}
venv=${LMCOMPARE_TORCH_VENV:-$cache/venv-torch}
torch_venv() {
  local imports="torch, transformers"
  for p in "$@"; do imports="$imports, $p"; done
  if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import $imports" 2>/dev/null; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q torch transformers safetensors "$@"
  fi
}
