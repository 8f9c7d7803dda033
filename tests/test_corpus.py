"""The submission corpus: its programs do what they are meant to, its measured CPU times
are the simulator's demand, and workloads compress for a live run."""

import json
import subprocess
import sys

import numpy as np
import pytest

from scalelab.injector.corpus import (
    INTENT,
    KIND_WEIGHTS,
    CorpusError,
    Program,
    as_intended,
    build_corpus,
    demand_samples,
    intended_answer,
    load_corpus,
    outcome_of,
    summary,
)
from scalelab.injector.workloads import WorkloadError, make_workload
from scalelab.simulator.models import SANDBOX, DemandModel, profile_from_dict, profile_to_dict


def test_the_corpus_is_deterministic_and_its_mix_sums_to_one():
    a, b = build_corpus(), build_corpus()
    assert a == b
    assert a.weights.sum() == pytest.approx(1.0)
    kinds = {p.kind for p in a.programs}
    assert kinds == set(KIND_WEIGHTS)
    for kind, share in KIND_WEIGHTS.items():
        assert sum(p.weight for p in a.programs if p.kind == kind) == pytest.approx(share)
    assert len({p.id for p in a.programs}) == len(a.programs)


@pytest.mark.parametrize("pid", ["hello", "sum-squares-1000", "sieve-10000", "fib-recursive-18", "reverse-words",
                                 "sort-1000"])
