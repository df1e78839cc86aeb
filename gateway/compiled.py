"""Which of the gateway's modules run compiled (mypyc), and the source when those are stale.

:mod:`gateway.native` builds them. Compiled code inlines other modules' ``Final`` constants and
calls its group's functions directly, so it is only as new as the oldest extension: when any
source under ``gateway/`` is newer (an edit, a pull), importing :mod:`gateway` runs the sources
of the compiled modules instead, with a warning, until they are compiled again.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Final

ROOT: Final = Path(__file__).resolve().parents[1]
#: Compiled, as paths from :data:`ROOT` (one mypyc group: they call each other directly).
MODULES: Final = (
    "gateway/agents/facts.py",
    "gateway/agents/filter.py",
    "gateway/agents/identity.py",
    "gateway/agents/profile.py",
    "gateway/agents/sessions.py",
    "gateway/datamart/commerce.py",
    "gateway/datamart/deltas.py",
    "gateway/datamart/identifiers.py",
    "gateway/datamart/lua.py",
    "gateway/datamart/referrers.py",
    "gateway/datamart/sessions.py",
    "gateway/datamart/store.py",
)
SUFFIX: Final = importlib.machinery.EXTENSION_SUFFIXES[0]
#: Where extensions are looked for (and run from source when stale).
PACKAGES: Final = ("gateway",)
#: The mypyc group: its runtime goes in ``gateway/_compiled__mypyc`` + :data:`SUFFIX`, inside the
#: package (found wherever ``gateway`` is; mypyc's default puts it at the top of the tree).
GROUP: Final = "gateway._compiled"


def module_name(source: str) -> str:
    return source.removesuffix(".py").replace("/", ".")


def extension(source: str, root: Path = ROOT) -> Path:
    """Where the compiled module of ``source`` goes (beside it)."""
    return root / source.replace(".py", SUFFIX)


def runtime(root: Path = ROOT) -> Path:
    """The group's shared library (the compiled code of every module; each extension is a
    shim importing it)."""
    return root / f"{GROUP.replace('.', '/')}__mypyc{SUFFIX}"


def compiled(root: Path = ROOT, modules: Sequence[str] = MODULES) -> bool:
    """Whether every module has its extension."""
    return all(extension(m, root).exists() for m in modules)


def extensions(root: Path = ROOT, packages: Sequence[str] = PACKAGES) -> list[Path]:
    """Every extension module under ``packages`` that has a source beside it, whatever built
    it (one left from a module compiled before counts as much as the others)."""
    found = (p for package in packages for p in (root / package).rglob(f"*{SUFFIX}"))
    return sorted(p for p in found if _source_of(p).exists())


def _source_of(extension: Path) -> Path:
    return extension.with_name(extension.name.removesuffix(SUFFIX) + ".py")


def stale(
    root: Path = ROOT, packages: Sequence[str] = PACKAGES, built: Sequence[Path] | None = None
) -> list[str]:
    """The sources under ``packages`` newer than the oldest extension there (``built``, found
    when not given; [] when there are none or they are all newer)."""
    built = extensions(root, packages) if built is None else built
    times = [p.stat().st_mtime for p in built]
    if not times:
        return []
    oldest = min(times)
    return sorted(
        str(p.relative_to(root))
        for package in packages
        for p in (root / package).rglob("*.py")
        if p.stat().st_mtime > oldest
    )


def in_use() -> list[str]:
    """The compiled modules imported as extensions so far."""
    names = [module_name(m) for m in MODULES]
    return [n for n in names if (mod := sys.modules.get(n)) and _is_extension(mod)]


def _is_extension(module: ModuleType) -> bool:
    return str(getattr(module, "__file__", "")).endswith(SUFFIX)


class _Source(importlib.abc.MetaPathFinder):
    """Finds the sources of modules that have (stale) extensions, ahead of those."""

    def __init__(self, root: Path, extensions: Sequence[Path]) -> None:
        self.sources = {
            module_name(str(_source_of(p).relative_to(root))): _source_of(p) for p in extensions
        }

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        source = self.sources.get(fullname)
        return importlib.util.spec_from_file_location(fullname, source) if source else None


def use_source_if_stale(root: Path = ROOT, packages: Sequence[str] = PACKAGES) -> bool:
    """When sources changed after the extensions were built, import the sources (and warn);
    whether it did."""
    built = extensions(root, packages)
    changed = stale(root, packages, built)
    if not changed:
        return False
    sys.meta_path.insert(0, _Source(root, built))
    shown = ", ".join(changed[:3]) + (f" and {len(changed) - 3} more" if len(changed) > 3 else "")
    warnings.warn(
        f"{shown} changed after the collector's modules were compiled: running their source "
        "(slower) until `make` (python -m gateway.native) compiles them again",
        RuntimeWarning,
        stacklevel=2,
    )
    return True
