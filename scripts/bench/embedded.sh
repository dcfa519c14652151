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
#   scripts/bench/embedded.sh --rules [--rounds N] [BINARY ...]
#     What rules cost: the full Kaggle file (without ../shared: the shipped sample) as JSON
#     lines with card and terminal ids (made once into .cache/bench-rules/), alternately
#     with no rule set, with 10 rules and with 100 rules active (all_matched, so every rule
#     is evaluated on every transaction: comparisons, arithmetic, string equality, lookups
#     in a 1,000,000-card list and a 50-terminal list; thresholds that, as in production,
#     review or block about 1% of transactions), N rounds of each (default 5). Each run is
#     repeated over one transaction, to measure its start-up (loading the model, the
#     million-id list and the rules). Prints CPU per transaction and alerts for every run,
#     then the medians with start-up and without it, the ratio of 10 rules to none and the
#     µs per transaction 100 rules add.
#
#   scripts/bench/embedded.sh --monitoring [--rounds N] [BINARY ...]
#     What drift monitoring costs: the full Kaggle file (without ../shared: the shipped
#     sample), a model published from it (with its reference), alternately with
#     `monitoring.enabled = false` and `true`, N rounds of each (default 5). Prints CPU µs
#     per transaction for every run, the medians, and their ratio.
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
# it, and the dispatch at the end calls it. A new subject adds the three and a usage
# paragraph above.
mode=throughput runs='' days=''
bins=() labels=()
while [[ $# -gt 0 ]]; do
  case $1 in
    --shadow | --velocity | --rules | --monitoring)
      [[ $mode == throughput ]] || bench_usage "--shadow, --velocity, --rules and --monitoring do not combine"
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
  local work=.cache/bench-shadow b version
  bench_data
  echo "input: $data ($data_rows rows); rounds per binary: ${runs:=5}"
  for b in "${!bins[@]}"; do
    ab_store "${bins[b]}" "$work"
    # A second version, trained with another seed, beside the serving one.
    "${bins[b]}" train --input "$data" --out "$work/b.fsm" --seed 2 --publish "$work/shadow-store" \
      > /dev/null 2>&1
    version=$(cat "$work/shadow-store/models/LATEST")
    cp -r "$work/shadow-store/models/$version" "$work/registry/models/"
    for _ in $(seq "$runs"); do
      ab_run alone "${bins[b]}" "$work"
      ab_run shadow "${bins[b]}" "$work" "FRAUDSTREAM__MODELS__SHADOW=$version"
    done
    ab_medians "${labels[b]}" "$work" alone shadow "alone %.2f, with a shadow %.2f; ratio %.2fx"
  done
}

# A fresh WORK with a store holding a model BINARY trained on $data (seed 1).
ab_store() {
  rm -rf "$2"
  mkdir -p "$2"
  "$1" train --input "$data" --out "$2/a.fsm" --seed 1 --publish "$2/registry" > /dev/null 2>&1
  : > "$2/results"
}

# One run of an A/B: `bench_embedded` of BINARY over $data with the store in WORK, ENV
# added; its CPU per transaction appended to WORK/results under LABEL, and printed.
ab_run() {
  local label=$1 bin=$2 work=$3 cpu
  shift 3
  bench_embedded "$bin" "$work/registry" "$data" "$work/run" FRAUDSTREAM__MODELS__POLL_INTERVAL=0s "$@"
  cpu=$(bench_cpu_per_tx "$data_rows" 2)
  echo "$label $cpu" >> "$work/results"
  echo "$bin: $label $cpu us CPU/tx"
}

# The medians of labels A and B in WORK/results, printed with FORMAT (A, B, B/A).
ab_medians() {
  local label=$1 work=$2 a b
  a=$(grep "^$3 " "$work/results" | cut -d' ' -f2 | bench_median)
  b=$(grep "^$4 " "$work/results" | cut -d' ' -f2 | bench_median)
  awk -v l="$label" -v a="$a" -v b="$b" -v f="$5" 'BEGIN {
    printf "%s: median CPU us per tx: " f "\n", l, a, b, b / a }'
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