def test_correct_programs_print_their_known_answer(pid):
    program = build_corpus().by_id()[pid]
    out = subprocess.run([sys.executable, "-c", program.code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout == program.stdout


@pytest.mark.parametrize("kind", ["exception", "syntax-error"])
def test_failing_programs_fail(kind):
    for program in (p for p in build_corpus().programs if p.kind == kind):
        out = subprocess.run([sys.executable, "-c", program.code], capture_output=True, text=True, timeout=60)
        assert out.returncode == 1, program.id


def test_the_shipped_corpus_is_the_code_s_and_every_measured_outcome_is_the_intended_one():
    shipped, built = load_corpus(), build_corpus()
    assert shipped.programs == built.programs and shipped.limits == built.limits
    m = shipped.measured
    assert m["isolated"] and m["repeats"] >= 3
    for p in shipped.programs:
        assert len(m["cpu_ms"][p.id]) == m["repeats"]
        assert all(as_intended(p, o) for o in m["outcome"][p.id]), (p.id, m["outcome"][p.id])
    loops = [t for p in shipped.programs if p.kind == "infinite-loop" for t in m["cpu_ms"][p.id]]
    assert min(loops) > 0.9 * 1000 * shipped.limits["cpu_seconds"]  # killed at the CPU limit, not before


def test_outcomes_name_the_answer_and_intent_allows_the_equivalent_ones():
    assert outcome_of({"exit_code": 0, "limit": None}) == "ok"
    assert outcome_of({"exit_code": 1, "limit": None}) == "error"
    assert outcome_of({"exit_code": None, "signal": "SIGKILL", "limit": "cpu"}) == "cpu"
    assert outcome_of({"exit_code": None, "signal": "SIGKILL", "limit": None}) == "killed"
    loop = Program("l", "infinite-loop", INTENT["infinite-loop"], 0.1, "while True: pass")
    ok = Program("o", "correct", "ok", 0.1, "print(1)")
    assert as_intended(loop, "cpu") and as_intended(loop, "wall") and not as_intended(loop, "ok")
    assert as_intended(ok, "ok") and not as_intended(ok, "wall") and not as_intended(ok, "error")
    for program in build_corpus().programs:  # the stand-in's answers are the intended ones
        assert as_intended(program, outcome_of(intended_answer(program))), program.id


def test_the_demand_is_the_measured_distribution_with_its_timeout_mass():
    corpus = load_corpus()
    values, probs = demand_samples(corpus)
    assert probs.sum() == pytest.approx(1.0)
    cap = corpus.limits["cpu_seconds"]
    at_cap = probs[values >= 0.9 * cap].sum()
    never_ending = sum(p.weight for p in corpus.programs if p.kind in ("infinite-loop", "output-flood"))
    assert at_cap == pytest.approx(never_ending, abs=1e-9)
    demand = DemandModel(kind="corpus")
    assert SANDBOX.demand.kind == "corpus" and SANDBOX.demand.corpus == "v1"
    assert demand.timeout_s == cap
    draws = demand.draw(np.random.default_rng(3), 200_000)
    assert set(np.unique(draws)) <= set(values)
    assert draws.mean() == pytest.approx(demand.mean_s, rel=0.03)
    assert demand.mean_s == pytest.approx(summary(corpus)["mean_ms"] / 1000)
    # scaled, a run is cut at the limit, and a run stopped there when measured stays as it was
    scaled = DemandModel(kind="corpus", scale=4.0)
    once = demand.draw(np.random.default_rng(3), 5000)
    four = scaled.draw(np.random.default_rng(3), 5000)
    stopped = once >= 0.9 * cap
    assert stopped.any() and np.array_equal(four[stopped], once[stopped])
    assert np.array_equal(four[~stopped], np.minimum(4 * once[~stopped], cap)) and four.max() <= cap
    assert (four[~stopped] == cap).any()  # some long runs now reach the limit
    assert scaled.mean_s == pytest.approx(float((scaled.corpus_cpu_s()[0] * probs).sum()))
    # fitted before runs stopped at the limit were costed as measured: every run scaled
    legacy = DemandModel(kind="corpus", scale=4.0, stopped="scaled")
    assert np.array_equal(legacy.draw(np.random.default_rng(3), 5000), 4 * once)
    assert legacy.timeout_s == 4 * cap and scaled.timeout_s == cap
    saved = {"kind": "corpus", "corpus": "v1", "scale": 4.0, "add_ms": 0.0}
    assert profile_from_dict({**profile_to_dict(SANDBOX), "demand": saved}).demand.stopped == "scaled"
    with pytest.raises(ValueError, match=r"demand\.stopped='cut' is not one of"):
        DemandModel(kind="corpus", stopped="cut")
    halved = DemandModel(kind="corpus", scale=0.5).draw(np.random.default_rng(3), 5000)
    assert np.array_equal(halved[stopped], once[stopped]) and np.array_equal(halved[~stopped], 0.5 * once[~stopped])
    added = DemandModel(kind="corpus", add_ms=150.0)
    assert added.mean_s == pytest.approx(demand.mean_s + 0.15)
    assert np.allclose(added.draw(np.random.default_rng(3), 50), demand.draw(np.random.default_rng(3), 50) + 0.15)


def test_a_malformed_corpus_file_names_itself(tmp_path):
    bad = tmp_path / "c.json"
    bad.write_text(json.dumps({"name": "x", "limits": {}, "programs": [{"id": "a"}]}))
    with pytest.raises(CorpusError, match=r"c\.json"):
        load_corpus(bad)
    with pytest.raises(CorpusError, match="does not exist"):
        load_corpus(tmp_path / "missing.json")
    unmeasured = build_corpus()
    with pytest.raises(CorpusError, match="not measured"):
        demand_samples(unmeasured)


def test_a_compressed_workload_is_the_same_calendar_faster_and_smaller():
    week = make_workload({"kind": "evaluation-week-v1", "start_day": 1, "start_hour": 13, "days": 2 / 24})
    fast = make_workload({"kind": "evaluation-week-v1", "start_day": 1, "start_hour": 13, "days": 2 / 24,
                          "time_compression": 12, "user_scale": 0.25})
    assert fast.duration_s == pytest.approx(week.duration_s / 12)
    assert fast.think_s == (week.think_s[0] / 12, week.think_s[1] / 12)
    for t in np.linspace(0, fast.duration_s - 1, 50):
        assert fast.users_at(t) == round(0.25 * week.users_at(12 * t))
    rate = make_workload({"kind": "open-constant", "rate_rps": 4, "time_compression": 3, "user_scale": 0.5})
    assert rate.rate_at(1.0) == pytest.approx(6.0)  # 3x faster, half the clients
    for bad in ({"time_compression": 0}, {"user_scale": -1}, {"time_compression": "fast"}):
        with pytest.raises(WorkloadError, match=r"time_compression|user_scale"):
            make_workload({"kind": "constant", **bad})


def test_corpus_show_lists_the_programs(capsys):
    from scalelab.cli import main

    assert main(["corpus", "show"]) == 0
    out = capsys.readouterr().out
    assert "while-true" in out and "infinite-loop" in out and "mean_ms" in out
