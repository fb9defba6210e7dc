"""confluent-kafka (librdkafka) against replog's Kafka listener, driven by
node/tests/t49_kafka_producer_admin.rs. Prints one JSON object per line on
stdout; the test reads them as they come.

  produce BOOTSTRAP TOPIC COUNT RATE
      An idempotent producer (enable.idempotence, acks=all) sends COUNT
      messages (key k-i, value v-i) at RATE messages a second (0: as fast as
      it can), then flushes. One line per delivery report:
      {"p": partition, "o": offset, "v": value} or {"err": name, "v": value};
      {"progress": n} once n reports are in (a fifth of COUNT); a last line
      {"done": reports, "errors": n, "left": messages never reported}.

  admin BOOTSTRAP TOPIC
      The AdminClient: a validate_only create (nothing made), a create with
      configs, the topic's and broker 1's configs described, a create with
      an unknown config refused, the topic deleted. One line per step:
      {"step": name, ...}.
"""

import json
import sys
import time

from confluent_kafka import KafkaException, Producer
from confluent_kafka.admin import AdminClient, ConfigResource, ConfigSource, NewTopic, ResourceType


def emit(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def produce(bootstrap, topic, count, rate):
    p = Producer(
        {
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "message.timeout.ms": 60000,
            "retry.backoff.ms": 50,
            "retry.backoff.max.ms": 250,
            "topic.metadata.refresh.interval.ms": 1000,
        }
    )
    state = {"reports": 0, "errors": 0, "progress": False}

    def report(err, msg):
        state["reports"] += 1
        value = msg.value().decode()
        if err is not None:
            state["errors"] += 1
            emit({"err": err.name(), "v": value, "reason": err.str()})
        else:
            emit({"p": msg.partition(), "o": msg.offset(), "v": value})
        if not state["progress"] and state["reports"] >= max(1, count // 5):
            state["progress"] = True
            emit({"progress": state["reports"]})

    start = time.monotonic()
    for i in range(count):
        if rate > 0:
            # The load's shape, not a wait for anything: RATE a second.
            ahead = start + i / rate - time.monotonic()
            if ahead > 0:
                p.poll(ahead)
        while True:
            try:
                p.produce(topic, key=f"k-{i}", value=f"v-{i}", on_delivery=report)
                break
            except BufferError:
                p.poll(0.05)
        p.poll(0)
    left = p.flush(90)
    emit({"done": state["reports"], "errors": state["errors"], "left": left})


def result(futures, timeout=60):
    """{key: None or the Kafka error's name}."""
    out = {}
    for k, f in futures.items():
        try:
            f.result(timeout=timeout)
            out[str(k)] = None
        except KafkaException as e:
            out[str(k)] = e.args[0].name()
    return out


def until(what, check, limit=30):
    """check()'s first truthy answer, looking again every 50 ms: a node other
    than the one that answered the create or delete may apply the change a
    moment later, and the client may ask that node."""
    deadline = time.monotonic() + limit
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.05)


def described(a, res):
    try:
        return a.describe_configs([res])[res].result(timeout=30)
    except KafkaException as e:
        if e.args[0].name() == "UNKNOWN_TOPIC_OR_PART":
            return None
        raise


def admin(bootstrap, topic):
    a = AdminClient({"bootstrap.servers": bootstrap})
    configs = {"retention.ms": "3600000", "retention.bytes": "1048576"}

    checked = result(
        a.create_topics([NewTopic(topic, num_partitions=3, replication_factor=3, config=configs)],
                        operation_timeout=30, validate_only=True)
    )
    listed = a.list_topics(timeout=30).topics
    emit({"step": "validate_only", "result": checked[topic], "exists": topic in listed})

    made = result(
        a.create_topics([NewTopic(topic, num_partitions=3, replication_factor=3, config=configs)],
                        operation_timeout=30)
    )
    def led():
        meta = a.list_topics(topic=topic, timeout=30).topics.get(topic)
        if meta is None or meta.error is not None or len(meta.partitions) != 3:
            return None
        return meta if all(p.leader >= 0 for p in meta.partitions.values()) else None
    meta = until("the topic's leaders", led)
    leaders = sorted(p.leader for p in meta.partitions.values())
    emit({"step": "create", "result": made[topic], "partitions": len(meta.partitions), "leaders": leaders})

    again = result(a.create_topics([NewTopic(topic, num_partitions=3, replication_factor=3)], operation_timeout=30))
    emit({"step": "create_again", "result": again[topic]})

    res = ConfigResource(ResourceType.TOPIC, topic)
    entries = until("the topic's configs", lambda: described(a, res))
    emit({
        "step": "describe_topic",
        "configs": {n: {"value": e.value, "default": e.is_default, "source": ConfigSource(e.source).name}
                    for n, e in entries.items()},
    })

    broker = ConfigResource(ResourceType.BROKER, "1")
    entries = a.describe_configs([broker])[broker].result(timeout=30)
    emit({
        "step": "describe_broker",
        "configs": {n: {"value": e.value, "default": e.is_default, "source": ConfigSource(e.source).name}
                    for n, e in entries.items()},
    })

    bad = result(a.create_topics([NewTopic(topic + "-bad", num_partitions=1, replication_factor=3,
                                           config={"cleanup.policy": "compact"})], operation_timeout=30))
    emit({"step": "create_unknown_config", "result": bad[topic + "-bad"]})

    deleted = result(a.delete_topics([topic], operation_timeout=30))
    until("the topic gone", lambda: topic not in a.list_topics(timeout=30).topics)
    emit({"step": "delete", "result": deleted[topic], "exists": False})

    missing = result(a.delete_topics([topic], operation_timeout=30))
    emit({"step": "delete_again", "result": missing[topic]})


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "produce":
        produce(sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5]))
    elif cmd == "admin":
        admin(sys.argv[2], sys.argv[3])
    else:
        sys.exit(f"unknown command {cmd}")
