#!/usr/bin/env python3
"""Build data/creditcard-sample.csv from the full Kaggle file.

Rows are copied verbatim (same quoting, same number text) and kept in file order, so the
sample has the published layout and a time-ordered split still works. Sampling is
stratified by class at different rates: 3,200 legitimate rows and 246 frauds (half of
them), so that the sample has enough frauds to train and evaluate on. Its fraud rate
(about 7%) is therefore far above the real 0.17%.

Usage: scripts/make-sample.py [PATH_TO_creditcard.csv.xz] [OUT]
"""
import lzma
import random
import sys

src = sys.argv[1] if len(sys.argv) > 1 else "../shared/data/creditcard.csv.xz"
out = sys.argv[2] if len(sys.argv) > 2 else "data/creditcard-sample.csv"
LEGIT, FRAUD, SEED = 3200, 246, 20240501

with lzma.open(src, "rt", newline="") as f:
    header = f.readline()
    lines = f.readlines()
fraud = [i for i, l in enumerate(lines) if l.rstrip().endswith('"1"')]
legit = [i for i, l in enumerate(lines) if l.rstrip().endswith('"0"')]
assert len(fraud) + len(legit) == len(lines), "every row ends in a quoted Class"
rng = random.Random(SEED)
keep = sorted(rng.sample(legit, LEGIT) + rng.sample(fraud, FRAUD))
with open(out, "w", newline="") as f:
    f.write(header)
    f.writelines(lines[i] for i in keep)
print(f"{out}: {len(keep)} rows, {FRAUD} frauds")
