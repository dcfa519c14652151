#!/usr/bin/env bash
# Entity features in the embedded detector: the handbook's simulated data (loadgen
# --simulate; default 5,000 cards, 10,000 terminals, 183 days ≈ 1.78 M transactions),
# a model trained on it with the handbook's entity features, then `fraudstream run` over
# the unlabelled stream with the labels file, every sink on (config/local.toml). Prints,
# per run: throughput, CPU per transaction, the velocity stage's seconds and µs per
# transaction (it runs inside the scoring stage), and peak RSS.
#
#   scripts/bench-velocity.sh [--runs N] [--days D]
set -euo pipefail
cd "$(dirname "$0")/.."
runs=3 days=183
while [[ $# -gt 0 ]]; do
  case $1 in
    --runs) runs=$2; shift 2 ;;
    --days) days=$2; shift 2 ;;
    *) echo "usage: $0 [--runs N] [--days D]" >&2; exit 2 ;;
  esac
done
cargo build --release -q -p fraudstream -p loadgen
work=.cache/bench-velocity-$days
mkdir -p "$work"
if [[ ! -f $work/stream.jsonl ]]; then
  target/release/loadgen --simulate --days "$days" --out "$work/history.csv"
  target/release/loadgen --simulate --days "$days" --stdout --labels-file "$work/labels.jsonl" \
    > "$work/stream.jsonl"
fi
rows=$(wc -l < "$work/stream.jsonl")
reg=$work/registry
if [[ ! -d $reg ]]; then
  target/release/fraudstream train -i "$work/history.csv" --velocity handbook --split time \
    -o "$work/model.fsm" --publish "$reg" > /dev/null
fi
export FRAUDSTREAM__ALERTS__STDOUT=false FRAUDSTREAM__API__ENABLED=false
export FRAUDSTREAM__VELOCITY__ENABLED=true FRAUDSTREAM__VELOCITY__LABELS_PATH=$work/labels.jsonl
echo "input: $work/stream.jsonl ($rows transactions), labels: $work/labels.jsonl"
for i in $(seq "$runs"); do
  out=$work/run-$i
  rm -rf "$out"
  /usr/bin/time -f '%e %U %S %M' -o "$work/time" env \
    FRAUDSTREAM__MODELS__LOCATION=$reg FRAUDSTREAM__SOURCE__PATH=$work/stream.jsonl \
    FRAUDSTREAM__VERDICTS__LOCAL_PATH=$out/v.db FRAUDSTREAM__LAKE__LOCATION=$out/lake \
    FRAUDSTREAM__ALERTS__FILE=$out/a.jsonl FRAUDSTREAM__DLQ__FILE=$out/d.jsonl \
    target/release/fraudstream run --config config/local.toml > "$work/summary" 2>&1
  read -r wall user sys rss < "$work/time"
  velocity=$(grep -o 'velocity [0-9.]*' "$work/summary" | awk '{print $2}')
  precision=$(grep 'online precision' "$work/summary" | awk '{print $NF}')
  recall=$(grep 'online recall' "$work/summary" | awk '{print $NF}')
  awk -v w="$wall" -v u="$user" -v s="$sys" -v m="$rss" -v n="$rows" -v v="${velocity:-0}" \
      -v p="$precision" -v r="$recall" 'BEGIN {
    printf "run: %.2f s wall, %.0f tx/s, %.1f us CPU/tx; velocity stage %.2f s = %.2f us/tx; peak RSS %.0f MiB; online precision %s, recall %s\n",
      w, n / w, (u + s) * 1e6 / n, v, v * 1e6 / n, m / 1024, p, r }'
done
