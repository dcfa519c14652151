#!/usr/bin/env bash
# `fraudstream retrain` at scale: its peak memory and time over a simulated history with
# the handbook's entity features, at the default 2,000,000-row budget.
#
#   scripts/bench/retrain.sh [--customers N] [--seed S] [--dir DIR] [--sample-bucket SPAN]
#                            [BINARY ...]
#
# The history: `loadgen --simulate --customers N --seed S` (default 140,000 customers and
# seed 3: 49,693,362 rows over 183 days, 5.8 GB of CSV), and a live model trained on
# another simulation (`--customers 5000 --seed 2`, `train --max-rows 500000`); the
# simulations are made once into DIR (default .cache/bench-retrain-N-S/). For each BINARY
# (default target/release/fraudstream, built first): the live model trained and
# published into a fresh model store, then two cycles of `retrain --config FILE --json`
# over the history (`warm_up = "37d"`) against that store:
#   1. the live model is the small one trained above;
#   2. the live model is what cycle 1 published (a forest trained on the 2,000,000-row
#      sample: what every later cycle in production finds as the live model); the script
#      stops if cycle 1 published nothing.
# `--sample-bucket 7d` samples by span of time (`retrain.sample_bucket`).
# Prints each cycle's peak RSS, wall time, CPU, decision and candidate AUPRC.
# 10,000 customers make a 3.5 M-row history that runs in about a minute.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$0")/lib.sh"

customers=140000
seed=3
dir=
bucket=
bins=()
while [[ $# -gt 0 ]]; do
  case $1 in
    --customers)
      bench_count "$1" "${2:-}"
      customers=$2
      shift 2
      ;;
    --seed)
      bench_count "$1" "${2:-}"
      seed=$2
      shift 2
      ;;
    --dir)
      dir=$(bench_abs "${2:?--dir needs a directory}")
      shift 2
      ;;
    --sample-bucket)
      bucket=${2:?--sample-bucket needs a span such as 7d}
      shift 2
      ;;
    -h | --help) bench_usage ;;
    -*) bench_usage "unknown option $1" ;;
    *)
      bins+=("$(bench_abs "$1")")
      shift
      ;;
  esac
done
dir=${dir:-.cache/bench-retrain-$customers-$seed}
if [[ ${#bins[@]} -eq 0 ]]; then
  bench_build
  bins=(target/release/fraudstream)
fi
loadgen=target/release/loadgen
[[ -x $loadgen ]] || BENCH_BUILD=1 bench_build
mkdir -p "$dir"

if [[ ! -s $dir/history.csv ]]; then
  echo "simulating the history ($customers customers)..." >&2
  # loadgen writes CSV for a .csv name (JSON lines otherwise).
  "$loadgen" --simulate --customers "$customers" --seed "$seed" --out "$dir/history.tmp.csv" >&2
  mv "$dir/history.tmp.csv" "$dir/history.csv"
fi
if [[ ! -s $dir/live-source.csv ]]; then
  "$loadgen" --simulate --customers 5000 --seed 2 --out "$dir/live-source.csv" >&2
fi
rows=$(($(wc -l <"$dir/history.csv") - 1)) # the header is not a row
echo "history: $dir/history.csv ($rows rows)"

# cycle BINARY STORE N: one retrain over the history against STORE, timed.
cycle() {
  local bin=$1 store=$2 n=$3 conf=$dir/retrain.toml out=$dir/decision.json
  printf '[models]\nlocation = "%s"\n\n[retrain]\nhistory = ["%s"]\nwarm_up = "37d"\n' \
    "$store" "$dir/history.csv" >"$conf"
  [[ -z $bucket ]] || printf 'sample_bucket = "%s"\n' "$bucket" >>"$conf"
  bench_time "$dir/time" "$bin" retrain --config "$conf" --json >"$out"
  bench_read_time "$dir/time"
  python3 - "$out" "$n" "$time_rss" "$time_wall" "$time_user" "$time_sys" <<'EOF'
import json, sys
d = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
n, rss, wall, user, sys_ = sys.argv[2], int(sys.argv[3]), *map(float, sys.argv[4:])
auprc = d.get("candidate_auprc")
print(f"  cycle {n}: peak RSS {rss / 1024 / 1024:.2f} GiB ({rss} KiB), {wall:.0f} s wall, "
      f"{user + sys_:.0f} s CPU; {d['decision']}, {d['rows_used']} rows used "
      f"({d['frauds']} frauds), candidate AUPRC "
      + (f"{auprc:.4f}" if auprc is not None else "-")
      + (f", {len(d['spans'])} spans" if d.get("spans") else ""))
EOF
}

for bin in "${bins[@]}"; do
  echo "$bin:"
  base=$dir/store-$(bench_bin_key "$bin")
  rm -rf "$base" "$dir/store"
  "$bin" train --input "$dir/live-source.csv" --velocity handbook --warm-up auto \
    --split time --max-rows 500000 --out "$dir/live.fsm" --publish "$base" >/dev/null
  cp -r "$base" "$dir/store"
  cycle "$bin" "$dir/store" 1
  grep -q '"published":true' "$dir/decision.json" || {
    echo "cycle 1 published nothing: cycle 2 would measure the same live model" >&2
    exit 1
  }
  cycle "$bin" "$dir/store" 2
  rm -rf "$base" "$dir/store"
done
