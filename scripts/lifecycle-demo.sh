#!/usr/bin/env bash
# The model lifecycle end to end on the shipped sample, with no services (README, "Model
# lifecycle"): signing keys, bootstrap and stream, retrain from the lake with the fair
# gate, shadow-score the candidate, compare, promote, and a refused unsigned version.
#
#   scripts/lifecycle-demo.sh [WORKDIR]      (default: a new temporary directory)
#
# Uses target/release/fraudstream (built if missing).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
bin=$repo/target/release/fraudstream
[[ -x $bin ]] || cargo build --release --locked --bin fraudstream --manifest-path "$repo/Cargo.toml"
work=${1:-$(mktemp -d)}
mkdir -p "$work"
cd "$work"
cp -r "$repo/config" "$repo/data" .
step() { printf '\n$ %s\n' "$*"; "$@"; }

step "$bin" keygen --out keys/release
pub=$(cat keys/release.pub)
# Every process signs what it publishes and serves only what the release key signed.
export FRAUDSTREAM__MODELS__SIGN_KEY=keys/release
export FRAUDSTREAM__MODELS__TRUSTED_KEYS="[\"$pub\"]"
export FRAUDSTREAM__ALERTS__STDOUT=false
export FRAUDSTREAM__API__ENABLED=false
# Candidates pass through shadow scoring before anyone promotes them.
export FRAUDSTREAM__RETRAIN__PROMOTE=false

# 1. Bootstrap and stream: the store is empty, so a first model is trained on a
#    stratified 80% of the sample, published with the ids of the rows it held out, and
#    every row is scored into the verdicts and the lake.
step "$bin" run --config config/local.toml 2>/dev/null | sed -n '1,12p'

# 2. Retrain from the lake. The gate rows are rows the live model never trained on (its
#    held-out 20%), and the candidate trains on everything else.
step "$bin" retrain --config config/local.toml 2>/dev/null

# 3. Shadow-score the candidate on the next pass of traffic, then compare on those rows.
export FRAUDSTREAM__MODELS__SHADOW=candidate
rm -rf out/lake
step "$bin" run --config config/local.toml 2>/dev/null | sed -n '1,12p'
step "$bin" model compare --shadow --config config/local.toml

# 4. Promote it: the running detectors hot-reload it.
candidate=$(cat out/registry/models/CANDIDATE)
step "$bin" model promote "$candidate" --config config/local.toml

# 5. A version published without the key (here: into another store, then copied in, as
#    anyone with write access to the bucket could) is refused, and LATEST stays.
"$bin" train --input data/creditcard-sample.csv --out out/unsigned.fsm --trees 5 \
  --publish out/unsigned-store >/dev/null 2>&1
version=$(cat out/unsigned-store/models/LATEST)
cp -r out/unsigned-store/models/"$version" out/registry/models/
printf '\n$ %s model promote %s --config config/local.toml   # unsigned\n' "$bin" "$version"
if "$bin" model promote "$version" --config config/local.toml; then
  echo "error: an unsigned version was promoted" >&2
  exit 1
fi
step "$bin" model list --config config/local.toml
echo "work directory: $work"
