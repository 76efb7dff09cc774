"""The faults a user can cause or meet, and how a stage script reports them.

A foreseeable fault is one or two lines for the user (what, which file, what to do), never a
traceback:

- ``InputError``: bad input (a missing or malformed file, a bad flag value, a checkpoint of another
  model or of no known layout). The script prints ``error: <message>`` and exits with status 2.
- ``RunFailure``: the work itself failed (a diverging run, an image found unreadable mid-epoch).
  ``error: <message>``, exit status 1.

Anything else is a bug and keeps its traceback. Stage scripts end with
``run_script(main, Configuration)``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

T = TypeVar("T")

BAD_INPUT_STATUS = 2
FAILURE_STATUS = 1


class InputError(ValueError):
    """Bad input from the user: the message names the file or flag and says what to do."""


class RunFailure(RuntimeError):
    """The work failed for a reason the message explains (not a bug)."""


def fail(message: str, status: int = BAD_INPUT_STATUS) -> NoReturn:
    """Print ``error: message`` on stderr and exit with ``status``."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(status)


def run_script(main: Callable[[T], Any], parse_config: Callable[[], T]) -> None:
    """Parse the configuration, run ``main`` on it, and turn the foreseeable faults into one-line errors."""
    try:
        main(parse_config())
    except InputError as error:
        fail(str(error), BAD_INPUT_STATUS)
    except RunFailure as error:
        fail(str(error), FAILURE_STATUS)
    except (FileNotFoundError, IsADirectoryError, PermissionError) as error:
        fail(_os_error_text(error), BAD_INPUT_STATUS)


def _os_error_text(error: OSError) -> str:
    if error.filename is not None and error.strerror:
        return f"{error.filename}: {error.strerror}"
    return str(error)
