"""On-disk state of every long job, in one format: atomic files, JSON lines, a directory lock, a
fingerprinted manifest and numbered chunks.

Every writer in the project (the CLI's output, the cluster's shards, the pipeline's stages, the
service's address file, the trainer's cache) goes through this module, so a crash never leaves a
half-written file under its final name, any text a solution can produce (lone surrogates, control
characters) can be written, and files honour the umask.

The layout of a chunked job directory, shared by `sandbox grade --executor` and `qrpo` stages:

    DIR/manifest.json       {"format": 1, "kind": KIND, "fingerprint": FP, "count": N, ...extra}
    DIR/chunk-00000SUFFIX   chunk 0, written atomically once complete: it exists iff it is done
    DIR/.lock               flock'ed by the process working in DIR; holds its pid

A directory whose manifest names other inputs (another fingerprint or count) is refused with
`StaleError`, never silently mixed: its chunks were made from data that is gone.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

FORMAT = 1
_SURROGATE = re.compile("[\ud800-\udfff]")
PathLike = str | os.PathLike[str]


class StaleError(RuntimeError):
    """A directory holds the state of other inputs; the message names the directory and the fix."""


class LockedError(RuntimeError):
    """Another live process holds the directory's lock; the message names its pid."""


# ---------------------------------------------------------------------------------------------
# Text that always encodes


def dumps(value: Any, *, indent: int | None = None, sort_keys: bool = False) -> str:
    """JSON for files: UTF-8 text that encodes whatever strings it holds. A lone surrogate (from a
    solution's output) is written as its JSON escape `\\udXXX`, which reads back as the same string."""
    text = json.dumps(value, ensure_ascii=False, indent=indent, sort_keys=sort_keys, default=str,
                      separators=None if indent is not None else (",", ":"))
    # Surrogates only occur inside JSON strings, where a \\uXXXX escape is valid JSON.
    return text if _encodes(text) else _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def clean_text(text: str) -> str:
    """`text` with lone surrogates replaced by U+FFFD: for strings that leave the sandbox (results,
    HTTP responses), so that no consumer has to cope with text that cannot be encoded."""
    return text if _encodes(text) else _SURROGATE.sub("\ufffd", text)


