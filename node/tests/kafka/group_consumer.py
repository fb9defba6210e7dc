#!/usr/bin/env python3
"""One confluent-kafka consumer in a group, driven by
node/tests/t48_kafka_groups.rs as a child process.

Usage: group_consumer.py BOOTSTRAP GROUP TOPIC CLIENT_ID

Prints one JSON object a line on stdout, as things happen:
  {"event": "assigned", "partitions": [...]}   (eager: the whole assignment)
  {"event": "revoked", "partitions": [...]}
  {"event": "record", "partition": P, "offset": O}
  {"event": "committed", "offsets": {"P": O, ...}}  (after a "commit" command)
  {"event": "error", "error": "..."}
  {"event": "closed"}
Reads commands a line on stdin: "commit" (synchronous commit of the
positions consumed) and "close" (close the consumer, which leaves the group,
and exit); the end of stdin closes too.
"""
import json
import queue
import sys
import threading

from confluent_kafka import Consumer, KafkaException


def out(**kv):
    print(json.dumps(kv), flush=True)


def main():
    bootstrap, group, topic, client_id = sys.argv[1:5]
    consumer = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": group,
        "client.id": client_id,
        "session.timeout.ms": 10000,
        "heartbeat.interval.ms": 250,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "partition.assignment.strategy": "range,roundrobin",
        # A broker that was down is tried again within a second once it is
        # back (the default backs off up to 10 s).
        "reconnect.backoff.max.ms": 1000,
    })

    def on_assign(_c, parts):
        out(event="assigned", partitions=sorted(p.partition for p in parts))

    def on_revoke(_c, parts):
        out(event="revoked", partitions=sorted(p.partition for p in parts))

    consumer.subscribe([topic], on_assign=on_assign, on_revoke=on_revoke)
    commands = queue.Queue()

    def read_commands():
        for line in sys.stdin:
            commands.put(line.strip())
        commands.put("close")

    threading.Thread(target=read_commands, daemon=True).start()
    while True:
        try:
            command = commands.get_nowait()
        except queue.Empty:
            command = None
        if command == "commit":
            try:
                parts = consumer.commit(asynchronous=False)
                out(event="committed", offsets={str(p.partition): p.offset for p in parts if p.error is None})
            except KafkaException as e:
                out(event="error", error=f"commit: {e}")
        elif command == "close":
            consumer.close()
            out(event="closed")
            return
        m = consumer.poll(0.1)
        if m is None:
            continue
        if m.error():
            out(event="error", error=str(m.error()))
            continue
        out(event="record", partition=m.partition(), offset=m.offset())


if __name__ == "__main__":
    main()
