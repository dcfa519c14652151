#!/usr/bin/env bash
# Entity features on one Redis server against a Redis Cluster, the same stream, in one
# run (benches/velocity.rs: the handbook's features over 20 simulated days, 194,373
# transactions, three passes per store). Both are replicated, as in production: a
# server with one replica, and a cluster of three masters with one replica each, all
# started here from Debian's `redis-server` on 127.0.0.1 (ports BENCH_REDIS_PORT ..
# +7, default 24100, and their bus ports 10000 above) in a temporary directory, emptied
# (FLUSHALL) before every pass, and stopped at the end. ROUNDS rounds alternate the two.
#
# Prints each pass's detector CPU and server CPU per transaction (the cluster's masters
# summed, and per master) and the memory the data gained per transaction, then the
# medians and the ratio of the cluster's masters to the one server.
#
#   scripts/bench/velocity-redis.sh [--rounds N]
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$0")/lib.sh"
rounds=2
while [[ $# -gt 0 ]]; do
  case $1 in
    -h | --help) bench_usage ;;
    --rounds) bench_count "$1" "${2:-}"; rounds=$2; shift 2 ;;
    *) bench_usage "unknown argument $1" ;;
  esac
done
command -v redis-server >/dev/null || bench_usage "needs redis-server (apt-get install redis-server)"
base=${BENCH_REDIS_PORT:-24100}
dir=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT
node() { # node PORT [ARGS...]: a redis-server in the background
  local port=$1
  shift
  mkdir -p "$dir/$port"
  redis-server --bind 127.0.0.1 --port "$port" --save '' --appendonly yes \
    --appendfsync everysec --dir "$dir/$port" "$@" >"$dir/$port.log" 2>&1 &
  pids+=($!)
}
up() { until redis-cli -p "$1" ping >/dev/null 2>&1; do sleep 0.2; done; }
node "$base"
node $((base + 1)) --replicaof 127.0.0.1 "$base"
hosts=()
for i in 2 3 4 5 6 7; do
  port=$((base + i))
  node "$port" --cluster-enabled yes --cluster-config-file nodes.conf \
    --cluster-port $((port + 10000)) --cluster-node-timeout 2000
  hosts+=("127.0.0.1:$port")
done
for i in 0 1 2 3 4 5 6 7; do up $((base + i)); done
redis-cli --cluster create "${hosts[@]}" --cluster-replicas 1 --cluster-yes >"$dir/create.log" 2>&1
until redis-cli -p $((base + 2)) --cluster check "127.0.0.1:$((base + 2))" >/dev/null 2>&1; do sleep 0.5; done
until redis-cli -p $((base + 1)) info replication | grep -q 'master_link_status:up'; do sleep 0.2; done
server=redis://127.0.0.1:$base
cluster=redis+cluster://$(IFS=,; echo "${hosts[*]}")
cargo bench --locked -q --bench velocity --no-run >&2
flush() { for i in 0 2 3 4 5 6 7; do redis-cli -p $((base + i)) flushall >/dev/null 2>&1 || true; done; sleep 1; }
one=()
many=()
one_mem=()
many_mem=()
for ((r = 1; r <= rounds; r++)); do
  for url in "$server" "$cluster"; do
    flush
    echo "== round $r: $url"
    out=$(cargo bench --locked -q --bench velocity -- redis "$url" 20 2>&1 | grep -E 'run [0-9]|meanwhile')
    echo "$out"
    if [[ $url == "$server" ]]; then
      mapfile -t -O "${#one[@]}" one < <(sed -nE 's/.*served\): ([0-9.]+) us CPU\/tx.*/\1/p' <<<"$out")
      mapfile -t -O "${#one_mem[@]}" one_mem < <(sed -nE 's/.*memory \+([0-9]+) bytes\/tx.*/\1/p' <<<"$out")
    else
      mapfile -t -O "${#many[@]}" many < <(sed -nE 's/.*masters ([0-9.]+) us CPU\/tx summed.*/\1/p' <<<"$out")
      mapfile -t -O "${#many_mem[@]}" many_mem < <(sed -nE "s/.*masters' memory \+([0-9]+) bytes\/tx.*/\1/p" <<<"$out")
    fi
  done
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
m1=$(median "${one[@]}")
m2=$(median "${many[@]}")
echo
echo "one server (with a replica): ${one[*]} us CPU/tx, median $m1"
echo "cluster masters, summed (3, each with a replica): ${many[*]} us CPU/tx, median $m2"
awk -v a="$m2" -v b="$m1" 'BEGIN {printf "ratio: %.2fx\n", a / b}'
echo "memory per transaction (used_memory, masters): one server $(median "${one_mem[@]}") bytes, cluster $(median "${many_mem[@]}") bytes (medians)"
