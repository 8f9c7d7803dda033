"""The submission corpus: programs like the ones students submit, with what each is
meant to do and, once measured, the CPU time it takes in the sandbox.

A corpus is a versioned JSON file (``injector/data/corpus-v1.json``, built by
:func:`build_corpus`, measured by ``scalelab corpus measure``)::

    {"name": "corpus-v1", "language": "python",
     "limits": {"cpu_seconds": 2.0, ...},            # what every submission runs under
     "programs": [{"id": "sum-squares-200000", "kind": "correct", "intent": "ok",
                   "weight": 0.02, "code": "...", "stdout": "..."}, ...],
     "measured": {"at": ..., "host": ..., "repeats": 5, "sealed": true,
                  "cpu_ms": {"<id>": [..]}, "wall_ms": {"<id>": [..]},
                  "outcome": {"<id>": [..]}}}

``kind`` is what a teacher would call the submission; ``intent`` is the sandbox outcome
it must get (:func:`outcome_of` names a ``POST /run`` answer the same way):

=============== ========== =====================================================
kind            intent     what
=============== ========== =====================================================
correct         ok         solutions of varied cost (sums, sorts, sieves, recursion)
slow-correct    ok         a naive solution, correct but quadratic
wrong-answer    ok         runs fine, prints the wrong result (the judge's business)
exception       error      a run-time error after some work (exit code 1)
syntax-error    error      does not parse (exit code 1, at once)
infinite-loop   cpu        never ends: killed at the CPU-time limit
memory-hog      memory     grows a list until the memory limit
output-flood    output     prints until the output cap
=============== ========== =====================================================

The mix (``weight``, summing to 1) is set in :data:`KIND_WEIGHTS`. The measured CPU
times are the simulator's service demand for ``demand: {kind: corpus}``
(:func:`demand_samples`), so a simulated and a live run draw from one distribution.
Nothing here opens a socket: measuring goes through a ``post`` function given to
:func:`measure`.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from scalelab.errors import UserError

#: Share of each kind among submissions: an assumed CS1 exam mix (most programs run, a
#: fifth fail, a few never stop or blow a limit). Under 5 % reach the CPU limit, so that
#: the p95 of submissions is set by the programs that end, and moves with the load.
KIND_WEIGHTS = {
    "correct": 0.575, "slow-correct": 0.04, "wrong-answer": 0.16, "exception": 0.10, "syntax-error": 0.07,
    "infinite-loop": 0.025, "memory-hog": 0.02, "output-flood": 0.01,
}  # fmt: skip

#: The intended outcome of each kind.
INTENT = {
    "correct": "ok", "slow-correct": "ok", "wrong-answer": "ok", "exception": "error", "syntax-error": "error",
    "infinite-loop": "cpu", "memory-hog": "memory", "output-flood": "output",
}  # fmt: skip

#: Limits every submission of corpus-v1 runs under (``POST /run``'s ``limits``).
LIMITS = {"cpu_seconds": 2.0, "wall_seconds": 10.0, "memory_mib": 128, "output_bytes": 65536}

CORPUS_V1 = "corpus-v1.json"


class CorpusError(UserError):
    """A corpus file that cannot be used; the message names the file and the field."""


@dataclass(frozen=True)
class Program:
    """One submission: ``code`` (Python), its ``kind`` and ``intent``, its share
    ``weight`` of submissions, and the ``stdout`` a correct run prints (None: not
    checked)."""

    id: str
    kind: str
    intent: str
    weight: float
    code: str
    stdout: str | None = None


@dataclass(frozen=True)
class Corpus:
    name: str
    programs: tuple[Program, ...]
    limits: dict
    measured: dict | None = None

    @property
    def weights(self) -> np.ndarray:
        w = np.array([p.weight for p in self.programs], dtype=float)
        return w / w.sum()

    def by_id(self) -> dict[str, Program]:
        return {p.id: p for p in self.programs}

    def pick(self, rng: random.Random) -> int:
        """The index of the program a student submits next, drawn by its weight with one
        ``rng.random()`` (``random.choices``, as the injector's students draw it)."""
        return rng.choices(range(len(self.programs)), weights=self.weights)[0]

    def to_dict(self) -> dict:
        return {"name": self.name, "language": "python", "limits": self.limits,
                "programs": [p.__dict__ for p in self.programs], "measured": self.measured}


# ----------------------------------------------------------------------------- building
def _correct() -> list[tuple[str, str, str]]:
    """(id, code, expected stdout) of correct solutions, cheap to costly."""
    out = []
    for n in (1_000, 20_000, 200_000, 1_000_000, 3_000_000):
        out.append((f"sum-squares-{n}", f"total = 0\nfor i in range({n}):\n    total += i * i\nprint(total)\n",
                    f"{sum(i * i for i in range(n))}\n"))
    for n in (10_000, 200_000, 1_000_000):
        code = (f"n = {n}\nsieve = bytearray([1]) * (n + 1)\nsieve[0] = sieve[1] = 0\n"
                "for i in range(2, int(n ** 0.5) + 1):\n    if sieve[i]:\n"
                "        sieve[i * i::i] = bytearray(len(sieve[i * i::i]))\nprint(sum(sieve))\n")
        sieve = bytearray([1]) * (n + 1)
        sieve[0] = sieve[1] = 0
        for i in range(2, math.isqrt(n) + 1):
            if sieve[i]:
                sieve[i * i :: i] = bytearray(len(sieve[i * i :: i]))
        out.append((f"sieve-{n}", code, f"{sum(sieve)}\n"))
    for n in (18, 22, 25):
        fib = [0, 1]
        while len(fib) <= n:
            fib.append(fib[-1] + fib[-2])
        out.append((f"fib-recursive-{n}", f"def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\n"
                    f"print(fib({n}))\n", f"{fib[n]}\n"))
    for n in (1_000, 100_000, 500_000):
        code = (f"import random\nrandom.seed(7)\nxs = [random.randint(0, 10**6) for _ in range({n})]\n"
                "xs.sort()\nprint(all(a <= b for a, b in zip(xs, xs[1:])))\n")
        out.append((f"sort-{n}", code, "True\n"))
    out.append(("hello", "print('hello, world')\n", "hello, world\n"))
    out.append(("reverse-words", "s = 'the quick brown fox'\nprint(' '.join(reversed(s.split())))\n",
                "fox brown quick the\n"))
    return out


def _slow_correct() -> list[tuple[str, str, str]]:
    out = []
    for n in (1_500, 3_000):
        code = (f"xs = list(range({n}, 0, -1))\nfor i in range(len(xs)):\n    for j in range(len(xs) - 1 - i):\n"
                "        if xs[j] > xs[j + 1]:\n            xs[j], xs[j + 1] = xs[j + 1], xs[j]\nprint(xs[:3])\n")
        out.append((f"bubble-sort-{n}", code, "[1, 2, 3]\n"))
    return out


def _wrong() -> list[tuple[str, str]]:
    return [
        ("off-by-one", "total = 0\nfor i in range(1, 100000):\n    total += i\nprint(total)\n"),
        ("wrong-fib", "a, b = 0, 1\nfor _ in range(30):\n    a, b = b, a + b\nprint(b)\n"),
        ("wrong-sort", "xs = [5, 3, 9, 1, 7]\nxs.sort(reverse=True)\nprint(xs)\n"),
        ("no-output", "x = sum(range(50000))\n"),
    ]


def _exceptions() -> list[tuple[str, str]]:
    return [
        ("zero-division", "total = sum(range(100000))\nprint(total / 0)\n"),
        ("index-error", "xs = list(range(10))\nprint(xs[10])\n"),
        ("key-error", "d = {'a': 1}\nprint(d['b'])\n"),
        ("recursion-error", "def f(n):\n    return f(n + 1)\nf(0)\n"),
        ("type-error", "print('total: ' + 3)\n"),
    ]


def _syntax() -> list[tuple[str, str]]:
    return [
        ("missing-colon", "for i in range(3)\n    print(i)\n"),
        ("bad-indent", "def f():\nreturn 1\n"),
        ("unclosed-paren", "print((1 + 2)\n"),
    ]


def build_corpus(name: str = "corpus-v1") -> Corpus:
    """The corpus's programs (deterministic), each kind's weight split evenly over its
    programs; not measured yet."""
    groups: dict[str, list[tuple[str, str, str | None]]] = {
        "correct": _correct(),
        "slow-correct": _slow_correct(),
        "wrong-answer": [(i, c, None) for i, c in _wrong()],
        "exception": [(i, c, None) for i, c in _exceptions()],
        "syntax-error": [(i, c, None) for i, c in _syntax()],
        "infinite-loop": [("while-true", "while True:\n    pass\n", None),
                          ("forgot-increment", "i = 0\nwhile i < 10:\n    x = i * 2\nprint(x)\n", None)],
        "memory-hog": [("grow-list", "xs = []\nwhile True:\n    xs.append(' ' * 1_000_000)\n", None)],
        "output-flood": [("print-forever", "i = 0\nwhile True:\n    print('debug', i)\n    i += 1\n", None)],
    }
    programs = []
    for kind, items in groups.items():
        for pid, code, stdout in items:
            programs.append(Program(id=pid, kind=kind, intent=INTENT[kind], weight=KIND_WEIGHTS[kind] / len(items),
                                    code=code, stdout=stdout))
    return Corpus(name=name, programs=tuple(programs), limits=dict(LIMITS))


# ----------------------------------------------------------------------------- reading
def load_corpus(path: str | Path | None = None) -> Corpus:
    """A corpus file (default: the shipped ``corpus-v1.json``)."""
    if path is None or str(path) in ("v1", "corpus-v1"):
        text = resources.files("scalelab.injector.data").joinpath(CORPUS_V1).read_text()
        where = f"injector/data/{CORPUS_V1}"
    else:
        p = Path(path).expanduser()
        if not p.is_file():
            raise CorpusError(f"corpus {str(p)!r} does not exist (build one: scalelab corpus measure --out FILE)")
        text, where = p.read_text(), str(p)
    try:
        data = json.loads(text)
        programs = tuple(Program(**p) for p in data["programs"])
        corpus = Corpus(name=str(data["name"]), programs=programs, limits=dict(data["limits"]),
                        measured=data.get("measured"))
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise CorpusError(f"corpus {where}: malformed ({type(exc).__name__}: {exc})") from None
    for p in corpus.programs:
        if p.intent not in OUTCOMES or p.weight < 0:
            raise CorpusError(f"corpus {where}: program {p.id!r} has intent {p.intent!r} / weight {p.weight}")
    return corpus


#: The outcomes :func:`outcome_of` gives.
OUTCOMES = ("ok", "error", "cpu", "wall", "memory", "output", "processes", "file_size", "killed")


def outcome_of(result: dict) -> str:
    """What a ``POST /run`` answer amounts to: ``ok`` (exit 0), ``error`` (another exit
    code), or the limit hit (``cpu``, ``wall``, ``memory``, ``output``...), ``killed``
    (a signal with no limit named)."""
    limit = result.get("limit")
    if limit:
        return str(limit)
    if result.get("exit_code") == 0:
        return "ok"
    if result.get("exit_code") is not None:
        return "error"
    return "killed"


def as_intended(program: Program, outcome: str) -> bool:
    """Whether ``outcome`` is what ``program`` is meant to get. A program that never
    stops may be stopped by the wall clock instead of the CPU limit (a throttled
    replica); a memory hog may die of the allocation failing (``error``); an output
    flood is capped and drained until the CPU limit stops it."""
    if program.intent == "cpu":
        return outcome in ("cpu", "wall")
    if program.intent == "memory":
        return outcome in ("memory", "error", "killed")
    if program.intent == "output":  # the sandbox drains a flood past its cap until a limit stops it
        return outcome in ("output", "cpu", "wall")
    return outcome == program.intent


def intended_answer(program: Program) -> dict:
    """A ``POST /run`` answer with the outcome ``program`` is meant to get (for a
    stand-in of the sandbox: tests and the injector benchmark)."""
    return {"exit_code": {"ok": 0, "error": 1}.get(program.intent),
            "limit": {"cpu": "cpu", "memory": "memory", "output": "cpu"}.get(program.intent),
            "cpu_ms": 1.0, "wall_ms": 1.0, "stdout": program.stdout or "", "uid": 100001}


# ----------------------------------------------------------------------------- measuring
def measure(corpus: Corpus, post: Callable[[dict], dict], repeats: int = 5, host: str = "",
            progress: Callable[[int], None] | None = None) -> Corpus:
    """Run every program ``repeats`` times through ``post`` (a ``POST /run`` body ->
    its JSON answer) and return the corpus with ``measured`` filled: CPU and wall
    times (ms) and outcomes per program, one at a time (nothing else running)."""
    cpu: dict[str, list[float]] = {}
    wall: dict[str, list[float]] = {}
    outcome: dict[str, list[str]] = {}
    sealed = True
    for _ in range(repeats):
        for p in corpus.programs:
            answer = post({"code": p.code, "language": "python", "limits": corpus.limits})
            cpu.setdefault(p.id, []).append(round(float(answer["cpu_ms"]), 2))
            wall.setdefault(p.id, []).append(round(float(answer["wall_ms"]), 2))
            outcome.setdefault(p.id, []).append(outcome_of(answer))
            sealed = sealed and answer.get("uid") is not None
            if progress is not None:
                progress(1)
    measured = {"at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "host": host, "repeats": repeats,
                "isolated": sealed, "cpu_ms": cpu, "wall_ms": wall, "outcome": outcome}
    return Corpus(name=corpus.name, programs=corpus.programs, limits=corpus.limits, measured=measured)


def save_corpus(corpus: Corpus, path: str | Path) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(corpus.to_dict(), indent=1) + "\n")
    return p


