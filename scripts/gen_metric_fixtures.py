"""Writes crates/metrics/tests/fixtures/sklearn_cases.json: reference values computed by
scikit-learn (and statsmodels, NumPy) that the Rust tests compare to 1e-9.

Run:  python3 -m venv ~/.cache/lmcompare/venv-fixtures
      ~/.cache/lmcompare/venv-fixtures/bin/pip install scikit-learn==1.9.1 numpy scipy statsmodels
      ~/.cache/lmcompare/venv-fixtures/bin/python scripts/gen_metric_fixtures.py
Deterministic (seeded): the same library versions rewrite the file byte for byte. Where
scikit-learn raises, the fixture records {"error": message}; NaN is the string "nan"; the
warnings scikit-learn emitted are under expected["warnings"][key].
"""
import json
import math
import os
import warnings

import numpy as np
import scipy
import sklearn
import statsmodels
from sklearn import metrics as M
from sklearn.preprocessing import label_binarize
from sklearn.utils.multiclass import unique_labels
from statsmodels.stats.contingency_tables import mcnemar as sm_mcnemar
from statsmodels.stats.multitest import multipletests

OUT = os.path.join(os.path.dirname(__file__), "..", "crates", "metrics", "tests", "fixtures",
                   "sklearn_cases.json")
ZD = {"0": 0.0, "1": 1.0, "nan": np.nan}


def num(x):
    x = float(x)
    return "nan" if math.isnan(x) else x


def ece(proba, y_true, labels, bins, strategy):
    proba = np.asarray(proba, dtype=float)
    conf = proba.max(1)
    pred = np.array(labels, dtype=object)[proba.argmax(1)]
    correct = (pred == np.array(y_true, dtype=object)).astype(float)
    n = len(conf)
    if strategy == "uniform":
        b = np.clip(np.ceil(conf * bins).astype(int) - 1, 0, bins - 1)
        groups = [np.where(b == i)[0] for i in range(bins)]
    else:
        order = np.argsort(conf, kind="stable")
        groups = np.array_split(order, bins)
    total = 0.0
    for g in groups:
        if len(g):
            total += len(g) / n * abs(correct[g].mean() - conf[g].mean())
    return total


def compute(case):
    y_true = case["y_true"]
    y_pred = case["y_pred"]
    labels = case["labels"]
    explicit = case["explicit_labels"]
    lab_arg = labels if explicit else None
    zd = ZD[case["zero_division"]]
    proba = np.array(case["proba"], dtype=float) if case["proba"] is not None else None
    pos = case["pos_label"]
    exp = {}
    warn = {}

    def put(key, fn):
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            try:
                exp[key] = fn()
            except Exception as e:  # scikit-learn refuses: record why
                exp[key] = {"error": str(e)}
        if w:
            warn[key] = sorted({str(x.message) for x in w})

    put("accuracy", lambda: num(M.accuracy_score(y_true, y_pred)))
    put("balanced_accuracy", lambda: num(M.balanced_accuracy_score(y_true, y_pred)))
    for avg in ["micro", "macro", "weighted"]:
        for i, name in enumerate(["precision", "recall", "f1"]):
            put(f"{name}_{avg}", lambda avg=avg, i=i: num(M.precision_recall_fscore_support(
                y_true, y_pred, labels=lab_arg, average=avg, zero_division=zd)[i]))
    if pos is not None:
        for i, name in enumerate(["precision", "recall", "f1"]):
            put(name, lambda i=i: num(M.precision_recall_fscore_support(
                y_true, y_pred, labels=lab_arg, average="binary", pos_label=pos,
                zero_division=zd)[i]))

    def per_class():
        p, r, f, s = M.precision_recall_fscore_support(
            y_true, y_pred, labels=labels, average=None, zero_division=zd)
        return {l: {"precision": num(p[j]), "recall": num(r[j]), "f1": num(f[j]),
                    "support": int(s[j])} for j, l in enumerate(labels)}
    put("per_class", per_class)
    put("confusion_matrix", lambda: M.confusion_matrix(y_true, y_pred, labels=labels).tolist())
    put("mcc", lambda: num(M.matthews_corrcoef(y_true, y_pred)))
    put("cohen_kappa", lambda: num(M.cohen_kappa_score(y_true, y_pred, labels=labels)))
    put("cohen_kappa_linear", lambda: num(M.cohen_kappa_score(y_true, y_pred, labels=labels,
                                                              weights="linear")))
    put("cohen_kappa_quadratic", lambda: num(M.cohen_kappa_score(y_true, y_pred, labels=labels,
                                                                 weights="quadratic")))
    if proba is not None:
        put("log_loss", lambda: num(M.log_loss(y_true, proba, labels=labels)))
        yt = np.array(y_true, dtype=object)
        if len(labels) == 2:
            p = pos if pos is not None else labels[1]
            j = labels.index(p)
            put("brier", lambda: num(M.brier_score_loss((yt == p).astype(int), proba[:, j])))
            put("roc_auc", lambda: num(M.roc_auc_score((yt == p).astype(int), proba[:, j])))
            put("average_precision", lambda: num(M.average_precision_score(
                (yt == p).astype(int), proba[:, j])))
        else:
            put("brier", lambda: num(M.brier_score_loss(y_true, proba, labels=labels)))
            for avg in ["macro", "weighted"]:
                put(f"roc_auc_ovr_{avg}", lambda avg=avg: num(M.roc_auc_score(
                    y_true, proba, multi_class="ovr", average=avg, labels=labels)))
                put(f"average_precision_{avg}", lambda avg=avg: num(M.average_precision_score(
                    label_binarize(y_true, classes=labels), proba, average=avg)))
                put(f"average_precision_{avg}_sklearn_direct",
                    lambda avg=avg: num(M.average_precision_score(y_true, proba, average=avg)))
        put("ece_uniform_15", lambda: num(ece(proba, y_true, labels, 15, "uniform")))
        put("ece_quantile_10", lambda: num(ece(proba, y_true, labels, 10, "quantile")))
    exp["warnings"] = warn
    return exp


