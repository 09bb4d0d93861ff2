"""Reference dequantisation for every GGUF tensor type lmcompare reads (issue: quantized
GGUF inference). Run (the venv of scripts/gen_model_fixtures.py, plus gguf 0.19.0):
    ~/.cache/lmcompare/venv-torch/bin/pip install gguf==0.19.0
    ~/.cache/lmcompare/venv-torch/bin/python scripts/gen_gguf_quant_fixtures.py

Writes tests/fixtures/gguf/quant_types.gguf, one 4 x 512 tensor per type, and
tests/fixtures/gguf/quant_types.f32: each tensor dequantised by the gguf package
(`gguf.quants.dequantize`, the llama.cpp project's own Python reference), float32
little-endian, concatenated in tensor order (tests/fixtures/gguf/quant_types.json lists
the order). F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1 and Q8_0 are quantised from seeded
normal data by the package's quantisers. The package cannot quantise the K-quants, so
Q2_K, Q3_K, Q4_K, Q5_K and Q6_K blocks are seeded random bytes (every bit pattern of the
quants and sub-block scales) with their f16 super-block scales set to finite values.
Also tests/fixtures/gguf/iq4_nl.gguf: one IQ4_NL tensor, a type lmcompare refuses by name.
"""
import json
import os

import numpy as np
import gguf
from gguf import GGMLQuantizationType as T, quants

ROOT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "gguf")
ROWS, COLS = 4, 512
# Offsets of the f16 super-block scales (d, dmin) within each K-quant block.
K_SCALES = {T.Q2_K: [80, 82], T.Q3_K: [108], T.Q4_K: [0, 2], T.Q5_K: [0, 2], T.Q6_K: [208]}


def main():
    rng = np.random.default_rng(0)
    os.makedirs(ROOT, exist_ok=True)
    w = gguf.GGUFWriter(os.path.join(ROOT, "quant_types.gguf"), "llama")
    refs, order = [], []
    for qt in [T.F32, T.F16, T.BF16, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0,
               T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K]:
        block, size = gguf.GGML_QUANT_SIZES[qt]
        if qt in K_SCALES:
            n_blocks = ROWS * COLS // block
            raw = rng.integers(0, 256, size=(n_blocks, size), dtype=np.uint8)
            for off in K_SCALES[qt]:
                d = (rng.uniform(-0.05, 0.05, size=n_blocks)).astype(np.float16)
                raw[:, off:off + 2] = d.view(np.uint8).reshape(n_blocks, 2)
            data = raw.reshape(ROWS, COLS // block * size)
        else:
            x = rng.normal(0, 1, size=(ROWS, COLS)).astype(np.float32)
            data = x if qt == T.F32 else quants.quantize(x, qt)
        name = f"t.{qt.name.lower()}"
        if qt in (T.F32, T.F16):
            w.add_tensor(name, data)
        else:
            raw = np.ascontiguousarray(data).view(np.uint8)
            w.add_tensor(name, raw, raw_shape=raw.shape, raw_dtype=qt)
        ref = quants.dequantize(data, qt).astype(np.float32).reshape(-1)
        assert ref.size == ROWS * COLS and np.isfinite(ref).all(), qt.name
        refs.append(ref)
        order.append({"name": name, "type": qt.name, "shape": [ROWS, COLS]})
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    np.concatenate(refs).astype("<f4").tofile(os.path.join(ROOT, "quant_types.f32"))
    with open(os.path.join(ROOT, "quant_types.json"), "w") as f:
        json.dump({"gguf": "0.19.0", "tensors": order}, f, indent=1)
        f.write("\n")
    # A type lmcompare does not read, for the refusal that names it.
    w = gguf.GGUFWriter(os.path.join(ROOT, "iq4_nl.gguf"), "llama")
    block, size = gguf.GGML_QUANT_SIZES[T.IQ4_NL]
    raw = rng.integers(0, 256, size=(2, COLS // block * size), dtype=np.uint8)
    w.add_tensor("blk.0.attn_q.weight", raw, raw_shape=raw.shape, raw_dtype=T.IQ4_NL)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print("wrote", ROOT)


if __name__ == "__main__":
    main()
