"""The documentation site: it builds without a warning, its samples run, and it holds what the README held."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import textwrap
from html import unescape
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
BIN = Path(sys.executable).parent

#: The sections README.rst had before it became a landing page: each is a page's heading in the docs now.
FORMER_README_SECTIONS = (
    "Five-minute tour", "Jobs for later", "Periodic jobs", "Delivery", "Several jobs at once", "What survives what",
    "Amazon SQS", "The wire format, for other languages", "Signed messages", "Middleware", "Applications",
    "Configuration", "Commands", "Deployment", "Metrics and dashboard", "Benchmarks", "Job status", "Django",
)


def sphinx(builder: str, out: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-E", "-b", builder,
                           str(DOCS), str(out)], capture_output=True, text=True, timeout=300, cwd=ROOT)


@pytest.fixture(scope="module")
def html(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("html")
    built = sphinx("html", out)
    assert built.returncode == 0, built.stdout + built.stderr  # a warning is an error
    return out


def text_of(page: Path) -> str:
    """What a person reads on an HTML page: its text without tags."""
    return unescape(re.sub(r"<[^>]+>", "", page.read_text()))


def test_the_docs_build_without_a_warning_and_the_references_are_generated(html: Path) -> None:
    cli = text_of(html / "reference" / "cli.html")
    assert "sqjobs worker" in cli and "--max-jobs" in cli and "sqjobsd start" in cli  # sphinx-click
    config = text_of(html / "reference" / "config.html")
    assert "visibility_timeout_s" in config and "[worker:NAME]" in config  # from sqjobs/settings.py
    api = text_of(html / "reference" / "api.html")
    assert "apply_async" in api and "SQJobsError" in api  # autodoc


def headings(page: Path) -> list[str]:
    return [re.sub(r"<[^>]+>|¶", "", h).strip() for h in re.findall(r"<h[1-3][^>]*>(.*?)</h[1-3]>",
                                                                     page.read_text(), re.S)]


def test_every_former_readme_section_is_a_heading_one_click_from_the_index(html: Path) -> None:
    index = (html / "index.html").read_text()
    linked = {html / link for link in re.findall(r'href="([^"#]+\.html)', index) if not link.startswith("http")}
    found = {title for page in linked if page.exists() for title in headings(page)}
    found = {re.sub(r"\s+", " ", title) for title in found}
    missing = [title for title in FORMER_README_SECTIONS if not any(title in heading for heading in found)]
    assert not missing, f"not a heading of a page the index links to: {missing}"


def test_the_readme_is_a_landing_page() -> None:
    readme = (ROOT / "README.rst").read_text()
    assert len(readme.splitlines()) < 250
    for page in ("tutorial/tour", "howto/sqs", "reference/config", "explanation/guarantees"):
        assert f"docs/{page}.rst" in readme, f"the README's map names docs/{page}.rst"


def test_the_doctest_samples_run(tmp_path: Path) -> None:
    ran = sphinx("doctest", tmp_path)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    summary = (tmp_path / "output.txt").read_text()
    assert "0 failures in tests" in summary and re.search(r"[1-9]\d* tests", summary), summary


def test_every_python_block_is_valid_python() -> None:
    blocks = declared = 0
    for page in DOCS.rglob("*.rst"):
        declared += page.read_text().count(".. code-block:: python")
        for block in re.findall(r"^\.\. code-block:: python\n((?:[ \t]*:\w[^\n]*\n)*)\n((?:(?:[ \t]+[^\n]*)?\n)+)",
                                page.read_text(), re.M):
            compile(textwrap.dedent(block[1]), str(page), "exec")
            blocks += 1
    assert blocks == declared >= 3


def first_app_steps() -> list[tuple[str, str, str]]:
    """The tutorial's files (caption, text) and console commands with their expected output, in order."""
    text = (DOCS / "tutorial" / "first-app.rst").read_text()
    steps = []
    for kind, options, body in re.findall(
            r"^\.\. code-block:: (\w+)\n((?:   :\w+:[^\n]*\n)*)\n((?:(?:   [^\n]*)?\n)+)", text, re.M):
        lines = [line[3:] for line in body.rstrip("\n").splitlines()]
        caption = re.search(r":caption: (\S+)", options)
        if caption:
            steps.append(("file", caption.group(1), "\n".join(lines) + "\n"))
        elif kind == "console":
            command, output = "", []
            for line in lines + ["$ "]:
                if line.startswith("$ "):
                    if command:
                        steps.append(("run", command, "\n".join(output)))
                    command, output = line[2:], []
                else:
                    output.append(line)
    return steps


def test_the_first_app_tutorial_runs_as_written(tmp_path: Path) -> None:
    steps = first_app_steps()
    assert sum(kind == "run" for kind, _, _ in steps) >= 5
    env = {key: value for key, value in os.environ.items() if key != "SQJOBS_CONFIG"}
    env["PATH"] = os.pathsep.join([str(BIN), env.get("PATH", "")])
    folder = tmp_path
    for kind, what, expected in steps:
        if kind == "file":
            (folder / what).write_text(expected)
            continue
        if what.startswith("mkdir ") and "&& cd " in what:
            folder = tmp_path / shlex.split(what)[1]
            folder.mkdir()
            continue
        done = subprocess.run(what, shell=True, cwd=folder, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, f"{what}\n{done.stdout}{done.stderr}"
        assert done.stdout.strip() == expected.strip(), what
