"""The faults a user can cause or meet, and how a stage script reports them.

A foreseeable fault is one or two lines for the user (what, which file, what to do), never a
traceback:

- ``InputError``: bad input (a missing or malformed file, a bad flag value, a checkpoint of another
  model or of no known layout). The script prints ``error: <message>`` and exits with status 2.
- ``RunFailure``: the work itself failed (a diverging run, an image found unreadable mid-epoch).
  ``error: <message>``, exit status 1.
- Ctrl-C (``KeyboardInterrupt``; ``Interrupted`` when the work can say what it kept and how to go on):
  ``interrupted: <message>``, exit status 130, as the shell reports a process ended by SIGINT.

Anything else is a bug and keeps its traceback. A missing, unreadable or misplaced file
(``FileNotFoundError``, ``PermissionError``, ...) counts as bad input. A fault raised inside a
DataLoader worker process reaches the main process wrapped in the worker's traceback; the message
printed is the original one. Stage scripts end with ``run_script(main, Configuration)`` (the
dataclass, parsed from the command line) or ``run_script(main, partial(parse_training_config, Configuration))``.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

T = TypeVar("T")

BAD_INPUT_STATUS = 2
FAILURE_STATUS = 1
INTERRUPTED_STATUS = 130


class InputError(ValueError):
    """Bad input from the user: the message names the file or flag and says what to do."""


class RunFailure(RuntimeError):
    """The work failed for a reason the message explains (not a bug)."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C, with a message saying what was kept (e.g. the checkpoint to resume from)."""


def fail(message: str, status: int = BAD_INPUT_STATUS) -> NoReturn:
    """Print ``error: message`` on stderr and exit with ``status``."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(status)


FILE_ERRORS = (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError)


def run_script(main: Callable[[T], Any], parse_config: type[T] | Callable[[], T]) -> None:
    """Parse the configuration, run ``main`` on it, and turn the foreseeable faults into one-line errors.

    parse_config: a ``Configuration`` dataclass (parsed from the command line with ``reid.config.parse``)
    or a function that returns the configuration.
    """
    try:
        main(_parse(parse_config))
    except InputError as error:
        fail(message(error), BAD_INPUT_STATUS)
    except RunFailure as error:
        fail(message(error), FAILURE_STATUS)
    except FILE_ERRORS as error:
        fail(message(error), BAD_INPUT_STATUS)
    except KeyboardInterrupt as error:
        print(f"interrupted: {error}" if str(error) else "interrupted", file=sys.stderr)
        raise SystemExit(INTERRUPTED_STATUS) from None


def message(error: BaseException) -> str:
    """What the user reads: the error's text (``<file>: <reason>`` for an OS error), without the
    worker traceback that a DataLoader adds to an error raised in one of its processes."""
    if isinstance(error, OSError) and error.filename is not None and error.strerror:
        return f"{error.filename}: {error.strerror}"
    text = str(error)
    if text.startswith("Caught ") and "\nOriginal Traceback" in text:
        # torch re-raises "Caught X in DataLoader worker process k.\nOriginal Traceback ...\n<module>.X: <text>"
        last_frame = text.rfind("\n  File ")
        final_line = re.compile(rf"^(?:[\w.]+\.)?{re.escape(type(error).__name__)}: ", re.MULTILINE)
        found = final_line.search(text, last_frame + 1)
        if found:
            text = text[found.end():].strip()
    return text


def _parse(parse_config: type[T] | Callable[[], T]) -> T:
    if isinstance(parse_config, type):
        from reid.config import parse  # imported here: reid.config imports this module

        return parse(parse_config)
    return parse_config()
