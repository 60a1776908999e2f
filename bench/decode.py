"""What one reply can cost the judge: the worst reply within the frame size limit vs a normal one.

A solution chooses the bytes of its reply. The judge reads the frame, parses it, decodes the
value (sandbox.judge.codec, with its budgets) and compares it. Each case below is a reply built
to be cheap to send and expensive to handle; each runs in a fresh process that does exactly what
the judge does with a reply (protocol.Reader with the judge's limits, frames.answer,
codec.decode, then `==` against an equal value built beforehand, as the judge holds its expected
value, which walks all of it), and reports the wall time and the peak memory above the process's
baseline (the equal value included: an upper bound). Target: every case < 1 s and < 512 MiB.

    python bench/decode.py            # all cases
    python bench/decode.py CASE ...   # some
"""

from __future__ import annotations

import json
import os
import resource
import struct
import subprocess
import sys
import tempfile
import time
from typing import Any

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from sandbox.judge import codec, frames, protocol  # noqa: E402
from sandbox.judge.session import REPLY_LIMIT  # noqa: E402

MODULUS = (1 << 61) - 1  # CPython hashes an int n as n mod this
BIG_INTS = (REPLY_LIMIT - 4096) // (codec.MAX_INT_HEX_DIGITS + 16)  # as many of the largest ints as fit


def frame_of(doc: Any) -> bytes:
    return protocol.dumps({"test": 1, "ok": doc, "time_s": 0.0})


