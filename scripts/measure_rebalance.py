"""How long the runners' group stops taking jobs when a runner joins or leaves, and how
long an idle runner takes to see a job, measured on the real runners and the embedded
broker (the figures ``jobs.rebalance_seconds``, ``jobs.fetch_wait_seconds`` and the jobs
model's rule "a rebalance waits for the jobs the members hold" stand on).

Starts the embedded broker (``jobs`` and ``results``, 12 partitions each) and two runners
(``python -m scalelab.sandbox.job_runner``, up to 5 jobs each), sends a job every
``--every`` seconds, each a sandboxed program that sleeps ``--hold`` seconds (no CPU: the
runs' lengths are known), then a third runner joins and, later, leaves (SIGTERM: it drains
and leaves the group). From the results topic (each job's ``started`` and ``finished``
instants): for each change, the **pause** (no job started while jobs were waiting), the
moment the last job held by a member of the group finished (the runners' revoke callback
waits for it), and the **protocol** time from that moment to the first job taken after.

    python scripts/measure_rebalance.py [--hold 4] [--every 0.5] [--repeats 3] [--window 5.5]
    python scripts/measure_rebalance.py --fetch 20

``--fetch N`` instead sends N small jobs, 1.3 s apart, to one idle runner and prints how
long after its sending each started (the mock broker answers a fetch only when
``fetch.wait.max.ms``, 500 ms, has passed: the jobs model's fetch cycle). Measured on the
same VM, 2026-12-08: 20 jobs, 0.007-0.497 s, median 0.263 s (a first version of this
mode); again, 0.006-0.485 s, median 0.231 s.

Prints one line per change, beside the pause the jobs model gives it with a join window of
``--window`` s (``jobs.rebalance_seconds``: the window, or, when the held jobs finish after
it, their finish plus another window), and the medians. Measured on the project's 2-core
VM, 2026-12-08 (window 5.5 s): ``--hold 4`` (3 repeats): pauses 5.31-6.35 s, the held jobs
done 4.2 s in (the model: 5.5 s); ``--hold 1`` (2 repeats): 5.40-6.00 s (the model: 5.5 s);
``--hold 7`` (2 repeats, in two sessions): 11.16-12.35 s, the held jobs done 7.2-7.4 s in
(the model: 12.7-12.8 s).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time


def _runner(addr: str, name: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "scalelab.sandbox.job_runner", "--bootstrap", addr],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env={**os.environ, "SANDBOX_POD": name})
    line = proc.stdout.readline()
    if "ready" not in line:
        raise RuntimeError(f"runner {name} did not start: {line!r}")
    return proc


def model_pause(held_until_s: float, window_s: float) -> float:
    """The jobs model's pause (:mod:`scalelab.simulator.jobs`): the join window, or, when a
    member's held jobs finish after it, their finish plus another window (s)."""
    return window_s if held_until_s <= window_s else held_until_s + window_s


def _changes(jobs: dict[str, dict], at: float, kind: str) -> dict:
    """The pause around a membership change at ``at`` (epoch s): the last start before it,
    the first start after the gap, the last finish of a job started before the gap."""
    starts = sorted(j["started"] for j in jobs.values() if "started" in j)
    before = max((s for s in starts if s <= at), default=at)
    # the gap: the longest interval between starts within 30 s after the change
    after = [s for s in starts if s > before and s <= at + 30]
    gaps = [(b - a, a, b) for a, b in itertools.pairwise([before, *after])]
    _, gap_from, gap_to = max(gaps) if gaps else (0.0, before, before)
    held = [j["finished"] for j in jobs.values() if "finished" in j and j["started"] <= gap_from + 1e-6
            and j["finished"] > gap_from]
    last_held = max(held, default=gap_from)
    waiting = sum(1 for j in jobs.values() if j["submitted"] < gap_to and j.get("started", 1e18) >= gap_to)
    return {"kind": kind, "pause_s": gap_to - gap_from, "held_until_s": last_held - gap_from,
            "protocol_s": gap_to - last_held, "waiting_at_end": waiting}


def _broker() -> tuple[subprocess.Popen, str]:
    """The embedded broker with ``jobs`` and ``results`` (12 partitions each), and its address."""
    kafka = subprocess.Popen([sys.executable, "-m", "scalelab.orchestrator.kafka_embedded", "--topic", "jobs:12",
                              "--topic", "results:12"], stdout=subprocess.PIPE, text=True)
    return kafka, kafka.stdout.readline().strip()


def _stop(runners: list[subprocess.Popen], kafka: subprocess.Popen) -> None:
    """SIGTERM the runners still running (they drain), wait for them, stop the broker."""
    for r in runners:
        if r.poll() is None:
            r.send_signal(signal.SIGTERM)
    for r in runners:
        try:
            r.wait(30)
        except subprocess.TimeoutExpired:
            r.kill()
    kafka.terminate()
    kafka.wait(10)


