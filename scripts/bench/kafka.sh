#!/usr/bin/env bash
# The detector on Kafka: a noida-db broker (and DynamoDB Local) started here with
# scripts/services.sh, on this machine, the broker, the sinks and the detector sharing its
# cores. Data: the full Kaggle file when ../shared/data/creditcard.csv.xz (or BENCH_INPUT)
# is there, else the shipped sample, replayed in a loop. Two parts, both by default:
#
# --hotpath: the hot path's cost, in CPU per transaction, on both paths, with every sink
#   on and explanations on every verdict (scoring.explain = all):
#     1. embedded: `fraudstream run` over the full Kaggle file (SQLite verdicts, the
#        Parquet lake, the alerts file);
#     2. Kafka: N messages preloaded on one partition of noida-db, consumed by
#        `fraudstream run` (SQLite verdicts, the lake, an alerts topic) with exactly-once
#        outputs (the default) and again with delivery.kafka_outputs = "at_least_once"
#        (the ratio of their CPU per transaction is printed), and, on the same
#        topic in the same run, by the Python consumer of scripts/peer_consumer.py
#        (confluent-kafka, batches of 512, scikit-learn predict_proba, SQLite, pyarrow,
#        alerts topic, synchronous commits).
#   For each it prints throughput, CPU µs per transaction (user + system, from the first
#   message read to the last one done; on Kafka, CPU from the moment the consumer is
#   ready, so the client's prefetch counts) and, for fraudstream, the time each stage took
#   per transaction (wall time inside the stage: CPU for decode and score, CPU plus
#   waiting for the sinks; stages overlap, so they need not add up to the CPU) and, on
#   Kafka, the CPU per transaction of each group of threads (librdkafka's are the Kafka
#   client). On Kafka it also prints the broker's CPU per transaction from each
#   consumer's first message to its last, and the ceiling: the same client and batches
#   reading only (peer_consumer.py drain), which no consumer of the partition exceeds on
#   this machine. N: --messages (default 100000; with far fewer, start-up latencies
#   dominate every rate, the read-only ceiling most).
#
# --e2e: end to end, loadgen → Kafka (noida-db) → `fraudstream run` → sinks. Prints:
#     1. sustained throughput with loadgen producing flat out, with the sinks enabled in
#        turn (local verdict store and alerts topic; + Parquet lake), and the detector's
#        peak RSS and CPU (the alerts topic stays on);
#     2. produce-to-durable latency p50 / p99 / p999 at a fixed offered rate, the mean
#        time per batch in each stage, and the CPU the idle detector and broker use
#        afterwards;
#     3. the same throughput with DynamoDB Local as the verdict store (its own write rate
#        is the ceiling there).
#
#   scripts/bench/kafka.sh [--hotpath | --e2e] [--messages N]
#
# Settings (environment): BENCH_INPUT (a CSV to use instead), BENCH_ROWS (e2e throughput
# rows, default 284807), BENCH_RATE (5000), BENCH_RATE_ROWS (50000), BENCH_DYNAMO_ROWS
# (20000), FRAUDSTREAM_STATE (the services' state, default .services-bench),
# FRAUDSTREAM_PORT_OFFSET (default 3000: `make test` uses 1000, scripts/soak.sh 2000).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$0")/lib.sh"

want_hotpath=0 want_e2e=0 messages=''
while [[ $# -gt 0 ]]; do
  case $1 in
    --hotpath) want_hotpath=1; shift ;;
    --e2e) want_e2e=1; shift ;;
    --messages) bench_count "$1" "${2:-}"; messages=$2; shift 2 ;;
    -h | --help) bench_usage ;;
    *) bench_usage "unknown argument $1" ;;
  esac
done
if ((!want_hotpath && !want_e2e)); then want_hotpath=1 want_e2e=1; fi
[[ -z $messages ]] || ((want_hotpath)) || bench_usage "--messages goes with --hotpath"
messages=${messages:-100000}
rows=${BENCH_ROWS:-284807}
rate=${BENCH_RATE:-5000}
rate_rows=${BENCH_RATE_ROWS:-50000}
dynamo_rows=${BENCH_DYNAMO_ROWS:-20000}

