"""The package is typed for its users, down to the result: mypy on a user's file sees what ``.delay()`` returns.

Each user file below marks the lines mypy must report (``# E: <part of the message>``); every other line must
pass, ``assert_type`` lines included, so a type that drifts to ``Any`` (or away from it) is an error too.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import sqjobs

STRICT_USER_CODE = '''
from typing import Any, assert_type
from sqjobs import Job, JobHandle, job

@job(queue="emails")
def send_welcome(user_id: int, lang: str = "en") -> str:
    return lang

@job
def add(a: int, b: int) -> int:
    return a + b

class AdderJob(Job):
    def run(self, a: int, b: int) -> int:
        return a + b

class AnyJob(Job):
    def run(self, *args: Any, **kwargs: Any) -> Any:
        return None

handle = send_welcome.delay(42)
print(handle.id, handle.status)
handle.no_such_attribute  # E: "JobHandle[str]" has no attribute "no_such_attribute"
send_welcome.delay("not an int")  # E: Argument 1 to "delay" of "JobFunction" has incompatible type "str"

# the result: R, or None where a failed (or untracked, or unfinished) job gives None
assert_type(add.delay(1, 2), JobHandle[int])
assert_type(add.delay(1, 2).wait(), int | None)
assert_type(add.delay(1, 2).result, int | None)
x: int = add.delay(1, 2).wait(raise_error=True)
y: str = add.delay(1, 2).wait(raise_error=True)  # E: Incompatible types in assignment (expression has type "int"
z: int = add.delay(1, 2).wait()  # E: Incompatible types in assignment (expression has type "int | None"
assert_type(add.apply_async(args=(1, 2), queue="other"), JobHandle[int])
assert_type(add.delay_many([(1, 2)]), list[JobHandle[int]])
add.delay_on_commit(1, "b")  # E: Argument 2 to "delay_on_commit" of "JobFunction" has incompatible type "str"

# options kept for a typed .delay()
assert_type(add.options(queue="other", delay=30).delay(1, 2), JobHandle[int])
add.options(queue="other").delay("a", 2)  # E: Argument 1 to "delay" of "SendOptions" has incompatible type "str"
add.options(queu="other")  # E: Unexpected keyword argument "queu" for "options" of "JobFunction"

# class jobs: typed by their run
assert_type(AdderJob.delay(1, 2), JobHandle[int])
assert_type(AdderJob.delay(1, 2).wait(raise_error=True), int)
AdderJob.delay("a", 2)  # E: Argument 1 to "delay" of "Job" has incompatible type "str"
AdderJob.delay(1)  # E: Missing positional argument "b" in call to "delay" of "Job"
AdderJob.delay_on_commit(1, b="x")  # E: Argument "b" to "delay_on_commit" of "Job" has incompatible type "str"
assert_type(AdderJob.options(eta=None).delay(1, b=2), JobHandle[int])
AdderJob.options(queue="q").delay(1, b="x")  # E: Argument "b" to "delay" of "SendOptions" has incompatible type
assert_type(AnyJob.delay("anything", at=1), JobHandle[Any])
assert_type(AnyJob.delay().wait(raise_error=True), Any)
'''

# The seed talk's class job, no annotations: mypy in its default mode, as such a user runs it, finds nothing.
SEED_USER_CODE = '''
from sqjobs import Job

class AdderJob(Job):
    def run(self, *args, **kwargs):
        return sum(args)

handle = AdderJob.delay(1, 2, anything="x")
reveal_type(handle)
reveal_type(handle.wait())
AdderJob.apply_async(args=("a",), queue="other").wait(timeout_s=1)
'''


def mypy(tmp_path: Path, code: str, *options: str) -> list[str]:
    """Run mypy on ``code`` as a user's file; return its error and note lines."""
    assert (Path(sqjobs.__file__).parent / "py.typed").exists(), "the package ships py.typed"
    user = tmp_path / "user_code.py"
    user.write_text(code)
    # An editable install is found through an import hook mypy does not follow: point it at the source tree,
    # which is what the installed package is.
    env = dict(os.environ, MYPYPATH=str(Path(sqjobs.__file__).parent.parent))
    command = [sys.executable, "-m", "mypy", "--no-incremental", *options, "--follow-imports=silent", str(user)]
    result = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=300, env=env)
    return [line for line in result.stdout.splitlines() if ": error:" in line or ": note:" in line]


def test_mypy_on_user_code_types_arguments_and_results_of_function_and_class_jobs(tmp_path: Path) -> None:
    lines = mypy(tmp_path, STRICT_USER_CODE, "--strict")
    errors = {int(line.split(":")[1]): line for line in lines if ": error:" in line}
    expected = {number: mark.split("# E: ", 1)[1]
                for number, mark in enumerate(STRICT_USER_CODE.splitlines(), start=1) if "# E: " in mark}
    report = "\n".join(lines)
    assert set(errors) == set(expected), report
    for number, message in expected.items():
        assert message in errors[number], f"line {number}: expected {message!r}\n{report}"


def test_mypy_on_an_unannotated_class_job_finds_nothing_and_types_it_any(tmp_path: Path) -> None:
    lines = mypy(tmp_path, SEED_USER_CODE)
    assert not [line for line in lines if ": error:" in line], "\n".join(lines)
    revealed = [re.sub(r".*Revealed type is ", "", line) for line in lines if "Revealed type" in line]
    assert revealed == ['"sqjobs.status.handle.JobHandle[Any]"', '"Any | None"'], "\n".join(lines)
