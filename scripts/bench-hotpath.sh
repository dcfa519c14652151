#!/usr/bin/env bash
# The hot path's cost, in CPU per transaction, on both paths, with every sink on and
# explanations on every verdict (scoring.explain = all):
#   1. embedded: `fraudstream run` over the full Kaggle file (SQLite verdicts, the Parquet
#      lake, the alerts file);
#   2. Kafka: N messages preloaded on one partition of noida-db, consumed by
#      `fraudstream run` (SQLite verdicts, the lake, an alerts topic), and, on the same
#      topic in the same run, by the Python consumer of scripts/peer_consumer.py
#      (confluent-kafka, batches of 512, scikit-learn predict_proba, SQLite, pyarrow,
#      alerts topic, synchronous commits).
# For each it prints throughput, CPU µs per transaction (user + system, from the first
# message read to the last one done; on Kafka, CPU from the moment
# the consumer is ready, so the client's prefetch counts) and, for fraudstream, the time each stage took per
# transaction (wall time inside the stage: CPU for decode and score, CPU plus waiting
# for the sinks; stages overlap, so they need not add up to the CPU) and, on Kafka, the
# CPU per transaction of each group of threads (librdkafka's are the Kafka client).
# On Kafka it also prints the broker's CPU per transaction from each consumer's first
# message to its last,
# and the ceiling: the same client and batches reading only (peer_consumer.py drain),
# which no consumer of the partition exceeds on this machine.
#
#   scripts/bench-hotpath.sh [--messages N]     (default 100000; with far fewer, start-up
#   latencies dominate every rate, the read-only ceiling most)
set -euo pipefail
cd "$(dirname "$0")/.."
n=100000
if [[ ${1:-} == --messages ]]; then n=$2; fi
export FRAUDSTREAM_STATE=${FRAUDSTREAM_STATE:-$PWD/.services-bench}
export FRAUDSTREAM_PORT_OFFSET=${FRAUDSTREAM_PORT_OFFSET:-3000}
source scripts/bench-data.sh
cargo build --release --locked -p fraudstream -p loadgen >&2
venv=.cache/bench-venv
if [[ ! -x $venv/bin/python ]] || ! "$venv/bin/python" -c 'import confluent_kafka, sklearn, pyarrow, joblib' 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q confluent-kafka scikit-learn numpy pandas pyarrow joblib
fi
work=.cache/bench-hotpath
rm -rf "$work/run"
mkdir -p "$work/run"
key=$(sha256sum "$data" | cut -c1-16)
if [[ ! -f $work/peer-$key.joblib ]]; then
  echo "training the peer's forest (scikit-learn, 100 trees) on $data..." >&2
  "$venv/bin/python" scripts/peer_consumer.py train "$data" "$work/peer-$key.joblib"
fi
if [[ ! -d $work/registry-$key ]]; then
  target/release/fraudstream train --input "$data" --split none --out "$work/model-$key.fsm" \
    --publish "$work/registry-$key" >/dev/null
fi
tck=$(getconf CLK_TCK)
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# One line per thread of process $1: tid, name, CPU ticks (user + system).
threads() {
  local t
  for t in /proc/"$1"/task/*; do
    printf '%s %s %s\n' "${t##*/}" "$(tr ' ' _ < "$t/comm")" \
      "$(sed 's/.*) //' "$t/stat" | awk '{print $12 + $13}')"
  done 2>/dev/null
}
# CPU µs per transaction by thread group between two `threads` snapshots ($1, $2), for
# $3 transactions: librdkafka's threads (rdk:*) are the Kafka client.
# CPU µs per transaction of $1 clock ticks over the run's transactions.
per_tx() { awk -v t="$1" -v k="$tck" -v n="$n" 'BEGIN { printf "%.1f\n", t / k * 1e6 / n }'; }
thread_groups() {
  awk -v k="$tck" -v n="$3" 'FNR == NR { before[$1] = $3; next }
    { g = $2 ~ /^rdk:/ ? "kafka-client(librdkafka)" : $2; cpu[g] += $3 - before[$1] }
    END { line = "  CPU per tx by thread (us):"
      for (g in cpu) line = line sprintf(" %s %.1f", g, cpu[g] / k * 1e6 / n); print line }' "$1" "$2"
}

