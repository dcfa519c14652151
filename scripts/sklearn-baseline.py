#!/usr/bin/env python3
"""fraudstream vs scikit-learn on identical splits of the Kaggle data.

For each seed: scikit-learn's own stratified 80/20 split (train_test_split, stratify=Class,
random_state=seed) is written to two CSV files; scikit-learn's RandomForestClassifier
(100 trees, n_jobs=2, random_state=seed) and `fraudstream train --split none --seed seed`
are trained on the same training file and scored on the same test file. Features: V1..V28
and Amount. Prints training wall seconds and AUPRC (average precision) for both.

Needs: pip install scikit-learn pandas; a release build (cargo build --release).
Usage: scripts/sklearn-baseline.py PATH/creditcard.csv [SEED ...]   (default seeds 42..46)
"""
import json
import os
import subprocess
import sys
import time

import pandas as pd
from sklearn.ensemble import RandomForestClassifier
from sklearn.metrics import average_precision_score
from sklearn.model_selection import train_test_split

data = sys.argv[1]
seeds = [int(s) for s in sys.argv[2:]] or [42, 43, 44, 45, 46]
root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
exe = os.path.join(root, "target", "release", "fraudstream")
work = os.path.join(root, ".cache", "sklearn-baseline")
os.makedirs(work, exist_ok=True)
feats = [f"V{i}" for i in range(1, 29)] + ["Amount"]
df = pd.read_csv(data)
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