# rule_set N: N rules (all_matched), a mix of comparisons, arithmetic, string equality and
# list lookups, on stdout. Thresholds are set the way a fraud team sets them: each rule
# hits a small share of the traffic (together about 1% of transactions are reviewed or
# blocked), so the runs measure the rules and not a flood of alerts.
rule_set() {
  awk -v n="$1" 'BEGIN {
    print "mode all_matched"
    for (k = 0; k < n; k++) {
      v = 1 + k % 28
      a = k % 3 == 0 ? "block" : (k % 3 == 1 ? "review" : "allow")
      if (k % 10 == 3)
        printf "rule r%d: %s if card_id in @blocked_cards and Amount > %d\n", k, a, 1 + k
      else if (k % 10 == 7)
        printf "rule r%d: %s if terminal_id in @hot_terminals and score > %.2f\n", k, a, 0.5 + (k % 50) / 100
      else if (k % 10 == 9)
        printf "rule r%d: %s if terminal_id == \"term-%d\" and V%d < %.1f\n", k, a, k % 300, v, -2 - (k % 7)
      else
        printf "rule r%d: %s if Amount > %d and V%d * 2 + V%d < %.1f and risk_score > %d\n", \
          k, a, 1000 + 40 * k, v, 1 + (k + 5) % 28, -2 - (k % 9) * 0.5, k % 60
    }
  }'
}