def _encodes(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# ---------------------------------------------------------------------------------------------
# Atomic files


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_atomic(path: PathLike, data: str | bytes | Iterable[str], *, fsync: bool = True, mode: int | None = None) -> None:
    """Write `data` to `path` through a temporary file in the same folder, then rename: readers see
    the old file or the whole new one. The file gets `mode` (default 0o666 minus the umask, as
    `open` would give it; pass 0o600 for secrets)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        os.fchmod(fd, mode if mode is not None else 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            if isinstance(data, bytes):
                f.write(data)
            elif isinstance(data, str):
                f.write(data.encode("utf-8"))
            else:
                for chunk in data:
                    f.write(chunk.encode("utf-8"))
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_json(path: PathLike, value: Any, *, mode: int | None = None) -> None:
    write_atomic(path, dumps(value, indent=1) + "\n", mode=mode)


def read_json(path: PathLike) -> Any:
    """The JSON in `path`, or None when it is missing or not valid JSON (a file written by
    `write_json` is never partial, so invalid means someone else's file)."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        return None


def write_jsonl(path: PathLike, rows: Iterable[Any], *, fsync: bool = True) -> None:
    write_atomic(path, (dumps(row) + "\n" for row in rows), fsync=fsync)


def read_jsonl(path: PathLike) -> Iterator[Any]:
    """The rows of a JSON-lines file (blank lines skipped). Raises FileNotFoundError and
    json.JSONDecodeError as they come: callers that read user files report the row themselves."""
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


def append_jsonl(path: PathLike, row: Any) -> None:
    """Append one row with a single O_APPEND write: concurrent writers never interleave a line, and
    a crash loses at most the row being written (readers skip a torn last line: see `read_log`)."""
    data = (dumps(row) + "\n").encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def read_log(path: PathLike) -> list[Any]:
    """The rows of an append-only log, [] when it does not exist; a torn last line is dropped."""
    rows: list[Any] = []
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError:
                        continue
    except FileNotFoundError:
        pass
    return rows


def remove_tree(path: PathLike) -> None:
    """Delete a folder: renamed away first, so a crash midway never leaves a half-deleted folder
    under its name. Symlinks are removed, never followed."""
    target = Path(path)
    if not target.exists() and not target.is_symlink():
        return
    if target.is_symlink() or not target.is_dir():
        target.unlink()
        return
    trash = target.with_name(f".trash-{target.name}-{os.getpid()}-{time.time_ns()}")
    os.replace(target, trash)
    shutil.rmtree(trash, ignore_errors=True)


@contextlib.contextmanager
def atomic_dir(path: PathLike) -> Iterator[Path]:
    """Fill a temporary folder beside `path`; on success it replaces `path` whole (a `datasets`
    table, a model), on failure it is removed and `path` is untouched."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        os.chmod(tmp, 0o777 & ~_umask())
        yield tmp
        remove_tree(target)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# ---------------------------------------------------------------------------------------------
# Fingerprints


def fingerprint(*values: Any) -> str:
    """sha256 of JSON-able values (keys sorted), as 16 hex digits: names the inputs a directory was made from."""
    hasher = Hasher()
    for value in values:
        hasher.add(value)
    return hasher.hexdigest()


class Hasher:
    """A streaming fingerprint for inputs too large to serialise at once (millions of rows)."""

    def __init__(self) -> None:
        self._sha = hashlib.sha256()

    def add(self, value: Any) -> Hasher:
        self._sha.update(dumps(value, sort_keys=True).encode("utf-8"))
        self._sha.update(b"\x00")
        return self

    def hexdigest(self) -> str:
        return self._sha.hexdigest()[:16]


# ---------------------------------------------------------------------------------------------
# Locks


@contextlib.contextmanager
def lock(folder: PathLike, what: str = "process", *, name: str = ".lock",
         on_busy: Callable[[str], None] | None = None, note_pid: bool = True) -> Iterator[None]:
    """Hold `folder`/`name` for the duration: one worker per directory (or per item, with its own
    `name`). The kernel drops an flock when its process dies, so a killed job never leaves a stale
    lock behind. When another process holds it: LockedError, whose message names the holder by
    `what` (`another qrpo (pid 123) is working in DIR`); or, given `on_busy`, call it with the
    holder's pid and wait for the lock (a file system without locks, ENOLCK, then goes on unlocked).
    `note_pid=False` locks a file that holds data of its own (a partial output): its content is
    neither read nor replaced by the holder's pid, so the holder is '?'."""
    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    with open(root / name, "a+", encoding="utf-8") as f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = (f.read().strip() if note_pid else "") or "?"
            if on_busy is None:
                raise LockedError(f"another {what} (pid {holder}) is working in {root}; wait for it to finish, "
                                  "or give this one another directory") from None
            on_busy(holder)
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        except OSError:
            if on_busy is None:
                raise
            yield  # no locks on this file system: waiting is impossible, going on is harmless here
            return
        if note_pid:
            f.seek(0)
            f.truncate()
            f.write(str(os.getpid()))
            f.flush()
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


# ---------------------------------------------------------------------------------------------
# Manifest and chunks


def read_manifest(folder: PathLike) -> dict[str, Any] | None:
    data = read_json(Path(folder) / "manifest.json")
    return data if isinstance(data, dict) else None


class Chunks:
    """A job cut into `count` numbered chunks, each written under its final name once complete.

    `manifest.json` records what the chunks were made from (`fingerprint`, `count`, `kind`, and any
    `extra` fields such as grading options). Opening a folder whose manifest names other inputs
    raises StaleError with `fix` in the message; a folder without a manifest gets one."""

    def __init__(self, folder: PathLike, fingerprint: str, count: int, *, kind: str, suffix: str = "",
                 extra: dict[str, Any] | None = None, fix: str = "delete the folder, or give the job another one") -> None:
        self.folder = Path(folder)
        self.fingerprint, self.count, self.kind, self.suffix = fingerprint, count, kind, suffix
        manifest = read_manifest(self.folder)
        if manifest is not None:
            same = (manifest.get("format") == FORMAT and manifest.get("kind") == kind
                    and manifest.get("fingerprint") == fingerprint and manifest.get("count") == count)
            if not same:
                raise StaleError(f"{self.folder} holds {manifest.get('kind', 'chunks')} of other inputs "
                                 f"(fingerprint {str(manifest.get('fingerprint'))[:12]}, count {manifest.get('count')}; "
                                 f"now {fingerprint[:12]}, count {count}): {fix}")
            self.manifest = manifest
        else:
            self.manifest = {"format": FORMAT, "kind": kind, "fingerprint": fingerprint, "count": count,
                             "created": time.time(), **(extra or {})}
            write_json(self.folder / "manifest.json", self.manifest)

    def path(self, index: int) -> Path:
        return self.folder / f"chunk-{index:05d}{self.suffix}"

    def done(self, index: int) -> bool:
        return self.path(index).exists()

    def pending(self) -> list[int]:
        return [i for i in range(self.count) if not self.done(i)]

    def finished(self) -> int:
        return self.count - len(self.pending())

    def write_rows(self, index: int, rows: Iterable[Any]) -> None:
        """Finish chunk `index` as JSON lines (atomic: it is done iff the file exists)."""
        write_jsonl(self.path(index), rows)

    def read_rows(self, index: int) -> list[Any]:
        return list(read_jsonl(self.path(index)))