def raw(body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + body


def fill(unit: bytes, prefix: bytes, suffix: bytes) -> bytes:
    """A frame body of `unit` repeated up to the frame size limit."""
    n = (REPLY_LIMIT - len(prefix) - len(suffix)) // len(unit)
    return raw(prefix + (unit * n)[:-1] + suffix)


PREFIX = b'{"test":1,"time_s":0,"ok":{"root":[0],"nodes":[["list",['
SUFFIX = b"]]]}}"
CASES: dict[str, Any] = {
    "normal: 100k ints": lambda: frame_of(codec.encode(list(range(100_000)))),
    "normal: 10k pairs": lambda: frame_of(codec.encode([(i, -i) for i in range(10_000)])),
    "max frame of empty arrays": lambda: fill(b"[],", PREFIX, SUFFIX),
    "max frame of references": lambda: fill(b"[0],", PREFIX, SUFFIX),
    "max frame of small ints": lambda: fill(b"7,", PREFIX, SUFFIX),
    "max frame of 2-char strings": lambda: fill(b'"ab",', PREFIX, SUFFIX),
    "max frame of floats": lambda: fill(b"0.5,", PREFIX, SUFFIX),
    "max frame, one string": lambda: raw(b'{"test":1,"time_s":0,"ok":{"root":"' + b"x" * (REPLY_LIMIT - 64) + b'","nodes":[]}}'),
    "max frame of empty objects": lambda: fill(b"{},", PREFIX, SUFFIX),
    "items budget of ints": lambda: frame_of({"root": [0], "nodes": [["list", list(range(codec.MAX_ITEMS - 2))]]}),
    "nodes budget of lists": lambda: frame_of(
        {
            "root": [0],
            "nodes": [["list", [[i] for i in range(1, codec.MAX_NODES)]]] + [["list", [i]] for i in range(1, codec.MAX_NODES)],
        }
    ),
    "colliding set keys": lambda: frame_of({"root": [0], "nodes": [["set", [i * MODULUS for i in range(1, 150_000)]]]}),
    "colliding dict keys": lambda: frame_of({"root": [0], "nodes": [["dict", [[i * MODULUS, 0] for i in range(1, 150_000)]]]}),
    "shared references (2**60 expanded)": lambda: frame_of(
        {"root": [0], "nodes": [["list", [[i + 1], [i + 1]]] for i in range(60)] + [["list", [1]]]}
    ),
    "shared tuples in a set": lambda: frame_of(
        {"root": [61], "nodes": [["tuple", [[i + 1], [i + 1]]] for i in range(60)] + [["tuple", [1]], ["set", [[0]]]]}
    ),
    "deep tuple in a set": lambda: frame_of(
        {"root": [200_000], "nodes": [["tuple", [[i + 1]]] for i in range(199_999)] + [["tuple", []], ["set", [[0]]]]}
    ),
    "big ints": lambda: frame_of(
        {
            "root": [0],
            "nodes": [["list", [[i] for i in range(1, BIG_INTS + 1)]]]
            + [["int", "f" * codec.MAX_INT_HEX_DIGITS] for _ in range(BIG_INTS)],
        }
    ),
}


def _expected(path: str) -> Any:
    """A value equal to the reply's (None where the judge would refuse the reply), built outside
    the timed part: the judge decodes a reply once and compares it with a value of its own. The
    memory it takes stays in the peak: the memory column is an upper bound."""
    fd = os.open(path, os.O_RDONLY)
    try:
        message = protocol.Reader(fd).read(None, REPLY_LIMIT, codec.MAX_FRAME_CONTAINERS, codec.MAX_FRAME_COMMAS)
        answer = frames.answer(message)
        return codec.decode(answer.doc) if isinstance(answer, frames.Value) else None
    except (codec.TooLarge, protocol.ProtocolError, codec.DecodeError):
        return None
    finally:
        os.close(fd)


def measure(name: str, path: str) -> dict[str, Any]:
    """In this (fresh) process: handle the reply in `path` as the judge does."""
    base = int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    expected = _expected(path)  # the judge holds its expected value before the reply comes
    fd = os.open(path, os.O_RDONLY)
    started = time.perf_counter()
    outcome = "accepted"
    try:
        message = protocol.Reader(fd).read(None, REPLY_LIMIT, codec.MAX_FRAME_CONTAINERS, codec.MAX_FRAME_COMMAS)
        answer = frames.answer(message)
        assert isinstance(answer, frames.Value)
        value = codec.decode(answer.doc)
        _ = value == expected  # an equal value: the comparison walks all of it
    except codec.TooLarge as exc:
        outcome = f"over budget ({str(exc)[:60]})"
    except (protocol.ProtocolError, codec.DecodeError) as exc:
        outcome = f"refused ({str(exc)[:60]})"
    except RecursionError:
        outcome = "accepted (comparison hit the recursion limit)"
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {
        "case": name,
        "seconds": seconds,
        "peak_mib": max(0, peak - base) / 2**20,
        "outcome": outcome,
        "frame_mib": os.path.getsize(path) / 2**20,
    }


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--measure":
        name, path = sys.argv[2].split("|")
        print(json.dumps(measure(name, path)))
        return
    names = sys.argv[1:] or list(CASES)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            path = os.path.join(tmp, "frame")
            data = CASES[name]()
            assert len(data) - 4 <= REPLY_LIMIT, name
            with open(path, "wb") as f:
                f.write(data)
            del data
            out = subprocess.run([sys.executable, __file__, "--measure", f"{name}|{path}"], capture_output=True, text=True)
            if out.returncode != 0:
                rows.append(
                    {
                        "case": name,
                        "seconds": float("nan"),
                        "peak_mib": float("nan"),
                        "frame_mib": 0,
                        "outcome": f"CRASHED: {out.stderr.strip()[-200:]}",
                    }
                )
            else:
                rows.append(json.loads(out.stdout))
    print(f"{'case':38} {'frame MiB':>9} {'seconds':>8} {'peak MiB':>9}  outcome")
    for r in rows:
        print(f"{r['case']:38} {r['frame_mib']:9.1f} {r['seconds']:8.3f} {r['peak_mib']:9.0f}  {r['outcome']}")
    normal = [r for r in rows if r["case"].startswith("normal")]
    hostile = [r for r in rows if not r["case"].startswith("normal")]
    if normal and hostile:
        worst_t = max(hostile, key=lambda r: r["seconds"])
        worst_m = max(hostile, key=lambda r: r["peak_mib"])
        base_t = max(r["seconds"] for r in normal)
        print(
            f"\nworst time: {worst_t['case']}: {worst_t['seconds']:.3f} s ({worst_t['seconds'] / base_t:.1f}x the slowest "
            "normal reply, "
            f"{base_t:.3f} s); target < 1 s"
        )
        print(f"worst memory: {worst_m['case']}: {worst_m['peak_mib']:.0f} MiB; target < 512 MiB")


if __name__ == "__main__":
    main()
