"""The ``.. sqjobs-settings::`` directive: every key of the config file, from ``sqjobs/settings.py``.

The settings are declared once, in ``sqjobs.settings.SETTINGS``; this page
and ``etc/sqjobs.conf.example`` are both made from that declaration, so the
reference cannot fall behind the code.
"""

from __future__ import annotations

from typing import Any

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.application import Sphinx
from sphinx.util.docutils import SphinxDirective

from sqjobs.settings import SCHEMA, SECTION_DOCS


class SettingsDirective(SphinxDirective):
    """Render each section with its keys, defaults and documentation."""

    def run(self) -> list[nodes.Node]:
        lines: list[str] = []
        for section, settings in SCHEMA.items():
            title = "[worker:NAME]" if section == "worker" else f"[{section}]"
            lines += [f".. rubric:: {title}", ""]
            if SECTION_DOCS.get(section):
                lines += [SECTION_DOCS[section], ""]
            for setting in settings.values():
                shown = setting.example_text or "(empty)"
                lines += [f"``{setting.key}`` = ``{shown}``", ""]
                if setting.doc:  # written 80 columns wide, aligned with spaces: kept as it is
                    lines += [".. code-block:: text", ""] + ["    " + line for line in setting.doc.splitlines()] + [""]
        container = nodes.container()
        self.state.nested_parse(StringList(lines, source="sqjobs/settings.py"), self.content_offset, container)
        return list(container.children)


def setup(app: Sphinx) -> dict[str, Any]:
    """Register the directive."""
    app.add_directive("sqjobs-settings", SettingsDirective)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
