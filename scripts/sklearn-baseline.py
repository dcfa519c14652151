#!/usr/bin/env python3
"""fraudstream vs scikit-learn on identical splits of the Kaggle data.

For each seed: scikit-learn's own stratified 80/20 split (train_test_split, stratify=Class,
random_state=seed) is written to two CSV files; scikit-learn's RandomForestClassifier
(100 trees, n_jobs=2, random_state=seed) and `fraudstream train --split none --seed seed`
are trained on the same training file and scored on the same test file. Features: V1..V28
and Amount. Prints training wall seconds and AUPRC (average precision) for both.

With `--folds time:K`: expanding-window time-series cross-validation instead, on the
folds `fraudstream evaluate --folds time:K` uses (rows ordered by Time, ties in file
order, cut into K+1 consecutive parts; fold i trains on the parts before part i and
tests on part i). fraudstream runs that command itself, with default settings; the
script checks that each fold has the same test rows and frauds on both sides, then
prints each fold's AUPRC and the means. scikit-learn uses random_state=42.

Needs: pip install scikit-learn pandas; a release build (cargo build --release).
Usage: scripts/sklearn-baseline.py PATH/creditcard.csv [SEED ...]   (default seeds 42..46)
       scripts/sklearn-baseline.py PATH/creditcard.csv --folds time:K
"""
import json
import os
import subprocess
import sys
import time

import numpy as np
import pandas as pd
from sklearn.ensemble import RandomForestClassifier
from sklearn.metrics import average_precision_score
from sklearn.model_selection import train_test_split

data = sys.argv[1]
args = sys.argv[2:]
root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
exe = os.path.join(root, "target", "release", "fraudstream")
work = os.path.join(root, ".cache", "sklearn-baseline")
os.makedirs(work, exist_ok=True)
feats = [f"V{i}" for i in range(1, 29)] + ["Amount"]
df = pd.read_csv(data)


def time_folds(k):
    """The folds of fraudstream's `eval::time_folds`: (train, test) row positions."""
    order = np.argsort(df["Time"].to_numpy(), kind="stable")
    part = len(order) // (k + 1)
    first = len(order) - k * part
    return [(order[:first + i * part], order[first + i * part:first + (i + 1) * part])
            for i in range(k)]


if args[:1] == ["--folds"]:
    if len(args) != 2 or not args[1].startswith("time:"):
        sys.exit("usage: sklearn-baseline.py CSV --folds time:K")
    k = int(args[1].split(":", 1)[1])
    t = time.time()
    out = subprocess.run([exe, "evaluate", "-i", data, "--folds", f"time:{k}", "--json"],
                         check=True, capture_output=True, text=True)
    fs = json.loads(out.stdout)
    fs_secs = time.time() - t
    sk_aps = []
    t = time.time()
    for i, (tr, te) in enumerate(time_folds(k)):
        tr, te = df.iloc[tr], df.iloc[te]
        f = fs["folds"][i]
        if (f["test_rows"], f["test_frauds"], f["train_rows"]) != (
                len(te), int(te["Class"].sum()), len(tr)):
            sys.exit(f"fold {i + 1}: fraudstream's fold differs from this script's")
        rf = RandomForestClassifier(n_estimators=100, n_jobs=2, random_state=42)
        rf.fit(tr[feats], tr["Class"])
        sk_aps.append(average_precision_score(te["Class"], rf.predict_proba(te[feats])[:, 1]))
        print(f"fold {i + 1}: train {len(tr)} rows, test {len(te)} rows "
              f"({f['test_frauds']} frauds): scikit-learn AUPRC {sk_aps[-1]:.4f} | "
              f"fraudstream AUPRC {f['auprc']:.4f}", flush=True)
    sk_secs = time.time() - t
    sk_mean = sum(sk_aps) / k
    fs_mean = fs["auprc"]["mean"]
    print(f"mean over {k} folds: scikit-learn AUPRC {sk_mean:.4f} ({sk_secs:.0f} s) | "
          f"fraudstream AUPRC {fs_mean:.4f} ({fs_secs:.0f} s) | "
          f"difference {fs_mean - sk_mean:+.4f}")
    sys.exit(0)

seeds = [int(s) for s in args] or [42, 43, 44, 45, 46]
rows = []
for seed in seeds:
    tr, te = train_test_split(df, test_size=0.2, stratify=df["Class"], random_state=seed)
    trp, tep = f"{work}/train_{seed}.csv", f"{work}/test_{seed}.csv"
    tr.to_csv(trp, index=False)
    te.to_csv(tep, index=False)
    t = time.time()
    rf = RandomForestClassifier(n_estimators=100, n_jobs=2, random_state=seed)
    rf.fit(tr[feats], tr["Class"])
    sk_secs = time.time() - t
    sk_ap = average_precision_score(te["Class"], rf.predict_proba(te[feats])[:, 1])
    model = f"{work}/model_{seed}.fsm"
    t = time.time()
    out = subprocess.run(
        [exe, "train", "-i", trp, "-o", model, "--split", "none", "--seed", str(seed), "--json"],
        check=True, capture_output=True, text=True)
    fs_secs = json.loads(out.stdout)["train_seconds"]
    out = subprocess.run([exe, "evaluate", "-m", model, "-i", tep, "--json"],
                         check=True, capture_output=True, text=True)
    fs_ap = json.loads(out.stdout)["auprc"]
    rows.append((seed, sk_secs, sk_ap, fs_secs, fs_ap))
    print(f"seed {seed}: scikit-learn {sk_secs:6.1f} s AUPRC {sk_ap:.4f} | "
          f"fraudstream {fs_secs:5.2f} s AUPRC {fs_ap:.4f}", flush=True)
n = len(rows)
print(f"mean: scikit-learn {sum(r[1] for r in rows)/n:6.1f} s AUPRC {sum(r[2] for r in rows)/n:.4f} | "
      f"fraudstream {sum(r[3] for r in rows)/n:5.2f} s AUPRC {sum(r[4] for r in rows)/n:.4f}")
