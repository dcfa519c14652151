#!/usr/bin/env bash
# End-to-end benchmark: loadgen → Kafka (noida-db) → `fraudstream run` → sinks, on this
# machine, with the broker, the sinks and the detector sharing it. Prints:
#   1. sustained throughput with loadgen producing flat out, with each sink enabled in turn
#      (local verdict store only; + Parquet lake; + alerts topic), and the detector's
#      peak RSS and CPU;
#   2. produce-to-durable latency p50 / p99 / p999 at a fixed offered rate;
#   3. the same throughput with DynamoDB Local as the verdict store (its own write rate is
#      the ceiling there).
# Input: the real Kaggle file when ../shared/data/creditcard.csv.xz (or BENCH_INPUT) is
# present, else the shipped sample, replayed in a loop.
#
# Settings (environment): BENCH_ROWS (default 284807), BENCH_RATE (5000), BENCH_RATE_ROWS
# (50000), BENCH_DYNAMO_ROWS (20000), FRAUDSTREAM_PORT_OFFSET (2000).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
export FRAUDSTREAM_STATE=${FRAUDSTREAM_STATE:-$ROOT/.services-bench}
export FRAUDSTREAM_PORT_OFFSET=${FRAUDSTREAM_PORT_OFFSET:-2000}
ROWS=${BENCH_ROWS:-284807}
RATE=${BENCH_RATE:-5000}
RATE_ROWS=${BENCH_RATE_ROWS:-50000}
DYNAMO_ROWS=${BENCH_DYNAMO_ROWS:-20000}
METRICS_PORT=$((21000 + FRAUDSTREAM_PORT_OFFSET + 50))
WORK=$(mktemp -d)

stop() {
  local rc=$?
  [[ -n ${DETECTOR_PID:-} ]] && kill -KILL "$DETECTOR_PID" 2>/dev/null || true
  scripts/services.sh down kafka dynamodb >/dev/null 2>&1 || true
  rm -rf "$WORK"
  exit "$rc"
}
trap stop EXIT INT TERM

cargo build --release --locked -q -p fraudstream -p loadgen
BIN=$ROOT/target/release
# A fresh broker: noida-db loads every saved topic into memory when it starts.
scripts/services.sh down kafka >/dev/null 2>&1 || true
rm -rf "$FRAUDSTREAM_STATE/kafka"
eval "$(scripts/services.sh up kafka dynamodb 2>/dev/null)"
BROKERS=$FRAUDSTREAM_TEST_KAFKA

# Input rows.
INPUT=${BENCH_INPUT:-}
LOOP=()
if [[ -z $INPUT ]]; then
  if [[ -f ../shared/data/creditcard.csv.xz ]]; then
    INPUT=$ROOT/.cache/creditcard.csv
    [[ -s $INPUT ]] || xz -dc ../shared/data/creditcard.csv.xz >"$INPUT"
  else
    INPUT=$ROOT/data/creditcard-sample.csv
    LOOP=(--loop)
  fi
fi
echo "input: $INPUT  rows: $ROWS" >&2

# One model for every run, published to the runs' model store before they start (so the
# detectors' RSS and CPU are serving only).
"$BIN/fraudstream" train --input "$INPUT" --out "$WORK/model.fsm" --publish "$WORK/registry" >/dev/null 2>&1

