"""The package is typed for its users: mypy on a user's file sees what ``.delay()`` returns."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import sqjobs

USER_CODE = '''
from sqjobs import job

@job(queue="emails")
def send_welcome(user_id: int, lang: str = "en") -> str:
    return lang

handle = send_welcome.delay(42)
print(handle.id, handle.status)
handle.no_such_attribute
send_welcome.delay("not an int")
'''


def test_mypy_on_user_code_catches_a_wrong_handle_attribute_and_wrong_arguments(tmp_path: Path) -> None:
    assert (Path(sqjobs.__file__).parent / "py.typed").exists(), "the package ships py.typed"
    user = tmp_path / "user_code.py"
    user.write_text(USER_CODE)
    # An editable install is found through an import hook mypy does not follow: point it at the source tree,
    # which is what the installed package is.
    env = dict(os.environ, MYPYPATH=str(Path(sqjobs.__file__).parent.parent))
    command = [sys.executable, "-m", "mypy", "--no-incremental", "--strict", "--follow-imports=silent", str(user)]
    result = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=300, env=env)
    lines = [line for line in result.stdout.splitlines() if ": error:" in line]
    assert any('"JobHandle" has no attribute "no_such_attribute"' in line for line in lines), result.stdout
    assert any('Argument 1 to "delay" of "JobFunction" has incompatible type "str"' in line for line in lines), \
        result.stdout
    assert len(lines) == 2, result.stdout
