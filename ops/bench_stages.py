#!/usr/bin/env python3
"""Follows records sent one at a time through the wake-ups `perf sched`
recorded (the output of `perf sched timehist -w`), for ops/bench-stages.sh.

A record starts when the SDK's clock thread wakes a runtime worker of the
client (the bench's pacing: the record is due). From there, in order:

  client send          the client's write wakes a thread of the leader
  leader: appends out  the leader's first wake-up of a follower thread
  follower: fsync asked  a follower's runtime thread wakes its flusher
  follower: fsync done   that flusher wakes a runtime thread again
  follower: ack out    a follower's write wakes a thread of the leader
  leader: reply out    the leader's write wakes a thread of the client

plus the leader's own fsync (asked and done, from the request's arrival),
which runs beside the followers'. A record whose chain misses a step (a
thread was already running, so nothing woke it) is left out; the count
says how many were followed. Each stage's median and p90 are printed in
ms, and a JSON line last.
"""

import argparse
import json
import re
import statistics

WAKE = re.compile(
    r"^\s*([\d.]+)\s+\[\d+\]\s+(.+?)\[(\d+)(?:/(\d+))?\]\s+awakened:\s+(.+?)\[(\d+)(?:/(\d+))?\]"
)
STAGES = [
    "client send",
    "leader: appends out",
    "follower: fsync asked",
    "follower: fsync done",
    "follower: ack out",
    "leader: reply out",
    "to the reply",
    "leader: fsync asked",
    "leader: fsync done",
]


def wakeups(path):
    """(time, waker's comm, waker's pid, wakee's comm, wakee's pid) of each wake-up."""
    out = []
    with open(path) as f:
        for line in f:
            m = WAKE.match(line)
            if m:
                waker_pid = int(m[4] or m[3])
                wakee_pid = int(m[7] or m[6])
                out.append((float(m[1]), m[2].strip(), waker_pid, m[5].strip(), wakee_pid))
    return out


def follow(ev, client, leader, followers):
    """Each stage's durations in seconds, and how many records were due."""
    def first(lo, hi, after, pred):
        for e in ev[lo:hi]:
            if e[0] >= after and pred(e):
                return e[0]
        return None

    worker, flusher = "tokio-rt-worker", "replog-flusher"
    # Each stage ends at the first wake-up after the previous one ended
    # that matches its test.
    chain = [
        ("client send", lambda e: e[2] == client and e[4] == leader),
        ("leader: appends out", lambda e: e[2] == leader and e[4] in followers and e[3] == worker),
        ("follower: fsync asked", lambda e: e[2] in followers and e[1] == worker and e[3] == flusher),
        ("follower: fsync done", lambda e: e[2] in followers and e[1] == flusher and e[3] == worker),
        ("follower: ack out", lambda e: e[2] in followers and e[4] == leader),
        ("leader: reply out", lambda e: e[2] == leader and e[4] == client),
    ]
    starts = [i for i, e in enumerate(ev) if e[1] == "replog-clock" and e[2] == client and e[3] == worker]
    got = {s: [] for s in STAGES}
    for k, lo in enumerate(starts):
        hi = starts[k + 1] if k + 1 < len(starts) else len(ev)
        ends = [ev[lo][0]]
        for _, test in chain:
            end = first(lo, hi, ends[-1], test)
            if end is None:
                break
            ends.append(end)
        else:
            for (name, _), a, b in zip(chain, ends, ends[1:]):
                got[name].append(b - a)
            got["to the reply"].append(ends[-1] - ends[0])
            sent, reply = ends[1], ends[-1]
            own = first(lo, hi, sent, lambda e: e[2] == leader and e[1] == worker and e[3] == flusher)
            if own is not None and own < reply:
                got["leader: fsync asked"].append(own - sent)
                own_done = first(lo, hi, own, lambda e: e[2] == leader and e[1] == flusher and e[3] == worker)
                if own_done is not None:
                    got["leader: fsync done"].append(own_done - own)
    return got, len(starts)


def usage(path):
    """The time it was taken, and node -> (CPU ticks, context switches)."""
    out = {}
    with open(path) as f:
        taken = float(f.readline())
        for line in f:
            node, ticks, cs = line.split()
            out[int(node)] = (int(ticks), int(cs))
    return taken, out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("timehist")
    ap.add_argument("client", type=int)
    ap.add_argument("leader", type=int)
    ap.add_argument("followers", type=int, nargs=2)
    ap.add_argument("--bench")
    ap.add_argument("--usage", nargs=2)
    ap.add_argument("--rate", type=float)
    ap.add_argument("--leader-node", type=int)
    ap.add_argument("--clk-tck", type=int, default=100)
    a = ap.parse_args()

    got, due = follow(wakeups(a.timehist), a.client, a.leader, set(a.followers))
    followed = len(got["to the reply"])
    print(f"records followed: {followed} of {due} sent while perf recorded")
    summary = {"bench": "stages", "records_due": due, "records_followed": followed}
    for name in STAGES:
        v = sorted(got[name])
        if not v:
            continue
        med, p90 = statistics.median(v) * 1e3, v[int(len(v) * 0.9)] * 1e3
        print(f"  {name:24s} median {med:6.3f} ms   p90 {p90:6.3f} ms   (n={len(v)})")
        summary[name.replace(": ", "_").replace(" ", "_") + "_ms"] = round(med, 3)
    if a.bench:
        with open(a.bench) as f:
            b = json.loads(f.read().strip().splitlines()[-1])
        print(f"the bench, over its whole run: p50 {b['p50_ms']} ms, p99 {b['p99_ms']} ms")
        summary.update(bench_p50_ms=b["p50_ms"], bench_p99_ms=b["p99_ms"])
    if a.usage and a.rate:
        (t0, before), (t1, after) = usage(a.usage[0]), usage(a.usage[1])
        records = (t1 - t0) * a.rate
        for node in sorted(after):
            cpu_ms = (after[node][0] - before[node][0]) * 1e3 / a.clk_tck / records
            cs = (after[node][1] - before[node][1]) / records
            role = "leader" if node == a.leader_node else "follower"
            print(f"node {node} ({role}): {cpu_ms:.2f} ms of CPU and {cs:.1f} context switches per record (its background work included)")
            summary[f"node{node}_{role}_cpu_ms_per_record"] = round(cpu_ms, 3)
            summary[f"node{node}_{role}_cs_per_record"] = round(cs, 1)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
