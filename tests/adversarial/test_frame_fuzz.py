"""Fuzz the judge's channels with random and mutated frames, for real.

The only channel the untrusted side has to the judge is the runner's reply pipe (and what the
solution itself writes there: it runs in the runner's process and can write any bytes to
descriptor 4). Each case is a solution that writes fuzzed bytes on that pipe, at load time or
during a call, and then returns, exits, or hangs. The real judge (zygote, runner, namespaces)
grades it. Whatever arrives, the judge must not raise, must answer every test with a verdict of
the solution's (never `sandbox_error`), and must go on grading a correct solution correctly.

Runs for 60 s when CI=true (the acceptance's budget), a few seconds otherwise; QRPO_FUZZ_S
overrides. The seed is printed so a failure can be replayed (QRPO_FUZZ_SEED).
"""

from __future__ import annotations

import json
import os
import random
import struct
import time
from typing import Any

import pytest

from sandbox.judge.server import Judge
from sandbox.judge.verdicts import SANDBOX_ERROR, VERDICTS
from sandbox.problem import Limits, Problem, Test

LIMITS = Limits(cpu_s=1.0, wall_s=0.5, memory_mb=512, solution_s=5.0)
FUNCTION = Problem(
    task_id="add",
    prompt="",
    entry_point="add",
    limits=LIMITS,
    tests=tuple(Test("function", f"assert candidate({a}, {b}) == {a + b}") for a, b in [(1, 2), (3, 4), (5, 6)]),
)
LOOPED = Problem(
    task_id="loop",
    prompt="",
    entry_point="add",
    limits=LIMITS,
    tests=(
        Test("function", "for i in range(3):\n    assert candidate(i, 1) == i + 1"),
        Test("function", "try:\n    candidate(0, 0)\nexcept ValueError:\n    pass"),
    ),
)
STDIO = Problem(
    task_id="echo",
    prompt="",
    entry_point="",
    limits=LIMITS,
    tests=tuple(Test("stdio", stdin=f"{i}\n", stdout=f"{i}\n") for i in range(3)),
)
GOOD = {"add": "def add(a, b):\n    return a + b\n", "loop": "def add(a, b):\n    return a + b\n", "echo": "print(input())\n"}