# ----------------------------------------------------------------------------- the demand
def measured_cpu_s(corpus: Corpus) -> dict[str, np.ndarray]:
    """Each measured program's CPU times (s), cut at the corpus's CPU limit (a program
    killed at the limit counts at the limit), by program id."""
    if not corpus.measured:
        raise CorpusError(f"corpus {corpus.name}: not measured yet (scalelab corpus measure)")
    cap = float(corpus.limits["cpu_seconds"])
    return {pid: np.minimum(np.asarray(times, dtype=float) / 1000.0, cap)
            for pid, times in corpus.measured["cpu_ms"].items() if times}


def program_cpu_s(corpus: Corpus) -> list[np.ndarray]:
    """:func:`measured_cpu_s` in the order of ``corpus.programs`` (the index
    :meth:`Corpus.pick` draws); a program never measured is an error that names it."""
    measured = measured_cpu_s(corpus)
    missing = [p.id for p in corpus.programs if p.id not in measured]
    if missing:
        raise CorpusError(f"corpus {corpus.name}: programs never measured: {', '.join(missing[:5])} "
                          f"(scalelab corpus measure)")
    return [measured[p.id] for p in corpus.programs]


def demand_samples(corpus: Corpus) -> tuple[np.ndarray, np.ndarray]:
    """The measured CPU demand as an empirical distribution: every measured CPU time
    (s) and its probability (the program's weight shared over its repeats). Programs
    killed at the CPU limit count at the limit: the distribution's timeout mass."""
    weights = dict(zip((p.id for p in corpus.programs), corpus.weights, strict=True))
    values, probs = [], []
    for pid, times in measured_cpu_s(corpus).items():  # in the measurement's order
        if pid in weights:
            values.extend(times)
            probs.extend([weights[pid] / len(times)] * len(times))
    v, pr = np.array(values), np.array(probs)
    return v, pr / pr.sum()