echo "== embedded, $data"
FRAUDSTREAM__MODELS__LOCATION=$work/registry-$key FRAUDSTREAM__MODELS__POLL_INTERVAL=0s \
FRAUDSTREAM__SOURCE__PATH=$data FRAUDSTREAM__ALERTS__STDOUT=false FRAUDSTREAM__API__ENABLED=false \
FRAUDSTREAM__VERDICTS__LOCAL_PATH=$work/run/e-verdicts.db FRAUDSTREAM__LAKE__LOCATION=$work/run/e-lake \
FRAUDSTREAM__ALERTS__FILE=$work/run/e-alerts.jsonl FRAUDSTREAM__DLQ__FILE=$work/run/e-dlq.jsonl \
  /usr/bin/time -f '%e %U %S %M' -o "$work/run/e-time" \
  target/release/fraudstream run --config config/local.toml > "$work/run/e-summary" 2>/dev/null
read -r wall user sys rss < "$work/run/e-time"
rows=$(($(wc -l < "$data") - 1))
stages=$(grep 'time in stages' "$work/run/e-summary" | sed 's/.*time in stages (s) *//; s/ *$//')
awk -v w="$wall" -v u="$user" -v s="$sys" -v m="$rss" -v n="$rows" -v st="$stages" 'BEGIN {
  printf "fraudstream embedded: %.0f tx/s, %.1f us CPU/tx, peak RSS %.0f MiB\n", n / w, (u + s) * 1e6 / n, m / 1024
  k = split(st, a, "  "); line = "  stage time per tx (us):"
  for (i = 1; i <= k; i++) { split(a[i], p, " "); line = line sprintf(" %s %.1f", p[1], p[2] * 1e6 / n) }
  print line }'

echo "== kafka: $n messages preloaded on one partition"
eval "$(scripts/services.sh up kafka)"
trap 'scripts/services.sh down kafka >/dev/null 2>&1 || true' EXIT
# The broker runs on the same two cores: its CPU per message served is printed beside
# each consumer's, since it bounds how fast any consumer can read here.
broker=$(cat "$FRAUDSTREAM_STATE/kafka.pid")
topic=hot-$(date +%s)
"$venv/bin/python" - "$FRAUDSTREAM_TEST_KAFKA" "$topic" <<'PY'
import sys
from confluent_kafka.admin import AdminClient, NewTopic
a = AdminClient({"bootstrap.servers": sys.argv[1]})
fs = a.create_topics([NewTopic(t, 1, 1) for t in [sys.argv[2], sys.argv[2] + ".dlq", sys.argv[2] + ".alerts"]])
for f in fs.values():
    f.result()
PY
target/release/loadgen --input "$data" --loop --limit "$n" --brokers "$FRAUDSTREAM_TEST_KAFKA" \
  --topic "$topic" > "$work/run/loadgen.out" 2> "$work/run/loadgen.err" || {
  cat "$work/run/loadgen.err" >&2; exit 1; }
