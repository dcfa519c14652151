#!/usr/bin/env bash
# The embedded detector (`fraudstream run --config config/local.toml`, no services) with
# config/local.toml's sinks: SQLite verdicts, the Parquet lake, the alerts file; alerts not
# printed, the API off. CPU is user + system of the whole process, start-up included.
#
#   scripts/bench/embedded.sh [--runs N] [BINARY ...]
#     Throughput on the full Kaggle file (without ../shared: the shipped sample, looped 80
#     times), a model trained once from the sample beforehand by each binary, so the runs
#     measure scoring only. Prints, for each run of each binary: wall time, throughput,
#     CPU µs per transaction, user and system seconds, peak RSS, and the wall time per
#     transaction inside each stage. N runs per binary (default 3).
#
#   scripts/bench/embedded.sh --shadow [--rounds N] [BINARY ...]
#     What shadow scoring costs: over the full Kaggle file (without ../shared: the shipped
#     sample), explanations on every verdict, alternately without and with `models.shadow`
#     (a second 100-tree model, trained with another seed, scored on every row into the
#     lake), N rounds of each (default 5). Prints CPU µs per transaction for every run, the
#     medians, and their ratio.
#
#   scripts/bench/embedded.sh --velocity [--days D] [--runs N] [BINARY ...]
#     Entity features: the handbook's simulated data (loadgen --simulate: 5,000 cards,
#     10,000 terminals, D days, default 183 ≈ 1.78 M transactions; generated once into
#     .cache/bench-velocity-D/), a model trained on it with the handbook's entity features
#     (--velocity handbook --split time; once per build), then N runs (default 3) of
#     `fraudstream run` over the unlabelled stream with the labels file. Prints, per run:
#     wall time, throughput, CPU per transaction, peak RSS, the velocity stage's seconds
#     and µs per transaction (it runs inside the scoring stage), and the online precision
#     and recall.
#
# --runs and --rounds are the same option. BINARY: the fraudstream binaries to compare, in
# turn (default target/release/fraudstream, built first; the ones given are not built).
# An A/B against main:
#   git worktree add --detach ../fraudstream-main main
#   (cd ../fraudstream-main && cargo build --release --locked -p fraudstream)
#   scripts/bench/embedded.sh target/release/fraudstream ../fraudstream-main/target/release/fraudstream
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$0")/lib.sh"

# Each subject is a mode: its option sets `mode` below, a function of that name measures
# it, and the dispatch at the end calls it. A new subject (the rules' cost, with the rules
# feature) adds the three and a usage paragraph above.
mode=throughput runs='' days=''
bins=() labels=()
while [[ $# -gt 0 ]]; do
  case $1 in
    --shadow | --velocity)
      [[ $mode == throughput ]] || bench_usage "--shadow and --velocity do not combine"
      mode=${1#--}
      shift
      ;;
    --runs | --rounds) bench_count "$1" "${2:-}"; runs=$2; shift 2 ;;
    --days) bench_count "$1" "${2:-}"; days=$2; shift 2 ;;
    -h | --help) bench_usage ;;
    -*) bench_usage "unknown option $1" ;;
    *)
      [[ -x $(bench_abs "$1") ]] || bench_usage "not an executable: $1"
      bins+=("$(bench_abs "$1")")
      labels+=("$1")
      shift
      ;;
  esac
