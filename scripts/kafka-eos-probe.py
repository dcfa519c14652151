#!/usr/bin/env python3
"""What a Kafka-protocol broker does for exactly-once outputs (docs/operations.md).

  .cache/bench-venv/bin/python scripts/kafka-eos-probe.py BROKERS
  (the venv scripts/bench/kafka.sh makes; any Python with confluent-kafka)

Three checks, each on fresh topics and a fresh group:
  A. KIP-447 require_stable: while a transaction holding a group's offsets is pending,
     does a read_committed consumer of the group wait before it starts?
  B. KIP-447 generation check: are offsets sent with a stale group generation refused?
  C. KIP-98 fencing: does initialising the same transactional.id abort the pending
     transaction (its offsets and messages) and refuse the old producer's commit?
fraudstream's per-partition producers need only C.
"""
import sys
import time
import uuid

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

BROKERS = sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:9092"


def setup():
    tag = uuid.uuid4().hex[:8]
    t, out, g = f"probe-{tag}", f"probe-out-{tag}", f"probe-g-{tag}"
    admin = AdminClient({"bootstrap.servers": BROKERS})
    for f in admin.create_topics([NewTopic(t, 1, 1), NewTopic(out, 1, 1)]).values():
        f.result()
    p = Producer({"bootstrap.servers": BROKERS})
    for i in range(10):
        p.produce(t, str(i).encode())
    p.flush()
    return tag, t, out, g


def consumer(topic, group):
    c = Consumer({"bootstrap.servers": BROKERS, "group.id": group,
                  "isolation.level": "read_committed", "enable.auto.commit": False,
                  "auto.offset.reset": "earliest", "session.timeout.ms": 6000})
    c.subscribe([topic])
    return c


def first_offset(c, seconds):
    deadline = time.time() + seconds
    while time.time() < deadline:
        m = c.poll(0.5)
        if m is not None and not m.error():
            return m.offset()
    return None


def joined(c):
    while first_offset(c, 1) is None:
        pass


def pending(txid, out, t, meta):
    p = Producer({"bootstrap.servers": BROKERS, "transactional.id": txid})
    p.init_transactions(10)
    p.begin_transaction()
    p.produce(out, b"pending")
    p.flush(5)
    p.send_offsets_to_transaction([TopicPartition(t, 0, 5)], meta, 10)
    return p


def check_a_and_b():
    tag, t, out, g = setup()
    c1 = consumer(t, g)
    joined(c1)
    p = pending("probe-a-" + tag, out, t, c1.consumer_group_metadata())
    c1.close()
    c2 = consumer(t, g)
    start = first_offset(c2, 8)
    print("A. require_stable:", "honoured (waited)" if start is None
          else f"NOT honoured: a new member started at {start} while offsets 5 were pending")
    p.commit_transaction(10)
    meta2 = c2.consumer_group_metadata()
    c2.close()
    c3 = consumer(t, g)
    joined(c3)
    p.begin_transaction()
    p.produce(out, b"stale")
    try:
        p.send_offsets_to_transaction([TopicPartition(t, 0, 7)], meta2, 10)
        p.commit_transaction(10)
        print("B. generation check: NONE (stale-generation offsets committed)")
    except KafkaException as e:
        print("B. generation check: refused:", e.args[0].name())
    c3.close()


def check_c():
    tag, t, out, g = setup()
    c1 = consumer(t, g)
    joined(c1)
    txid = "probe-c-" + tag
    old = pending(txid, out, t, c1.consumer_group_metadata())
    c1.close()
    new = Producer({"bootstrap.servers": BROKERS, "transactional.id": txid})
    new.init_transactions(30)
    start = first_offset(consumer(t, g), 8)
    try:
        old.commit_transaction(10)
        late = "ACCEPTED"
    except KafkaException as e:
        late = "refused (" + e.args[0].name() + ")"
    reader = consumer(out, "probe-reader-" + tag)
    seen = []
    deadline = time.time() + 6
    while time.time() < deadline:
        m = reader.poll(0.5)
        if m is not None and not m.error():
            seen.append(m.value())
    ok = start == 0 and late.startswith("refused") and not seen
    print(f"C. fencing by transactional.id: {'yes' if ok else 'NO'} (the group restarts at "
          f"{start}, the old producer's commit {late}, its message read {len(seen)} times)")


check_a_and_b()
check_c()
