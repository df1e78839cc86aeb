"""The file connector: CSV and XML drops in a watched folder.

A file belongs to the entity its name starts with (``products*.csv``, ``stock-0412.xml``,
``stores.csv``, ``customers*.csv``); names starting with ``.`` or ending in ``.tmp`` /
``.part`` are being written and left alone (write, then rename into the folder). Files are
taken oldest first. A file is processed once and whole: it is read, its rows are loaded, and
only then is it moved to ``done/``; a file that cannot be read (bad XML, a required column
missing, not UTF-8) goes to ``failed/`` with ``<name>.reason`` next to it, and its page says
so (no rows, ``failed``). A malformed row is skipped and counted, the rest of its file is
loaded.

CSV: a header row; the columns are named by ``[erp.files.<entity>]`` (defaults: the demo
catalogue's). XML: any root element, one child element per row, the fields as attributes or
as child elements named like the columns. ElementTree resolves no external entities and the
bundled expat (>= 2.4.1) refuses entity-expansion bombs.

With ``erp.files.seed_demo`` the demo catalogue (``gateway/data/demo``) is copied into the
folder the first time it is opened (a ``.demo-seeded`` marker remembers it), so a fresh
install has real products, stores and stock without an ERP.
"""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import io
import logging
import os
import time
import xml.etree.ElementTree as ET
from collections.abc import AsyncGenerator, Callable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import msgspec

from gateway.config import Config, ErpFilesConfig
from gateway.erp.base import (
    ENTITIES,
    ROW_TYPES,
    Entity,
    ErpUnavailable,
    Page,
    check_rows,
)

log = logging.getLogger(__name__)
R = TypeVar("R")

SEEDED_MARKER = ".demo-seeded"
#: The demo catalogue's files, in the order they are dropped.
DEMO_FILES = ("stores", "products", "stock")
SUFFIXES = (".csv", ".xml")


class FileError(Exception):
    """A drop file that cannot be read as a whole (it goes to ``failed/``)."""


def required_fields(entity: Entity) -> list[str]:
    return [f.name for f in msgspec.structs.fields(ROW_TYPES[entity]) if f.required]


def parse_file(
    entity: Entity, name: str, data: bytes, columns: Mapping[str, str]
) -> tuple[list[Any], int]:
    """Rows of one drop file (no I/O): typed rows and the number of malformed rows skipped.
    Raises :class:`FileError` for a file that cannot be read at all."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise FileError(f"not UTF-8: {exc}") from None
    raw = _xml_rows(text) if name.lower().endswith(".xml") else _csv_rows(text, entity, columns)
    mapped = ({f: values.get(c) for f, c in columns.items()} for values in raw)
    return check_rows(entity, mapped, f" ({name})")


def _csv_rows(text: str, entity: Entity, columns: Mapping[str, str]) -> list[dict[str, Any]]:
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        header = reader.fieldnames
        if not header:
            raise FileError("empty file (no header row)")
        missing = [columns[f] for f in required_fields(entity) if columns[f] not in header]
        if missing:
            raise FileError(f"missing column(s): {', '.join(missing)} (header: {header})")
        return list(reader)
    except csv.Error as exc:
        raise FileError(f"bad CSV at line {reader.line_num}: {exc}") from None


def _xml_rows(text: str) -> list[dict[str, Any]]:
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        raise FileError(f"bad XML: {exc}") from None
    rows = []
    for element in root:
        values: dict[str, Any] = dict(element.attrib)
        values.update({child.tag: (child.text or "") for child in element})
        rows.append(values)
    return rows


def _columns(files: ErpFilesConfig, entity: Entity) -> dict[str, str]:
    return dataclasses.asdict(getattr(files, entity))


class FileConnector:
    """:class:`gateway.erp.base.Connector` over a drop folder."""

    def __init__(self, folder: Path, files: ErpFilesConfig | None = None) -> None:
        self.folder = folder
        self.files = files or ErpFilesConfig()

    @classmethod
    def from_config(cls, config: Config) -> FileConnector:
        return cls(config.erp_drop_dir, config.erp.files)

    async def read(self, entity: Entity, cursor: str | None) -> AsyncGenerator[Page[Any], None]:
        """One page per waiting file (oldest first); a file that cannot be read goes to
        ``failed/`` and its page names it, with no rows."""
        paths = await self._io(self._pending, entity)
        columns = _columns(self.files, entity)
        for path in paths:
            yield await self._io(self._read_file, entity, path, columns)

    async def confirm(self, entity: Entity, page: Page[Any]) -> None:
        await self._io(self._move_all, page.token or [], "done", None)

    async def close(self) -> None:
        """Nothing held between reads."""

    async def _io(self, call: Callable[..., R], *args: Any) -> R:
        try:
            return await asyncio.to_thread(call, *args)
        except OSError as exc:
            raise ErpUnavailable(f"erp drop folder {self.folder}: {exc}") from exc

    # --- in a worker thread: file I/O and parsing never block the loop ----------------------

    def prepare(self) -> None:
        """Create the folder and its ``done/``, ``failed/``; seed the demo catalogue once."""
        for sub in ("done", "failed"):
            (self.folder / sub).mkdir(parents=True, exist_ok=True)
        marker = self.folder / SEEDED_MARKER
        if not self.files.seed_demo or marker.exists():
            return
        demo = resources.files("gateway").joinpath("data/demo")
        for name in DEMO_FILES:
            target = self.folder / f"{name}-demo.csv"
            partial = target.with_name(f".{target.name}.tmp")
            partial.write_bytes(demo.joinpath(f"{name}.csv").read_bytes())
            os.replace(partial, target)
        marker.write_text(f"demo catalogue dropped at {time.strftime('%Y-%m-%dT%H:%M:%S')}\n")
        log.info("erp: demo catalogue dropped in %s", self.folder)

    def pending(self, entity: Entity) -> list[Path]:
        """The entity's files waiting in the folder, oldest first."""
        found = []
        for path in self.folder.iterdir():
            name = path.name
            if (
                path.is_file()
                and not name.startswith(".")
                and name.lower().endswith(SUFFIXES)
                and _entity_of(name) == entity
            ):
                found.append((path.stat().st_mtime_ns, name, path))
        return [path for _, _, path in sorted(found)]

    def _pending(self, entity: Entity) -> list[Path]:
        self.prepare()
        return self.pending(entity)

    def _read_file(self, entity: Entity, path: Path, columns: Mapping[str, str]) -> Page[Any]:
        stat = path.stat()
        cursor = f"{path.name}:{stat.st_size}:{stat.st_mtime_ns}"
        try:
            rows, skipped = parse_file(entity, path.name, path.read_bytes(), columns)
        except FileError as exc:
            log.warning("erp %s: %s moved to failed/: %s", entity, path.name, exc)
            self._move(path, "failed", str(exc))
            return Page([], cursor, failed={path.name: str(exc)})
        return Page(rows, cursor, skipped, token=[path])

    def _move_all(self, paths: list[Path], where: str, reason: str | None) -> None:
        for path in paths:
            self._move(path, where, reason)

    def _move(self, path: Path, where: str, reason: str | None) -> None:
        target = self.folder / where / path.name
        if target.exists():  # the same name dropped again: keep both
            target = target.with_name(f"{path.stem}.{time.time_ns()}{path.suffix}")
        if reason is not None:
            target.with_name(target.name + ".reason").write_text(reason + "\n", "utf-8")
        os.replace(path, target)


def _entity_of(name: str) -> Entity | None:
    lowered = name.lower()
    return next((e for e in ENTITIES if lowered.startswith(e)), None)