def make(name, y_true, y_pred, proba=None, labels=None, pos_label=None, zero_division="0"):
    explicit = labels is not None
    if labels is None:
        labels = sorted(set(y_true) | set(y_pred))
        # scikit-learn's own order (NumPy sorts str by code point, as sorted() does).
        assert labels == [str(l) for l in unique_labels(y_true, y_pred)], (name, labels)
    case = {"name": name, "y_true": list(y_true), "y_pred": list(y_pred), "labels": list(labels),
            "explicit_labels": explicit,
            "proba": None if proba is None else [[float(v) for v in row] for row in proba],
            "pos_label": pos_label, "zero_division": zero_division}
    case["expected"] = compute(case)
    return case


def softmaxish(rng, gold_idx, k, skill, decimals=None):
    logits = rng.normal(size=(len(gold_idx), k))
    logits[np.arange(len(gold_idx)), gold_idx] += skill
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    if decimals is not None:
        p = np.round(p, decimals)
    return p


def classifier(rng, labels, n, skill, decimals=None, prior=None):
    k = len(labels)
    gold = rng.choice(k, size=n, p=prior)
    proba = softmaxish(rng, gold, k, skill, decimals)
    pred = proba.argmax(1)
    return ([labels[g] for g in gold], [labels[p] for p in pred], proba)


