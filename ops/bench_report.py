#!/usr/bin/env python3
"""Writes docs/benchmarks.md from the JSON lines of one `make bench` run.

usage: ops/bench_report.py OUT_DIR DOC

OUT_DIR holds machine.json, results.jsonl (replog bench lines and the dd
line), nats.jsonl (the NATS peer's lines) and load-after.json. Everything in
DOC below the line NOTES_MARK is kept: hand-written notes survive a rerun.
"""
import json
import os
import statistics
import sys

NOTES_MARK = "<!-- notes below this line are kept by make bench -->"


def lines(path):
    if not os.path.exists(path):
        return []
    out = []
    for line in open(path):
        line = line.strip()
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                pass
    return out


def fmt(x, nd=1):
    if x is None:
        return "–"
    if isinstance(x, float):
        return f"{x:.{nd}f}"
    return str(x)


def verdict(ok):
    return "–" if ok is None else ("met" if ok else "**missed**")


def main():
    out_dir, doc = sys.argv[1], sys.argv[2]
    machine = json.load(open(os.path.join(out_dir, "machine.json")))["machine"]
    after = {}
    if os.path.exists(os.path.join(out_dir, "load-after.json")):
        after = json.load(open(os.path.join(out_dir, "load-after.json")))
    rows = lines(os.path.join(out_dir, "results.jsonl"))
    nats = lines(os.path.join(out_dir, "nats.jsonl"))
    by = {r.get("label"): r for r in rows if r.get("label")}
    dd = next((r for r in rows if r.get("bench") == "dd-dsync"), None)
    idle = next((r for r in rows if r.get("bench") == "idle"), None)
    idle_error = idle.get("error") if idle else None
    idle_asked = idle.get("partitions", 0) if idle else 0
    if idle_error:
        idle = None
    restart = next((r for r in rows if r.get("bench") == "restart"), None)
    notes = ""
    if os.path.exists(doc):
        text = open(doc).read()
        if NOTES_MARK in text:
            notes = text.split(NOTES_MARK, 1)[1]

    def nats_rate(rate):
        return next((n for n in nats if n.get("mode") == "window" and n.get("rate") == rate), None)

    def send_delay(r):
        """p50 / p99 of a rated run's send delay (ms), or a dash."""
        if "send_delay_p50_ms" in r:
            return f"{fmt(r['send_delay_p50_ms'], 2)} / {fmt(r['send_delay_p99_ms'], 2)}"
        d = r.get("send_delay_us")
        return f"{fmt(d['p50'] / 1000.0, 2)} / {fmt(d['p99'] / 1000.0, 2)}" if d else "–"

    def nats_ms(n, q):
        return None if n is None else n["lat_us"][q] / 1000.0

    nats_sync = next((n for n in nats if n.get("mode") == "sync" and n.get("label") == "one-at-a-time"), None)
    kills = [p["ms"] for r in rows if r.get("label", "").startswith("failover-kill") for p in r["failover"] if p["ms"] is not None]
    isos = [p["ms"] for r in rows if r.get("label", "").startswith("failover-isolate") for p in r["failover"] if p["ms"] is not None]
    dd_ms = dd["write_us"] / 1000.0 if dd else None

    o = []
    o.append("# replog benchmarks\n")
    o.append(
        "Written by `make bench` (`ops/bench.sh`, then `ops/bench_report.py`): a fresh 3-node release\n"
        "cluster of `ops/cluster.sh` on this one machine, RF 3, acks=all (fsync on a majority before the\n"
        "acknowledgement), the NATS JetStream R3 peer of `../shared/peers/` and a `dd` of 4 KiB O_DSYNC writes\n"
        "in the same run. **The machine is shared**: other work ran on its 2 cores during the run (the load\n"
        "averages below say how much), so the figures are what this machine gave at that time, not a ceiling.\n"
        "The whole run holds `flock /tmp/replog-chaos.lock`, so chaos runs and other benchmarks wait for it.\n"
    )
    o.append("## Machine and run\n")
    o.append("| | |\n|---|---|")
    for k in ["date", "commit", "cpu", "cores", "mem_gb", "kernel", "fs", "load_before"]:
        o.append(f"| {k} | {machine.get(k)} |")
    o.append(f"| load_after | {after.get('load_after', '–')} |\n")
    if dd:
        o.append(
            f"Disk: `dd if=/dev/zero bs=4k count={dd['count']} oflag=dsync` in the nodes' data directory: "
            f"**{dd['write_us']} µs per 4 KiB write** ({dd['dd']}).\n"
        )

    o.append("## Targets (issue 11)\n")
    o.append("| target | replog | reference | verdict |\n|---|---|---|---|")
    r10, n10 = by.get("rate-10k"), nats_rate(10000)
    if r10:
        ok = None if n10 is None else r10["p99_ms"] <= nats_ms(n10, "p99")
        o.append(f"| 10,000 rec/s of 100 B: p99 ≤ NATS R3 p99 | p99 {fmt(r10['p99_ms'], 2)} ms | NATS p99 {fmt(nats_ms(n10, 'p99'), 2)} ms | {verdict(ok)} |")
    r100 = by.get("rate-100k")
    if r100:
        o.append(f"| 100,000 rec/s of 100 B: p99 ≤ 20 ms | p99 {fmt(r100['p99_ms'], 2)} ms ({fmt(r100['records_per_sec'], 0)} rec/s achieved) | 20 ms | {verdict(r100['p99_ms'] <= 20)} |")
    one = by.get("one-at-a-time")
    if one and dd_ms:
        o.append(f"| one record at a time: p50 ≤ 2× dd | p50 {fmt(one['p50_ms'], 2)} ms | 2× dd = {fmt(2 * dd_ms, 2)} ms | {verdict(one['p50_ms'] <= 2 * dd_ms)} |")
        o.append(f"| one record at a time: p99 ≤ 4× dd | p99 {fmt(one['p99_ms'], 2)} ms | 4× dd = {fmt(4 * dd_ms, 2)} ms | {verdict(one['p99_ms'] <= 4 * dd_ms)} |")
    if kills:
        o.append(f"| leader SIGKILLed: median ≤ 1 s | {fmt(statistics.median(kills), 0)} ms over {len(kills)} partitions | 1000 ms | {verdict(statistics.median(kills) <= 1000)} |")
        o.append(f"| leader SIGKILLed: max ≤ 2 s | {fmt(max(kills), 0)} ms | 2000 ms | {verdict(max(kills) <= 2000)} |")
    if isos:
        o.append(f"| leader isolated: max ≤ 3 s | {fmt(max(isos), 0)} ms over {len(isos)} partitions (median {fmt(statistics.median(isos), 0)}) | 3000 ms | {verdict(max(isos) <= 3000)} |")
    for label, want in [("max-100B", 500_000), ("max-1KiB", 100_000)]:
        r = by.get(label)
        if r:
            o.append(f"| {label[4:]} records: ≥ {want:,} rec/s | {fmt(r['records_per_sec'], 0)} rec/s, {r['mb_per_sec']} MB/s | {want:,} | {verdict(r['records_per_sec'] >= want)} |")
    if idle:
        worst = max(idle["cpu_pct"])
        o.append(
            f"| {idle['partitions']:,} idle partition replicas per node: ≤ 10 % of a core | {fmt(worst)} % (worst node; "
            f"{idle['kb_per_partition']} KiB of RSS per partition) | 10 % | {verdict(idle['partitions'] >= 10000 and worst <= 10)} |"
        )
    if idle_error:
        o.append(f"| {idle_asked:,} idle partition replicas per node: ≤ 10 % of a core | not measured: {idle_error} | 10 % | not measured |")
    if restart:
        worst = max(restart["sigterm_ready_ms"], restart["sigkill_ready_ms"])
        o.append(
            f"| node with {restart['gib']} GiB of log serving within 10 s | ready {fmt(restart['sigterm_ready_ms'], 0)} ms after SIGTERM, "
            f"{fmt(restart['sigkill_ready_ms'], 0)} ms after SIGKILL | 10000 ms | {verdict(restart['gib'] >= 1 and worst <= 10000)} |"
        )
    o.append("")

    o.append("## replog, every run\n")
    o.append(
        "Latency in ms. With a rate it counts from each record's intended send time (open loop, no\n"
        "coordinated omission); without one (`max-*`) from the moment the record was enqueued, all records\n"
        "offered at once — those latencies measure the producer's own queue, the throughput is the figure.\n"
        "`send delay` (p50 / p99, produce with a rate): from the intended send time until the producer took\n"
        "the record; the load generator's own lateness, inside the latency.\n"
        "`e2e`: from intended send time until a Subscribe consumer has the record.\n"
        "Partitioner `keyless`: records without keys, partitions picked by the producer (sticky: one\n"
        "partition until 1 MiB have gone there); `spread`: each record names the next partition in turn.\n"
        + (
            f"Each run with a rate follows {machine['warmup_s']} s of the same load on the same topic, not recorded\n"
            "(a fresh topic's first moments: elections, connections, the leaders' first appends).\n"
            if machine.get("warmup_s")
            else ""
        )
    )
    o.append("| run | mode | size B | partitions | partitioner | producers | rate | records | rec/s | MB/s | p50 | p99 | p99.9 | max | send delay | errors |")
    o.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if r.get("bench") in ("dd-dsync", "idle", "restart", None):
            continue
        o.append(
            f"| {r.get('label')} | {r['bench']}{'/' + r['mode'] if r.get('mode') else ''} | {r.get('record_size', '–')} | {r.get('partitions', '–')} | "
            f"{r.get('partitioner', '–')} | {r.get('producers', '–')} | {fmt(r.get('rate'), 0)} | {r['records']} | {fmt(r['records_per_sec'], 0)} | {r['mb_per_sec']} | "
            f"{fmt(r['p50_ms'], 2)} | {fmt(r['p99_ms'], 2)} | {fmt(r['p999_ms'], 2)} | {fmt(r['max_ms'], 2)} | {send_delay(r)} | {r.get('errors', '–')} |"
        )
    o.append("")

    fails = [r for r in rows if r.get("bench") == "failover"]
    if fails:
        o.append("## Failover, per partition\n")
        o.append(
            "2,000 records/s of 100 B over 6 partitions; the fault hits the leader of partition 0 three\n"
            "seconds in. `ms`: how long the partition acknowledged nothing — the longest wait between two\n"
            "acknowledgements ending after the fault began (election, the producer's retries and its\n"
            "metadata refresh included); `first ack`: from the fault command's return until the first record\n"
            "meant to be sent after it was acknowledged.\n"
        )
        o.append("| run | fault | node | partition | leader after | ms | first ack ms |\n|---|---|---|---|---|---|---|")
        for r in fails:
            for p in r["failover"]:
                o.append(f"| {r['label']} | {r['fault']} | {r['node']} | {p['partition']} | {p['leader_after']} | {fmt(p['ms'], 0)} | {fmt(p.get('first_ack_ms'), 0)} |")
        o.append("")

    if idle or idle_error or restart:
        o.append("## Idle partitions and restart\n")
    if idle_error:
        o.append(f"`ops/bench-idle.sh` did not finish: {idle_error}.\n")
    if idle:
        o.append(
            f"`ops/bench-idle.sh`: a fresh 3-node cluster takes {idle['partitions']:,} partitions at RF 3 (topics of\n"
            f"1,000, one at a time; {idle['create_s']} s until every replica was open), so every node holds\n"
            f"{idle['partitions']:,} replicas; with every group quiet (quiesce after {idle['quiesce_after_ms']} ms; quiet groups per\n"
            f"node at the measurement: {', '.join(str(q) for q in idle['quiet'])}) each node's CPU is measured over the\n"
            "following seconds from `/proc/<pid>/stat`.\n"
        )
        o.append("| node | CPU % of one core | RSS MB | RSS MB before any topic |\n|---|---|---|---|")
        for i, (c, r, b) in enumerate(zip(idle["cpu_pct"], idle["rss_mb"], idle["rss_base_mb"]), 1):
            o.append(f"| {i} | {fmt(c)} | {fmt(r)} | {fmt(b)} |")
        o.append(f"\nMemory per idle partition replica: {idle['kb_per_partition']} KiB of RSS.\n")
        runs = idle.get("restarts_settled_s") or ([idle["restart_settled_s"]] if "restart_settled_s" in idle else [])
        if runs:
            what = f"every partition had a leader{' and every replica was quiet' if idle['quiesce_after_ms'] else ''}"
            settled = [r for r in runs if r >= 0]
            times = ", ".join(f"{fmt(r)} s" if r >= 0 else "**not settled**" for r in runs)
            o.append(
                f"Then the whole cluster is stopped and started again, {len(runs)} time{'s' if len(runs) > 1 else ''} in a row: "
                f"{what} within the limit in {len(settled)} of {len(runs)} ({times} after the start).\n"
            )
    if restart:
        o.append(
            f"`ops/bench-restart.sh`: node 2 of a fresh 3-node cluster holds {restart['log_bytes']:,} bytes after\n"
            f"{restart['gib']} GiB of 1 KiB records at RF 3; it is stopped and started again, then killed and started\n"
            "again. `listening`: until its `/health` answers; `ready`: until `/ready` says 200 (every replica it holds\n"
            "has caught up with its leader).\n"
        )
        o.append("| stop | listening ms | ready ms |\n|---|---|---|")
        o.append(f"| SIGTERM | {restart['sigterm_listen_ms']} | {restart['sigterm_ready_ms']} |")
        o.append(f"| SIGKILL | {restart['sigkill_listen_ms']} | {restart['sigkill_ready_ms']} |\n")

    if nats:
        o.append("## NATS JetStream R3, same run\n")
        o.append(
            "`../shared/peers/` (nats-server 2.9, 3 nodes on loopback, file storage; an acknowledgement\n"
            "means a majority has the message in the page cache — it does not fsync before acknowledging).\n"
            "`window` with a rate: latency from each message's due time; `sync`: one message at a time.\n"
            "`send delay` (p50 / p99 ms): from the due time until the driver had handed the message to its client\n"
            "(it paces on tokio's timer, which wakes at millisecond ticks); inside the latency, as replog's is.\n"
        )
        o.append("| mode | size B | window | rate | n | msg/s | MB/s | p50 ms | p99 ms | p99.9 ms | max ms | send delay |")
        o.append("|---|---|---|---|---|---|---|---|---|---|---|---|")
        for n in nats:
            lat = n.get("lat_us") or n.get("batch_us") or {}
            ms = lambda q: fmt(lat[q] / 1000.0, 2) if q in lat else "–"
            o.append(
                f"| {n['mode']} | {n['size']} | {n.get('window', n.get('batch', '–'))} | {n.get('rate', '–') or '–'} | {n['count']} | "
                f"{fmt(n['msgs_per_s'], 0)} | {n['mb_per_sec'] if 'mb_per_sec' in n else n.get('mb_per_s', '–')} | {ms('p50')} | {ms('p99')} | {ms('p999')} | {ms('max')} | {send_delay(n)} |"
            )
        o.append("")

    o.append("## Reproduce\n")
    o.append("```")
    o.append("make bench                     # this whole page (BENCH_QUICK=1 for a short run)")
    o.append("flock /tmp/replog-chaos.lock target/release/replog bench produce --rate 10000 --duration 20 \\")
    o.append("    --partitions 6 --producers 2 --record-size 100 --output json   # one run, against make run")
    o.append("flock /tmp/replog-chaos.lock target/release/replog bench failover --fault kill --rate 2000 --duration 12")
    o.append("ops/bench-idle.sh               # idle partitions (IDLE_PARTITIONS=10000, IDLE_QUIESCE_AFTER_MS=0 for never quiet)")
    o.append("make bench-restart              # restart with 1 GiB of log (RESTART_GIB)")
    o.append("make bench-stages               # where a lone record's time goes, stage by stage (perf sched)")
    o.append("```\n")
    o.append(NOTES_MARK)
    o.append(notes.lstrip("\n") if notes else "\n")
    open(doc, "w").write("\n".join(o).rstrip("\n") + "\n")


if __name__ == "__main__":
    main()