# Rules: alternately no rule set, 10 rules and 100 rules, N rounds, medians and costs.
rules() {
  local work=.cache/bench-rules b key input rows set base reg cpu none ten hundred
  bench_data
  mkdir -p "$work"
  key=$(bench_data_key)
  input=$work/input-$key.jsonl
  if [[ ! -s $input ]]; then
    echo "writing $input (card and terminal ids added)..." >&2
    python3 - "$data" "$input.tmp" <<'PY'
import csv, json, sys
with open(sys.argv[1]) as f, open(sys.argv[2], "w") as out:
    for i, row in enumerate(csv.DictReader(f)):
        tx = {k: float(v) for k, v in row.items() if k != "Class"}
        tx.update(id=f"tx-{i}", card_id=f"card-{i % 200000}", terminal_id=f"term-{i % 300}")
        out.write(json.dumps(tx) + "\n")
PY
    mv -f "$input.tmp" "$input"
  fi
  rows=$(wc -l < "$input")
  rule_set 10 > "$work/rules-10.txt"
  rule_set 100 > "$work/rules-100.txt"
  # 1,000,000 blocked cards, 1,000 of them among the stream's 200,000 (0.5% of its
  # transactions), the rest never seen.
  [[ -s $work/cards-v2.txt ]] || awk 'BEGIN {
    for (i = 0; i < 1000; i++) printf "card-%d\n", 200 * i
    for (i = 0; i < 999000; i++) printf "card-%d\n", 200000 + i }' > "$work/cards-v2.txt"
  echo "input: $input ($rows transactions); rounds per binary: ${runs:=5}"
  for b in "${!bins[@]}"; do
    # One store per rule set, the same model in each: trained once, copied.
    base=$work/registry-v2-$(bench_bin_key "${bins[b]}")
    for set in none 10 100; do
      reg=$base-$set
      [[ -d $reg ]] && continue
      if [[ ! -d $base-none ]]; then
        "${bins[b]}" train --input "$data" --split none --out "$work/model.fsm" \
          --publish "$base-none" > /dev/null || { rm -rf "$base-none"; exit 1; }
      fi
      [[ $set == none ]] && continue
      cp -r "$base-none" "$reg"
      "${bins[b]}" list import blocked_cards "$work/cards-v2.txt" --store "$reg" > /dev/null
      seq 0 49 | sed 's/^/term-/' > "$work/terminals.txt"
      "${bins[b]}" list import hot_terminals "$work/terminals.txt" --store "$reg" > /dev/null
      "${bins[b]}" rules publish --activate "$work/rules-$set.txt" --store "$reg" > /dev/null
    done
    : > "$work/results"
    head -n 1 "$input" > "$work/one.jsonl"
    for _ in $(seq "$runs"); do
      for set in none 10 100; do
        bench_embedded "${bins[b]}" "$base-$set" "$input" "$work/run" \
          FRAUDSTREAM__MODELS__POLL_INTERVAL=0s
        cpu=$(awk -v u="$time_user" -v s="$time_sys" 'BEGIN { print u + s }')
        echo "${labels[b]}: rules $set: $(bench_run_figures "$rows"); $(wc -l < "$work/run/alerts.jsonl") alerts (review or block)"
        # The same start-up (the model, the lists, the rules) over one transaction.
        bench_embedded "${bins[b]}" "$base-$set" "$work/one.jsonl" "$work/run" \
          FRAUDSTREAM__MODELS__POLL_INTERVAL=0s
        echo "$set $cpu $(awk -v u="$time_user" -v s="$time_sys" 'BEGIN { print u + s }')" >> "$work/results"
      done
    done
    # Per set: median CPU µs per transaction with start-up, median start-up seconds,
    # median CPU µs per transaction without start-up.
    for set in none 10 100; do
      awk -v set="$set" -v n="$rows" '$1 == set { cpu[++k] = $2 * 1e6 / n; up[k] = $3
          steady[k] = ($2 - $3) * 1e6 / n }
        function median(a, m, i, j, t) {
          for (i = 1; i <= m; i++) for (j = i + 1; j <= m; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
          return m % 2 ? a[(m + 1) / 2] : (a[m / 2] + a[m / 2 + 1]) / 2 }
        END { print set, median(cpu, k), median(up, k), median(steady, k) }' "$work/results"
    done > "$work/medians"
    awk -v l="${labels[b]}" '{ cpu[$1] = $2; up[$1] = $3; steady[$1] = $4 }
      END {
        printf "%s: median CPU us per tx, start-up included: no rules %.2f, 10 rules %.2f (%.3fx), 100 rules %.2f (+%.2f us/tx)\n",
          l, cpu["none"], cpu["10"], cpu["10"] / cpu["none"], cpu["100"], cpu["100"] - cpu["none"]
        printf "%s: start-up CPU (one transaction): no rules %.2f s, 10 rules %.2f s, 100 rules %.2f s\n",
          l, up["none"], up["10"], up["100"]
        printf "%s: median CPU us per tx, start-up excluded: no rules %.2f, 10 rules %.2f (%.3fx), 100 rules %.2f (+%.2f us/tx)\n",
          l, steady["none"], steady["10"], steady["10"] / steady["none"], steady["100"], steady["100"] - steady["none"] }' \
      "$work/medians"
  done
}

# Monitoring: alternately off and on, N rounds, medians and their ratio.
monitoring() {
  local work=.cache/bench-monitoring b
  bench_data
  echo "input: $data ($data_rows rows); rounds per binary: ${runs:=5}"
  for b in "${!bins[@]}"; do
    ab_store "${bins[b]}" "$work"
    for _ in $(seq "$runs"); do
      ab_run off "${bins[b]}" "$work" FRAUDSTREAM__MONITORING__ENABLED=false
      ab_run on "${bins[b]}" "$work" FRAUDSTREAM__MONITORING__ENABLED=true
    done
    ab_medians "${labels[b]}" "$work" off on "monitoring off %.2f, on %.2f; ratio %.3fx"
  done
}

case $mode in
  monitoring) monitoring ;;
  throughput) throughput ;;
  shadow) shadow ;;
  velocity) velocity ;;
  rules) rules ;;
esac
