#!/usr/bin/env bash
# Coverage-guided fuzzing (cargo fuzz, libFuzzer) of the core's JSON decoder, CSV decoder,
# model-file parser, manifest/signature parser and rule compiler: core/fuzz/fuzz_targets/. Starts from the checked-in corpus
# (core/fuzz/corpus/<target>/; model_parse starts from a 3-tree model trained on the
# sample, named without .fsm, which git ignores); new inputs go to a temporary directory
# unless --keep.
# A panic or a failed assertion stops the run with the crashing input in
# core/fuzz/artifacts/<target>/ and a non-zero status.
#
#   scripts/fuzz.sh [--seconds N] [--keep] [TARGET ...]    (default: 45 s, every target)
#
# cargo fuzz passes the nightly-only flags libFuzzer's instrumentation needs
# (-Zsanitizer); RUSTC_BOOTSTRAP=1 lets the stable toolchain accept them.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=45
keep=0
targets=()
while [[ $# -gt 0 ]]; do
  case $1 in
    --seconds) seconds=$2; shift 2 ;;
    --keep) keep=1; shift ;;
    *) targets+=("$1"); shift ;;
  esac
done
[[ ${#targets[@]} -gt 0 ]] || targets=(json_decode csv_decode model_parse manifest_parse rules_parse)
if ! command -v cargo-fuzz >/dev/null; then
  echo "fuzz: installing cargo-fuzz" >&2
  cargo install cargo-fuzz --locked --version 0.13.2 >&2
fi
export RUSTC_BOOTSTRAP=1
cd core

for t in "${targets[@]}"; do
  cargo fuzz build "$t" >&2
  scratch=$(mktemp -d)
  mkdir -p fuzz/corpus/"$t"
  if [[ $keep == 1 ]]; then corpus=(fuzz/corpus/"$t"); else corpus=("$scratch" fuzz/corpus/"$t"); fi
  echo "fuzz: $t for ${seconds}s" >&2
  log=$scratch.log
  if ! cargo fuzz run "$t" "${corpus[@]}" -- -max_total_time="$seconds" -print_final_stats=1 >"$log" 2>&1; then
    tail -40 "$log" >&2
    if compgen -G "fuzz/artifacts/$t/*" >/dev/null; then
      echo "fuzz: $t FAILED (input in core/fuzz/artifacts/$t/)" >&2
    else
      echo "fuzz: $t could not run (see its log above)" >&2
    fi
    exit 1
  fi
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo '?')
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*' || echo '?')
  echo "fuzz: $t: $runs runs in ${seconds}s, coverage $cov edges, no crash"
  rm -rf "$scratch" "$log"
done
