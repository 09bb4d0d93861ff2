"""Writes crates/tune/tests/fixtures/torch_optim.json: optimiser trajectories, learning-rate
schedules and two end-to-end head-training runs computed by PyTorch (float32, CPU), which
crates/tune/tests/torch_parity.rs replays.

Run:  ~/.cache/lmcompare/venv-torch/bin/python scripts/gen_tune_fixtures.py
      (torch; transformers is used for the two warm-up schedules when installed, otherwise
      its LambdaLR lambdas are reimplemented below, formula for formula)
Deterministic (seeded, one thread, deterministic algorithms): the same torch version
rewrites the file byte for byte. Floats are float32 values widened to Python floats, written
with repr (shortest round-trip), so parsing them as f64 and narrowing to f32 is exact.

Sections:
  optimizers  one 12-value float32 parameter, 25 steps of a real loss
              (sum(sin(p) * c) + 0.5 * |A p - b|^2); "grads" are p.grad after backward and
              before optimizer.step(), "params" are p after each step.
  schedules   lrs[i] = param_groups[0]["lr"] read before the i-th scheduler.step()
              (ReduceLROnPlateau steps on metrics[i]).
  training    Linear -> tanh -> Linear head on 40x6 inputs, explicit per-epoch orders;
              losses / grad_norms / lrs per optimiser step, final parameters.
"""
import json
import math
import os

import torch
from torch import nn

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "crates", "tune", "tests",
                   "fixtures", "torch_optim.json")

try:
    from transformers import get_cosine_schedule_with_warmup, get_linear_schedule_with_warmup
except Exception:  # transformers not installed: the same LambdaLR lambdas as its optimization.py
    from functools import partial

    def _linear_lambda(current_step, *, num_warmup_steps, num_training_steps):
        if current_step < num_warmup_steps:
            return float(current_step) / float(max(1, num_warmup_steps))
        return max(0.0, float(num_training_steps - current_step)
                   / float(max(1, num_training_steps - num_warmup_steps)))

    def _cosine_lambda(current_step, *, num_warmup_steps, num_training_steps, num_cycles):
        if current_step < num_warmup_steps:
            return float(current_step) / float(max(1, num_warmup_steps))
        progress = float(current_step - num_warmup_steps) / float(
            max(1, num_training_steps - num_warmup_steps))
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * float(num_cycles) * 2.0 * progress)))

    def get_linear_schedule_with_warmup(optimizer, num_warmup_steps, num_training_steps):
        return torch.optim.lr_scheduler.LambdaLR(optimizer, partial(
            _linear_lambda, num_warmup_steps=num_warmup_steps,
            num_training_steps=num_training_steps))

    def get_cosine_schedule_with_warmup(optimizer, num_warmup_steps, num_training_steps,
                                        num_cycles=0.5):
        return torch.optim.lr_scheduler.LambdaLR(optimizer, partial(
            _cosine_lambda, num_warmup_steps=num_warmup_steps,
            num_training_steps=num_training_steps, num_cycles=num_cycles))


def fl(t):
    """A float32 tensor as (nested) Python floats."""
    return [fl(r) for r in t] if t.dim() > 1 else [float(v) for v in t.detach()]


# ---------------------------------------------------------------------------- optimizers

OPT_STEPS = 25
OPTIMIZERS = [
    ("sgd_plain", "sgd",
     dict(lr=0.05, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False)),
    ("sgd_momentum", "sgd",
     dict(lr=0.05, momentum=0.9, dampening=0.0, weight_decay=0.0, nesterov=False)),
    ("sgd_momentum_dampening_wd", "sgd",
     dict(lr=0.05, momentum=0.9, dampening=0.1, weight_decay=0.01, nesterov=False)),
    ("sgd_nesterov_wd", "sgd",
     dict(lr=0.05, momentum=0.9, dampening=0.0, weight_decay=0.01, nesterov=True)),
    ("adam_default", "adam",
     dict(lr=0.01, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False)),
    ("adam_l2_wd", "adam",
     dict(lr=0.01, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1, amsgrad=False)),
    ("adam_amsgrad", "adam",
     dict(lr=0.01, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01, amsgrad=True)),
    ("adamw", "adamw",
     dict(lr=0.01, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01, amsgrad=False)),
    ("adamw_strong_decay", "adamw",
     dict(lr=0.05, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.3, amsgrad=False)),
    ("adamw_amsgrad", "adamw",
     dict(lr=0.01, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.05, amsgrad=True)),
]
OPT_CLASSES = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW}


def options_json(opts):
    o = dict(opts)
    if "betas" in o:
        o["betas"] = list(o["betas"])
    o["foreach"] = False
    return o


