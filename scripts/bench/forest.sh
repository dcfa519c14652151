#!/usr/bin/env bash
# The forest benchmark: fraudstream's engine against the `randomforest` crate 0.2 on the
# full Kaggle data (unpacked once into .cache/), falling back to the shipped sample. Runs
# `cargo bench --bench compare -- DATA` (benches/compare.rs): features V1..V28 and Amount,
# a stratified 80/20 split with seed 42, 100 trees. Prints, for fraudstream: training wall
# time and peak RSS, AUPRC, ROC-AUC and recall at precision >= 0.90, batch scoring rows/s
# on all cores and on one, single-row scoring µs p50 / p99 (alone, and with the top-3
# contributions); then its AUPRC over seeds 42..46 and on a time-ordered split; then, for
# the `randomforest` crate, trained on a 2,000-row stratified subsample of the same
# training set (its split search is quadratic in rows): training time, AUPRC, ROC-AUC,
# recall at precision >= 0.90, batch rows/s on all cores, single-row µs p50 / p99.
#
#   scripts/bench/forest.sh [DATA]
#
# DATA: a creditcard.csv or creditcard.csv.xz (default ../shared/data/creditcard.csv.xz).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$0")/lib.sh"
case ${1:-} in
  -h | --help) bench_usage ;;
  -*) bench_usage "unknown option $1" ;;
esac
[[ $# -le 1 ]] || bench_usage "one DATA file at most"
bench_data "$@"
exec cargo bench --bench compare -- "$data"
