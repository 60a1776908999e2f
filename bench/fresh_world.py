"""What a fresh world costs per solution: the judge with and without it, in the same run.

A fresh world is a mount and IPC namespace of the runner's own, with a new tmpfs on /tmp,
/var/tmp, /dev/shm and the workdir, a nested user namespace that locks those mounts, and the
same again (without the nested user namespace) in every per-test fork. The baseline is the same
judge with `fresh_world=False` (runner in its user and PID namespace only, as before). Both
judges grade the same 1-, 3- and 100-test problems, interleaved so machine load hits both
alike. Target: p50 cost < 5 ms per solution.

    python bench/fresh_world.py [ROUNDS]
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sandbox.judge.server import Judge  # noqa: E402
from sandbox.problem import Limits, Problem, Test  # noqa: E402

LIMITS = Limits(cpu_s=1.0, wall_s=3.0, solution_s=30.0)
PROBLEMS = {
    "1 test": Problem(
        task_id="one", prompt="", entry_point="add", limits=LIMITS, tests=(Test("function", "assert candidate(1, 2) == 3"),)
    ),
    "3 tests": Problem(
        task_id="three",
        prompt="",
        entry_point="add",
        limits=LIMITS,
        tests=tuple(Test("function", f"assert candidate({i}, 1) == {i + 1}") for i in range(3)),
    ),
    "100 tests": Problem(  # LeetCodeDataset's solutions have ~94 tests each
        task_id="hundred",
        prompt="",
        entry_point="add",
        limits=LIMITS,
        tests=tuple(Test("function", f"assert candidate({i}, 1) == {i + 1}") for i in range(100)),
    ),
}
CODE = "def add(a, b):\n    return a + b\n"


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    judges = {"baseline": Judge(fresh_world=False), "fresh world": Judge(fresh_world=True)}
    times: dict[tuple[str, str, str], list[float]] = {}
    try:
        for i in range(rounds + 10):
            for granularity in ("per_test", "per_solution"):
                for pname, problem in PROBLEMS.items():
                    for jname, judge in judges.items():
                        request = {"id": i, "problem": problem.to_dict(), "code": CODE, "granularity": granularity}
                        started = time.perf_counter()
                        result = judge.grade(request)
                        elapsed = time.perf_counter() - started
                        assert all(t["verdict"] == "passed" for t in result["tests"]), result
                        if i >= 10:  # warm-up
                            times.setdefault((granularity, pname, jname), []).append(elapsed)
        containment = {
            name: judge.grade({"id": 0, "problem": PROBLEMS["1 test"].to_dict(), "code": CODE})["info"]["containment"]
            for name, judge in judges.items()
        }
    finally:
        for judge in judges.values():
            judge.close()
    print(f"containment: {containment}; {rounds} rounds")
    print(f"{'granularity':13} {'problem':9} {'baseline p50 ms':>16} {'fresh p50 ms':>13} {'cost p50 ms':>12} {'ratio':>6}")
    for granularity in ("per_test", "per_solution"):
        for pname in PROBLEMS:
            base = statistics.median(times[(granularity, pname, "baseline")]) * 1000
            fresh = statistics.median(times[(granularity, pname, "fresh world")]) * 1000
            print(f"{granularity:13} {pname:9} {base:16.2f} {fresh:13.2f} {fresh - base:12.2f} {fresh / base:6.2f}")


if __name__ == "__main__":
    main()