def optimizer_cases():
    torch.manual_seed(0)
    initial = torch.randn(12)
    c = torch.randn(12)
    a = torch.randn(8, 12) * 0.3
    b = torch.randn(8)
    cases = []
    for name, kind, opts in OPTIMIZERS:
        p = initial.clone().requires_grad_(True)
        opt = OPT_CLASSES[kind]([p], foreach=False, **opts)
        grads, params = [], []
        for _ in range(OPT_STEPS):
            opt.zero_grad(set_to_none=True)
            loss = (torch.sin(p) * c).sum() + 0.5 * ((a @ p - b) ** 2).sum()
            loss.backward()
            grads.append(fl(p.grad))
            opt.step()
            params.append(fl(p))
        cases.append({"name": name, "optimizer": kind, "options": options_json(opts),
                      "initial": fl(initial), "grads": grads, "params": params})
    return cases


# ----------------------------------------------------------------------------- schedules

BASE_LR = 0.1
PLATEAU_A_METRICS = [  # mode max, rel 1e-4, patience 2, cooldown 1: rises, then plateaus
    0.50, 0.61, 0.68,               # improvements
    0.68, 0.68005, 0.6799,          # repeat, gain below threshold, drop -> reduce at 5
    0.60,                           # cooldown: the bad epoch is ignored
    0.68, 0.68006, 0.675,           # three bad -> reduce at 9
    0.69,                           # improvement during cooldown
    0.69, 0.69006, 0.69,            # repeat, tiny gain, repeat -> reduce at 13
    0.689,                          # cooldown
    0.6902,                         # real gain (> 0.69 * 1.0001) resets the count
    0.6902, 0.69025, 0.6902,        # three bad -> reduce at 18, clamped to min_lr 0.01
    0.71,                           # cooldown
]
PLATEAU_B_METRICS = [  # mode min, abs 0.01: falls, then flat with repeats and tiny gains
    1.0, 0.8, 0.65, 0.55, 0.50, 0.495, 0.4801, 0.4801, 0.47, 0.4695,
    0.4695, 0.469, 0.45, 0.4499, 0.4499,
]
SCHEDULES = [
    ("step", "step", dict(step_size=3, gamma=0.5), 12, None),
    ("multistep", "multistep", dict(milestones=[2, 5, 9], gamma=0.1), 12, None),
    ("exponential", "exponential", dict(gamma=0.9), 12, None),
    ("cosine_t10", "cosine", dict(T_max=10, eta_min=0.0), 10, None),
    ("cosine_t7_eta_min", "cosine", dict(T_max=7, eta_min=0.001), 7, None),
    ("warmup_linear", "warmup_linear", dict(num_warmup_steps=4, num_training_steps=20), 20, None),
    ("warmup_cosine", "warmup_cosine",
     dict(num_warmup_steps=3, num_training_steps=17, num_cycles=0.5), 17, None),
    ("plateau_max_rel_cooldown", "plateau",
     dict(mode="max", factor=0.5, patience=2, threshold=1e-4, threshold_mode="rel", cooldown=1,
          min_lr=0.01, eps=1e-8), 20, PLATEAU_A_METRICS),
    ("plateau_min_abs", "plateau",
     dict(mode="min", factor=0.1, patience=0, threshold=0.01, threshold_mode="abs", cooldown=0,
          min_lr=0.0, eps=1e-8), 15, PLATEAU_B_METRICS),
]


def make_scheduler(kind, opt, o):
    S = torch.optim.lr_scheduler
    if kind == "step":
        return S.StepLR(opt, **o)
    if kind == "multistep":
        return S.MultiStepLR(opt, **o)
    if kind == "exponential":
        return S.ExponentialLR(opt, **o)
    if kind == "cosine":
        return S.CosineAnnealingLR(opt, **o)
    if kind == "warmup_linear":
        return get_linear_schedule_with_warmup(opt, o["num_warmup_steps"], o["num_training_steps"])
    if kind == "warmup_cosine":
        return get_cosine_schedule_with_warmup(opt, o["num_warmup_steps"], o["num_training_steps"],
                                               num_cycles=o["num_cycles"])
    if kind == "plateau":
        return S.ReduceLROnPlateau(opt, **o)
    raise ValueError(kind)


def schedule_cases():
    cases = []
    for name, kind, o, steps, metrics in SCHEDULES:
        assert metrics is None or len(metrics) == steps
        p = torch.zeros(1, requires_grad=True)
        opt = torch.optim.SGD([p], lr=BASE_LR)
        sched = make_scheduler(kind, opt, o)
        lrs = []
        for i in range(steps):
            lrs.append(float(opt.param_groups[0]["lr"]))
            opt.step()  # no grads: a no-op that keeps the step-order check quiet
            if metrics is None:
                sched.step()
            else:
                sched.step(metrics[i])
        case = {"name": name, "scheduler": kind, "options": o, "base_lr": BASE_LR,
                "steps": steps, "lrs": lrs}
        if metrics is not None:
            case["metrics"] = metrics
        cases.append(case)
    return cases


# ------------------------------------------------------------------------------ training

class Head(nn.Module):
    def __init__(self, d, classes):
        super().__init__()
        self.dense = nn.Linear(d, d)
        self.out = nn.Linear(d, classes)

    def forward(self, x):
        return self.out(torch.tanh(self.dense(x)))


