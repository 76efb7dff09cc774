"""A training run's folder: who may write into it, and what an earlier run or an interrupted save left there.

``claim_run_folder(run_dir, resume, overwrite)`` is called by the main rank before a run writes
anything. It creates the folder, takes its lock and refuses (``InputError``) a folder in use by a
live run, or one that already holds a run unless the run is resumed or ``overwrite`` is set. It then
removes what nobody can still be writing: the temporary files of an interrupted save (and, with
``overwrite``, once the new run has started: ``RunFolder.remove_earlier_run``, the earlier run's
outputs). The lock is an advisory ``flock`` on ``run_dir/.lock``:
the kernel releases it when its process ends, however it ends (Ctrl-C, SIGKILL, a crash), so a lock
file left by a dead run is recognised as stale and replaced. The file itself records the holder's
process id, machine and start time, for the messages.
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

from reid.errors import InputError

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; runs are not protected from each other there
    fcntl = None

# The files a training run writes into its folder (what --overwrite removes, what marks a folder as a run's).
RUN_FILES = ("config.json", "log.txt", "metrics.csv", "curves.png", "last.pth", "best.pth")
LOCK_NAME = ".lock"


@dataclass
class RunFolder:
    """A claimed run folder: the lock held for the run's lifetime and what claiming it did (for the log)."""

    path: Path
    created: bool
    notes: list[str] = field(default_factory=list)
    earlier: list[str] = field(default_factory=list)  # the earlier run's files that --overwrite replaces
    _lock_fd: int | None = None

    def remove_earlier_run(self) -> None:
        """With ``overwrite``: remove the earlier run's files (called when the new run is about to write its own)."""
        for name in self.earlier:
            (self.path / name).unlink(missing_ok=True)
        if self.earlier:
            self.notes.append(f"--overwrite: removed the earlier run's {', '.join(self.earlier)}")
        self.earlier = []

    def release(self) -> None:
        """Drop the lock (and its file); remove the folder again if this run created it and wrote nothing."""
        if self._lock_fd is not None:
            (self.path / LOCK_NAME).unlink(missing_ok=True)
            os.close(self._lock_fd)
            self._lock_fd = None
        if self.created and self.path.is_dir() and not any(self.path.iterdir()):
            self.path.rmdir()


def claim_run_folder(run_dir: str | os.PathLike, resume: bool, overwrite: bool) -> RunFolder:
    """Create and lock ``run_dir`` for one run; see the module docstring.

    resume: the run continues the one in ``run_dir`` (its files are kept). overwrite: an earlier
    run's files (``RUN_FILES``) are to be replaced (``remove_earlier_run``). Raises ``InputError`` for a folder in use by a live run,
    or one that holds a run when neither is set.
    """
    run_dir = Path(run_dir)
    created = not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    folder = RunFolder(run_dir, created)
    try:
        folder._lock_fd, stale = _lock(run_dir / LOCK_NAME)
        if stale:
            folder.notes.append(f"replaced the stale lock of {stale} (no longer running)")
        existing = [name for name in RUN_FILES if (run_dir / name).exists()]
        if existing and not resume:
            if not overwrite:
                hint = f"--resume {run_dir / 'last.pth'} to continue it, " if "last.pth" in existing else ""
                raise InputError(f"{run_dir} already holds a run ({', '.join(existing)}): give {hint}--overwrite to "
                                 "replace it, or choose another --run-name")
            folder.earlier = existing  # removed once the new run has started (a run failing before loses nothing)
        # Nobody else writes here while the lock is held: every temporary file is a dead save's.
        leftovers = sorted(path.name for name in RUN_FILES for path in run_dir.glob(f".{name}.tmp*"))
        for name in leftovers:
            (run_dir / name).unlink(missing_ok=True)
        if leftovers:
            folder.notes.append(f"removed the temporary file(s) of an interrupted save: {', '.join(leftovers)}")
    except BaseException:
        folder.release()
        raise
    return folder


def _lock(path: Path) -> tuple[int | None, str | None]:
    """Take the lock at ``path``; returns (its descriptor, a description of the dead holder it replaced or None)."""
    if fcntl is None:
        return None, None
    for _ in range(10):
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _describe(os.read(descriptor, 4096))
            os.close(descriptor)
            raise InputError(f"{path.parent} is in use by a live run ({holder}): wait for it to end, or choose another "
                             "--run-name") from None
        # The holder we waited for may have removed the file meanwhile: then the lock is on a deleted file.
        try:
            same_file = os.stat(path).st_ino == os.fstat(descriptor).st_ino
        except FileNotFoundError:
            same_file = False
        if not same_file:
            os.close(descriptor)
            continue
        previous = os.read(descriptor, 4096)
        os.ftruncate(descriptor, 0)
        os.lseek(descriptor, 0, os.SEEK_SET)
        os.write(descriptor, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                         "started": time.strftime("%Y-%m-%d %H:%M:%S")}).encode())
        return descriptor, _describe(previous) if previous else None
    raise InputError(f"{path}: could not take the lock (other runs keep taking it); try again")


def _describe(content: bytes) -> str:
    try:
        holder = json.loads(content)
        return f"process {holder['pid']} on {holder['host']}, started {holder['started']}"
    except (ValueError, KeyError, TypeError):
        return "a process that had not yet written its name"
