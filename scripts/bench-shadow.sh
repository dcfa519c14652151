#!/usr/bin/env bash
# What shadow scoring costs: the embedded detector over the full Kaggle file (SQLite
# verdicts, the Parquet lake, the alerts file, explanations on every verdict), alternately
# without and with `models.shadow` (a second 100-tree model scored on every row into the
# lake), ROUNDS times each. Prints CPU µs per transaction (user + system of the whole
# process, start-up included) for every run, the medians, and their ratio.
#
#   scripts/bench-shadow.sh [ROUNDS]      (default 5)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-5}
source scripts/bench-data.sh
cargo build --release --locked --bin fraudstream >&2
bin=target/release/fraudstream
work=.cache/bench-shadow
rm -rf "$work"
mkdir -p "$work"
rows=$(($(wc -l < "$data") - 1))
# Two versions in one store: the serving one, and a second trained with another seed.
"$bin" train --input "$data" --out "$work/a.fsm" --seed 1 --publish "$work/registry" >/dev/null 2>&1
"$bin" train --input "$data" --out "$work/b.fsm" --seed 2 --publish "$work/shadow-store" >/dev/null 2>&1
shadow=$(cat "$work/shadow-store/models/LATEST")
cp -r "$work/shadow-store/models/$shadow" "$work/registry/models/"

export FRAUDSTREAM__MODELS__LOCATION=$work/registry FRAUDSTREAM__MODELS__POLL_INTERVAL=0s
export FRAUDSTREAM__SOURCE__PATH=$data FRAUDSTREAM__ALERTS__STDOUT=false FRAUDSTREAM__API__ENABLED=false
export FRAUDSTREAM__VERDICTS__LOCAL_PATH=$work/run/verdicts.db FRAUDSTREAM__LAKE__LOCATION=$work/run/lake
export FRAUDSTREAM__ALERTS__FILE=$work/run/alerts.jsonl FRAUDSTREAM__DLQ__FILE=$work/run/dlq.jsonl
run() { # $1: label, $2: shadow version (empty: none)
  rm -rf "$work/run"
  mkdir -p "$work/run"
  env ${2:+FRAUDSTREAM__MODELS__SHADOW=$2} /usr/bin/time -f '%U %S' -o "$work/time" \
    "$bin" run --config config/local.toml >/dev/null 2>&1
  awk -v l="$1" -v n="$rows" '{ printf "%s %.2f\n", l, ($1 + $2) * 1e6 / n }' "$work/time"
}
median() { grep "^$1 " "$work/results" | cut -d' ' -f2 | sort -n | awk '{ a[NR] = $1 }
  END { print NR % 2 ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
: > "$work/results"
for _ in $(seq "$rounds"); do
  run alone "" | tee -a "$work/results"
  run shadow "$shadow" | tee -a "$work/results"
done
alone=$(median alone)
with=$(median shadow)
awk -v a="$alone" -v s="$with" 'BEGIN { printf "median CPU us per tx: alone %.2f, with a shadow %.2f; ratio %.2fx\n", a, s, s / a }'
