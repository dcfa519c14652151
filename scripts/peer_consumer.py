#!/usr/bin/env python3
"""The Python peer of scripts/bench/kafka.sh --hotpath: the detector's job on Kafka as a
competent Python team would write it, and what they would be proud of.

- `train DATA.csv OUT.joblib`: scikit-learn RandomForestClassifier(100 trees,
  random_state=42) on V1..V28 and Amount of every row (the data fraudstream's model is
  trained on); inference runs with n_jobs=1 (faster than threads for batches of 512).
- `run ...`: confluent-kafka consumer (manual commits), micro-batches of up to 512
  messages; json.loads, a NumPy matrix, predict_proba; verdicts upserted into SQLite
  (executemany, one transaction per batch); fraud alerts produced to a topic and flushed
  (acknowledged) before the commit; a pyarrow Parquet lake (zstd, a file per 100,000
  rows); a synchronous offset commit per batch (at-least-once). No explanations:
  scikit-learn has no per-prediction contributions short of a far slower tree walk.
  Stops after --expect messages and prints one JSON line: messages, seconds (first
  message to last), cpu_seconds (from subscribing, so librdkafka's prefetch counts),
  watched_cpu_seconds (the --watch-pid process, the broker, from first to last message).
- `drain ...`: the same consumer and batches, reading only: the ceiling of any consumer.

Needs: pip install confluent-kafka scikit-learn numpy pyarrow joblib
"""
import argparse
import json
import os
import resource
import sqlite3
import sys
import time

FEATURES = [f"V{i}" for i in range(1, 29)] + ["Amount"]


def cpu_of(pid):
    """CPU seconds (user + system) used so far by process `pid` (0: none watched)."""
    if not pid:
        return 0.0
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def report(done, started, cpu0, watched0, watch_pid):
    """The run's JSON line; `watched_cpu_seconds` is what --watch-pid used from the first
    message to the last."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({
        "messages": done,
        "seconds": time.monotonic() - started,
        "cpu_seconds": r.ru_utime + r.ru_stime - cpu0,
        "watched_cpu_seconds": cpu_of(watch_pid) - watched0,
    }))


def train(data, out):
    import joblib
    import pandas as pd
    from sklearn.ensemble import RandomForestClassifier

    df = pd.read_csv(data)
    model = RandomForestClassifier(n_estimators=100, n_jobs=-1, random_state=42)
    model.fit(df[FEATURES].to_numpy(dtype="float32"), df["Class"].astype(int).to_numpy())
    joblib.dump(model, out)


def make_consumer(a):
    """The consumer both modes use: manual commits, from the earliest offset."""
    from confluent_kafka import Consumer

    return Consumer({
        "bootstrap.servers": a.brokers,
        "group.id": a.group,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "receive.message.max.bytes": 1000000000,
    })


def run(a):
    import joblib
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    from confluent_kafka import Producer

    model = joblib.load(a.model)
    model.n_jobs = 1
    threshold = 0.5
    os.makedirs(a.out, exist_ok=True)
    db = sqlite3.connect(os.path.join(a.out, "verdicts.db"))
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = FULL")
    db.execute(
        "CREATE TABLE IF NOT EXISTS verdicts (tx_id TEXT PRIMARY KEY, score REAL, fraud INTEGER,"
        " threshold REAL, model_version TEXT, scored_at TEXT)"
    )
    consumer = make_consumer(a)
    producer = Producer({"bootstrap.servers": a.brokers, "enable.idempotence": True, "acks": "all"})
    # CPU from here (imports and the model load excluded, librdkafka's prefetch counted);
    # throughput from the first message to the last.
    r = resource.getrusage(resource.RUSAGE_SELF)
    cpu0 = r.ru_utime + r.ru_stime
    consumer.subscribe([a.topic])
    lake_rows = {name: [] for name in ["id"] + FEATURES + ["score", "fraud", "scored_at"]}
    files = 0

    def flush_lake():
        nonlocal files, lake_rows
        if not lake_rows["id"]:
            return
        pq.write_table(pa.table(lake_rows), os.path.join(a.out, f"part-{files:05d}.parquet"),
                       compression="zstd")
        files += 1
        lake_rows = {k: [] for k in lake_rows}

    done = 0
    started = None
    while done < a.expect:
        msgs = consumer.consume(num_messages=512, timeout=1.0)
        if not msgs:
            continue
        if started is None:
            started = time.monotonic()
            watched0 = cpu_of(a.watch_pid)
        txs = []
        for m in msgs:
            if m.error():
                continue
            try:
                tx = json.loads(m.value())
                row = [float(tx[f]) for f in FEATURES]
            except (ValueError, KeyError, TypeError):
                continue  # a real consumer would dead-letter it
            tx_id = str(tx.get("id") or (m.key() or b"").decode("utf-8", "replace"))
            txs.append((tx_id, row))
        if txs:
            x = np.asarray([r for _, r in txs], dtype=np.float32)
            scores = model.predict_proba(x)[:, 1]
            now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            rows = [(i, float(s), int(s >= threshold), threshold, "sklearn", now)
                    for (i, _), s in zip(txs, scores)]
            db.executemany("INSERT OR REPLACE INTO verdicts VALUES (?, ?, ?, ?, ?, ?)", rows)
            db.commit()
            for (tx_id, _), s in zip(txs, scores):
                if s >= threshold:
                    producer.produce(a.alerts_topic, key=tx_id,
                                     value=json.dumps({"tx_id": tx_id, "score": float(s)}))
            producer.flush()
            for (tx_id, row), s in zip(txs, scores):
                lake_rows["id"].append(tx_id)
                for f, v in zip(FEATURES, row):
                    lake_rows[f].append(v)
                lake_rows["score"].append(float(s))
                lake_rows["fraud"].append(bool(s >= threshold))
                lake_rows["scored_at"].append(now)
            if len(lake_rows["id"]) >= 100_000:
                flush_lake()
        consumer.commit(asynchronous=False)
        done += len(msgs)
    flush_lake()
    report(done, started, cpu0, watched0, a.watch_pid)
    consumer.close()


def drain(a):
    """Only read: the same consumer settings and batches, no work per message. What any
    consumer on this machine and broker can reach at best (the broker's own CPU per
    message served competes with the consumer for the cores)."""
    consumer = make_consumer(a)
    r = resource.getrusage(resource.RUSAGE_SELF)
    cpu0 = r.ru_utime + r.ru_stime
    consumer.subscribe([a.topic])
    done = 0
    started = None
    while done < a.expect:
        msgs = consumer.consume(num_messages=512, timeout=1.0)
        if msgs and started is None:
            started = time.monotonic()
            watched0 = cpu_of(a.watch_pid)
        done += len(msgs)
    report(done, started, cpu0, watched0, a.watch_pid)
    consumer.close()


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "train":
        train(sys.argv[2], sys.argv[3])
        sys.exit(0)
    p = argparse.ArgumentParser()
    p.add_argument("cmd", choices=["run", "drain"])
    p.add_argument("--brokers", required=True)
    p.add_argument("--topic", required=True)
    p.add_argument("--group", required=True)
    p.add_argument("--alerts-topic")
    p.add_argument("--model")
    p.add_argument("--expect", type=int, required=True)
    p.add_argument("--out")
    p.add_argument("--watch-pid", type=int, default=0,
                   help="also report this process's CPU from the first message to the last")
    args = p.parse_args()
    if args.cmd == "drain":
        drain(args)
    else:
        if not (args.alerts_topic and args.model and args.out):
            p.error("run needs --alerts-topic, --model and --out")
        run(args)
