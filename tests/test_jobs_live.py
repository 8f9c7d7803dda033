"""The jobs architecture on the real parts: runners (``python -m scalelab.sandbox.job_runner``)
pulling jobs from the embedded broker, and the short evaluation week end to end on a
local stack of runners (Locust students submitting jobs, the orchestrator's queue
signals, a static policy and the HPA)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time

import pytest
import yaml

from tests.tools import requires
from tests.waiting import wait_for

pytestmark = [pytest.mark.live, requires("bwrap")]


def _broker(*topics: str) -> tuple[subprocess.Popen, str]:
    args = [a for t in topics for a in ("--topic", t)]
    kafka = subprocess.Popen([sys.executable, "-m", "scalelab.orchestrator.kafka_embedded", *args],
                             stdout=subprocess.PIPE, text=True)
    return kafka, kafka.stdout.readline().strip()


def _runner(addr: str, name: str, jobs: int) -> subprocess.Popen:
    import os

    env = {**os.environ, "SANDBOX_POD": name}
    proc = subprocess.Popen([sys.executable, "-m", "scalelab.sandbox.job_runner", "--bootstrap", addr,
                             "--max-concurrent-jobs", str(jobs)], stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout.readline().startswith(f"runner {name}: ready")
    return proc


class Results:
    """Every message of the results topic, from its beginning, on a thread."""

    def __init__(self, addr: str) -> None:
        from confluent_kafka import Consumer

        self.consumer = Consumer({"bootstrap.servers": addr, "group.id": "test-results",
                                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
        self.consumer.subscribe(["results"])
        self.messages: list[dict] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            m = self.consumer.poll(0.2)
            if m is not None and m.error() is None:
                self.messages.append({**json.loads(m.value()), "_key": m.key().decode()})
        self.consumer.close()

    def finished(self) -> dict[str, list[dict]]:
        out: dict[str, list[dict]] = {}
        for m in list(self.messages):
            if m["event"] == "finished":
                out.setdefault(m["id"], []).append(m)
        return out

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=10)


def _committed(addr: str, partitions: int) -> list[int]:
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": addr, "group.id": "runners"})
    try:
        return [t.offset for t in c.committed([TopicPartition("jobs", p) for p in range(partitions)], timeout=5)]
    finally:
        c.close()


def test_runners_run_jobs_in_the_sandbox_commit_in_order_and_drain_on_sigterm():
    """Two runners in group runners: every job gets exactly one finished result keyed by
    its id, malformed ones an error naming what was wrong; a runner told to stop finishes
    what it holds and leaves the group, the other takes its partitions; every offset is
    committed at the end."""
    from confluent_kafka import Producer

    kafka, addr = _broker("jobs:4", "results:4")
    runners: list[subprocess.Popen] = []
    results = None
    try:
        runners = [_runner(addr, "runner-a", 2), _runner(addr, "runner-b", 2)]
        results = Results(addr)
        producer = Producer({"bootstrap.servers": addr})
        sent = {}
        for i in range(24):
            code = f"print({i} * 3)" if i % 4 else "import time\nt = time.time()\nwhile time.time() - t < 1.5: pass\nprint('slow')"
            job_id = f"job-{i}"
            sent[job_id] = "slow\n" if i % 4 == 0 else f"{i * 3}\n"
            producer.produce("jobs", key=job_id, value=json.dumps({"id": job_id, "submitted": time.time(),
                                                                   "request": {"code": code}}))
        producer.produce("jobs", key="not-json", value=b"{nope")
        producer.produce("jobs", key="no-request", value=json.dumps({"id": "no-request", "submitted": time.time()}))
        producer.produce("jobs", key="bad-limits", value=json.dumps(
            {"id": "bad-limits", "request": {"code": "print(1)", "limits": {"gpus": 1}}}))
        producer.flush(10)
        # one runner drains while jobs remain: it finishes its own and leaves; the other takes the rest
        wait_for(lambda: len(results.finished()) >= 4, 120, "the first results")
        runners[0].send_signal(signal.SIGTERM)
        out, _ = runners[0].communicate(timeout=120)
        assert runners[0].returncode == 0 and "drained" in out and "answered before and not run again" in out
        runners.append(_runner(addr, "runner-c", 2))  # a runner joins while runner-b is full and paused
        wait_for(lambda: len(results.finished()) == 27, 180, "a result of every job")
        done = results.finished()
        # a job finished while the group rebalanced comes again to its partition's next owner (the mock
        # broker refuses commits during a rebalance), which reads the results first and does not run it
        again = {k: v for k, v in done.items() if len(v) > 1}
        assert not again, again
        for job_id, stdout in sent.items():
            r = done[job_id][0]
            assert r["_key"] == job_id and r["status"] == 200 and r["verdict"]["stdout"] == stdout, r
            assert r["submitted"] <= r["started"] <= r["finished"]
        assert "not JSON" in done["not-json"][0]["error"] and done["not-json"][0]["status"] == 400
        assert "no 'request'" in done["no-request"][0]["error"]
        assert "unknown limits ['gpus']" in done["bad-limits"][0]["error"]
        assert {r[0]["runner"] for r in done.values()} <= {"runner-a", "runner-b", "runner-c"}
        assert {"runner-a", "runner-b"} <= {r[0]["runner"] for r in done.values()}
        started = [m for m in results.messages if m["event"] == "started"]
        assert {m["id"] for m in started} == set(done)
        # at most 2 jobs at once per runner: count overlaps of [started, finished]
        for name in ("runner-a", "runner-b", "runner-c"):
            spans = [(r[0]["started"], r[0]["finished"]) for r in done.values() if r[0]["runner"] == name]
            assert not spans or max(sum(a <= t < b for a, b in spans) for t, _ in spans) <= 2, name
        wait_for(lambda: sum(_committed(addr, 4)) == 27, 30, "every offset committed")
    finally:
        if results is not None:
            results.close()
        for r in runners:
            if r.poll() is None:
                r.terminate()
                r.wait(timeout=60)
        kafka.terminate()
        kafka.wait(timeout=30)


def _week_jobs(tmp_path) -> dict:
    """The shipped live-evaluation-week-jobs, shortened to fit a test: one exam of 10
    minutes (18 students once scaled) in a 24.5-minute window compressed 24 times (61 s, 13
    steps of 5 s), no background students so the last 7 steps have no load (the queue
    drains even through a scale-out's rebalance there); one run of a static policy and the HPA."""
    cfg = yaml.safe_load(open("experiments/configs/live-evaluation-week-jobs.yaml"))
    cfg["workload"].update(start_hour=13.97, days=0.017, diurnal_peak=0, time_compression=24, user_scale=0.12,
                           exams=[{"day": 1, "hour": 14.0, "students": 150, "minutes": 10, "start_spread_min": 1,
                                   "leave_spread_min": 1}], deadlines=[])
    cfg.update(runs=1, policies=[{"name": "static", "replicas": 1},
                                 {"name": "hpa", "label": "hpa", "target_utilization": 20}])
    cfg["context"]["window_s"] = 10
    return cfg


@requires("locust", "prometheus")
def test_the_short_evaluation_week_on_runners_end_to_end(tmp_path):
    from confluent_kafka import Consumer, TopicPartition

    from scalelab.experiments.experiment import run_live
    from scalelab.orchestrator.backend import QUEUE_COLUMNS

    totals: list[dict] = []  # the broker's counts, every half second while the stack is up
    sent: dict[str, float] = {}  # job id -> when it was submitted (time.time())

    def watch(path, stack) -> None:
        wait_for(lambda: stack is not None and "kafka" in stack.state, 120, "the stack's broker")
        addr = stack.state["kafka"]["bootstrap"]
        finished: set[str] = set()
        c = Consumer({"bootstrap.servers": addr, "group.id": "test-watch", "enable.auto.commit": False})
        group = Consumer({"bootstrap.servers": addr, "group.id": "runners", "enable.auto.commit": False})
        parts = 12
        c.assign([TopicPartition(topic, p, 0) for topic in ("results", "jobs") for p in range(parts)])
        try:
            while stack.state:
                # the offsets first, the results after: a runner commits a job only once its result
                # is acknowledged, so a sample never counts a commit whose result it has not read
                submitted = sum(c.get_watermark_offsets(TopicPartition("jobs", p), timeout=2, cached=False)[1]
                                for p in range(parts))
                committed = sum(max(t.offset, 0) for t in group.committed(
                    [TopicPartition("jobs", p) for p in range(parts)], timeout=2))
                for m in c.consume(500, timeout=0.5):
                    if m.error() is not None:
                        continue
                    if m.topic() == "jobs":  # when each job was sent (the injector's wall clock)
                        sent[m.key().decode()] = json.loads(m.value())["submitted"]
                    elif json.loads(m.value())["event"] == "finished":
                        finished.add(m.key().decode())
                totals.append({"submitted": submitted, "finished": len(finished), "committed": committed,
                               "at": time.time(), "unanswered": {j: t for j, t in sent.items() if j not in finished}})
        except Exception:  # the stack went down under the watcher: what it saw is kept
            pass
        finally:
            c.close()
            group.close()

    t0 = time.monotonic()
    res = run_live(_week_jobs(tmp_path), out=tmp_path, during=watch)
    print(f"live run: {time.monotonic() - t0:.0f} s")
    steps = res.steps
    cols = ["policy", "step", "users", "replicas", "target_replicas", "desired_replicas", "p95_ms", "rps",
            "queue_lag", "queue_waiting", "queue_in_progress", "queue_turnaround_p95_ms", "queue_runners",
            "queue_runners_busy", "cpu_request_ratio"]
    print(steps[cols].to_string())
    from scalelab import read_steps

    on_disk = read_steps(res.path)
    assert {"queue_" + k for k in QUEUE_COLUMNS} <= set(on_disk.columns)
    assert len(on_disk) == 2 * 13 and set(on_disk.policy) == {"static", "hpa"}
    stack = json.loads((res.path / "stack.json").read_text())
    assert stack["task"]["task"] == "job" and stack["jobs"]["partitions"] == 12
    for policy, g in steps.groupby("policy"):
        busy = g[(g.users > 0) & (g.queue_completion_rate > 0)]
        assert len(busy) >= 3, policy
        assert (busy.queue_turnaround_p95_ms > 0).all() and (busy.p95_ms > 0).all(), policy
        # the queue's completion rate is over the step (5 s), as the simulator's; the context's
        # rate over its 10-s window: the mean of this step's and the previous one's (to a few jobs
        # at the windows' edges: the wall clock's steps are not exactly 5 s)
        g = g.sort_values("step")
        cr = g.queue_completion_rate.to_numpy()
        assert (abs(g.rps.to_numpy()[1:] - (cr[1:] + cr[:-1]) / 2) <= 3.5 / 10).all(), policy
        assert (g.desired_replicas == g.target_replicas).all(), policy  # runners follow the orders
        assert (g.replicas == g.target_replicas).mean() >= 0.75, policy
        assert g.queue_runners.iloc[-1] == g.target_replicas.iloc[-1]
        last = g.sort_values("step").iloc[-1]
        assert last.users == 0 and last.queue_waiting == 0, policy  # the load is over
        # and so is the queue, unless a job runs again: the mock broker refuses the commits a runner makes
        # while the group rebalances, so the jobs it held then go to the partitions' next owners (at least
        # once); such a run counts in progress, and a lag with nothing running would be a lost commit
        assert last.queue_lag == 0 or last.queue_in_progress > 0, policy
    assert (steps[steps.policy == "static"].replicas == 1).all()
    injector = json.loads((res.path / "injector.json").read_text())
    print("injector:", injector)
    hpa = steps[steps.policy == "hpa"]
    assert hpa.target_replicas.max() >= 2 and (hpa.replicas >= 2).any()  # the HPA scaled the runners out
    for policy in ("static", "hpa"):
        assert injector[policy]["requests"] >= 20 and injector[policy]["failure_rate"] <= 0.05, injector[policy]
    # every job submitted got its result and its offset committed (the broker's own counts)
    assert totals, "the watcher saw nothing"
    last = totals[-1]
    print("broker:", {k: v for k, v in last.items() if k != "unanswered"}, "unanswered:", last["unanswered"])
    # nothing lost: every job answered, but one sent in the last seconds before the stack went down
    # (the last steps have no load, so it is no exam submission: 35 s of idle steps end each run)
    assert last["submitted"] > 40 and last["submitted"] == len(sent)
    late = {j: t for j, t in last["unanswered"].items() if t >= last["at"] - 10}
    assert last["unanswered"] == late and len(late) <= 1, last["unanswered"]
    assert last["finished"] == last["submitted"] - len(late)
    # committed in order after each result: the mock broker refuses commits while the group rebalances, and
    # the last one may still be pending when the stack goes down (at least once: such a job runs again)
    assert last["finished"] - 1 <= last["committed"] <= last["submitted"]
