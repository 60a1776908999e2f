"""Progress bars for long work: live in a terminal, a line every 30 s in logs (CI, SLURM job output)."""

from __future__ import annotations

import sys
from typing import Any


def bar(iterable: Any = None, **options: Any) -> Any:
    from tqdm import tqdm

    options.setdefault("file", sys.stderr)
    options.setdefault("dynamic_ncols", True)
    if not sys.stderr.isatty():
        options.setdefault("mininterval", 30.0)
    return tqdm(iterable, **options)
