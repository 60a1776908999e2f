"""Distributed grading: shards of completions go out as one submitit job array.

    from sandbox.cluster import grade_distributed
    results = grade_distributed("problems.jsonl", "completions.jsonl", "graded.jsonl",
                                executor="slurm", jobs=16, cpus_per_job=8, partition="cpu", time_min=60)

or `sandbox grade -p P -c C -o graded.jsonl --executor slurm --jobs 16 --cpus-per-job 8`.

    layout.py     the run directory (a `sandbox.rundir.Chunks` folder, one chunk per shard), its fingerprint
    task.py       the array task: one shard on the node's warm pool, its result file written atomically
    scheduler.py  small adapters on submitit: `exec` so SIGTERM reaches the task, squeue+sacct states
                  (cancelled pending array tasks vanish from sacct), local jobs, the jobs' recorded errors
    driver.py     submit, watch, resubmit, re-attach after a restart, merge in input order

The fingerprint covers the problems (with limits), the completions and the options that change
results (backend, granularity, extract). A rerun with different inputs refuses the directory with
a message instead of mixing stale shards in; options that do not change results (jobs, CPUs,
partition, time) may change between runs (the shard layout of the first run is kept).
"""

from .driver import Executor, grade_distributed
from .layout import ClusterError, RunDir, inputs_fingerprint
from .scheduler import slurm_states
from .task import ShardInterrupted, grade_shard, task_workers

__all__ = ["ClusterError", "Executor", "RunDir", "ShardInterrupted", "grade_distributed", "inputs_fingerprint", "grade_shard",
           "slurm_states", "task_workers"]
