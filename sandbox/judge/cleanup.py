"""Removing a directory tree a solution may have shaped against us.

With a fresh world (the runner's own mount namespace) the solution never sees the judge's
workdir, which then holds only the judge's two capture files. Where namespaces are missing, the
solution could leave a chain of 100k nested directories (`shutil.rmtree` recurses and raises
RecursionError), directories without permissions, FIFOs or symbolic links. This removal never
recurses, never follows a link, never opens anything but directories, and stops after a budget
of entries (what is left is reported, never raised).
"""

from __future__ import annotations

import os
import stat

BUDGET = 1_000_000  # entries removed at most per tree


def remove_tree(path: str, budget: int = BUDGET) -> bool:
    """Remove `path` and everything below it. Returns True when it is gone.

    Each pass moves the children of every subdirectory up into the top directory (by renames
    relative to directory descriptors, so path lengths never grow) and deletes what is not a
    directory; a deep chain becomes flat one level per pass, without recursion."""
    try:
        top = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return True
    except OSError:
        try:
            os.unlink(path)  # a link or a file where the directory was
            return True
        except OSError:
            return False
    counter = 0
    previous: list[tuple[str, bool]] = []
    try:
        while budget > 0:
            with os.scandir(top) as it:
                entries = [(e.name, e.is_dir(follow_symlinks=False)) for e in it]
            if not entries or entries == previous:  # gone, or a pass changed nothing: stop
                break
            previous = entries
            for name, is_dir in entries:
                budget -= 1
                if not is_dir:
                    try:
                        os.unlink(name, dir_fd=top)
                    except OSError:
                        pass
                    continue
                counter = _hoist(top, name, counter)
    finally:
        os.close(top)
    try:
        os.rmdir(path)
        return True
    except OSError:
        return False


def _hoist(top: int, name: str, counter: int) -> int:
    """Move the children of `top/name` into `top`, then remove `top/name` if it is empty."""
    _unlock(top, name)
    try:
        sub = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=top)
    except OSError:
        try:
            os.unlink(name, dir_fd=top)
        except OSError:
            pass
        return counter
    try:
        with os.scandir(sub) as it:
            children = [e.name for e in it]
        for child in children:
            counter += 1
            try:
                os.rename(child, f".q{counter}", src_dir_fd=sub, dst_dir_fd=top)
            except PermissionError:  # moving a directory rewrites its "..": it must be writable
                _unlock(sub, child)
                try:
                    os.rename(child, f".q{counter}", src_dir_fd=sub, dst_dir_fd=top)
                except OSError:
                    pass
            except OSError:
                pass
    finally:
        os.close(sub)
    try:
        os.rmdir(name, dir_fd=top)
    except OSError:
        pass
    return counter


def _unlock(top: int, name: str) -> None:
    """Give the owner rwx on the directory `top/name`, never on what a link points to. Linux has no
    lchmod, so the directory is pinned by an O_PATH descriptor (O_NOFOLLOW: a link fails to open)
    and changed through its /proc/self/fd entry, which names that very inode."""
    try:
        pinned = os.open(name, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=top)
    except OSError:
        return
    try:
        os.chmod(f"/proc/self/fd/{pinned}", stat.S_IRWXU)
    except OSError:
        pass
    finally:
        os.close(pinned)