export FRAUDSTREAM_STATE=${FRAUDSTREAM_STATE:-$PWD/.services-bench}
export FRAUDSTREAM_PORT_OFFSET=${FRAUDSTREAM_PORT_OFFSET:-3000}
# The detector's API (its metrics and readiness), beside the services' block of ports.
api_port=$((${FRAUDSTREAM_PORT_BASE:-21000} + FRAUDSTREAM_PORT_OFFSET + 50))
bench_data ${BENCH_INPUT:+"$BENCH_INPUT"}
bench_build
bench_python_peers # the peer consumer, and topic creation
work=.cache/bench-kafka
run=$work/run
rm -rf "$run"
mkdir -p "$run"
detector_pid=''
cleanup() {
  local rc=$?
  if [[ -n $detector_pid ]]; then kill -KILL "$detector_pid" 2>/dev/null || true; fi
  scripts/services.sh down kafka dynamodb > /dev/null 2>&1 || true
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# services_up SERVICE...: the services, with a fresh broker (noida-db loads every saved
# topic into memory when it starts); sets brokers and broker_pid.
services_up() {
  local env
  scripts/services.sh down kafka dynamodb > /dev/null 2>&1 || true
  rm -rf "$FRAUDSTREAM_STATE/kafka"
  env=$(scripts/services.sh up "$@" 2> "$run/services.log") || {
    cat "$run/services.log" >&2
    exit 1
  }
  eval "$env"
  brokers=$FRAUDSTREAM_TEST_KAFKA
  broker_pid=$(cat "$FRAUDSTREAM_STATE/kafka.pid")
}

# create_topics TOPIC: TOPIC, TOPIC.dlq and TOPIC.alerts, one partition each (the
# detector refuses to start without its dead-letter topic).
create_topics() {
  "$bench_venv/bin/python" - "$brokers" "$1" <<'PY'
import sys
from confluent_kafka.admin import AdminClient, NewTopic
a = AdminClient({"bootstrap.servers": sys.argv[1]})
fs = a.create_topics([NewTopic(t, 1, 1) for t in [sys.argv[2], sys.argv[2] + ".dlq", sys.argv[2] + ".alerts"]])
for f in fs.values():
    f.result()
PY
}

# detector_config FILE TOPIC VERDICTS LAKE [TOML]: a detector consuming TOPIC (its own
# group; dead letters to TOPIC.dlq, alerts to TOPIC.alerts) with verdicts in VERDICTS
# (local or dynamodb), the lake writing (LAKE=1) or not, the model store $registry, the API
# on $api_port, and TOML appended.
detector_config() {
  local topic=$2 verdicts=$3 lake=$4
  {
    printf '[source]\nkind = "kafka"\n\n[alerts]\nstdout = false\n\n'
    printf '[kafka]\nbrokers = "%s"\ntopics = ["%s"]\ngroup_id = "%s"\n' \
      "$brokers" "$topic" "${group_id:-fraudstream-$topic}"
    printf 'dlq_topic = "%s.dlq"\nalerts_topic = "%s.alerts"\n' "$topic" "$topic"
    printf '\n[verdicts]\nbackend = "%s"\nlocal_path = "%s/%s.db"\n' "$verdicts" "$run" "$topic"
    if [[ $verdicts == dynamodb ]]; then
      printf '\n[verdicts.dynamodb]\ntable = "%s"\nendpoint = "%s"\naccess_key_id = "local"\nsecret_access_key = "local"\ncreate_table = true\n' \
        "$topic" "$FRAUDSTREAM_TEST_DYNAMODB"
    fi
    printf '\n[lake]\nlocation = "%s/lake-%s"\n' "$run" "$topic"
    if ((!lake)); then
      # The lake still exists, but a one-file-per-day limit keeps it from ever writing.
      printf '\n[lake.writer]\nmax_rows = 100000000\nmax_bytes = 100000000000\nmax_age = "1d"\n'
    fi
    printf '\n[models]\nlocation = "%s"\npoll_interval = "0s"\n\n[api]\naddress = "127.0.0.1:%s"\n' \
      "$registry" "$api_port"
    printf '%s' "${5:-}"
  } > "$1"
}

# start_detector CONFIG NAME: `fraudstream run --config CONFIG` in the background (summary
# in $run/NAME.summary, log in $run/NAME.log); returns once it is ready (/readyz).
start_detector() {
  RUST_LOG=${RUST_LOG:-warn,fraudstream::stream::process=error} \
    target/release/fraudstream run --config "$1" > "$run/$2.summary" 2> "$run/$2.log" &
  detector_pid=$!
  local t=$SECONDS
  until curl -sf -o /dev/null "http://127.0.0.1:$api_port/readyz"; do
    detector_alive "$2"
    ((SECONDS - t < 120)) || { tail -n 20 "$run/$2.log" >&2; echo "detector not ready in 120 s" >&2; exit 1; }
    sleep 0.01
  done
}

detector_alive() { # NAME
  kill -0 "$detector_pid" 2>/dev/null || {
    tail -n 20 "$run/$1.log" >&2
    echo "detector died (log: $run/$1.log)" >&2
    exit 1
  }
}

stop_detector() {
  kill -TERM "$detector_pid"
  wait "$detector_pid" || true
  detector_pid=''
}

# scored: the detector's count of scored transactions, from its metrics.
scored() {
  curl -s "http://127.0.0.1:$api_port/metrics" 2>/dev/null |
    awk '/^fraudstream_scored_total / { print $2; f = 1 } END { if (!f) print 0 }'
}

# wait_scored TARGET NAME [POLL]: waits until the detector has scored TARGET transactions,
# polling every POLL seconds (default 0.05); fails if it dies or stalls for a minute.
wait_scored() {
  local n=0 last=-1 since=$SECONDS
  while ((n < $1)); do
    n=$(scored)
    if ((n != last)); then last=$n since=$SECONDS; fi
    detector_alive "$2"
    ((SECONDS - since < 60)) || { tail -n 20 "$run/$2.log" >&2; echo "detector stalled at $n of $1" >&2; exit 1; }
    sleep "${3:-0.05}"
  done
}

# --- the hot path -----------------------------------------------------------------------

# peer ARGS...: scripts/peer_consumer.py ARGS on $topic; prints its rate, its CPU µs per
# message and the broker's CPU µs per message from its first message to its last.
peer() {
  "$bench_venv/bin/python" scripts/peer_consumer.py "$@" --brokers "$brokers" \
    --topic "$topic" --expect "$messages" --watch-pid "$broker_pid" | "$bench_venv/bin/python" -c '
import json, sys
r = json.load(sys.stdin)
n = r["messages"]
print("%.0f %.1f %.1f" % (n / r["seconds"], r["cpu_seconds"] * 1e6 / n, r["watched_cpu_seconds"] * 1e6 / n))'
}

# hotpath_detector NAME OUTPUTS: `fraudstream run` over the preloaded $topic in a group of
# its own with delivery.kafka_outputs = OUTPUTS; prints its figures and writes
# "RATE CPU_US" to $run/NAME.figures. CPU from readiness (the model loaded; the consumer
# about to fetch, so librdkafka's prefetch is counted); throughput from the first verdict
# to the last. The broker runs on the same cores: its CPU per message served is printed
# beside each consumer's, since it bounds how fast any consumer can read here.
hotpath_detector() {
  local name=$1 c0 c1 b0 b1 t0 t1 rate cpu
  group_id=$name-$topic detector_config "$run/$name.toml" "$topic" local 1 \
    "$(printf '\n[delivery]\nkafka_outputs = "%s"\n' "$2")"
  start_detector "$run/$name.toml" "$name"
  c0=$(bench_cpu_ticks "$detector_pid")
  bench_threads "$detector_pid" > "$run/threads0"
  wait_scored 1 "$name" 0.01
  t0=$(date +%s.%N) b0=$(bench_cpu_ticks "$broker_pid")
  wait_scored "$messages" "$name"
  t1=$(date +%s.%N) c1=$(bench_cpu_ticks "$detector_pid") b1=$(bench_cpu_ticks "$broker_pid")
  bench_threads "$detector_pid" > "$run/threads1"
  stop_detector
  rate=$(awk -v a="$t0" -v b="$t1" -v n="$messages" 'BEGIN { printf "%.0f", n / (b - a) }')
  cpu=$(bench_ticks_per_tx $((c1 - c0)) "$messages")
  echo "fraudstream kafka ($2): $rate tx/s, $cpu us CPU/tx (the broker meanwhile: $(bench_ticks_per_tx $((b1 - b0)) "$messages") us CPU/tx)"
  bench_thread_groups "$run/threads0" "$run/threads1" "$messages"
  bench_stages "$run/$name.summary" "$messages"
  echo "$rate $cpu" > "$run/$name.figures"
}

hotpath() {
  local key c0 c1 b0 b1 t0 t1 fs_rate fs_cpu py_rate py_cpu py_broker dr_rate dr_cpu dr_broker
  key=$(bench_data_key)
  if [[ ! -f $work/peer-$key.joblib ]]; then
    echo "training the peer's forest (scikit-learn, 100 trees) on $data..." >&2
    "$bench_venv/bin/python" scripts/peer_consumer.py train "$data" "$work/peer-$key.joblib"
  fi
  registry=$work/registry-$key
  if [[ ! -d $registry ]]; then
    target/release/fraudstream train --input "$data" --split none --out "$work/model-$key.fsm" \
      --publish "$registry" > /dev/null || { rm -rf "$registry"; exit 1; }
  fi

  echo "== embedded, $data"
  bench_embedded target/release/fraudstream "$registry" "$data" "$run/embedded" \
    FRAUDSTREAM__MODELS__POLL_INTERVAL=0s
  echo "fraudstream embedded: $(bench_run_figures "$data_rows")"
  bench_stages "$run/embedded/summary" "$data_rows"

  echo "== kafka: $messages messages preloaded on one partition"
  services_up kafka
  topic=hot-$(date +%s)
  create_topics "$topic"
  target/release/loadgen --input "$data" --loop --limit "$messages" --brokers "$brokers" \
    --topic "$topic" > "$run/loadgen.out" 2> "$run/loadgen.err" || {
    cat "$run/loadgen.err" >&2
    exit 1
  }
  # Exactly-once outputs (the default), then at-least-once, each in a group of its own.
  local alo_rate alo_cpu
  hotpath_detector hotpath exactly_once
  read -r fs_rate fs_cpu < "$run/hotpath.figures"
  hotpath_detector hotpath-alo at_least_once
  read -r alo_rate alo_cpu < "$run/hotpath-alo.figures"
  awk -v a="$fs_cpu" -v b="$alo_cpu" -v c="$fs_rate" -v d="$alo_rate" \
    'BEGIN { printf "exactly once / at least once: %.2fx the CPU per transaction, %.2fx the throughput\n", a / b, c / d }'

  read -r py_rate py_cpu py_broker < <(peer run --group "python-$topic" \
    --alerts-topic "$topic.alerts" --model "$work/peer-$key.joblib" --out "$run/python")
  echo "python consumer:   $py_rate tx/s, $py_cpu us CPU/tx (the broker meanwhile: $py_broker us CPU/tx)"
  awk -v a="$fs_rate" -v b="$py_rate" -v c="$fs_cpu" -v d="$py_cpu" \
    'BEGIN { printf "fraudstream / python: %.1fx the throughput, %.1fx less CPU per transaction\n", a / b, d / c }'
  # The ceiling: the same client settings and batches, reading only. No consumer of this
  # partition goes faster on this machine, whatever it does per message.
  read -r dr_rate dr_cpu dr_broker < <(peer drain --group "drain-$topic")
  echo "read only (ceiling): $dr_rate tx/s, $dr_cpu us CPU/tx (the broker meanwhile: $dr_broker us CPU/tx)"
  awk -v a="$dr_rate" -v b="$py_rate" \
    'BEGIN { printf "  10x the python consumer would be %.0f tx/s: %.1fx the read-only ceiling\n", 10 * b, 10 * b / a }'
}

# --- end to end -------------------------------------------------------------------------

# e2e_detector NAME VERDICTS LAKE: creates a topic (with one message) and starts a
# detector on it, so the partitions are assigned before the load starts; sets topic.
e2e_detector() {
  topic=bench-$1-$RANDOM
  create_topics "$topic"
  target/release/loadgen --input "$data" --limit 1 --brokers "$brokers" --topic "$topic" \
    > /dev/null 2>&1
  detector_config "$run/$1.toml" "$topic" "$2" "$3" "$(printf '%s\n' \
    '' '[scoring]' 'batch_size = 1024' 'batch_timeout = "5ms"' \
    '' '[bootstrap]' "history = \"$data\"" \
    '' '[kafka.properties]' '"fetch.wait.max.ms" = "5"' '"fetch.error.backoff.ms" = "10"')"
  start_detector "$run/$1.toml" "$1"
  sleep 2
}

