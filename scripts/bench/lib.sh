# shellcheck shell=bash
# The shared part of the benchmark scripts in scripts/bench/, sourced by each of them
# first thing; not run on its own. Sourcing it notes the caller's directory (paths given
# on a command line are relative to it, see bench_abs) and moves to the repository root:
# every path below is relative to the root.
#
# Settings (environment):
#   BENCH_XZ      the full Kaggle file, compressed (default ../shared/data/creditcard.csv.xz)
#   BENCH_BUILD   0: use the release binaries in target/release as they are, no cargo build

bench_caller_dir=$PWD
bench_script=$(cd "$(dirname "$0")" && pwd)/$(basename "$0")
cd "$(dirname "${BASH_SOURCE[0]}")/../.." || exit 1
bench_clk_tck=$(getconf CLK_TCK)

# --- command line -----------------------------------------------------------------------

# bench_usage [MESSAGE]: prints the calling script's leading comment (its usage) and exits:
# 0 without MESSAGE (--help), else 2 after MESSAGE, all on stderr.
bench_usage() {
  local text
  text=$(sed -n '2,/^[^#]/s/^# \{0,1\}//p' "$bench_script")
  if [[ $# -eq 0 ]]; then
    echo "$text"
    exit 0
  fi
  printf '%s: %s\n\n%s\n' "$(basename "$bench_script")" "$1" "$text" >&2
  exit 2
}

# bench_count OPTION VALUE: checks that an option's VALUE is a positive integer.
bench_count() {
  [[ ${2:-} =~ ^[1-9][0-9]*$ ]] || bench_usage "$1 needs a positive whole number, not '${2:-}'"
}

# bench_abs PATH: PATH as given on the command line, made absolute (relative paths are
# relative to where the script was started, not to the repository root).
bench_abs() {
  if [[ $1 == /* ]]; then echo "$1"; else echo "$bench_caller_dir/$1"; fi
}

# --- data and binaries ------------------------------------------------------------------

# bench_data [--looped] [FILE]: sets `data` to the CSV to run on, `data_rows` to its
# number of rows and `data_sample` to 1 when it is the shipped sample (or its loop), else 0:
#   - FILE when given: a CSV, or a .csv.xz unpacked once into .cache/;
#   - else the full Kaggle file, unpacked once from $BENCH_XZ into .cache/creditcard.csv;
#   - else, without it, the shipped sample data/creditcard-sample.csv (figures not
#     comparable with the full file's), or with --looped the sample's rows 80 times over
#     (.cache/sample-x80.csv: 275,680 rows, about the full file's size).
# shellcheck disable=SC2034 # data_rows and data_sample are for the callers
bench_data() {
  local looped=0 src
  if [[ ${1:-} == --looped ]]; then
    looped=1
    shift
  fi
  data_sample=0
  if [[ $# -gt 0 ]]; then
    src=$(bench_abs "$1")
    [[ -f $src ]] || bench_usage "no such file: $1"
  else
    src=${BENCH_XZ:-../shared/data/creditcard.csv.xz}
    [[ -f $src || ! -s .cache/creditcard.csv ]] || src=.cache/creditcard.csv
  fi
  if [[ -f $src ]]; then
    case $src in
      *.xz)
        data=.cache/$(basename "${src%.xz}")
        if [[ ! -s $data ]]; then
          echo "unpacking $src into $data..." >&2
          mkdir -p .cache
          xz -dc "$src" > "$data.tmp"
          mv -f "$data.tmp" "$data"
        fi
        ;;
      *) data=$src ;;
    esac
  else
    echo "note: $src not found; running on the shipped sample (figures not comparable)" >&2
    data=data/creditcard-sample.csv
    data_sample=1
    if ((looped)); then
      data=.cache/sample-x80.csv
      if [[ ! -s $data ]]; then
        mkdir -p .cache
        { head -n 1 data/creditcard-sample.csv
          for _ in $(seq 80); do tail -n +2 data/creditcard-sample.csv; done; } > "$data.tmp"
        mv -f "$data.tmp" "$data"
      fi
    fi
  fi
  data_rows=$(($(wc -l < "$data") - 1))
}

# bench_build: the release build of fraudstream and loadgen (both always, so that cargo's
# feature unification never rebuilds one for the other), unless BENCH_BUILD=0.
bench_build() {
  [[ ${BENCH_BUILD:-1} == 0 ]] && return 0
  echo "building fraudstream and loadgen (release)..." >&2
  cargo build --release --locked -p fraudstream -p loadgen >&2
}

# bench_bin_key BINARY: a short hash of the binary, to cache what a build trained.
bench_bin_key() { sha256sum "$1" | cut -c1-16; }

# bench_data_key: a short hash of `data`, to cache what was trained on it.
bench_data_key() { sha256sum "$data" | cut -c1-16; }

# --- timing -----------------------------------------------------------------------------

# bench_time FILE COMMAND...: runs COMMAND under /usr/bin/time; FILE gets its wall time,
# user and system CPU seconds and peak RSS (KiB). Read it with bench_read_time.
bench_time() {
  local file=$1
  shift
  /usr/bin/time -f '%e %U %S %M' -o "$file" "$@"
}

# bench_read_time FILE: sets time_wall, time_user, time_sys (seconds) and time_rss (KiB).
bench_read_time() {
  # shellcheck disable=SC2034 # read by the callers
  read -r time_wall time_user time_sys time_rss < <(tail -n 1 "$1")
}

# bench_cpu_per_tx ROWS [DECIMALS]: user + system CPU µs per transaction of the last run
# read (default 1 decimal).
bench_cpu_per_tx() {
  awk -v u="$time_user" -v s="$time_sys" -v n="$1" -v d="${2:-1}" \
    'BEGIN { printf "%." d "f\n", (u + s) * 1e6 / n }'
}

# bench_run_figures ROWS: the last run read, as "W s wall, R tx/s, C us CPU/tx (user U s,
# sys S s), peak RSS M MiB" (CPU: user + system of the whole process, start-up included).
bench_run_figures() {
  awk -v w="$time_wall" -v u="$time_user" -v s="$time_sys" -v m="$time_rss" -v n="$1" 'BEGIN {
    printf "%.2f s wall, %.0f tx/s, %.1f us CPU/tx (user %.2f s, sys %.2f s), peak RSS %.0f MiB\n",
      w, n / w, (u + s) * 1e6 / n, u, s, m / 1024 }'
}

# bench_median: the median of the numbers on stdin, one a line.
bench_median() {
  sort -g | awk '{ a[NR] = $1 } END { print NR % 2 ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}

# --- the embedded detector --------------------------------------------------------------

# bench_embedded BINARY REGISTRY INPUT DIR [NAME=VALUE...]: one timed
# `BINARY run --config config/local.toml` over INPUT, serving the model store REGISTRY,
# with config/local.toml's sinks writing under DIR (emptied first: SQLite verdicts, the
# Parquet lake, the alerts and dead-letter files), alerts not printed, the API off, and the
# NAME=VALUE settings on top. Leaves DIR/summary (stdout), DIR/log (stderr) and DIR/time,
# and sets time_* (bench_read_time). On failure prints the log's end and fails.
bench_embedded() {
  local bin=$1 registry=$2 input=$3 dir=$4
  shift 4
  rm -rf "$dir"
  mkdir -p "$dir"
  bench_time "$dir/time" env \
    FRAUDSTREAM__MODELS__LOCATION="$registry" FRAUDSTREAM__SOURCE__PATH="$input" \
    FRAUDSTREAM__VERDICTS__LOCAL_PATH="$dir/verdicts.db" FRAUDSTREAM__LAKE__LOCATION="$dir/lake" \
    FRAUDSTREAM__ALERTS__FILE="$dir/alerts.jsonl" FRAUDSTREAM__DLQ__FILE="$dir/dlq.jsonl" \
    FRAUDSTREAM__ALERTS__STDOUT=false FRAUDSTREAM__API__ENABLED=false "$@" \
    "$bin" run --config config/local.toml > "$dir/summary" 2> "$dir/log" || {
    tail -n 20 "$dir/log" >&2
    echo "$bin run failed (log: $dir/log)" >&2
    return 1
  }
  bench_read_time "$dir/time"
}

# bench_stages SUMMARY ROWS: the run summary's "time in stages (s)" line as the wall time
# per transaction inside each stage: "  stage time per tx (us): decode 1.5 score 4.8 ...".
# (CPU for decode and score, CPU plus waiting for the sinks; stages overlap, so they need
# not add up to the CPU.)
bench_stages() {
  awk -v n="$2" '/time in stages/ {
    sub(/.*time in stages \(s\) */, "")
    line = "  stage time per tx (us):"
    for (i = 1; i < NF; i += 2) line = line sprintf(" %s %.1f", $i, $(i + 1) * 1e6 / n)
    print line }' "$1"
}

# bench_stage_seconds SUMMARY STAGE: the seconds spent in STAGE by the run (0 if absent).
bench_stage_seconds() {
  awk -v st="$2" '/time in stages/ { for (i = 1; i < NF; i++) if ($i == st) { print $(i + 1); f = 1 } }
    END { if (!f) print 0 }' "$1"
}

# --- CPU of running processes (/proc) ---------------------------------------------------

# bench_cpu_ticks PID: user + system CPU of the process so far, in clock ticks.
bench_cpu_ticks() { sed 's/.*) //' "/proc/$1/stat" | awk '{ print $12 + $13 }'; }

# bench_ticks_per_tx TICKS N: TICKS clock ticks of CPU as µs per transaction over N.
bench_ticks_per_tx() {
  awk -v t="$1" -v k="$bench_clk_tck" -v n="$2" 'BEGIN { printf "%.1f\n", t / k * 1e6 / n }'
}

# bench_threads PID: one line per thread of the process: tid, name, CPU ticks (user + system).
bench_threads() {
  local t
  for t in /proc/"$1"/task/*; do
    printf '%s %s %s\n' "${t##*/}" "$(tr ' ' _ < "$t/comm")" \
      "$(sed 's/.*) //' "$t/stat" | awk '{ print $12 + $13 }')"
  done 2>/dev/null
}

# bench_thread_groups BEFORE AFTER N: CPU µs per transaction by thread name between two
# bench_threads snapshots, over N transactions; librdkafka's threads (rdk:*) are one group,
# the Kafka client.
bench_thread_groups() {
  awk -v k="$bench_clk_tck" -v n="$3" 'FNR == NR { before[$1] = $3; next }
    { g = $2 ~ /^rdk:/ ? "kafka-client(librdkafka)" : $2; cpu[g] += $3 - before[$1] }
    END { line = "  CPU per tx by thread (us):"
      for (g in cpu) line = line sprintf(" %s %.1f", g, cpu[g] / k * 1e6 / n); print line }' "$1" "$2"
}

# bench_proc_usage PID: "RSS CPU": the process's peak RSS so far (MiB) and CPU (seconds).
bench_proc_usage() {
  local hwm
  hwm=$(awk '/VmHWM/ { print $2 }' "/proc/$1/status")
  echo "$((hwm / 1024)) $(awk -v t="$(bench_cpu_ticks "$1")" -v k="$bench_clk_tck" 'BEGIN { printf "%.1f", t / k }')"
}

# --- the Python peers -------------------------------------------------------------------

bench_venv=.cache/bench-venv

# bench_python_peers: the venv of scripts/peer_consumer.py and scripts/peer_onnx.py (every
# package either needs), installed when one of them does not import.
bench_python_peers() {
  if ! "$bench_venv/bin/python" -c \
    'import confluent_kafka, sklearn, numpy, pandas, pyarrow, joblib, fastapi, uvicorn, onnxruntime, skl2onnx' \
    2>/dev/null; then
    echo "installing the Python peers' packages into $bench_venv..." >&2
    python3 -m venv "$bench_venv"
    "$bench_venv/bin/pip" install -q confluent-kafka scikit-learn numpy pandas pyarrow joblib \
      fastapi uvicorn onnxruntime skl2onnx >&2
  fi
}
