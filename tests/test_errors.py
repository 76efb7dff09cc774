"""reid.errors: one-line messages and exit statuses for foreseeable faults; bugs keep their traceback."""

from __future__ import annotations

import pytest

from reid.errors import InputError, Interrupted, RunFailure, run_script


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


@pytest.mark.parametrize(("error", "text"), [
    (KeyboardInterrupt(), "interrupted"),
    (Interrupted("epoch 1 is saved in model/a/last.pth; go on with --resume model/a/last.pth"),
     "interrupted: epoch 1 is saved in model/a/last.pth; go on with --resume model/a/last.pth"),
])
def test_ctrl_c_is_one_line_and_the_shells_status(capsys, error, text):
    with pytest.raises(SystemExit) as exit_info:
        run_script(_raise(error), lambda: None)
    assert exit_info.value.code == 130  # 128 + SIGINT, what a shell reports for a process ended by Ctrl-C
    assert capsys.readouterr().err.strip() == text


def test_a_bug_keeps_its_traceback():
    with pytest.raises(ZeroDivisionError):
        run_script(_raise(ZeroDivisionError("bug")), lambda: None)


def test_a_dataclass_is_parsed_from_the_command_line_and_file_errors_name_the_file(capsys, monkeypatch, tmp_path):
    from dataclasses import dataclass

    @dataclass
    class Configuration:
        path: str = "x"
        """A file to open."""

    def main(config: Configuration) -> None:
        open(tmp_path / config.path).close()

    for name, reason in (("absent.csv", "No such file or directory"), (".", "Is a directory")):
        monkeypatch.setattr("sys.argv", ["script.py", "--path", name])
        with pytest.raises(SystemExit) as exit_info:
            run_script(main, Configuration)
        assert exit_info.value.code == 2
        assert capsys.readouterr().err.strip() == f"error: {tmp_path / name}: {reason}"


def test_an_error_from_a_data_loader_worker_prints_its_own_message(capsys, tmp_path):
    from torch.utils.data import DataLoader, Dataset

    class Broken(Dataset):
        def __len__(self) -> int:
            return 2

        def __getitem__(self, index: int):
            raise RunFailure(f"cannot decode image {tmp_path / 'a.jpeg'}: truncated\nreplace the file")

    def main(_config: object) -> None:
        for _ in DataLoader(Broken(), num_workers=1):
            pass

    with pytest.raises(SystemExit) as exit_info:
        run_script(main, lambda: None)
    assert exit_info.value.code == 1
    assert capsys.readouterr().err == f"error: cannot decode image {tmp_path / 'a.jpeg'}: truncated\nreplace the file\n"
