"""The peer of `lmcompare metrics --bootstrap 0`: read a JSONL prediction file the way a
practitioner would and compute the same metrics with scikit-learn in one pass.

usage: metrics_sklearn.py FILE   (prints the values as JSON)
"""
import json
import sys
import warnings

import numpy as np
from sklearn import metrics as M
from sklearn.preprocessing import label_binarize


def main():
    y_true, y_pred, rows = [], [], []
    labels = None
    with open(sys.argv[1], encoding="utf-8") as f:
        for line in f:
            o = json.loads(line)
            y_true.append(o["label"])
            y_pred.append(o["prediction"])
            p = o["probabilities"]
            if labels is None:
                labels = sorted(p)
            rows.append([p.get(l, 0.0) for l in labels])
    proba = np.array(rows)
    warnings.simplefilter("ignore")
    r = {"accuracy": M.accuracy_score(y_true, y_pred),
         "balanced_accuracy": M.balanced_accuracy_score(y_true, y_pred)}
    for avg in ["micro", "macro", "weighted"]:
        p, rc, f1, _ = M.precision_recall_fscore_support(y_true, y_pred, average=avg,
                                                         zero_division=0)
        r[f"precision_{avg}"], r[f"recall_{avg}"], r[f"f1_{avg}"] = p, rc, f1
    M.precision_recall_fscore_support(y_true, y_pred, average=None, zero_division=0)
    M.confusion_matrix(y_true, y_pred)
    r["mcc"] = M.matthews_corrcoef(y_true, y_pred)
    r["cohen_kappa"] = M.cohen_kappa_score(y_true, y_pred)
    r["log_loss"] = M.log_loss(y_true, proba, labels=labels)
    r["brier"] = M.brier_score_loss(y_true, proba, labels=labels)
    # Probabilities are used as given, as lmcompare does. One-vs-rest ROC-AUC needs every row
    # to sum to 1 within np.allclose (6-digit rounding of 10 classes stays well inside); where
    # scikit-learn refuses, the value is null, as lmcompare reports it.
    for avg in ["macro", "weighted"]:
        try:
            r[f"roc_auc_ovr_{avg}"] = M.roc_auc_score(y_true, proba, multi_class="ovr",
                                                      average=avg, labels=labels)
        except ValueError:
            r[f"roc_auc_ovr_{avg}"] = None
        r[f"average_precision_{avg}"] = M.average_precision_score(
            label_binarize(y_true, classes=labels), proba, average=avg)
    print(json.dumps({k: None if v is None else float(v) for k, v in r.items()}))


if __name__ == "__main__":
    main()
