#!/usr/bin/env bash
# Local vs remote agreement against a real llama.cpp server (issue 6). Not part of CI:
# building llama-cpp-python from source takes ~25 minutes on 2 cores, its server spends
# ~10 s per echo request, and the F32 copy of Gemma it serves is 1.1 GB. Everything lands in
# the cache (LMCOMPARE_CACHE, default ~/.cache/lmcompare) and is reused.
#   bash scripts/check-llamacpp-server.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cache=${LMCOMPARE_CACHE:-$HOME/.cache/lmcompare}
venv="$cache/venv-llamacpp"
bash scripts/fetch-assets.sh
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import llama_cpp.server, gguf" 2>/dev/null; then
  python3 -m venv "$venv"
  CMAKE_BUILD_PARALLEL_LEVEL=2 "$venv/bin/pip" install 'llama-cpp-python[server]==0.3.36' 'gguf==0.19.0' numpy
fi
# The F32 copy of the Gemma GGUF (the same weights, dequantised) that the server loads.
"$venv/bin/python" scripts/gen_gemma_f32_reference.py
LMCOMPARE_LLAMACPP_PYTHON="$venv/bin/python" \
  cargo test --release -p lmcompare --test llamacpp_server -- --ignored --nocapture