def frame(body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + body


def js(message: Any) -> bytes:
    return json.dumps(message, allow_nan=True).encode()


def valid_frames(rng: random.Random) -> list[Any]:
    test = rng.choice([0, 1, 2, 3, 4, 5, 100, -1, 2**31 - 1])
    doc = {"root": rng.choice([3, 7, None, "x", [0]]), "nodes": rng.choice([[], [["list", [1, 2]]], [["tuple", [[0]]]]])}
    return [
        {"loaded": True},
        {"loaded": False, "verdict": rng.choice(["passed", "syntax_error", "timeout", "nope"]), "detail": "x"},
        {"test": test, "ok": doc, "time_s": 0.1},
        {
            "test": test,
            "raise": rng.choice(["ValueError", "SystemExit", "TooLarge", "UnicodeDecodeError", "Nope"]),
            "detail": "d",
        },
        {"test": test, "unencodable": "x", "time_s": 0.0},
        {"test": test, "passed": True},
        {"test": test, "exited": {"code": 0}},
        {"test": test, "exited": {"signal": 9}},
        {"test": test, "exited": {"code": 0}, "stdout": rng.choice(["Mwo=", "3\n", "@@"])},
    ]


WEIRD = [
    None,
    True,
    1.5,
    float("nan"),
    float("inf"),
    -1,
    2**70,
    "",
    "9",
    "\ud800",
    [],
    {},
    [[[]]],
    {"a": 1},
    {"code": "x"},
    {"signal": "15"},
    {"signal": 2**40},
    {"code": 0, "signal": 9},
    "A" * 5000,
]


def mutate(rng: random.Random, message: Any) -> Any:
    if type(message) is not dict or not message or rng.random() < 0.1:
        return rng.choice(WEIRD)
    message = dict(message)
    key = rng.choice(list(message))
    roll = rng.random()
    if roll < 0.5:
        message[key] = rng.choice(WEIRD)
    elif roll < 0.7:
        del message[key]
    elif roll < 0.85:
        message[rng.choice(["extra", "ok", "raise", "exited", "test", "stdout"])] = rng.choice(WEIRD)
    elif type(message[key]) is dict:
        message[key] = mutate(rng, message[key])
    else:
        message = {key: message[key]}
    return message


def fuzzed_bytes(rng: random.Random) -> bytes:
    out = b""
    for _ in range(rng.randint(1, 4)):
        roll = rng.random()
        if roll < 0.45:
            out += frame(js(mutate(rng, rng.choice(valid_frames(rng)))))
        elif roll < 0.6:
            out += frame(js(rng.choice(valid_frames(rng))))
        elif roll < 0.7:
            out += frame(rng.randbytes(rng.randint(0, 64)))
        elif roll < 0.75:
            out += struct.pack(">I", rng.choice([2**32 - 1, 2**31, 300 * 2**20])) + rng.randbytes(8)
        elif roll < 0.8:
            out += rng.randbytes(rng.randint(1, 3))  # a torn header
        elif roll < 0.85:
            out += frame(b"[" * 100_000 + b"]" * 100_000)
        elif roll < 0.9:
            out += frame(b'{"test": 1, "ok": "\xff\xfe"}')
        else:
            body = bytearray(js(rng.choice(valid_frames(rng))))
            for _ in range(rng.randint(1, 3)):
                body[rng.randrange(len(body))] = rng.randrange(256)
            out += frame(bytes(body))
    return out


def solution(rng: random.Random, problem: Problem) -> str:
    payload = fuzzed_bytes(rng)
    then = rng.choice(["return", "exit", "hang", "raise"])
    where = rng.choice(["import", "call", "call"])
    write = (f"import os, sys, time\n_P = {payload!r}\n"
             "def _w():\n    try:\n        os.write(4, _P)\n    except OSError:\n        pass\n")
    after = {"return": "", "exit": "os._exit(0)", "hang": "time.sleep(30)", "raise": "raise ValueError('x')"}[then]
    if problem.task_id == "echo":
        return write + "_w()\n" + (after + "\n" if where == "import" else "") + "print(input())\n"
    if where == "import":
        return write + "_w()\n" + after + "\ndef add(a, b):\n    return a + b\n"
    return write + f"def add(a, b):\n    _w()\n    {after or 'pass'}\n    return a + b\n"


MIN_CASES = 20  # whatever the time budget: the correct solution is re-graded after every 10th case


def fuzz_seconds() -> float:
    if os.environ.get("QRPO_FUZZ_S"):
        return float(os.environ["QRPO_FUZZ_S"])
    return 60.0 if os.environ.get("CI") == "true" else 6.0


def check(result: dict[str, Any], problem: Problem, code: str) -> None:
    verdicts = [t["verdict"] for t in result["tests"]]
    assert len(verdicts) == len(problem.tests), (code, result)
    assert all(v in VERDICTS and v != SANDBOX_ERROR for v in verdicts), (code, result)
    json.dumps(result, ensure_ascii=False).encode("utf-8")  # every writer can write it


@pytest.mark.parametrize("granularity", ["per_test", "per_solution"])
def test_judge_channels_fuzzed(granularity: str) -> None:
    seed = int(os.environ.get("QRPO_FUZZ_SEED") or random.SystemRandom().randrange(2**32))
    print(f"fuzz seed {seed} (QRPO_FUZZ_SEED={seed} replays it)")
    rng = random.Random(seed)
    judge = Judge()
    cases = 0
    try:
        stop = time.monotonic() + fuzz_seconds() / 2
        while time.monotonic() < stop or cases < MIN_CASES:  # hanging cases cost ~1.5 s: a seed can start with several
            problem = rng.choice([FUNCTION, FUNCTION, LOOPED, STDIO])
            code = solution(rng, problem)
            request = {"id": cases, "problem": problem.to_dict(), "code": code, "granularity": granularity}
            check(judge.grade(request), problem, code)  # never raises
            cases += 1
            if cases % 10 == 0:  # the same judge still grades correctly
                good = judge.grade(
                    {"id": -1, "problem": problem.to_dict(), "code": GOOD[problem.task_id], "granularity": granularity}
                )
                assert [t["verdict"] for t in good["tests"]] == ["passed"] * len(problem.tests), good
    finally:
        judge.close()
    print(f"{cases} fuzzed solutions graded")
