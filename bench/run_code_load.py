"""Throughput of SandboxFusion's /run_code on `sandbox serve` under verl's concurrency pattern,
against our own /grade on the same programs and tests, on loopback.

verl's scorer (verl/utils/reward_score/sandbox_fusion/utils.py, `check_correctness`) sends one
POST /run_code per test case from a thread pool, `requests.post` per call; with many samples in
flight that is a few hundred concurrent requests. Here: PROGRAMS programs x TESTS stdio tests,
each test one /run_code from a pool of CONCURRENCY threads (256 by default), versus one /grade
request per program (all its tests) from the same pool. Both hit one server with the same warm
judges (started here as `python -m sandbox.cli serve`).

    python bench/run_code_load.py --backend bubblewrap --workers 2 --programs 64 --tests 8

Prints requests/s and p50/p99 latency of each, tests/s, and the ratio /grade : /run_code.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PROGRAM = "n = int(input())\nprint(sum(i * i for i in range(n)) + {k})\n"


def start(backend: str, workers: int, folder: Path) -> tuple[subprocess.Popen[bytes], str]:
    from sandbox.service import read_address_file

    address = folder / "addr"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    process = subprocess.Popen([sys.executable, "-W", "ignore", "-m", "sandbox.cli", "serve", "--backend", backend,
                                "--workers", str(workers), "--address-file", str(address), "--log-level", "warning",
                                "--max-pending", "100000"], cwd=REPO, env=env)
    deadline = time.monotonic() + 120
    while not address.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise SystemExit("the server did not start")
        time.sleep(0.2)
    return process, f"http://{read_address_file(address)[0]}"


def timed(call):  # type: ignore[no-untyped-def]
    def run(*args):  # type: ignore[no-untyped-def]
        t0 = time.perf_counter()
        ok = call(*args)
        return time.perf_counter() - t0, ok

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", default="bubblewrap")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--programs", type=int, default=64)
    parser.add_argument("--tests", type=int, default=8)
    parser.add_argument("--concurrency", type=int, default=256)
    args = parser.parse_args()
    import requests

    inputs = [str(1000 * (t + 1)) for t in range(args.tests)]
    programs = [PROGRAM.format(k=k % 2) for k in range(args.programs)]  # every other one is wrong
    expected = [f"{sum(i * i for i in range(int(x)))}\n" for x in inputs]
    session = requests.Session()
    session.mount("http://", requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=args.concurrency))

    with tempfile.TemporaryDirectory() as folder:
        process, url = start(args.backend, args.workers, Path(folder))
        try:
            @timed
            def run_code(program: str, stdin: str, want: str) -> bool:  # verl's call_sandbox_api payload
                body = {"compile_timeout": 3, "run_timeout": 3, "code": program, "stdin": stdin, "memory_limit_MB": 1024,
                        "language": "python", "files": {}, "fetch_files": []}
                reply = session.post(f"{url}/run_code", json=body, timeout=600).json()
                return reply["status"] == "Success" and reply["run_result"]["stdout"] == want

            @timed
            def grade(k: int, program: str) -> bool:
                problem = {"task_id": f"p{k}", "prompt": "",
                           "tests": [{"kind": "stdio", "stdin": x, "stdout": y} for x, y in zip(inputs, expected)]}
                reply = session.post(f"{url}/grade", json={"problems": [problem], "completions": [
                    {"task_id": f"p{k}", "code": program}]}, timeout=600).json()
                return reply["results"][0]["pass_rate"] == 1.0

            with ThreadPoolExecutor(args.concurrency) as pool:  # warm-up: connections, judges, caches
                list(pool.map(lambda p: run_code(p, inputs[0], expected[0]), programs[:8]))
                t0 = time.perf_counter()
                rc = list(pool.map(lambda job: run_code(*job),
                                   [(p, x, y) for p in programs for x, y in zip(inputs, expected)]))
                rc_s = time.perf_counter() - t0
                t0 = time.perf_counter()
                gr = list(pool.map(lambda job: grade(*job), enumerate(programs)))
                gr_s = time.perf_counter() - t0
        finally:
            process.terminate()
            process.wait(30)

    rc_pass = sum(ok for _, ok in rc)
    gr_pass = sum(ok for _, ok in gr)
    tests = args.programs * args.tests
    print(f"backend {args.backend}, {args.workers} judges, {args.programs} programs x {args.tests} tests, "
          f"{args.concurrency} client threads")
    for name, results, seconds, n in (("/run_code", rc, rc_s, len(rc)), ("/grade", gr, gr_s, len(gr))):
        lat = sorted(t for t, _ in results)
        p99 = lat[min(len(lat) - 1, int(0.99 * len(lat)))]
        print(f"{name:10s} {n:6d} requests in {seconds:7.2f} s: {n / seconds:8.1f} requests/s, {tests / seconds:8.1f} tests/s, "
              f"latency p50 {statistics.median(lat):.3f} s p99 {p99:.3f} s")
    right = (args.programs + 1) // 2
    print(f"passing tests via /run_code {rc_pass} (expected {right * args.tests}); programs passing via /grade "
          f"{gr_pass} (expected {right})")
    print(f"tests/s ratio /grade : /run_code = {(tests / gr_s) / (tests / rc_s):.2f}")


if __name__ == "__main__":
    main()