def fetch_delays(n: int) -> list[float]:
    """Seconds from sending each of ``n`` small jobs (1.3 s apart) to its start on one idle
    runner, on a fresh broker, once a first job has run (the group formed)."""
    from confluent_kafka import Consumer, Producer

    kafka, addr = _broker()
    runners: list[subprocess.Popen] = []
    try:
        runners.append(_runner(addr, "runner-a"))
        results = Consumer({"bootstrap.servers": addr, "group.id": "measure", "auto.offset.reset": "earliest",
                            "fetch.wait.max.ms": 10})
        results.subscribe(["results"])
        producer = Producer({"bootstrap.servers": addr, "linger.ms": 0})
        producer.produce("jobs", key="warm-up", value=json.dumps({"id": "warm-up", "submitted": time.time(),
                                                                  "request": {"code": "print(0)"}}))
        producer.flush(5)
        end = time.time() + 60  # the group's first join (the mock broker's 3 s), then one run
        while time.time() < end:
            m = results.poll(0.1)
            if m is not None and m.error() is None and json.loads(m.value())["event"] == "finished":
                break
        sent: dict[str, float] = {}
        started: dict[str, float] = {}
        for i in range(n):
            jid = f"job{i}"
            sent[jid] = time.time()
            producer.produce("jobs", key=jid, value=json.dumps({"id": jid, "submitted": sent[jid],
                                                                "request": {"code": "print(1)"}}))
            producer.flush(5)
            end = time.time() + 1.3
            while time.time() < end:
                m = results.poll(0.05)
                if m is not None and m.error() is None:
                    body = json.loads(m.value())
                    if body["event"] == "started":
                        started[body["id"]] = body["started"]
        end = time.time() + 10
        while len(started) < n and time.time() < end:
            m = results.poll(0.1)
            if m is not None and m.error() is None and json.loads(m.value())["event"] == "started":
                body = json.loads(m.value())
                started[body["id"]] = body["started"]
        results.close()
        return [started[j] - sent[j] for j in sent if j in started]
    finally:
        _stop(runners, kafka)


def one(hold: float, every: float) -> list[dict]:
    from confluent_kafka import Consumer, Producer

    kafka, addr = _broker()
    runners: list[subprocess.Popen] = []
    stop = threading.Event()
    jobs: dict[str, dict] = {}
    try:
        runners += [_runner(addr, "runner-a"), _runner(addr, "runner-b")]
        results = Consumer({"bootstrap.servers": addr, "group.id": "measure", "auto.offset.reset": "earliest"})
        results.subscribe(["results"])

        def read() -> None:
            while not stop.is_set():
                m = results.poll(0.1)
                if m is not None and m.error() is None:
                    body = json.loads(m.value())
                    j = jobs.setdefault(body["id"], {})
                    j[body["event"]] = body.get(body["event"], time.time())
                    if body["event"] == "finished":
                        j["started"] = body["started"]

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        producer = Producer({"bootstrap.servers": addr, "linger.ms": 0})
        code = f"import time\ntime.sleep({hold})\nprint('held')"
        sent = 0
        t0 = time.time()
        events: list[tuple[float, str]] = []

        def send_until(t_end: float) -> None:
            nonlocal sent
            while time.time() < t_end:
                jid = f"job{sent}"
                jobs[jid] = {"submitted": time.time()}
                producer.produce("jobs", key=jid, value=json.dumps({"id": jid, "submitted": time.time(),
                                                                    "request": {"code": code}}))
                producer.poll(0)
                sent += 1
                time.sleep(every)

        send_until(t0 + 15)  # the two runners settled, jobs held
        events.append((time.time(), "join"))
        runners.append(_runner(addr, "runner-c"))  # ready: joins the group
        send_until(time.time() + 20)
        events.append((time.time(), "leave"))
        runners[-1].send_signal(signal.SIGTERM)
        send_until(time.time() + 20)
        producer.flush(10)
        end = time.time() + 30
        while time.time() < end and any("finished" not in j for j in jobs.values()):
            time.sleep(0.2)
        stop.set()
        reader.join(5)
        results.close()
        return [_changes(jobs, at, kind) for at, kind in events]
    finally:
        stop.set()
        _stop(runners, kafka)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--hold", type=float, default=4.0, help="each job's sleep, s")
    ap.add_argument("--every", type=float, default=0.5, help="seconds between jobs")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--window", type=float, default=5.5, help="the model's join window (jobs.rebalance_seconds), s")
    ap.add_argument("--fetch", type=int, default=0, metavar="N",
                    help="measure instead how long N jobs wait for an idle runner's fetch")
    args = ap.parse_args()
    if args.fetch:
        delays = fetch_delays(args.fetch)
        print(f"{len(delays)} jobs started {min(delays):.3f}-{max(delays):.3f} s after they were sent, "
              f"median {statistics.median(delays):.3f} s")
        return
    rows = []
    for k in range(args.repeats):
        for row in one(args.hold, args.every):
            rows.append(row)
            print(f"repeat {k}: {row['kind']:5s} pause {row['pause_s']:.2f} s, the held jobs finished "
                  f"{row['held_until_s']:.2f} s into it, then {row['protocol_s']:.2f} s to the next job taken "
                  f"({row['waiting_at_end']} waiting); the model: {model_pause(row['held_until_s'], args.window):.2f} s",
                  flush=True)
    for kind in ("join", "leave"):
        sel = [r for r in rows if r["kind"] == kind]
        print(f"{kind}: median pause {statistics.median(r['pause_s'] for r in sel):.2f} s, held jobs "
              f"{statistics.median(r['held_until_s'] for r in sel):.2f} s, protocol "
              f"{statistics.median(r['protocol_s'] for r in sel):.2f} s")


if __name__ == "__main__":
    main()
