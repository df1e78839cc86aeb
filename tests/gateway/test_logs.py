"""The CLI's logging: records go to the stderr of the moment, not the one configure() saw."""

from __future__ import annotations

import io
import logging
import sys

import pytest

from gateway import logs


def test_records_follow_the_current_stderr(monkeypatch: pytest.MonkeyPatch) -> None:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    first = io.StringIO()
    monkeypatch.setattr(sys, "stderr", first)
    try:
        logs.configure(fmt="json")
        first.close()  # e.g. a test's capture, gone
        second = io.StringIO()
        monkeypatch.setattr(sys, "stderr", second)
        logging.getLogger("touchpoint.test").warning("after the swap")
        assert '"after the swap"' in second.getvalue()
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
