"""Synthetic cached embeddings for bench/train_vs_pytorch.sh.

usage: make_train_bench_data.py N DIM CLASSES OUT_PREFIX
Writes OUT_PREFIX.emb.f32 (N x DIM little-endian float32, row-major) and
OUT_PREFIX.labels.u32 (N little-endian uint32). Seeded, so the same arguments give the same
bytes. Each class has its own random mean (any two about 1.5 apart) plus unit Gaussian
noise in every dimension: learnable, but not trivially separable.
"""
import sys

import numpy as np


def main():
    if len(sys.argv) != 5:
        sys.exit("usage: make_train_bench_data.py N DIM CLASSES OUT_PREFIX")
    n, dim, classes, prefix = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    rng = np.random.default_rng(20240611)
    means = rng.standard_normal((classes, dim)) * (1.5 / np.sqrt(2 * dim))
    labels = rng.integers(0, classes, size=n).astype("<u4")
    emb = (means[labels] + rng.standard_normal((n, dim))).astype("<f4")
    emb.tofile(prefix + ".emb.f32")
    labels.tofile(prefix + ".labels.u32")


if __name__ == "__main__":
    main()
