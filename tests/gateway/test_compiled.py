"""The collector's modules compiled by mypyc, and their source when the extensions are stale."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway import compiled, native
from tests.conftest import need_service

MODULE = "tpfake/hot.py"


@pytest.fixture
def package(tmp_path: Path) -> Iterator[Path]:
    """A package ``tpfake`` with ``hot.py`` and, beside it, an 'extension' that cannot load."""
    (tmp_path / "tpfake").mkdir()
    (tmp_path / "tpfake" / "__init__.py").write_text("")
    (tmp_path / MODULE).write_text("WHERE = 'source'\n")
    compiled.extension(MODULE, tmp_path).write_bytes(b"not a shared object")
    sys.path.insert(0, str(tmp_path))
    finders = list(sys.meta_path)
    yield tmp_path
    sys.meta_path[:] = finders
    sys.path.remove(str(tmp_path))
    for name in ("tpfake", "tpfake.hot", "tpfake.old"):
        sys.modules.pop(name, None)


def _age(path: Path, seconds: float) -> None:
    when = path.stat().st_mtime - seconds
    os.utime(path, (when, when))


def test_an_extension_newer_than_every_source_is_used(package: Path) -> None:
    for source in (package / "tpfake").glob("*.py"):
        _age(source, 60)
    assert compiled.stale(package, ["tpfake"]) == []
    assert not compiled.use_source_if_stale(package, ["tpfake"])
    with pytest.raises(ImportError):  # the 'extension' was taken, and it does not load
        importlib.import_module("tpfake.hot")


def test_a_source_changed_after_the_build_runs_the_source_with_a_warning(package: Path) -> None:
    _age(compiled.extension(MODULE, package), 60)  # built a minute ago, then both edited
    assert compiled.stale(package, ["tpfake"]) == ["tpfake/__init__.py", "tpfake/hot.py"]
    with pytest.warns(RuntimeWarning, match=r"tpfake/__init__.py, tpfake/hot.py changed after"):
        assert compiled.use_source_if_stale(package, ["tpfake"])
    assert importlib.import_module("tpfake.hot").WHERE == "source"


def test_without_extensions_nothing_is_stale(package: Path) -> None:
    compiled.extension(MODULE, package).unlink()
    assert compiled.stale(package, ["tpfake"]) == []
    assert not compiled.compiled(package, [MODULE])
    assert importlib.import_module("tpfake.hot").WHERE == "source"


def test_clean_removes_every_extension_with_a_source_even_of_a_module_no_longer_compiled(
    package: Path,
) -> None:
    left = package / "tpfake" / "old.py"
    left.write_text("WHERE = 'old source'\n")
    compiled.extension("tpfake/old.py", package).write_bytes(b"built by an earlier list")
    assert len(compiled.extensions(package, ["tpfake"])) == 2
    native.clean(package, ["tpfake"])
    assert compiled.extensions(package, ["tpfake"]) == []
    assert importlib.import_module("tpfake.old").WHERE == "old source"
    assert importlib.import_module("tpfake.hot").WHERE == "source"


def test_the_collectors_modules_run_compiled(tmp_path: Path) -> None:
    """``make`` compiles them (gateway/native.py); without a C compiler the source runs: skip
    locally, fail in CI. Checked as ``touchpoint serve`` imports them: another process, started
    elsewhere than the checkout (which is then not on its path)."""
    if not compiled.compiled():
        need_service("compiled modules", "`make` could not compile them (a C compiler?)")
    assert compiled.stale() == []
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    script = "import gateway.agents.collector, gateway.compiled as c; print(*c.in_use())"
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [compiled.module_name(m) for m in compiled.MODULES]
