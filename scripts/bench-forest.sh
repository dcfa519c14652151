#!/usr/bin/env bash
# The forest benchmark: fraudstream's engine vs the `randomforest` crate on the full
# Kaggle data (decompressed once into .cache/), falling back to the shipped sample.
# Usage: scripts/bench-forest.sh [path/to/creditcard.csv[.xz]]
set -euo pipefail
cd "$(dirname "$0")/.."
src="${1:-../shared/data/creditcard.csv.xz}"
data="data/creditcard-sample.csv"
if [[ -f "$src" ]]; then
  case "$src" in
    *.xz)
      mkdir -p .cache
      data=".cache/creditcard.csv"
      if [[ ! -s "$data" ]]; then
        xz -dc "$src" > "$data.tmp"
        mv -f "$data.tmp" "$data"
      fi
      ;;
    *) data="$src" ;;
  esac
else
  echo "note: $src not found; benchmarking on the shipped sample instead" >&2
fi
exec cargo bench --bench compare -- "$data"