done
[[ -z $days || $mode == velocity ]] || bench_usage "--days goes with --velocity"
if [[ ${#bins[@]} -eq 0 ]]; then
  bench_build
  bins=(target/release/fraudstream)
  labels=(target/release/fraudstream)
elif [[ $mode == velocity ]]; then
  bench_build # loadgen, for the simulated data
fi

# Throughput: N runs per binary over the full file, on a model each binary trained first.
throughput() {
  local b
  bench_data --looped
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  echo "input: $data ($data_rows rows); runs per binary: ${runs:=3}"
  for b in "${!bins[@]}"; do
    # A model in the store first (bootstrapped from the sample), so the runs measure
    # scoring only.
    rm -rf "$work/registry"
    bench_embedded "${bins[b]}" "$work/registry" data/creditcard-sample.csv "$work/warm"
    for _ in $(seq "$runs"); do
      bench_embedded "${bins[b]}" "$work/registry" "$data" "$work/run"
      echo "${labels[b]}: $(bench_run_figures "$data_rows")"
      bench_stages "$work/run/summary" "$data_rows"
    done
  done
}

# Shadow: alternately without and with a shadow model, N rounds, medians and their ratio.
shadow() {
  local work=.cache/bench-shadow b version with label cpu alone shadowed
  bench_data
  echo "input: $data ($data_rows rows); rounds per binary: ${runs:=5}"
  for b in "${!bins[@]}"; do
    rm -rf "$work"
    mkdir -p "$work"
    # Two versions in one store: the serving one, and a second trained with another seed.
    "${bins[b]}" train --input "$data" --out "$work/a.fsm" --seed 1 --publish "$work/registry" \
      > /dev/null 2>&1
    "${bins[b]}" train --input "$data" --out "$work/b.fsm" --seed 2 --publish "$work/shadow-store" \
      > /dev/null 2>&1
    version=$(cat "$work/shadow-store/models/LATEST")
    cp -r "$work/shadow-store/models/$version" "$work/registry/models/"
    : > "$work/results"
    for _ in $(seq "$runs"); do
      for with in "" "$version"; do
        bench_embedded "${bins[b]}" "$work/registry" "$data" "$work/run" \
          FRAUDSTREAM__MODELS__POLL_INTERVAL=0s ${with:+"FRAUDSTREAM__MODELS__SHADOW=$with"}
        label=alone
        [[ -z $with ]] || label=shadow
        cpu=$(bench_cpu_per_tx "$data_rows" 2)
        echo "$label $cpu" >> "$work/results"
        echo "${labels[b]}: $label $cpu us CPU/tx"
      done
    done
    alone=$(grep '^alone ' "$work/results" | cut -d' ' -f2 | bench_median)
    shadowed=$(grep '^shadow ' "$work/results" | cut -d' ' -f2 | bench_median)
    awk -v l="${labels[b]}" -v a="$alone" -v s="$shadowed" 'BEGIN {
      printf "%s: median CPU us per tx: alone %.2f, with a shadow %.2f; ratio %.2fx\n", l, a, s, s / a }'
  done
}

# Velocity: the simulated stream with entity features, N runs per binary.
velocity() {
  local work=.cache/bench-velocity-${days:=183} rows b reg seconds precision recall
  mkdir -p "$work"
  if [[ ! -f $work/stream.jsonl ]]; then
    target/release/loadgen --simulate --days "$days" --out "$work/history.csv"
    target/release/loadgen --simulate --days "$days" --stdout --labels-file "$work/labels.jsonl" \
      > "$work/stream.jsonl.tmp"
    mv -f "$work/stream.jsonl.tmp" "$work/stream.jsonl"
  fi
  rows=$(wc -l < "$work/stream.jsonl")
  echo "input: $work/stream.jsonl ($rows transactions), labels: $work/labels.jsonl; runs per binary: ${runs:=3}"
  for b in "${!bins[@]}"; do
    reg=$work/registry-$(bench_bin_key "${bins[b]}")
    if [[ ! -d $reg ]]; then
      echo "training on $work/history.csv with ${labels[b]}..." >&2
      "${bins[b]}" train -i "$work/history.csv" --velocity handbook --split time \
        -o "$work/model.fsm" --publish "$reg" > /dev/null || { rm -rf "$reg"; exit 1; }
    fi
    for _ in $(seq "$runs"); do
      bench_embedded "${bins[b]}" "$reg" "$work/stream.jsonl" "$work/run" \
        FRAUDSTREAM__VELOCITY__ENABLED=true FRAUDSTREAM__VELOCITY__LABELS_PATH="$work/labels.jsonl"
      seconds=$(bench_stage_seconds "$work/run/summary" velocity)
      precision=$(awk '/online precision/ { print $NF }' "$work/run/summary")
      recall=$(awk '/online recall/ { print $NF }' "$work/run/summary")
      printf '%s: %s; velocity stage %s s = %s us/tx; online precision %s, recall %s\n' \
        "${labels[b]}" "$(bench_run_figures "$rows")" "$seconds" \
        "$(awk -v v="$seconds" -v n="$rows" 'BEGIN { printf "%.2f", v * 1e6 / n }')" \
        "${precision:--}" "${recall:--}"
    done
  done
}

case $mode in
  throughput) throughput ;;
  shadow) shadow ;;
  velocity) velocity ;;
esac
