#!/usr/bin/env bash
# The project's test command (`make test`): start the real services on 127.0.0.1, run
# every test (unit, integration, CLI, property, the 3-minute chaos soak), then a short
# pass of each fuzz target, and stop the services again, also when a test fails or the
# run is interrupted. Extra arguments go to `cargo test` (and skip the fuzz pass).
#
# Test runs keep their own state directory and ports (offset 1000), so they never touch
# services a developer started with `scripts/services.sh up`.
set -euo pipefail
cd "$(dirname "$0")/.."
export FRAUDSTREAM_STATE=${FRAUDSTREAM_STATE:-$PWD/.services-test}
export FRAUDSTREAM_PORT_OFFSET=${FRAUDSTREAM_PORT_OFFSET:-1000}

stop() {
  local rc=$?
  scripts/services.sh down || echo "warning: stopping services failed" >&2
  exit "$rc"
}
trap stop EXIT INT TERM

# Tests use topics of their own; a broker that starts empty starts fast (noida-db loads
# every saved topic into memory when it starts).
if [[ $FRAUDSTREAM_STATE == "$PWD/.services-test" ]]; then
  scripts/services.sh down kafka >/dev/null 2>&1 || true
  rm -rf "$FRAUDSTREAM_STATE/kafka"
fi
# The lake-reader tests need pyspark and DuckDB too.
env_lines=$(FRAUDSTREAM_LAKE_READERS=1 scripts/services.sh up)
eval "$env_lines"
echo "$env_lines" | sed 's/SECRET_ACCESS_KEY=.*/SECRET_ACCESS_KEY=***/' >&2

cargo test --workspace --all-targets --locked "$@"

# A short pass of each fuzz target (the whole suite only: not when filtering tests).
if [[ $# -eq 0 ]]; then
  scripts/fuzz.sh --seconds "${FRAUDSTREAM_FUZZ_SECONDS:-45}"
fi
