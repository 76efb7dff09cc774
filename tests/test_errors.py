"""reid.errors: one-line messages and exit statuses for foreseeable faults; bugs keep their traceback."""

from __future__ import annotations

import pytest

from reid.errors import InputError, RunFailure, run_script


def _raise(error: BaseException):
    def main(_config: object) -> None:
        raise error
    return main


@pytest.mark.parametrize(("error", "status", "text"), [
    (InputError("data/x.csv, line 3: not a number"), 2, "error: data/x.csv, line 3: not a number"),
    (RunFailure("the loss is nan at epoch 2, step 5"), 1, "error: the loss is nan at epoch 2, step 5"),
    (FileNotFoundError(2, "No such file or directory", "model/a.pth"), 2, "error: model/a.pth: No such file or directory"),
])
def test_foreseeable_faults_are_one_line(capsys, error, status, text):
    with pytest.raises(SystemExit) as exit_info:
        run_script(_raise(error), lambda: None)
    assert exit_info.value.code == status
    assert capsys.readouterr().err.strip() == text


def test_a_bug_keeps_its_traceback():
    with pytest.raises(ZeroDivisionError):
        run_script(_raise(ZeroDivisionError("bug")), lambda: None)
