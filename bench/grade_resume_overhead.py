"""What resumability costs a local `sandbox grade`.

Claim: streaming every row to OUTPUT.partial as it finishes (one O_APPEND write per row, a rerun's
scan of the partial file, the final atomic copy to OUTPUT) adds less than 2% to the grading time of
the same rows, measured against writing the output once at the end (what `grade` did before).

The grading time is measured here, on this machine, for N cheap solutions (the worst case: the
cheaper the solutions, the larger the share of writing). The writes are timed on the graded rows
(median of 5), each way, in the same run.

    python3 bench/grade_resume_overhead.py [--n 2000] [--backend process] [--workers 2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sandbox.api import grade  # noqa: E402
from sandbox.partial import PartialOutput  # noqa: E402
from sandbox.problem import Problem, Test  # noqa: E402
from sandbox.rundir import write_jsonl  # noqa: E402

CLAIM = 0.02


def median_time(action, repeat: int = 5) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--backend", default="process")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    problem = Problem(task_id="add", prompt="", entry_point="add",
                      tests=(Test("function", "assert candidate(1, 2) == 3"), Test("function", "assert candidate(2, 2) == 4")))
    rows = [{"task_id": "add", "code": f"def add(a, b):\n    return a {'+-'[i % 2]} b\n"} for i in range(args.n)]
    started = time.perf_counter()
    results = grade([problem], rows, backend=args.backend, workers=args.workers)
    grading = time.perf_counter() - started
    dicts = [r.to_dict() for r in results]

    with tempfile.TemporaryDirectory() as tmp:
        plain_out = Path(tmp) / "plain.jsonl"
        out = Path(tmp) / "graded.jsonl"

        def plain() -> None:
            write_jsonl(plain_out, dicts)

        def streamed() -> None:
            with PartialOutput(out, "bench", len(dicts)) as part:
                for index, row in enumerate(dicts):
                    part.append(index, row)
            with PartialOutput(out, "bench", len(dicts)) as part:  # a rerun scans the partial file
                assert part.done == len(dicts)
                part.finish()

        t_plain = median_time(plain)
        t_streamed = median_time(streamed)
    overhead = (t_streamed - t_plain) / grading
    print(f"grading {args.n} solutions ({args.backend}, {args.workers} workers): {grading:.2f} s")
    print(f"write once at the end: {t_plain * 1000:.1f} ms   stream to OUTPUT.partial + rerun scan + final copy: "
          f"{t_streamed * 1000:.1f} ms")
    verdict = "PASS" if overhead < CLAIM else "MISS"
    print(f"overhead of resumability / grading time: {overhead:.4f} (claim < {CLAIM}) -> {verdict}")


if __name__ == "__main__":
    main()