# ----------------------------------------------------------------------------- a student's draws
def student_rng(seed: int, process: int, number: int) -> random.Random:
    """The generator of one injector student: Locust user number ``number`` (counted
    from 0 over the injector process's life) of injector process ``process`` (0: the
    master or a lone process) under the task's ``seed``. A student draws, in order, its
    first think time, then per submission a program (:meth:`Corpus.pick`) and a think
    time (``rng.uniform(low, high)``); the simulator's injector students
    (:mod:`scalelab.simulator.students`) draw the same."""
    return random.Random(f"{seed}:{process}:{number}")


def summary(corpus: Corpus) -> dict:
    """Headline figures of a measured corpus: mean, median, p95 CPU (ms), the share of
    submissions at the CPU limit and each kind's share and median CPU."""
    v, p = demand_samples(corpus)
    order = np.argsort(v)
    cdf = np.cumsum(p[order])
    q = {f"q{round(x * 100)}": float(v[order][np.searchsorted(cdf, x)] * 1000) for x in (0.5, 0.95)}
    cap = float(corpus.limits["cpu_seconds"])
    kinds = {}
    for p_ in corpus.programs:
        times = corpus.measured["cpu_ms"].get(p_.id, [])
        k = kinds.setdefault(p_.kind, {"share": 0.0, "cpu_ms": []})
        k["share"] += float(p_.weight)
        k["cpu_ms"].extend(times)
    return {"mean_ms": float((v * p).sum() * 1000), **{f"{k}_ms": x for k, x in q.items()},
            "at_cpu_limit": float(p[v >= cap * 0.98].sum()),
            "kinds": {k: {"share": round(d["share"], 4), "median_cpu_ms": float(np.median(d["cpu_ms"]))
                          if d["cpu_ms"] else None} for k, d in kinds.items()}}