# throughput LABEL VERDICTS LAKE ROWS: loadgen replays ROWS as fast as it can while
# the detector consumes; the rate is verdicts/s from the first verdict to the last. (Not a
# preloaded topic: noida-db ignores fetch.max.bytes and answers a fetch with the whole
# backlog, which takes that much memory; past 1 GB the detector could not read it at all.)
throughput() {
  local label=$1 n=$4 name loadgen t0 n0=1 t1 usage sent
  name=$(echo "$label" | tr -c 'a-z0-9\n' '-')
  e2e_detector "$name" "$2" "$3"
  target/release/loadgen --input "$data" --loop --limit "$n" --brokers "$brokers" \
    --topic "$topic" 2> "$run/$name.loadgen" > /dev/null &
  loadgen=$!
  until ((n0 > 1)); do n0=$(scored); sleep 0.01; done
  t0=$(date +%s.%N)
  wait_scored $((n + 1)) "$name"
  t1=$(date +%s.%N)
  wait "$loadgen"
  usage=$(bench_proc_usage "$detector_pid")
  stop_detector
  sent=$(grep -o '"rate_per_second":[0-9]*' "$run/$name.loadgen" | cut -d: -f2)
  awk -v n="$n" -v n0="$n0" -v a="$t0" -v b="$t1" -v u="$usage" -v label="$label" -v sent="$sent" 'BEGIN {
    split(u, x, " ")
    printf "%-38s %7d tx  %8.0f tx/s  (loadgen %6d/s)   peak RSS %4d MiB   CPU %.1f s\n",
      label, n, (n + 1 - n0) / (b - a), sent, x[1], x[2] }'
}

