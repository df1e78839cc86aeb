"""Jinja2 environments over the project's ``templates/`` folder (autoescaped HTML)."""

from __future__ import annotations

from pathlib import Path

import jinja2

#: The top-level ``templates/`` folder of the project (run from a checkout, as ``make run`` does).
TEMPLATES = Path(__file__).resolve().parents[2] / "templates"


def environment(folder: str) -> jinja2.Environment:
    """Templates under ``templates/<folder>``; HTML is autoescaped, undefined names fail."""
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES / folder),
        autoescape=jinja2.select_autoescape(["html"]),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