port=$((FRAUDSTREAM_PORT_OFFSET + 22000))
cat > "$work/run/k.toml" <<TOML
[source]
kind = "kafka"
[alerts]
stdout = false
[kafka]
brokers = "$FRAUDSTREAM_TEST_KAFKA"
topics = ["$topic"]
group_id = "fraudstream-$topic"
dlq_topic = "$topic.dlq"
alerts_topic = "$topic.alerts"
[verdicts]
local_path = "$work/run/k-verdicts.db"
[lake]
location = "$work/run/k-lake"
[models]
location = "$work/registry-$key"
poll_interval = "0s"
[api]
address = "127.0.0.1:$port"
TOML
target/release/fraudstream run --config "$work/run/k.toml" > "$work/run/k-summary" 2>/dev/null &
pid=$!
scored() { curl -s "http://127.0.0.1:$port/metrics" | awk '/^fraudstream_scored_total /{print $2; f=1} END{if(!f) print 0}'; }
# CPU from readiness (the model loaded; the consumer about to fetch, so librdkafka's
# prefetch is counted); throughput from the first verdict to the last.
until curl -sf "http://127.0.0.1:$port/readyz" > /dev/null; do sleep 0.01; done
c0=$(cpu_ticks $pid); threads $pid > "$work/run/threads0"
until [[ $(scored) != 0 ]]; do sleep 0.01; done
t0=$(date +%s.%N); b0=$(cpu_ticks "$broker")
until [[ $(scored) -ge $n ]]; do sleep 0.05; done
t1=$(date +%s.%N); c1=$(cpu_ticks $pid); b1=$(cpu_ticks "$broker"); threads $pid > "$work/run/threads1"
kill -TERM $pid; wait $pid || true
stages=$(grep 'time in stages' "$work/run/k-summary" | sed 's/.*time in stages (s) *//; s/ *$//')
read -r fs_rate fs_cpu < <(awk -v a="$t0" -v b="$t1" -v c="$c0" -v d="$c1" -v k="$tck" -v n="$n" \
  'BEGIN { printf "%.0f %.1f\n", n / (b - a), (d - c) / k * 1e6 / n }')
echo "fraudstream kafka: $fs_rate tx/s, $fs_cpu us CPU/tx (the broker meanwhile: $(per_tx $((b1 - b0))) us CPU/tx)"
thread_groups "$work/run/threads0" "$work/run/threads1" "$n"
awk -v st="$stages" -v n="$n" 'BEGIN { k = split(st, a, "  "); line = "  stage time per tx (us):"
  for (i = 1; i <= k; i++) { split(a[i], p, " "); line = line sprintf(" %s %.1f", p[1], p[2] * 1e6 / n) }
  print line }'
# Run peer_consumer.py with "$@"; prints its rate, its CPU per message and the broker's
# CPU per message from its first message to its last.
peer() {
  "$venv/bin/python" scripts/peer_consumer.py "$@" --brokers "$FRAUDSTREAM_TEST_KAFKA" \
    --topic "$topic" --expect "$n" --watch-pid "$broker" | "$venv/bin/python" -c '
import json, sys
r = json.load(sys.stdin)
n = r["messages"]
print("%.0f %.1f %.1f" % (n / r["seconds"], r["cpu_seconds"] * 1e6 / n, r["watched_cpu_seconds"] * 1e6 / n))'
}
read -r py_rate py_cpu py_broker < <(peer run --group "python-$topic" \
  --alerts-topic "$topic.alerts" --model "$work/peer-$key.joblib" --out "$work/run/py")
echo "python consumer:   $py_rate tx/s, $py_cpu us CPU/tx (the broker meanwhile: $py_broker us CPU/tx)"
awk -v a="$fs_rate" -v b="$py_rate" -v c="$fs_cpu" -v d="$py_cpu" \
  'BEGIN { printf "fraudstream / python: %.1fx the throughput, %.1fx less CPU per transaction\n", a / b, d / c }'
# The ceiling: the same client settings and batches, reading only. No consumer of this
# partition goes faster on this machine, whatever it does per message.
read -r dr_rate dr_cpu dr_broker < <(peer drain --group "drain-$topic")
echo "read only (ceiling): $dr_rate tx/s, $dr_cpu us CPU/tx (the broker meanwhile: $dr_broker us CPU/tx)"
awk -v a="$dr_rate" -v b="$py_rate" \
  'BEGIN { printf "  10x the python consumer would be %.0f tx/s: %.1fx the read-only ceiling\n", 10 * b, 10 * b / a }'
