"""A seccomp filter for the runner: the system calls that make memory no process is charged for fail.

With no cgroup delegated to us, the tree watch (`treewatch`) limits what the solution's processes
hold resident (anonymous and shared-memory pages). Two calls make memory that sits in no process:
`memfd_create` (a file in the kernel's own tmpfs, kept by a descriptor: 64 descriptors x the 16 MB
RLIMIT_FSIZE per process, 64 processes) and `shmget` (a System V segment stays after it is
detached); `memfd_secret` is a memfd whose pages nobody may map. The filter makes them fail with
ENOSYS, as a kernel without them does; everything else is allowed. The x32 and i386 ABIs on x86_64
fail the same way, so the calls cannot be reached under their other numbers. Installed by the
runner after PR_SET_NO_NEW_PRIVS, before the solution loads: every fork and exec of the solution
inherits it and nothing can remove it. File-backed shared memory stays usable (multiprocessing's
/dev/shm), bounded by the fresh tmpfs it lives on.
"""

from __future__ import annotations

import ctypes
import errno
import os

from .world import libc_handle

PR_SET_NO_NEW_PRIVS = 38
PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2
SECCOMP_RET_ALLOW = 0x7FFF0000
SECCOMP_RET_ERRNO = 0x00050000
BPF_LD_W_ABS = 0x20  # BPF_LD | BPF_W | BPF_ABS
BPF_JEQ_K = 0x15  # BPF_JMP | BPF_JEQ | BPF_K
BPF_JGE_K = 0x35  # BPF_JMP | BPF_JGE | BPF_K
BPF_RET_K = 0x06  # BPF_RET | BPF_K
X32_SYSCALL_BIT = 0x40000000
OFFSET_NR, OFFSET_ARCH = 0, 4  # struct seccomp_data

# machine -> (AUDIT_ARCH_*, has the x32 ABI, {call: number})
DENIED = {
    "x86_64": (0xC000003E, True, {"shmget": 29, "memfd_create": 319, "memfd_secret": 447}),
    "aarch64": (0xC00000B7, False, {"shmget": 194, "memfd_create": 279, "memfd_secret": 447}),
}


class _Instruction(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8), ("k", ctypes.c_uint32)]


class _Program(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_Instruction))]


def program(machine: str) -> list[tuple[int, int, int, int]]:
    """The filter as (code, jt, jf, k) instructions: load the arch, deny a foreign one, load the
    call's number, deny x32 numbers and each denied call, else allow. The last instruction is the
    denial every check jumps to (jt/jf count the instructions skipped)."""
    arch, x32, calls = DENIED[machine]
    # (code, k, jump to the denial when the test is true / false / never)
    steps: list[tuple[int, int, bool | None]] = [(BPF_LD_W_ABS, OFFSET_ARCH, None), (BPF_JEQ_K, arch, False),
                                                 (BPF_LD_W_ABS, OFFSET_NR, None)]
    if x32:
        steps.append((BPF_JGE_K, X32_SYSCALL_BIT, True))
    steps += [(BPF_JEQ_K, nr, True) for nr in sorted(calls.values())]
    deny = len(steps) + 1  # after the ALLOW
    out = []
    for i, (code, k, deny_when) in enumerate(steps):
        skip = deny - i - 1
        jt, jf = (0, 0) if deny_when is None else (skip, 0) if deny_when else (0, skip)
        out.append((code, jt, jf, k))
    return [*out, (BPF_RET_K, 0, 0, SECCOMP_RET_ALLOW), (BPF_RET_K, 0, 0, SECCOMP_RET_ERRNO | errno.ENOSYS)]


def compiled(machine: str) -> tuple[_Program, ctypes.Array[_Instruction]] | None:
    """The filter in the kernel's form for `machine` (None where we have none): the program and
    the instruction table it points into, which must stay alive with it."""
    if machine not in DENIED:
        return None
    instructions = program(machine)
    table = (_Instruction * len(instructions))(*(_Instruction(*i) for i in instructions))
    return _Program(len(instructions), table), table


# Built once where the zygote imports this (0.5 ms in a fresh fork): a runner only makes two calls.
_FILTER = compiled(os.uname().machine)


def install() -> bool:
    """Install the filter on this process (and all it will start). False where this machine has
    no filter of ours (another architecture) or the kernel refuses."""
    if _FILTER is None:
        return False
    libc = libc_handle()
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        return False
    return bool(libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(_FILTER[0]), 0, 0) == 0)