def head_state(m):
    return {"dense_weight": fl(m.dense.weight), "dense_bias": fl(m.dense.bias),
            "out_weight": fl(m.out.weight), "out_bias": fl(m.out.bias)}


TRAININGS = [
    dict(name="head_adamw_steplr_clip", seed=1,
         optimizer=dict(name="adamw", lr=0.02, betas=[0.9, 0.999], eps=1e-8, weight_decay=0.01,
                        amsgrad=False, foreach=False),
         scheduler=dict(name="step", step_size=1, gamma=0.7), scheduler_unit="epoch",
         class_weights=[1.0, 2.0, 0.5], max_grad_norm=1.0),
    dict(name="head_sgd_nesterov_warmup_linear", seed=1,
         optimizer=dict(name="sgd", lr=0.1, momentum=0.9, dampening=0.0, weight_decay=0.001,
                        nesterov=True, foreach=False),
         scheduler=dict(name="warmup_linear", num_warmup_steps=2, num_training_steps=9),
         scheduler_unit="step", class_weights=None, max_grad_norm=None),
]
N, D, C, BATCH, EPOCHS = 40, 6, 3, 16, 3


def training_case(spec):
    # Same data, initial weights and orders for every case (the seed is per case, equal here).
    torch.manual_seed(spec["seed"])
    x = torch.randn(N, D)
    y = torch.randint(0, C, (N,))
    assert sorted(set(y.tolist())) == list(range(C)), "every class occurs"
    model = Head(D, C)
    model.train()
    initial = head_state(model)
    g = torch.Generator().manual_seed(1234 + spec["seed"])
    orders = [torch.randperm(N, generator=g) for _ in range(EPOCHS)]

    o = dict(spec["optimizer"])
    kind = o.pop("name")
    o.pop("foreach")
    params = [model.dense.weight, model.dense.bias, model.out.weight, model.out.bias]
    if kind == "adamw":
        o["betas"] = tuple(o["betas"])
        opt = torch.optim.AdamW(params, foreach=False, **o)
    else:
        opt = torch.optim.SGD(params, foreach=False, **o)
    s = dict(spec["scheduler"])
    sname = s.pop("name")
    sched = make_scheduler(sname, opt, s)
    cw = spec["class_weights"]
    loss_fn = nn.CrossEntropyLoss(weight=torch.tensor(cw) if cw is not None else None)

    losses, norms, lrs = [], [], []
    for order in orders:
        for start in range(0, N, BATCH):
            idx = order[start:start + BATCH]
            lrs.append(float(opt.param_groups[0]["lr"]))
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(x[idx]), y[idx])
            loss.backward()
            losses.append(loss.item())
            if spec["max_grad_norm"] is not None:
                norm = nn.utils.clip_grad_norm_(params, max_norm=spec["max_grad_norm"],
                                                foreach=False)
                norms.append(float(norm))
            else:
                norms.append(None)
            opt.step()
            if spec["scheduler_unit"] == "step":
                sched.step()
        if spec["scheduler_unit"] == "epoch":
            sched.step()

    return {"name": spec["name"], "x": fl(x), "y": y.tolist(), "batch_size": BATCH,
            "epochs": EPOCHS, "class_weights": cw, "max_grad_norm": spec["max_grad_norm"],
            "optimizer": spec["optimizer"], "scheduler": spec["scheduler"],
            "scheduler_unit": spec["scheduler_unit"], "initial": initial,
            "orders": [o.tolist() for o in orders], "losses": losses, "grad_norms": norms,
            "lrs": lrs, "final": head_state(model)}


# --------------------------------------------------------------------------------- output

def dump(v, indent=0):
    """JSON with one level of indentation per nesting, lists of scalars on one line."""
    pad = " " * indent
    if isinstance(v, dict):
        if not v:
            return "{}"
        items = [f'{pad} {json.dumps(k)}: {dump(x, indent + 1)}' for k, x in v.items()]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(v, (list, tuple)):
        if all(not isinstance(x, (list, tuple, dict)) for x in v):
            return "[" + ", ".join(json.dumps(x) for x in v) + "]"
        items = [pad + " " + dump(x, indent + 1) for x in v]
        return "[\n" + ",\n".join(items) + "\n" + pad + "]"
    if isinstance(v, float):
        assert math.isfinite(v), v
    return json.dumps(v)


def main():
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    torch.set_default_dtype(torch.float32)
    obj = {
        "generator": {"script": "scripts/gen_tune_fixtures.py", "torch": torch.__version__},
        "optimizers": optimizer_cases(),
        "schedules": schedule_cases(),
        "training": [training_case(s) for s in TRAININGS],
    }
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w", encoding="utf-8") as f:
        f.write(dump(obj) + "\n")
    print(f"wrote {os.path.normpath(OUT)}")


if __name__ == "__main__":
    main()
