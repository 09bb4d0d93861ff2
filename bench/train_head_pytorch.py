"""PyTorch side of bench/train_vs_pytorch.sh: train a BERT-shaped classification head on cached
embeddings, the loop lmcompare's `train_head_bench` example runs.

usage: train_head_pytorch.py EMB_FILE LABEL_FILE --dim 384 --classes 5 --epochs 20
                             --batch-size 32 --threads 2 --repeats 3
EMB_FILE: raw little-endian float32, N x dim; LABEL_FILE: raw little-endian uint32, N.
Head: Linear(dim, dim) -> tanh -> Dropout(0.1) -> Linear(dim, classes) (BERT's pooler dense +
classifier), AdamW(lr 1e-3, weight decay 0.01 on every tensor), CrossEntropyLoss, a fresh
torch.randperm shuffle every epoch, model.train(). Each repeat builds a fresh model and
optimiser (seed = repeat index) and times only the training loop with time.perf_counter.
Prints one JSON line; final_loss is the last epoch's example-weighted mean training loss.
"""
import argparse
import json
import statistics
import time

import numpy as np
import torch
from torch import nn


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("emb")
    ap.add_argument("labels")
    ap.add_argument("--dim", type=int, required=True)
    ap.add_argument("--classes", type=int, required=True)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)

    x = torch.from_numpy(np.fromfile(a.emb, dtype="<f4").astype(np.float32).reshape(-1, a.dim))
    y = torch.from_numpy(np.fromfile(a.labels, dtype="<u4").astype(np.int64))
    n = y.shape[0]
    if x.shape[0] != n:
        raise SystemExit(f"{x.shape[0]} embeddings but {n} labels")
    if n == 0 or int(y.max()) >= a.classes:
        raise SystemExit("labels must be in [0, classes) and non-empty")

    seconds, final_loss = [], float("nan")
    for r in range(a.repeats):
        torch.manual_seed(r)
        model = nn.Sequential(nn.Linear(a.dim, a.dim), nn.Tanh(), nn.Dropout(0.1),
                              nn.Linear(a.dim, a.classes))
        model.train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
        loss_fn = nn.CrossEntropyLoss()
        start = time.perf_counter()
        for _ in range(a.epochs):
            perm = torch.randperm(n)
            total = 0.0
            for s in range(0, n, a.batch_size):
                idx = perm[s:s + a.batch_size]
                loss = loss_fn(model(x[idx]), y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += loss.item() * idx.shape[0]
            final_loss = total / n
        seconds.append(time.perf_counter() - start)

    print(json.dumps({"peer": "pytorch", "torch": torch.__version__, "threads": a.threads,
                      "seconds": seconds, "median_seconds": statistics.median(seconds),
                      "final_loss": final_loss}))


if __name__ == "__main__":
    main()
