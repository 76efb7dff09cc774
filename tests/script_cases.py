"""Run stage scripts as a user does (``python script.py --flags``), many cases in one Python process.

Starting Python and importing torch takes seconds, so ``run_cases`` starts one subprocess that runs
every case in turn (``run_here`` runs them in the calling process): each script runs as ``__main__`` with its own ``sys.argv`` and working folder,
exactly as ``python script.py ...`` would run it, and what it prints and its exit status are
collected (an exception that escapes the script is printed with its traceback, status 1, as Python
does). ``python tests/script_cases.py cases.json results.json`` is that subprocess.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import runpy
import subprocess
import sys
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Case:
    """One command line: ``python <script> <args...>`` run in ``cwd`` (default: the repository root)."""

    script: str
    args: list[str]
    cwd: str | None = None


@dataclass
class Result:
    status: int
    stdout: str
    stderr: str
    case: Case = field(repr=False)

    def __str__(self) -> str:
        return f"python {self.case.script} {' '.join(self.case.args)} -> {self.status}\n{self.stderr}"


def case(script: str, *args: object, cwd: str | os.PathLike | None = None) -> Case:
    return Case(script, [str(a) for a in args], None if cwd is None else str(cwd))


def run_cases(cases: list[Case], folder: Path, timeout: float = 600) -> list[Result]:
    """Run ``cases`` in one fresh Python process; ``folder`` receives the case and result files."""
    cases_file, results_file = folder / "cases.json", folder / "results.json"
    cases_file.write_text(json.dumps([asdict(c) for c in cases]))
    env = os.environ | {"OMP_NUM_THREADS": "1", "COLUMNS": "200"}  # tiny models: one thread is fastest
    done = subprocess.run([sys.executable, __file__, str(cases_file), str(results_file)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"the case runner itself failed:\n{done.stderr}"
    return [Result(**values, case=c) for values, c in zip(json.loads(results_file.read_text()), cases)]


def run_here(cases: list[Case]) -> list[Result]:
    """Run ``cases`` in this Python process, one after the other, as the subprocess of ``run_cases`` runs
    them (for cases without side effects on the process, e.g. ``--help``: no interpreter start)."""
    previous = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "200"
    try:
        return [Result(**_run_one(asdict(c)), case=c) for c in cases]
    finally:
        if previous is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = previous


def assert_error(result: Result, status: int, *fragments: str, max_lines: int = 2) -> None:
    """The script stopped with ``status`` and an ``error: ...`` message of at most ``max_lines`` lines,
    no traceback, containing every fragment."""
    assert result.status == status, str(result)
    assert "Traceback" not in result.stderr, str(result)
    message = result.stderr[result.stderr.find("error: "):] if "error: " in result.stderr else ""
    assert message.startswith("error: "), str(result)
    assert len(message.strip().splitlines()) <= max_lines, str(result)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in the message of {result}"


def _run_one(values: dict) -> dict:
    script = ROOT / values["script"]
    out, err = io.StringIO(), io.StringIO()
    previous_argv, previous_cwd = sys.argv, os.getcwd()
    sys.argv = [str(script), *values["args"]]
    os.chdir(values["cwd"] or ROOT)
    status = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                runpy.run_path(str(script), run_name="__main__")
            except SystemExit as stop:  # what the interpreter does with it
                if isinstance(stop.code, int) or stop.code is None:
                    status = stop.code or 0
                else:
                    print(stop.code, file=sys.stderr)
                    status = 1
            except BaseException:  # noqa: BLE001  (an escaping exception: Python prints it and exits 1)
                traceback.print_exc()
                status = 1
    finally:
        sys.argv = previous_argv
        os.chdir(previous_cwd)
    return {"status": status, "stdout": out.getvalue(), "stderr": err.getvalue()}


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))  # as when a top-level script is started: its folder is on the path
    cases_path, results_path = map(Path, sys.argv[1:3])
    results = [_run_one(values) for values in json.loads(cases_path.read_text())]
    results_path.write_text(json.dumps(results))
