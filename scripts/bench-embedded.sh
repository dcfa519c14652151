#!/usr/bin/env bash
# The embedded detector on the full Kaggle file (the shipped sample, looped 80 times,
# without ../shared): `fraudstream run` with config/local.toml's sinks (SQLite verdicts,
# the Parquet lake, the alerts file), alerts not printed, a model trained once from the
# sample beforehand. Prints wall time, throughput, user+system CPU per transaction and
# peak RSS for each run, for each binary given (default: target/release/fraudstream).
#
#   scripts/bench-embedded.sh [--runs N] [BINARY ...]
set -euo pipefail
cd "$(dirname "$0")/.."
runs=3
if [[ ${1:-} == --runs ]]; then runs=$2; shift 2; fi
bins=("$@")
[[ ${#bins[@]} -gt 0 ]] || bins=(target/release/fraudstream)
input=.cache/creditcard.csv
if [[ ! -f $input ]]; then
  if [[ -f ../shared/data/creditcard.csv.xz ]]; then
    mkdir -p .cache && xz -dkc ../shared/data/creditcard.csv.xz > "$input"
  else
    input=.cache/sample-x80.csv
    { head -1 data/creditcard-sample.csv
      for _ in $(seq 80); do tail -n +2 data/creditcard-sample.csv; done; } > "$input"
  fi
fi
rows=$(($(wc -l < "$input") - 1))
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export FRAUDSTREAM__ALERTS__STDOUT=false
export FRAUDSTREAM__API__ENABLED=false
echo "input: $input ($rows rows); runs per binary: $runs"
for bin in "${bins[@]}"; do
  # A model in the store first, so the runs measure scoring only.
  reg=$work/registry
  rm -rf "$reg"
  FRAUDSTREAM__MODELS__LOCATION=$reg FRAUDSTREAM__SOURCE__PATH=data/creditcard-sample.csv \
    FRAUDSTREAM__VERDICTS__LOCAL_PATH=$work/warm/v.db FRAUDSTREAM__LAKE__LOCATION=$work/warm/lake \
    FRAUDSTREAM__ALERTS__FILE=$work/warm/a.jsonl FRAUDSTREAM__DLQ__FILE=$work/warm/d.jsonl \
    "$bin" run --config config/local.toml >/dev/null 2>&1
  for i in $(seq "$runs"); do
    out=$work/run-$i
    rm -rf "$out"
    /usr/bin/time -f '%e %U %S %M' -o "$work/time" env \
      FRAUDSTREAM__MODELS__LOCATION=$reg FRAUDSTREAM__SOURCE__PATH=$input \
      FRAUDSTREAM__VERDICTS__LOCAL_PATH=$out/v.db FRAUDSTREAM__LAKE__LOCATION=$out/lake \
      FRAUDSTREAM__ALERTS__FILE=$out/a.jsonl FRAUDSTREAM__DLQ__FILE=$out/d.jsonl \
      "$bin" run --config config/local.toml >/dev/null 2>&1
    read -r wall user sys rss < "$work/time"
    awk -v b="$bin" -v w="$wall" -v u="$user" -v s="$sys" -v m="$rss" -v n="$rows" 'BEGIN {
      printf "%s: %.2f s wall, %.0f tx/s, %.1f us CPU/tx (user %.2f s, sys %.2f s), peak RSS %.0f MiB\n",
        b, w, n / w, (u + s) * 1e6 / n, u, s, m / 1024 }'
  done
done