def cases():
    rng = np.random.default_rng(20261128)
    out = []
    yt, yp, pr = classifier(rng, ["fresh", "rotten"], 200, 1.2)
    out.append(make("binary_strings_pos_label", yt, yp, pr, pos_label="fresh"))
    out.append(make("binary_default_positive", yt, yp, pr))
    yt, yp, pr = classifier(rng, ["neg", "pos"], 120, 1.0, decimals=1)
    out.append(make("binary_probability_ties", yt, yp, pr, pos_label="pos"))
    for i, k in enumerate([3, 4, 5]):
        labels = [f"class_{j}" for j in range(k)]
        yt, yp, pr = classifier(rng, labels, 300, 1.0 + 0.3 * i)
        out.append(make(f"multiclass_{k}", yt, yp, pr))
    yt, yp, pr = classifier(rng, ["a", "b", "c", "d"], 300, 0.8, decimals=2)
    out.append(make("multiclass_probability_ties", yt, yp, pr))
    # A class never predicted.
    yt = ["a", "b", "c", "a", "b", "c", "a", "c"]
    yp = ["a", "b", "a", "a", "b", "b", "a", "b"]
    pr = [[.6, .3, .1], [.2, .7, .1], [.5, .2, .3], [.8, .1, .1], [.3, .6, .1], [.2, .5, .3],
          [.7, .2, .1], [.3, .4, .3]]
    out.append(make("class_never_predicted", yt, yp, pr))
    for zd in ["0", "1", "nan"]:
        out.append(make(f"class_never_predicted_zero_division_{zd}", yt, yp, pr, zero_division=zd))
    # A class only predicted, never gold.
    yt = ["a", "b", "a", "b", "a", "b"]
    yp = ["a", "c", "a", "b", "c", "b"]
    pr = [[.7, .2, .1], [.2, .3, .5], [.6, .3, .1], [.1, .8, .1], [.3, .2, .5], [.2, .7, .1]]
    out.append(make("class_only_predicted", yt, yp, pr))
    for zd in ["1", "nan"]:
        out.append(make(f"class_only_predicted_zero_division_{zd}", yt, yp, pr, zero_division=zd))
    # Explicit labels listing a label absent from the data.
    yt = ["x", "y", "x", "y", "x"]
    yp = ["x", "y", "y", "y", "x"]
    pr = [[.8, .1, .1], [.1, .8, .1], [.4, .5, .1], [.2, .7, .1], [.6, .3, .1]]
    out.append(make("explicit_label_absent", yt, yp, pr, labels=["x", "y", "z"]))
    out.append(make("explicit_label_absent_zero_division_nan", yt, yp, pr, labels=["x", "y", "z"],
                    zero_division="nan"))
    out.append(make("explicit_labels_reordered", yt, yp, None, labels=["y", "x"]))
    # Explicit labels that are a subset of the labels present.
    yt = ["a", "b", "c", "a", "b", "c", "a"]
    yp = ["a", "c", "c", "b", "b", "a", "a"]
    out.append(make("explicit_labels_subset", yt, yp, None, labels=["a", "b"]))
    # A single class.
    out.append(make("single_class_all_same", ["s"] * 6, ["s"] * 6, [[1.0]] * 6))
    out.append(make("single_gold_class", ["s"] * 6, ["s", "t", "s", "s", "t", "s"],
                    [[.9, .1], [.4, .6], [.8, .2], [.7, .3], [.2, .8], [.6, .4]]))
    out.append(make("all_predicted_same", ["a", "b", "a", "c", "b"], ["a"] * 5))
    # Perfect and all-wrong predictors.
    yt, _, pr = classifier(rng, ["p", "q", "r"], 60, 2.0)
    out.append(make("perfect", yt, yt, None))
    wrong = [{"p": "q", "q": "r", "r": "p"}[y] for y in yt]
    out.append(make("all_wrong", yt, wrong, None))
    # Non-ASCII labels.
    labels = ["positivo", "négatif", "중립", "😀"]
    yt, yp, pr = classifier(rng, labels, 150, 1.1)
    out.append(make("non_ascii_labels", yt, yp, pr))
    # Rows that do not sum to 1, and exact 0/1 probabilities (clipping).
    yt = ["a", "b", "c", "a", "b", "c"]
    yp = ["a", "b", "a", "a", "c", "c"]
    pr = [[.9, .2, .1], [.1, .6, .1], [.5, .2, .2], [.7, .1, .1], [.1, .3, .5], [.1, .1, .9]]
    out.append(make("rows_not_summing_to_one", yt, yp, pr))
    pr01 = [[1, 0, 0], [0, 1, 0], [1, 0, 0], [1, 0, 0], [0, 0, 1], [0, 0, 1]]
    out.append(make("probabilities_zero_and_one", yt, yp, pr01))
    # Argmax ties in probabilities (ECE breaks to the first label).
    pr_tie = [[.4, .4, .2], [.3, .3, .4], [.5, .5, 0], [.2, .4, .4], [1 / 3, 1 / 3, 1 / 3],
              [.1, .45, .45]]
    out.append(make("argmax_ties", yt, ["a", "c", "a", "b", "a", "b"], pr_tie))
    # MCC denominator 0 (all predictions one class) and kappa undefined.
    out.append(make("mcc_denominator_zero", ["a", "b", "a", "b"], ["a", "a", "a", "a"]))
    out.append(make("kappa_undefined", ["a", "a", "a"], ["a", "a", "a"]))
    # ROC-AUC with one gold class (binary).
    out.append(make("roc_auc_one_gold_class", ["y"] * 5, ["y", "n", "y", "y", "n"],
                    [[.3, .7], [.6, .4], [.2, .8], [.1, .9], [.7, .3]], pos_label="y"))
    # Multi-class with a class absent from gold (OvR AUC undefined in scikit-learn).
    out.append(make("ovr_auc_class_absent_from_gold", ["a", "b", "a", "b"], ["a", "b", "c", "b"],
                    [[.6, .3, .1], [.2, .7, .1], [.3, .2, .5], [.1, .8, .1]]))
    # Weighted averages where every selected label has zero support.
    out.append(make("weighted_zero_support", ["a", "a"], ["b", "b"], None, labels=["b", "c"]))
    # Added later, with their own generator so the cases above stay byte-identical.
    rng2 = np.random.default_rng(20261129)
    # Ties in multi-class scores whose rows still sum to 1 (so one-vs-rest ROC-AUC is defined):
    # probabilities on a grid of 1/20.
    labels = ["a", "b", "c", "d"]
    gold = rng2.choice(4, size=300)
    counts = np.array([rng2.multinomial(20, np.where(np.arange(4) == g, 0.4, 0.2)) for g in gold])
    pr = counts / 20.0
    out.append(make("multiclass_probability_ties_summing_to_one", [labels[g] for g in gold],
                    [labels[j] for j in pr.argmax(1)], pr))
    # Probabilities printed with 6 significant digits (as model outputs usually are): rows are
    # off 1 by ~1e-6, inside scikit-learn's allclose tolerance, so ROC-AUC is still defined.
    labels = [f"c{j}" for j in range(5)]
    gold = rng2.choice(5, size=250)
    pr = softmaxish(rng2, gold, 5, 1.3)
    pr = np.array([[float("%.6g" % v) for v in row] for row in pr])
    out.append(make("multiclass_six_significant_digits", [labels[g] for g in gold],
                    [labels[j] for j in pr.argmax(1)], pr))
    return out


