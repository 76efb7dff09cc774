"""Writing a file so that an interruption never leaves half of it: a temporary file beside it, then a rename.

    with atomic_path(run_dir / "metrics.csv") as temporary:
        table.to_csv(temporary, index=False)

The temporary file is ``.<name>.tmp<pid>-<random>`` in the target's folder (a rename within one file
system is atomic); it replaces the target only when the block ends without an error, and is removed
when the block raises (Ctrl-C included). A run folder recognises a dead save's leftovers by that
name (``reid.run_folder``).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A path to write ``path``'s new content to; renamed to ``path`` at the end of the block (the folder is created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp{os.getpid()}-{secrets.token_hex(4)}")
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def write_text_atomically(path: str | os.PathLike, text: str) -> Path:
    """``path.write_text(text)`` (UTF-8) through ``atomic_path``; returns the path."""
    with atomic_path(path) as temporary:
        temporary.write_text(text, encoding="utf-8")
    return Path(path)
