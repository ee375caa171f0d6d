"""Outside programs some tests run (php, node, jq, openssl, chromium): skipped where missing, an error in CI.

A test that needs one carries ``@pytest.mark.tools("php")`` (a parametrized case:
``pytest.param("php", marks=pytest.mark.tools("php"))``). On a machine without
the program, the README's test command skips that test with the reason and
names the missing programs once at the end of the run. ``.ci/run`` installs
them all and sets :data:`REQUIRE_TOOLS_ENV`, so there a missing program fails
the test: nothing skips in CI.
"""

from __future__ import annotations

import os
import shutil

#: Set (to anything but empty) by .ci/run: a missing program is an error, not a skip.
REQUIRE_TOOLS_ENV = "SQJOBS_TESTS_REQUIRE_TOOLS"
#: Where Debian's chromium package puts the browser the dashboard test drives.
CHROMIUM = "/usr/bin/chromium"
#: Debian packages that bring each program (what the skip reason tells a person to install).
PACKAGES = {"php": "php-cli", "node": "nodejs", "jq": "jq", "openssl": "openssl", "chromium": "chromium"}


def chromium_path() -> str | None:
    """The chromium executable, or None."""
    return CHROMIUM if os.path.exists(CHROMIUM) else shutil.which("chromium")


def missing(tool: str) -> str:
    """Why ``tool`` cannot be used here ('' when it can)."""
    if tool == "chromium":
        if chromium_path() is None:
            return f"no chromium at {CHROMIUM} (apt-get install -y chromium)"
        try:
            import playwright  # noqa: F401
        except ImportError:
            return "the playwright package is missing (it is in the test extra)"
        return ""
    if shutil.which(tool) is None:
        return f"{tool} is not installed (apt-get install -y {PACKAGES.get(tool, tool)})"
    return ""


def required() -> bool:
    """True where a missing program must fail the tests (CI)."""
    return bool(os.environ.get(REQUIRE_TOOLS_ENV))
