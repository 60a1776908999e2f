"""Check submitit against the local SLURM cluster and print the fixed cost per job.

    . STATE_DIR/env.sh
    python slurm/local-cluster/submitit_smoke.py /tmp/submitit-smoke-$USER

Needs `submitit` in the running interpreter; the jobs run with this same interpreter
(`sys.executable`), so it must be readable by the submitting user on the node (here: the same
machine; a venv under /root is not readable by other users).
"""

from __future__ import annotations

import getpass
import os
import sys
import time

import submitit


def add(a: int, b: int) -> tuple[int, str | None, str]:
    return a + b, os.environ.get("SLURM_JOB_ID"), getpass.getuser()


def square(x: int) -> int:
    time.sleep(1)
    return x * x


def fail() -> None:
    raise ValueError("expected failure")


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    if not os.environ.get("SLURM_CONF"):
        print("SLURM_CONF is not set: source STATE_DIR/env.sh first", file=sys.stderr)
        return 2
    folder = os.path.join(sys.argv[1], "%j")
    executor = submitit.SlurmExecutor(folder=folder)  # python defaults to sys.executable
    executor.update_parameters(time=5, cpus_per_task=1)

    costs = []
    for _ in range(3):
        start = time.time()
        job = executor.submit(add, 2, 3)
        value = job.result()
        costs.append(time.time() - start)
        assert value[0] == 5 and value[1] == job.job_id and value[2] == getpass.getuser(), value
    state = job.get_info(mode="force").get("State")
    print(f"single job: result in {min(costs):.2f}-{max(costs):.2f} s (submit -> result), sacct {state}")
    assert state == "COMPLETED", state

    start = time.time()
    jobs = executor.map_array(square, [1, 2, 3, 4])
    values = [j.result() for j in jobs]
    assert values == [1, 4, 9, 16], values
    print(f"map_array of 4 x 1 s on 1 CPU each: {time.time() - start:.2f} s")

    auto = submitit.AutoExecutor(folder=folder, cluster="slurm")
    auto.update_parameters(timeout_min=5, cpus_per_task=1, slurm_partition="debug")
    start = time.time()
    value = auto.submit(add, 1, 1).result()
    assert value[0] == 2, value
    print(f"AutoExecutor job: {time.time() - start:.2f} s")

    failing = executor.submit(fail)
    try:
        failing.result()
    except submitit.core.utils.FailedJobError:
        pass
    else:
        raise AssertionError("the failing job did not raise")
    state = failing.get_info(mode="force").get("State")
    print(f"failing job: FailedJobError raised, sacct {state}")
    assert state == "FAILED", state

    sleeper = executor.submit(time.sleep, 60)
    while sleeper.get_info(mode="force").get("State") != "RUNNING":
        time.sleep(0.2)
    sleeper.cancel(check=True)
    start = time.time()
    while not sleeper.done(force_check=True):
        time.sleep(0.2)
    print(f"cancelled job: done after {time.time() - start:.2f} s, state {sleeper.state}")
    assert sleeper.state.startswith("CANCELLED"), sleeper.state
    print("submitit smoke test passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
