#!/usr/bin/env python3
"""Partitions a broker assigns to no one: two static consumers (like two detectors) on a
3-partition topic; the broker (started by scripts/services.sh) is frozen past the session
timeout again and again. After each thaw it prints who holds what, per the consumers and
per DescribeGroups. When a partition is held by no one, a consumer without a static
identity joins and leaves (what the detector's watchdog does, src/stream/source/kafka/
orphans.rs), and it prints the state again.

    scripts/kafka-orphans-probe.py BROKERS [ROUNDS]

Run with .cache/bench-venv/bin/python (the venv scripts/bench/kafka.sh makes; any
Python with confluent-kafka), with FRAUDSTREAM_STATE /
FRAUDSTREAM_PORT_OFFSET of the running services. On noida-db about one freeze in eight
leaves a partition to no one until the kick; it is reassigned within seconds of it."""
import os, subprocess, sys, threading, time, uuid
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

B = sys.argv[1]
topic = f"orphan-{uuid.uuid4().hex[:8]}"
group = f"g-{uuid.uuid4().hex[:8]}"
admin = AdminClient({"bootstrap.servers": B})
admin.create_topics([NewTopic(topic, 3, 1)])["%s" % topic].result()
p = Producer({"bootstrap.servers": B})
for i in range(3000):
    p.produce(topic, key=str(i), value=b"x", partition=i % 3)
p.flush()

held = {}
stop = False
def member(name):
    c = Consumer({"bootstrap.servers": B, "group.id": group, "group.instance.id": name,
                  "session.timeout.ms": 6000, "heartbeat.interval.ms": 1000,
                  "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    def on_assign(c, parts):
        held[name] = sorted(x.partition for x in parts)
    def on_revoke(c, parts):
        held[name] = []
    c.subscribe([topic], on_assign=on_assign, on_revoke=on_revoke)
    while not stop:
        try:
            c.poll(0.2)
        except Exception as e:
            print(name, "error", e)
    c.close()

ts = [threading.Thread(target=member, args=(n,)) for n in ("d1", "d2")]
for t in ts: t.start()
time.sleep(8)
print("start", held)
env = dict(os.environ)
for round in range(int(sys.argv[2]) if len(sys.argv) > 2 else 5):
    subprocess.run(["scripts/services.sh", "pause", "kafka"], env=env, check=True, capture_output=True)
    time.sleep(10 + round % 3 * 5)
    subprocess.run(["scripts/services.sh", "resume", "kafka"], env=env, check=True, capture_output=True)
    time.sleep(15)
    union = sorted(sum(held.values(), []))
    desc = None
    try:
        g = admin.describe_consumer_groups([group])[group].result()
        desc = {m.group_instance_id or m.member_id: sorted(tp.partition for tp in m.assignment.topic_partitions) for m in g.members}
    except Exception as e:
        desc = f"describe failed: {e}"
    print(f"round {round}: consumers {held} union {union}; broker says {desc}", flush=True)
    if union != [0, 1, 2]:
        kick = Consumer({"bootstrap.servers": B, "group.id": group, "session.timeout.ms": 6000,
                         "enable.auto.commit": False})
        got = []
        kick.subscribe([topic], on_assign=lambda c, ps: got.append([x.partition for x in ps]))
        t0 = time.time()
        while not got and time.time() - t0 < 30:
            kick.poll(0.2)
        print(f"  kick member got {got} after {time.time()-t0:.1f}s", flush=True)
        kick.close()
        time.sleep(15)
        union = sorted(sum(held.values(), []))
        print(f"  after the kick: consumers {held} union {union}", flush=True)
stop = True
for t in ts: t.join()
