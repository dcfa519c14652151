#!/usr/bin/env python3
"""The handbook's own pipeline, as a peer for `fraudstream backtest`, on the same file.

Le Borgne et al., "Reproducible Machine Learning for Credit Card Fraud Detection":
features with pandas rolling windows (chapter 3.3: per customer, count and mean amount
over 1, 7 and 30 days; per terminal, count and risk over the 1, 7 and 30 days that end
7 days back; weekend and night flags), the delayed-label protocol (chapter 3.4: train
7 days from 2018-07-25, skip 7, test 7, known-compromised cards left out), a
scikit-learn RandomForestClassifier (100 trees, otherwise its defaults), and the
metrics (average precision, ROC-AUC, card precision@100 as in chapter 4.3). Written from
the published description.

Needs: pip install scikit-learn pandas.
Usage: scripts/handbook-baseline.py SIMULATED.csv [--seed N]   (from `loadgen --simulate --out`)
Prints one JSON object.
"""
import argparse
import json
import time

import numpy as np
import pandas as pd
from sklearn.ensemble import RandomForestClassifier
from sklearn.metrics import average_precision_score, roc_auc_score

ap = argparse.ArgumentParser()
ap.add_argument("input")
ap.add_argument("--seed", type=int, default=0)
ap.add_argument("--train-start", default="2018-07-25")
args = ap.parse_args()

t0 = time.time()
df = pd.read_csv(args.input, usecols=["id", "Time", "Amount", "Class", "card_id", "terminal_id"])
df["TX_DATETIME"] = pd.to_datetime(df["Time"], unit="s")
df = df.sort_values(["TX_DATETIME", "id"]).reset_index(drop=True)
df["TX_TIME_DAYS"] = (df["Time"] // 86400).astype(int)
df["TX_DURING_WEEKEND"] = (df["TX_DATETIME"].dt.weekday >= 5).astype(int)
df["TX_DURING_NIGHT"] = (df["TX_DATETIME"].dt.hour <= 6).astype(int)



def rolling(frame, key, column, days):
    """Per `key`, the time-based rolling window of `days` days ending at each row (the
    row included), in `frame`'s row order (sorted by key, then time)."""
    r = frame.set_index("TX_DATETIME").groupby(key, sort=True)[column].rolling(f"{days}d")
    return r.sum().to_numpy(), r.count().to_numpy()


df = df.sort_values(["card_id", "TX_DATETIME", "id"]).reset_index(drop=True)
for w in (1, 7, 30):
    total, count = rolling(df, "card_id", "Amount", w)
    df[f"card_count_{w}d"] = count
    df[f"card_mean_amount_{w}d"] = total / count
df = df.sort_values(["terminal_id", "TX_DATETIME", "id"]).reset_index(drop=True)
frauds_delay, count_delay = rolling(df, "terminal_id", "Class", 7)
for w in (1, 7, 30):
    frauds, count = rolling(df, "terminal_id", "Class", 7 + w)
    frauds, count = frauds - frauds_delay, count - count_delay
    df[f"terminal_count_{w}d"] = count
    df[f"terminal_risk_{w}d"] = np.where(count > 0, frauds / np.maximum(count, 1), 0.0)
df = df.sort_values(["TX_DATETIME", "id"]).reset_index(drop=True)
feature_seconds = time.time() - t0

start = int(pd.Timestamp(args.train_start).timestamp() // 86400)
train = df[(df.TX_TIME_DAYS >= start) & (df.TX_TIME_DAYS < start + 7)]
known = set(train[train.Class == 1].card_id)
tests = []
for day in range(7):
    newly = df[(df.TX_TIME_DAYS == start + 7 + day - 1) & (df.Class == 1)]
    known |= set(newly.card_id)
    t = df[df.TX_TIME_DAYS == start + 14 + day]
    tests.append(t[~t.card_id.isin(known)])
test = pd.concat(tests)

raw = ["Amount", "TX_DURING_WEEKEND", "TX_DURING_NIGHT"]
entity = raw + [c for c in df.columns if c.startswith(("card_", "terminal_")) and c not in ("card_id", "terminal_id")]


def card_precision_at_k(frame, scores, k=100):
    frame = frame.assign(score=scores)
    detected, per_day = set(), []
    for day in sorted(frame.TX_TIME_DAYS.unique()):
        d = frame[(frame.TX_TIME_DAYS == day) & ~frame.card_id.isin(detected)]
        cards = d.groupby("card_id").agg(score=("score", "max"), fraud=("Class", "max"))
        top = cards.sort_values("score", ascending=False).head(k)
        per_day.append(top.fraud.sum() / k)
        detected |= set(top[top.fraud == 1].index)
    return float(np.mean(per_day))


results = []
for name, cols in (("transaction features", raw), ("with entity features", entity)):
    t = time.time()
    rf = RandomForestClassifier(n_estimators=100, n_jobs=2, random_state=args.seed)
    rf.fit(train[cols], train.Class)
    seconds = time.time() - t
    s = rf.predict_proba(test[cols])[:, 1]
    results.append({
        "features": name,
        "columns": cols,
        "average_precision": average_precision_score(test.Class, s),
        "roc_auc": roc_auc_score(test.Class, s),
        "card_precision_at_100": card_precision_at_k(test, s),
        "train_seconds": seconds,
    })
print(json.dumps({
    "input": args.input,
    "peer": "pandas rolling windows + scikit-learn RandomForestClassifier(100)",
    "feature_seconds": feature_seconds,
    "train_rows": len(train),
    "train_frauds": int(train.Class.sum()),
    "test_rows": len(test),
    "test_frauds": int(test.Class.sum()),
    "results": results,
}))