e2e() {
  local usage d0 d1 b0 b1
  echo "input: $data  rows: $rows" >&2
  services_up kafka dynamodb
  # One model for every run, published before they start (so the detectors' RSS and CPU
  # are serving only).
  registry=$run/e2e-registry
  target/release/fraudstream train --input "$data" --out "$run/e2e-model.fsm" --publish "$registry" \
    > /dev/null 2>&1

  echo
  echo "== sustained throughput (loadgen, broker and detector together; verdicts/s, first to last)"
  throughput "verdicts(local)+alerts" local 0 "$rows"
  throughput "verdicts(local)+lake+alerts" local 1 "$rows"
  throughput "verdicts(dynamodb-local)+lake+alerts" dynamodb 1 "$dynamo_rows"

  echo
  echo "== latency at $rate tx/s offered ($rate_rows tx; produce -> durable in every durable sink)"
  e2e_detector latency local 1
  target/release/loadgen --input "$data" --loop --limit "$rate_rows" --rate "$rate" \
    --brokers "$brokers" --topic "$topic" 2> "$run/latency.loadgen" > /dev/null
  wait_scored $((rate_rows + 1)) latency
  usage=$(bench_proc_usage "$detector_pid")
  # Mean time per batch in each stage, from the detector's own histograms.
  curl -s "http://127.0.0.1:$api_port/metrics" | awk '
    /^fraudstream_stage_seconds_sum/ { match($0, /stage="[a-z]+"/); st = substr($0, RSTART + 7, RLENGTH - 8); sum[st] = $2 }
    /^fraudstream_stage_seconds_count/ { match($0, /stage="[a-z]+"/); st = substr($0, RSTART + 7, RLENGTH - 8); cnt[st] = $2 }
    END { printf "  per batch (mean ms):"; for (s in sum) if (cnt[s] > 0) printf "  %s %.2f", s, 1000 * sum[s] / cnt[s]; printf "  (%d batches)\n", cnt["score"] }'
  # CPU while idle (caught up, nothing arriving), detector and broker, over 10 s.
  d0=$(bench_cpu_ticks "$detector_pid") b0=$(bench_cpu_ticks "$broker_pid")
  sleep 10
  d1=$(bench_cpu_ticks "$detector_pid") b1=$(bench_cpu_ticks "$broker_pid")
  stop_detector
  { grep -hE "produced->durable|read->durable" "$run/latency.summary" "$run/latency.log" || true; } |
    sed 's/^ */  /'
  echo "  offered: $(grep -o '"rate_per_second":[0-9.]*' "$run/latency.loadgen" | cut -d: -f2) tx/s achieved by loadgen; detector peak RSS / CPU: $usage (MiB / s)"
  awk -v d=$((d1 - d0)) -v b=$((b1 - b0)) -v h="$bench_clk_tck" 'BEGIN {
    printf "  idle afterwards, CPU share of one core: detector %.0f%%, broker %.0f%%\n", 100 * d / h / 10, 100 * b / h / 10 }'
}

if ((want_hotpath)); then hotpath; fi
if ((want_e2e)); then e2e; fi
