#!/usr/bin/env bash
# The chaos soak for people (`make test` runs a 3-minute one): starts the services (its
# own state and ports, offset 2000), builds release binaries, and runs tests/soak.rs for
# the given minutes. It prints the fault schedule as it goes and one summary line:
# verdicts, dead letters, lake and alerts checked against what loadgen produced, the
# detectors' unexpected exits and their peak RSS.
#
#   scripts/soak.sh [--minutes N] [--seed S] [--rate MSGS_PER_S] [--strict]
#   (default 30 min, 300/s: the faults freeze a service for most of the run, and a
#   1,000/s load outgrew what the detectors could drain through DynamoDB Local on 2
#   cores). --strict: a duplicate lake row, alert or dead letter fails the run too.
set -euo pipefail
cd "$(dirname "$0")/.."
minutes=30
seed=$(date +%s)
rate=300
while [[ $# -gt 0 ]]; do
  case $1 in
    --minutes) minutes=$2; shift 2 ;;
    --seed) seed=$2; shift 2 ;;
    --rate) rate=$2; shift 2 ;;
    --strict) export FRAUDSTREAM_SOAK_STRICT=1; shift ;;
    *) echo "usage: $0 [--minutes N] [--seed S] [--rate R] [--strict]" >&2; exit 2 ;;
  esac
done
export FRAUDSTREAM_STATE=${FRAUDSTREAM_STATE:-$PWD/.services-soak}
export FRAUDSTREAM_PORT_OFFSET=${FRAUDSTREAM_PORT_OFFSET:-2000}
# The verifier scans every verdict: DynamoDB Local's default heap runs out past ~500k items.
export FRAUDSTREAM_DYNAMODB_HEAP=${FRAUDSTREAM_DYNAMODB_HEAP:-3g}
stop() {
  local rc=$?
  scripts/services.sh down || true
  exit "$rc"
}
trap stop EXIT INT TERM
scripts/services.sh down kafka >/dev/null 2>&1 || true
rm -rf "$FRAUDSTREAM_STATE/kafka"
eval "$(scripts/services.sh up kafka dynamodb hdfs s3 redis)"
cargo build --release --locked -p fraudstream -p loadgen
FRAUDSTREAM_SOAK_MINUTES=$minutes FRAUDSTREAM_SOAK_SEED=$seed FRAUDSTREAM_SOAK_RATE=$rate \
  cargo test --release --locked --test soak -- --nocapture