config() { # name verdicts(local|dynamodb) lake(0|1) alerts(0|1) topic
  local name=$1 verdicts=$2 lake=$3 alerts=$4 topic=$5 f=$WORK/$1.toml
  {
    printf '[source]\nkind = "kafka"\n\n[scoring]\nbatch_size = 1024\nbatch_timeout = "5ms"\n\n'
    printf '[alerts]\nstdout = false\n\n[bootstrap]\nhistory = "%s"\n\n' "$INPUT"
    printf '[kafka]\nbrokers = "%s"\ntopics = ["%s"]\ngroup_id = "%s"\ndlq_topic = "%s.dlq"\n' \
      "$BROKERS" "$topic" "$name" "$topic"
    if [[ $alerts == 1 ]]; then printf 'alerts_topic = "%s.alerts"\n' "$topic"; fi
    printf '\n[kafka.properties]\n"fetch.wait.max.ms" = "5"\n"fetch.error.backoff.ms" = "10"\n\n'
    printf '[verdicts]\nbackend = "%s"\nlocal_path = "%s/%s.db"\n' "$verdicts" "$WORK" "$name"
    if [[ $verdicts == dynamodb ]]; then
      printf '\n[verdicts.dynamodb]\ntable = "%s"\nendpoint = "%s"\naccess_key_id = "local"\nsecret_access_key = "local"\ncreate_table = true\n' \
        "$name" "$FRAUDSTREAM_TEST_DYNAMODB"
    fi
    if [[ $lake == 1 ]]; then
      printf '\n[lake]\nlocation = "%s/lake-%s"\n' "$WORK" "$name"
    else
      # The lake still exists, but a one-row-per-day limit keeps it from ever writing.
      printf '\n[lake]\nlocation = "%s/lake-%s"\n\n[lake.writer]\nmax_rows = 100000000\nmax_bytes = 100000000000\nmax_age = "1d"\n' "$WORK" "$name"
    fi
    printf '\n[models]\nlocation = "%s/registry"\n\n[api]\naddress = "127.0.0.1:%s"\n' "$WORK" "$METRICS_PORT"
  } >"$f"
  echo "$f"
}

scored() {
  curl -s "http://127.0.0.1:$METRICS_PORT/metrics" 2>/dev/null |
    awk '/^fraudstream_scored_total /{print $2; found=1} END{if(!found) print 0}'
}

start_detector() { # config log
  RUST_LOG=warn,fraudstream::stream::process=error "$BIN/fraudstream" run --config "$1" >"$2" 2>&1 &
  DETECTOR_PID=$!
  local t=$SECONDS
  until curl -s -o /dev/null "http://127.0.0.1:$METRICS_PORT/readyz" 2>/dev/null; do
    ((SECONDS - t < 120)) || { cat "$2" >&2; echo "detector did not start" >&2; exit 1; }
    sleep 0.2
  done
}

usage() { # pid → "rss_mib cpu_seconds"
  local hwm ticks
  hwm=$(awk '/VmHWM/{print $2}' "/proc/$1/status")
  ticks=$(awk '{print $14 + $15}' "/proc/$1/stat")
  echo "$((hwm / 1024)) $(awk -v t="$ticks" -v h="$(getconf CLK_TCK)" 'BEGIN{printf "%.1f", t/h}')"
}

stop_detector() {
  kill -TERM "$DETECTOR_PID"
  wait "$DETECTOR_PID" || true
  DETECTOR_PID=
}

# Waits until the detector has scored $1 transactions; fails if it dies or stalls for a minute.
wait_scored() { # target log
  local n=0 last=-1 since=$SECONDS
  while ((n < $1)); do
    n=$(scored)
    if ((n != last)); then last=$n since=$SECONDS; fi
    kill -0 "$DETECTOR_PID" 2>/dev/null || { tail -20 "$2" >&2; echo "detector died" >&2; exit 1; }
    ((SECONDS - since < 60)) || { tail -20 "$2" >&2; echo "detector stalled at $n of $1" >&2; exit 1; }
    sleep 0.05
  done
}

# Creates a topic (one message) and starts a detector on it, so the partitions are
# assigned before the load starts.
start_on_new_topic() { # name verdicts lake alerts → sets TOPIC
  TOPIC=bench-$1-$RANDOM
  "$BIN/loadgen" --input "$INPUT" --limit 1 --brokers "$BROKERS" --topic "$TOPIC" >/dev/null 2>&1
  local cfg
  cfg=$(config "$1" "$2" "$3" "$4" "$TOPIC")
  start_detector "$cfg" "$WORK/$1.log"
  sleep 2
}