def mcnemar_cases():
    rng = np.random.default_rng(7)
    out = []
    specs = [("identical", 0, 0), ("tiny", 1, 3), ("small_b_gt_c", 9, 2), ("edge_24", 15, 9),
             ("edge_25", 15, 10), ("large", 60, 35), ("lopsided", 80, 1), ("balanced", 40, 40)]
    for name, b, c in specs:
        both = int(rng.integers(5, 50))
        neither = int(rng.integers(0, 20))
        a_correct = [True] * both + [True] * b + [False] * c + [False] * neither
        b_correct = [True] * both + [False] * b + [True] * c + [False] * neither
        table = [[both, b], [c, neither]]
        # b = c = 0: statsmodels divides (|b - c| - 1)^2 by 0 and reports p = 0.0 for the
        # chi-square version (the exact one gives 1.0).
        with np.errstate(divide="ignore", invalid="ignore"):
            chi2_p = float(sm_mcnemar(table, exact=False, correction=True).pvalue)
        out.append({"name": name, "a_correct": a_correct, "b_correct": b_correct, "b": b, "c": c,
                    "exact_p": float(sm_mcnemar(table, exact=True).pvalue),
                    "chi2_corrected_p": chi2_p})
    return out


def multipletest_cases():
    sets = [[0.01, 0.04, 0.03, 0.5], [0.2, 0.2, 0.01, 0.01, 0.9], [1.0, 0.001],
            [0.04], [0.03, 0.01, 0.02, 0.04, 0.05, 0.2, 0.5, 1.0], [0.5, 0.5, 0.5]]
    return [{"pvals": p, "holm": [float(x) for x in multipletests(p, method="holm")[1]],
             "bh": [float(x) for x in multipletests(p, method="fdr_bh")[1]]} for p in sets]


def quantile_cases():
    rng = np.random.default_rng(3)
    arrays = [[0.5], [0.2, 0.9], [1.0, 2.0, 3.0, 4.0], [3.0, 1.0, 2.0, 5.0, 4.0],
              [0.7, 0.7, 0.7, 0.1, 0.9, 0.9], rng.normal(size=101).tolist(),
              rng.uniform(size=1000).tolist()]
    q = [0.025, 0.975, 0.5, 0.05, 0.95]
    return [{"values": [float(v) for v in a], "q": q,
             "numpy": [float(v) for v in np.quantile(np.array(a), q)]} for a in arrays]


def main():
    doc = {"generator": "scripts/gen_metric_fixtures.py", "sklearn_version": sklearn.__version__,
           "numpy_version": np.__version__, "scipy_version": scipy.__version__,
           "statsmodels_version": statsmodels.__version__, "cases": cases(),
           "mcnemar": mcnemar_cases(), "multipletests": multipletest_cases(),
           "bootstrap_quantiles": quantile_cases()}
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w", encoding="utf-8") as f:
        json.dump(doc, f, ensure_ascii=False, indent=1, allow_nan=False)
        f.write("\n")
    # Reload strictly (no NaN/Infinity tokens) and check it round-trips.
    with open(OUT, encoding="utf-8") as f:
        back = json.load(f, parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))
    assert back == doc
    print(f"wrote {os.path.normpath(OUT)}: {len(doc['cases'])} cases, {len(doc['mcnemar'])} "
          f"McNemar, {len(doc['multipletests'])} multipletests, "
          f"{len(doc['bootstrap_quantiles'])} quantile sets (scikit-learn {sklearn.__version__}, "
          f"NumPy {np.__version__}, statsmodels {statsmodels.__version__})")
    for c in doc["cases"]:
        bad = [k for k, v in c["expected"].items() if isinstance(v, dict) and "error" in v]
        nan = [k for k, v in c["expected"].items() if v == "nan"]
        if bad or nan:
            print(f"{c['name']}: errors={bad} nan={nan}")


if __name__ == "__main__":
    main()
