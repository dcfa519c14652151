#!/usr/bin/env bash
# The forest walks side by side on the real model (benches/walk.rs): the float walk,
# the float walk with explanations, and the quantized walk, one core, the same rows,
# rounds alternated. The model is the embedded bench's: `fraudstream train` on DATA
# with seed 1 (100 trees; trained once per build and data, cached in .cache/). Prints
# the model's size, then each design's CPU time per row and its ratio to the float walk;
# it fails if a design's scores differ from the float walk's in any bit.
#
#   scripts/bench/walk.sh [DATA]
#
# DATA: a creditcard.csv or creditcard.csv.xz (default ../shared/data/creditcard.csv.xz,
# else the shipped sample).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$0")/lib.sh"
case ${1:-} in
  -h | --help) bench_usage ;;
  -*) bench_usage "unknown option $1" ;;
esac
[[ $# -le 1 ]] || bench_usage "one DATA file at most"
bench_data "$@"
bench_build
model=.cache/bench-walk-$(bench_bin_key target/release/fraudstream)-$(bench_data_key).fsm
if [[ ! -s $model ]]; then
  echo "training the model on $data..." >&2
  target/release/fraudstream train --input "$data" --out "$model.tmp" --seed 1 > /dev/null
  mv "$model.tmp" "$model"
fi
FRAUDSTREAM_BENCH_MODEL=$model FRAUDSTREAM_BENCH_DATA=$data exec cargo bench --bench walk