# Sustained throughput: loadgen replays as fast as it can while the detector consumes;
# the rate is verdicts/s from the first verdict to the last. (Not a preloaded topic:
# noida-db ignores fetch.max.bytes and answers a fetch with the whole backlog, which
# takes that much memory; past 1 GB the detector could not read it at all.)
throughput() { # label verdicts lake alerts rows
  local label=$1 rows=$5 name
  name=$(echo "$1" | tr -c 'a-z0-9\n' '-')
  start_on_new_topic "$name" "$2" "$3" "$4"
  "$BIN/loadgen" --input "$INPUT" "${LOOP[@]}" --limit "$rows" --brokers "$BROKERS" \
    --topic "$TOPIC" 2>"$WORK/$name.loadgen" >/dev/null &
  local loadgen=$! t0 n=1 n0 now
  until ((n > 1)); do n=$(scored); sleep 0.01; done
  t0=$(date +%s.%N) n0=$n
  wait_scored $((rows + 1)) "$WORK/$name.log"
  now=$(date +%s.%N)
  wait "$loadgen"
  local u sent
  u=$(usage "$DETECTOR_PID")
  stop_detector
  sent=$(grep -o '"rate_per_second":[0-9]*' "$WORK/$name.loadgen" | cut -d: -f2)
  awk -v n="$rows" -v n0="$n0" -v a="$t0" -v b="$now" -v u="$u" -v label="$label" -v sent="$sent" 'BEGIN{
    split(u, x, " "); wall = b - a;
    printf "%-38s %7d tx  %8.0f tx/s  (loadgen %6d/s)   peak RSS %4d MiB   CPU %.1f s\n", label, n, (n + 1 - n0) / wall, sent, x[1], x[2] }'
}

echo
echo "== sustained throughput (loadgen, broker and detector together; verdicts/s, first to last)"
throughput "verdicts(local)" local 0 0 "$ROWS"
throughput "verdicts(local)+lake" local 1 0 "$ROWS"
throughput "verdicts(local)+lake+alerts" local 1 1 "$ROWS"
throughput "verdicts(dynamodb-local)+lake+alerts" dynamodb 1 1 "$DYNAMO_ROWS"

echo
echo "== latency at $RATE tx/s offered ($RATE_ROWS tx; produce -> durable in every durable sink)"
start_on_new_topic latency local 1 1
"$BIN/loadgen" --input "$INPUT" "${LOOP[@]}" --limit "$RATE_ROWS" --rate "$RATE" \
  --brokers "$BROKERS" --topic "$TOPIC" 2>"$WORK/latency.loadgen" >/dev/null
wait_scored $((RATE_ROWS + 1)) "$WORK/latency.log"
u=$(usage "$DETECTOR_PID")
# Mean time per batch in each stage, from the detector's own histograms.
curl -s "http://127.0.0.1:$METRICS_PORT/metrics" | awk '
  /^fraudstream_stage_seconds_sum/ { match($0, /stage="[a-z]+"/); st = substr($0, RSTART + 7, RLENGTH - 8); sum[st] = $2 }
  /^fraudstream_stage_seconds_count/ { match($0, /stage="[a-z]+"/); st = substr($0, RSTART + 7, RLENGTH - 8); cnt[st] = $2 }
  END { printf "  per batch (mean ms):"; for (s in sum) if (cnt[s] > 0) printf "  %s %.2f", s, 1000 * sum[s] / cnt[s]; printf "  (%d batches)\n", cnt["score"] }'

# CPU while idle (caught up, nothing arriving), detector and broker, over 10 s.
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
BROKER_PID=$(pgrep -f "noida-db start .*--kafka-port ${BROKERS##*:}" | head -1)
d0=$(ticks "$DETECTOR_PID") b0=$(ticks "$BROKER_PID")
sleep 10
d1=$(ticks "$DETECTOR_PID") b1=$(ticks "$BROKER_PID")
stop_detector
grep -E "produced->durable|read->durable" "$WORK/latency.log" | sed 's/^ */  /'
echo "  offered: $(grep -o '"rate_per_second":[0-9.]*' "$WORK/latency.loadgen" | cut -d: -f2) tx/s achieved by loadgen; detector peak RSS / CPU: $u (MiB / s)"
awk -v d=$((d1 - d0)) -v b=$((b1 - b0)) -v h="$(getconf CLK_TCK)" 'BEGIN{
  printf "  idle afterwards, CPU share of one core: detector %.0f%%, broker %.0f%%\n", 100 * d / h / 10, 100 * b / h / 10 }'
