#!/usr/bin/env bash
# POST /v1/score with one transaction, over keep-alive, measured with oha (a real HTTP
# load generator, `cargo install oha`, installed here when missing), against
# `fraudstream serve` and, in the same run on the same data and the same transaction, the
# Python peer (scripts/peer_onnx.py: scikit-learn's 100-tree forest in ONNX, onnxruntime
# behind FastAPI and uvicorn with two workers). Both models are trained on the same file:
# the full Kaggle file when ../shared has it, else the shipped sample. For each server it
# prints:
#   - latency p50 / p99 / p999 at 2,000 requests/s for N seconds (16 connections);
#   - the highest rate it sustains (32 connections, flat out, N seconds).
# Everything shares this machine's cores with oha.
#
#   scripts/bench/api.sh [--seconds N]      (default 15)
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$0")/lib.sh"

secs=15
while [[ $# -gt 0 ]]; do
  case $1 in
    --seconds) bench_count "$1" "${2:-}"; secs=$2; shift 2 ;;
    -h | --help) bench_usage ;;
    *) bench_usage "unknown argument $1" ;;
  esac
done
# shellcheck disable=SC2119 # no DATA argument: the default data
bench_data
command -v oha > /dev/null || cargo install oha --locked
bench_build
bench_python_peers
work=.cache/bench-api
mkdir -p "$work"
key=$(bench_data_key)

# The same model data for both.
if [[ ! -f $work/peer-$key.onnx ]]; then
  echo "training the peer's forest on $data (scikit-learn, 100 trees)..." >&2
  "$bench_venv/bin/python" scripts/peer_onnx.py train "$data" "$work/peer-$key.onnx"
fi
registry=$work/registry-$key
if [[ ! -d $registry ]]; then
  target/release/fraudstream train --input "$data" --split none --out "$work/model-$key.fsm" \
    --publish "$registry" > /dev/null || { rm -rf "$registry"; exit 1; }
fi

# free_port: a loopback port nobody listens on, from 30000-39999 (above the services' ports).
free_port() {
  local p
  while :; do
    p=$((30000 + RANDOM % 10000))
    (exec 3<> "/dev/tcp/127.0.0.1/$p") 2> /dev/null || { echo "$p"; return; }
  done
}
port_fs=$(free_port)
port_py=$(free_port)
[[ $port_py != "$port_fs" ]] || port_py=$(free_port)
cat > "$work/serve.toml" << TOML
[verdicts]
local_path = "$work/verdicts.db"
[models]
location = "$registry"
poll_interval = "0s"
[alerts]
stdout = false
file = "$work/alerts.jsonl"
[api]
address = "127.0.0.1:$port_fs"
concurrency = 4096
TOML
target/release/fraudstream serve --config "$work/serve.toml" 2> "$work/serve.log" &
fs_pid=$!
(cd scripts && PEER_MODEL="$PWD/../$work/peer-$key.onnx" exec "../$bench_venv/bin/uvicorn" peer_onnx:app \
  --host 127.0.0.1 --port "$port_py" --workers 2 --log-level warning --no-access-log) &
py_pid=$!
trap 'kill $fs_pid $py_pid 2> /dev/null; wait 2> /dev/null' EXIT
# Both up: an empty transaction is answered 400.
for p in "$port_fs" "$port_py"; do
  for _ in $(seq 300); do
    code=$(curl -s -o /dev/null -w '%{http_code}' -X POST -H 'content-type: application/json' \
      -d '{}' "http://127.0.0.1:$p/v1/score" || true)
    [[ $code == 400 ]] && break
    sleep 0.2
  done
done
# One transaction from the file, in the stream's JSON schema.
"$bench_venv/bin/python" - "$data" > "$work/tx.json" << 'PY'
import csv, json, sys
with open(sys.argv[1]) as f:
    row = next(csv.DictReader(f))
tx = {k: float(v) for k, v in row.items() if k != "Class"}
tx["id"] = "bench-1"
print(json.dumps(tx))
PY
for p in "$port_fs" "$port_py"; do
  curl -sf -X POST -H 'content-type: application/json' --data-binary @"$work/tx.json" \
    "http://127.0.0.1:$p/v1/score" > /dev/null
done

run() { # name url mode(rate|max)
  local out=$work/oha-$1-$3.json load=(-c 32)
  if [[ $3 == rate ]]; then load=(-q 2000 -c 16 --latency-correction); fi
  oha -z "${secs}s" "${load[@]}" --no-tui --output-format json \
    -m POST -H 'content-type: application/json' -D "$work/tx.json" "$2" > "$out"
  "$bench_venv/bin/python" - "$out" "$1" "$3" << 'PY'
import json, sys
r = json.load(open(sys.argv[1]))
s, p = r["summary"], r["latencyPercentiles"]
codes = r.get("statusCodeDistribution", {})
ok = sum(v for k, v in codes.items() if k.startswith("2"))
bad = sum(v for k, v in codes.items() if not k.startswith("2"))
ms = lambda v: f"{v * 1000:.3f}" if v is not None else "-"
what = "at 2,000 req/s" if sys.argv[3] == "rate" else "flat out"
print(f"{sys.argv[2]:<12} {what:<16} {s['requestsPerSec']:>9.0f} req/s   p50 {ms(p['p50'])} ms   "
      f"p99 {ms(p['p99'])} ms   p999 {ms(p['p99.9'])} ms   ({ok} ok, {bad} not 2xx)")
PY
}
echo "data: $data; ${secs}s per run; $(nproc) cores shared with oha"
run fraudstream "http://127.0.0.1:$port_fs/v1/score" rate
run python-onnx "http://127.0.0.1:$port_py/v1/score" rate
run fraudstream "http://127.0.0.1:$port_fs/v1/score" max
run python-onnx "http://127.0.0.1:$port_py/v1/score" max
