"""The collector's hot modules compiled by mypyc: the same source, run as C extensions.

The collector is bound by the event loop's Python (bench/collector.py): every event goes
through the filter, the sessions rules, the identity graph's grouping, the profile deltas and
the fact rows. Those modules are fully annotated and checked by mypy already; mypyc turns them
into C extensions that Python imports in place of the source (bench/collector.py, eight
alternating rounds on both engines: at the median the loop's CPU for the same events -20 %
and events/s +20 %, README "Collector end to end"). The code stays the code: without a C
compiler nothing is compiled and the gateway runs its source, only slower.

``python -m gateway.native`` compiles them in place (``make`` does it before ``run`` and
``test``; ``make clean`` removes them). When a source under ``gateway/`` is newer than the
extensions, importing :mod:`gateway` runs the sources instead (:mod:`gateway.compiled`).

What mypyc asks of these modules: msgspec Structs live elsewhere (mypyc drops their class
keywords: :mod:`gateway.datamart.records`); agents' handler classes are compiled as ordinary
Python classes (``mypyc_attr(native_class=False)``: tests replace their methods on instances);
no generator expressions passed along lazily (mypyc makes them lists: write a generator
function); no async generators (:mod:`gateway.pacing` stays interpreted).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from gateway.compiled import (
    GROUP,
    MODULES,
    PACKAGES,
    ROOT,
    compiled,
    extension,
    extensions,
    runtime,
    stale,
)

#: What ``build_ext --inplace`` runs: mypyc's own CLI would name the group after a hash and
#: put its runtime at the top of the tree, where an installed ``gateway`` does not find it.
_SETUP = """
from mypyc.build import mypycify
from setuptools import setup

setup(
    name="touchpoint-compiled",
    ext_modules=mypycify({modules!r}, group_name={group!r}),
    script_args=["build_ext", "--inplace"],
)
"""


def clean(root: Path = ROOT, packages: Sequence[str] = PACKAGES) -> None:
    """Remove the extensions (the source runs again)."""
    for built in extensions(root, packages):  # those of modules compiled before too
        built.unlink()
    runtime(root).unlink(missing_ok=True)


def build(root: Path = ROOT) -> bool:
    """Compile :data:`MODULES` in place unless they are up to date; whether they are compiled
    now. A failure (no C compiler, no mypyc) leaves none behind and says why."""
    if compiled(root) and runtime(root).exists() and not stale(root):
        return True
    clean(root)
    started = time.time()
    command = [sys.executable, "-c", _SETUP.format(modules=list(MODULES), group=GROUP)]
    try:
        done = subprocess.run(command, cwd=root, capture_output=True, text=True, check=False)
    except OSError as exc:
        done = subprocess.CompletedProcess(command, 1, "", str(exc))
    if done.returncode == 0 and compiled(root) and runtime(root).exists():
        # built from the sources as they were when it started (an extension whose C did not
        # change is copied with its old time): a source edited since is newer
        for source in MODULES:
            os.utime(extension(source, root), (started, started))
        return True
    clean(root)
    why = (done.stderr or done.stdout).strip().splitlines()[-3:]
    print(
        "gateway.native: the collector's modules are not compiled; the gateway runs their "
        "source (slower). " + " / ".join(why),
        file=sys.stderr,
    )
    return False


def main(argv: Sequence[str] = ()) -> int:
    if list(argv) == ["clean"]:
        clean()
        return 0
    if argv:
        print("usage: python -m gateway.native [clean]", file=sys.stderr)
        return 2
    if build():
        print(f"gateway.native: {len(MODULES)} modules compiled")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
