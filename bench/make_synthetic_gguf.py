"""A synthetic 1.1B-parameter Llama-shaped GGUF (TinyLlama's shape: hidden 2048, 22 layers,
FFN 5632, 32 query / 4 key-value heads, 32,000-token vocabulary) with random Q4_K_M-like
weights, for bench/synthetic_llama_1b.sh. Not committed (about 0.7 GB); written once.

    ~/.cache/lmcompare/venv-llamacpp/bin/python bench/make_synthetic_gguf.py OUT.gguf

The K-quant blocks are seeded random bytes with their fp16 super-block scales set small
(so the activations stay finite through 22 layers): Q4_K for attention and gate/up, Q6_K
for ffn_down and the output head, as llama.cpp's Q4_K_M mixes them; norms are F32 ones.
The tokenizer is a SentencePiece-style vocabulary of the 256 byte tokens plus synthetic
pieces, enough to tokenize any text by byte fallback.
"""
import sys

import numpy as np
import gguf
from gguf import GGMLQuantizationType as T

HIDDEN, LAYERS, FFN, HEADS, KV_HEADS, VOCAB = 2048, 22, 5632, 32, 4, 32000
HEAD_DIM = HIDDEN // HEADS
SCALES = {T.Q4_K: [0, 2], T.Q6_K: [208]}


def blocks(rng, qt, rows, cols):
    block, size = gguf.GGML_QUANT_SIZES[qt]
    n = rows * cols // block
    raw = rng.integers(0, 256, size=(n, size), dtype=np.uint8)
    for off in SCALES[qt]:
        d = rng.uniform(1e-5, 3e-5, size=n).astype(np.float16)
        raw[:, off:off + 2] = d.view(np.uint8).reshape(n, 2)
    return raw.reshape(rows, cols // block * size)


def main():
    out = sys.argv[1]
    rng = np.random.default_rng(0)
    w = gguf.GGUFWriter(out, "llama")
    w.add_context_length(2048)
    w.add_embedding_length(HIDDEN)
    w.add_block_count(LAYERS)
    w.add_feed_forward_length(FFN)
    w.add_head_count(HEADS)
    w.add_head_count_kv(KV_HEADS)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    types = [2, 3, 3] + [6] * 256
    pieces = ["▁" + "".join(chr(97 + (i // 26 ** k) % 26) for k in range(3)) + str(i)
              for i in range(VOCAB - len(tokens))]
    tokens += pieces
    types += [1] * len(pieces)
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores([0.0] * 259 + [-float(i) for i in range(len(pieces))])
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)

    def quant(name, qt, rows, cols):
        raw = blocks(rng, qt, rows, cols)
        w.add_tensor(name, raw, raw_shape=raw.shape, raw_dtype=qt)

    def ones(name, n):
        w.add_tensor(name, np.ones(n, dtype=np.float32))

    quant("token_embd.weight", T.Q4_K, VOCAB, HIDDEN)
    for i in range(LAYERS):
        p = f"blk.{i}."
        ones(p + "attn_norm.weight", HIDDEN)
        quant(p + "attn_q.weight", T.Q4_K, HIDDEN, HIDDEN)
        quant(p + "attn_k.weight", T.Q4_K, KV_HEADS * HEAD_DIM, HIDDEN)
        quant(p + "attn_v.weight", T.Q4_K, KV_HEADS * HEAD_DIM, HIDDEN)
        quant(p + "attn_output.weight", T.Q4_K, HIDDEN, HIDDEN)
        ones(p + "ffn_norm.weight", HIDDEN)
        quant(p + "ffn_gate.weight", T.Q4_K, FFN, HIDDEN)
        quant(p + "ffn_up.weight", T.Q4_K, FFN, HIDDEN)
        quant(p + "ffn_down.weight", T.Q6_K, HIDDEN, FFN)
    ones("output_norm.weight", HIDDEN)
    quant("output.weight", T.Q6_K, VOCAB, HIDDEN)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


if __name__ == "__main__":
    main()
