"""Evaluation-week students on the real parts: Locust students (master + workers) taking
their task over Kafka, a short student run on the local stack with its twin report, and
a small live dataset recording."""

import http.server
import json
import subprocess
import sys
import threading

import pandas as pd
import pytest
import yaml

from scalelab.injector.corpus import intended_answer, load_corpus
from tests.tools import requires
from tests.waiting import tail, wait_for

pytestmark = [pytest.mark.live,
              requires("locust", "prometheus", "haproxy")]


def _judge_server():
    """A stand-in for the sandbox's POST /run that answers each corpus program with the
    outcome it is meant to get, and counts what it was sent."""
    corpus = load_corpus()
    by_code = {p.code: p for p in corpus.programs}
    seen = []

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            program = by_code[body["code"]]
            seen.append((program.kind, body["limits"]))
            out = json.dumps(intended_answer(program)).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, seen


def test_students_on_master_and_workers_take_their_task_over_kafka():
    from kafka import KafkaProducer

    from scalelab.orchestrator.stack import create_topics

    server, seen = _judge_server()
    kafka = subprocess.Popen([sys.executable, "-m", "scalelab.orchestrator.kafka_embedded"], stdout=subprocess.PIPE,  # until stopped
                             text=True)
    inj = None
    try:
        addr = kafka.stdout.readline().strip()
        create_topics(addr, ("locust_order", "locust"))
        inj = subprocess.Popen([sys.executable, "-m", "scalelab.injector", "--host", f"http://127.0.0.1:{server.server_port}",
                                "--bootstrap", addr, "--workers", "2", "--seconds", "150"],
                               stdout=subprocess.PIPE, text=True)
        assert inj.stdout.readline().strip() == "injector ready"
        stats = tail(addr, "locust")  # no consumer group: nothing to join before the orders
        prod = KafkaProducer(bootstrap_servers=addr, api_version=(2, 3))
        for order in ({"order": "set_task", "task": "student", "think_s": [0.02, 0.05], "seed": 3},
                      {"order": "set_user_level", "level": 6, "spawn_rate": 20}):
            prod.send("locust_order", json.dumps(order).encode())
        prod.flush()
        last = {}

        def poll() -> dict:
            for records in stats.poll(timeout_ms=300).values():
                for rec in records:
                    last.update(json.loads(rec.value))
            return last

        def enough() -> bool:
            return poll().get("task") == "student" and last.get("num_requests", 0) > 150

        wait_for(enough, 90, "150 student submissions in the injector's statistics")
        assert last["user_count"] == 6 and last["num_failures"] == 0 and last["bad_orders"] == 0
        kinds = pd.Series([k for k, _ in seen]).value_counts(normalize=True)
        assert set(kinds.index) >= {"correct", "wrong-answer", "exception", "syntax-error"}
        assert kinds["correct"] == pytest.approx(0.575, abs=0.12)  # the corpus's mix (3 SE at 150 submissions)
        assert all(limits == load_corpus().limits for _, limits in seen)
        prod.send("locust_order", json.dumps({"order": "set_task", "task": "nonsense"}).encode())
        prod.flush()
        wait_for(lambda: poll().get("bad_orders") == 1, 30, "the bad set_task order counted")
        assert last["task"] == "student"
        stats.close()
        prod.close()
    finally:
        for p in (inj, kafka):
            if p is not None:
                p.terminate()
                p.wait(timeout=60)
                p.stdout.close()
        server.shutdown()


def _student_config(tmp_path, **changes) -> dict:
    cfg = {"name": "students", "backend": "live", "seed": 5, "runs": 1, "step_seconds": 2, "steps": 10,
           "slo_ms": 3000, "app": {"profile": "sandbox"},
           "workload": {"kind": "constant", "users": 40, "duration_s": 400, "time_compression": 20,
                        "user_scale": 0.1},
           "cluster": {"min_replicas": 1, "max_replicas": 2, "initial_replicas": 1, "think_s": [1, 2]},
           "policies": [{"name": "static", "replicas": 1}]}
    cfg.update(changes)
    return cfg


def test_a_short_student_run_on_the_local_stack_and_its_twin(tmp_path):
    from scalelab.experiments.experiment import run_experiment, run_live
    from scalelab.experiments.twin import twin_report

    cfg = _student_config(tmp_path)
    live = run_live(cfg, out=tmp_path)
    steps = live.steps
    assert len(steps) == 10 and (steps.users == 4).all()
    assert (steps.missing.fillna("") == "").sum() >= 8
    injector = json.loads((live.path / "injector.json").read_text())["static"]
    assert injector["requests"] >= 15  # 4 students submitting every 1-2 s for 20 s
    assert injector["failure_rate"] <= 0.05, injector["reasons"]
    stack = json.loads((live.path / "stack.json").read_text())
    assert stack["task"]["task"] == "student" and stack["task"]["think_s"] == [1, 2]
    assert stack["cpu_limit_enforced"] in (True, False)
    sim = run_experiment({**cfg, "backend": "sim"}, out=tmp_path, progress=False)
    md = twin_report(sim.path, live.path).read_text()
    assert "only the backend and the runs differ" in md and "| static |" in md
    assert "CFS quota" in md or "NOT enforced" in md


def test_a_small_live_dataset_recording(tmp_path):
    from scalelab.cli import main
    from scalelab.simulator.datasets import read_dataset_meta
    from scalelab.simulator.replay import load_dataset

    cfg = _student_config(tmp_path, name="record")
    path = tmp_path / "record.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "live.parquet"
    assert main(["dataset", "record", "--backend", "live", "--config", str(path), "--users", "2,4",
                 "--replicas", "1", "--samples", "2", "--warmup-steps", "1", "--out", str(out)]) == 0
    data = load_dataset(out)
    assert sorted(data.groupby(["users", "replicas"]).size().items()) == [((2, 1), 2), ((4, 1), 2)]
    assert set(data.source) == {"live:student"} or set(data.source) == {"live:student:no-cpu-quota"}
    meta = read_dataset_meta(out)
    assert meta.think_s == (1.0, 2.0) and meta.step_s == 2.0 and meta.source == "live"
    rows_file = tmp_path / "live.parquet.rows.jsonl"
    rows = rows_file.read_text().splitlines()
    assert len(rows) == 4  # written as they were measured
    # the CPU beside the latency: the replicas' (their cgroups), the rest of the host's
    if data.source.iloc[0] == "live:student":
        quota = meta.replica["cpu_limit"]  # one replica: at most its CFS quota (and a scheduling tick)
        assert (data.replicas_cpu_cores > 0).all() and (data.replicas_cpu_cores <= quota * 1.1).all()
        assert (data.others_cpu_cores > 0).all()
    # interrupted after its first sample, in the middle of writing the second: resumed
    rows_file.write_text(rows[0] + "\n" + rows[1][:20])
    out.unlink()
    assert main(["dataset", "record", "--backend", "live", "--config", str(path), "--users", "2,4",
                 "--replicas", "1", "--samples", "2", "--warmup-steps", "1", "--out", str(out), "--resume"]) == 0
    resumed = load_dataset(out)
    assert sorted(resumed.groupby(["users", "replicas"]).size().items()) == [((2, 1), 2), ((4, 1), 2)]
    again = rows_file.read_text().splitlines()
    assert len(again) == 4 and again[0] == rows[0]  # the first sample kept, the cut line dropped
    assert sorted(resumed["sample"][resumed.users == 2]) == [0, 1]
