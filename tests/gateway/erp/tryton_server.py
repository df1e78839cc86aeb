"""A real Tryton 8.2 server for the connector's tests: installed once, populated once, restored
before every test.

* **Install** (cached): ``trytond~=8.2.0`` and the modules (product, stock, party, company,
  currency, sale; proteus for the populate script) go into a virtualenv of their own under
  ``TOUCHPOINT_TRYTON_CACHE`` (default ``~/.cache/touchpoint/tryton-8.2``), never into the
  project's. A file lock guards the build against a parallel session; a marker written last
  names what was installed, so a half-built (or outdated) one is built again.
* **Database** (cached): a SQLite database initialised with those modules and filled by
  ``tryton_populate.py`` is kept beside the venv as a template, named by a hash of the
  packages and of the populate script (a change to either builds a new one).
* **Server** (per session): the template is copied into the session's temporary folder and
  ``trytond`` serves it on a free loopback port.
* **Restore** (per test): the template is written back into the live database with SQLite's
  backup API (about 20 ms; it goes through SQLite's locks and WAL, so the running server
  sees the restored rows, and sessions opened since are gone). When the server is down (a
  test stopped it) the file is copied back, stale ``-wal``/``-shm`` removed, and it is
  started again. Copying the file over a live WAL database corrupts it, hence not that.

When Tryton cannot be installed (no package index) the tests are skipped with the reason, or
fail under ``TOUCHPOINT_REQUIRE_SERVICES=1``. ``python -m tests.gateway.erp.tryton_server``
builds the cache ahead (CI) and prints the timings.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
import venv
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

SERIES = "8.2"
PACKAGES = (
    f"trytond~={SERIES}.0",
    *(
        f"trytond-{m}~={SERIES}.0"
        for m in ("product", "stock", "party", "company", "currency", "sale")
    ),
    f"proteus~={SERIES}.0",
)
MODULES = ("product", "stock", "party", "company", "currency", "sale")
DATABASE = "erp"
USER = "admin"
#: Must differ from the login (Tryton refuses a password equal to it).
PASSWORD = "tryton-test-pw"
HERE = Path(__file__).resolve().parent
POPULATE = HERE / "tryton_populate.py"
RUN = HERE / "tryton_run.py"
#: Seconds pip may wait on the index before the install counts as impossible.
PIP_TIMEOUT = "15"


class TrytonUnavailable(Exception):
    """Tryton cannot be installed here (no package index): the tests are skipped."""


def cache_dir() -> Path:
    if configured := os.environ.get("TOUCHPOINT_TRYTON_CACHE"):
        return Path(configured).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "touchpoint" / f"tryton-{SERIES}"


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive lock on ``path`` (another session building the cache waits here)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def clean_env(**extra: str) -> dict[str, str]:
    """The environment for Tryton's processes: nothing of the project's virtualenv."""
    env = {
        k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")
    }
    env.update(extra)
    return env


def run(args: list[str | Path], what: str, **env: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, env=clean_env(**env)
    )
    if done.returncode != 0:
        output = "\n".join((done.stdout + done.stderr).strip().splitlines()[-25:])
        raise RuntimeError(f"{what} failed (exit {done.returncode}):\n{output}")
    return done


def ensure_venv(cache: Path, timings: dict[str, float]) -> Path:
    """The Tryton virtualenv, installed the first time (and whenever the marker is missing)."""
    home = cache / "venv"
    marker = cache / "venv.complete"
    spec = "\n".join((f"python {sys.version.split()[0]}", *PACKAGES))
    with locked(cache / "venv.lock"):
        if marker.exists() and marker.read_text() == spec and (home / "bin" / "trytond").exists():
            return home
        started = time.monotonic()
        marker.unlink(missing_ok=True)
        shutil.rmtree(home, ignore_errors=True)
        # Without pip of its own when the project's pip can install into it (seconds saved).
        own_pip = importlib.util.find_spec("pip") is None
        venv.create(home, with_pip=own_pip, symlinks=True)
        pip = [home / "bin" / "python"] if own_pip else [sys.executable]
        pip += ["-m", "pip"] + ([] if own_pip else ["--python", home / "bin" / "python"])
        args = [*pip, "install", "-q", "--retries", "1", "--timeout", PIP_TIMEOUT, *PACKAGES]
        done = subprocess.run(
            [str(a) for a in args], capture_output=True, text=True, env=clean_env()
        )
        if done.returncode != 0:
            lines = [
                line
                for line in (done.stdout + done.stderr).splitlines()
                if line.strip() and not line.startswith("WARNING: Location")
            ]
            errors = [line for line in lines if line.startswith("ERROR")] or lines
            tail = " | ".join(errors[-2:]) or f"exit {done.returncode}"
            raise TrytonUnavailable(f"pip install {' '.join(PACKAGES[:1])}... failed: {tail}")
        marker.write_text(spec)
        timings["install"] = time.monotonic() - started
        return home


def write_conf(folder: Path) -> Path:
    """A trytond config for the SQLite databases in ``folder`` (no ``[web] listen``: it would
    beat the ``TRYTOND_WEB__LISTEN`` each start sets)."""
    conf = folder / "trytond.conf"
    conf.write_text(f"[database]\nuri = sqlite://\npath = {folder}\n\n[session]\ntimeout = 3600\n")
    return conf


def template_key(home: Path) -> str:
    """What the database depends on: the versions installed, the modules, the populate script."""
    installed = sorted(p.name for p in home.glob("lib/python*/site-packages/*.dist-info"))
    digest = hashlib.sha256("\n".join((*installed, *MODULES)).encode())
    digest.update(POPULATE.read_bytes())
    return digest.hexdigest()[:12]


def ensure_template(
    cache: Path, home: Path, timings: dict[str, float]
) -> tuple[Path, dict[str, Any]]:
    """The populated database (and what populate printed), built the first time."""
    key = template_key(home)
    template, summary = cache / f"{DATABASE}-{key}.sqlite", cache / f"{DATABASE}-{key}.json"
    with locked(cache / "db.lock"):
        if template.exists() and summary.exists():
            return template, json.loads(summary.read_text())
        build = cache / f"build-{key}"
        shutil.rmtree(build, ignore_errors=True)
        build.mkdir(parents=True)
        conf = write_conf(build)
        (build / "adminpass").write_text(PASSWORD + "\n")
        (build / f"{DATABASE}.sqlite").touch()  # SQLite: the file must exist first
        started = time.monotonic()
        admin = [home / "bin" / "trytond-admin", "-c", conf, "-d", DATABASE, "--all", "-u"]
        admin += [*MODULES, "--activate-dependencies", "--email", "admin@example.com"]
        run(admin, "trytond-admin (database init)", TRYTONPASSFILE=str(build / "adminpass"))
        timings["init"] = time.monotonic() - started
        started = time.monotonic()
        done = run([home / "bin" / "python", POPULATE, conf, DATABASE], "tryton_populate.py")
        timings["populate"] = time.monotonic() - started
        values = json.loads(done.stdout.strip().splitlines()[-1])
        database = build / f"{DATABASE}.sqlite"
        with contextlib.closing(sqlite3.connect(database)) as connection:
            connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        partial = Path(f"{template}.part")
        shutil.copyfile(database, partial)
        partial.rename(template)
        partial = Path(f"{summary}.part")
        partial.write_text(json.dumps(values))
        partial.rename(summary)  # last: both exist only once complete
        shutil.rmtree(build, ignore_errors=True)
        for older in cache.glob(f"{DATABASE}-*.*"):  # built by an earlier populate script
            if older.stem != template.stem:
                older.unlink(missing_ok=True)
        return template, values


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class TrytonServer:
    """One ``trytond`` on a loopback port, serving a copy of the template, and the means to
    change its data the way a user of Tryton would."""

    home: Path
    template: Path
    folder: Path
    summary: dict[str, Any]
    port: int = field(default_factory=free_port)
    timings: dict[str, float] = field(default_factory=dict)
    database: str = DATABASE
    user: str = USER
    password: str = PASSWORD
    process: subprocess.Popen[bytes] | None = None
    runner: subprocess.Popen[str] | None = None

    def __post_init__(self) -> None:
        self.conf = write_conf(self.folder)
        self.db_file = self.folder / f"{self.database}.sqlite"
        self.log = self.folder / "trytond.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def rest_key(self) -> str:
        """A validated REST user-application key of the admin user."""
        key: str = self.summary["rest_key"]
        return key

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    # -- lifecycle -------------------------------------------------------------------------

    def start(self, within: float = 60.0) -> None:
        """Start ``trytond`` (on the same port as before) and wait until it answers."""
        if self.running:
            return
        started = time.monotonic()
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [str(self.home / "bin" / "trytond"), "-c", str(self.conf), "-d", self.database],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=clean_env(TRYTOND_WEB__LISTEN=f"127.0.0.1:{self.port}"),
            )
        deadline = time.monotonic() + within
        while not self._answers():
            if self.process.poll() is not None:
                raise RuntimeError(f"trytond exited ({self.process.returncode}):\n{self.tail()}")
            if time.monotonic() > deadline:
                self.stop(kill=True)
                raise RuntimeError(f"trytond did not answer within {within} s:\n{self.tail()}")
            time.sleep(0.05)
        self.timings["start"] = time.monotonic() - started

    def stop(self, kill: bool = False) -> None:
        """Stop the server (SIGTERM, SIGKILL after 10 s; ``kill``: SIGKILL at once, a crash)."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)

    def reset(self) -> None:
        """Back to the populated data: into the live database when the server runs, else by
        copying the file and starting it."""
        if self.running:
            try:
                with (
                    contextlib.closing(sqlite3.connect(self.template)) as source,
                    contextlib.closing(sqlite3.connect(self.db_file, timeout=10)) as target,
                ):
                    source.backup(target)
                return
            except sqlite3.Error:
                self.stop()
        for suffix in ("-wal", "-shm"):
            Path(f"{self.db_file}{suffix}").unlink(missing_ok=True)
        shutil.copyfile(self.template, self.db_file)
        self.start()

    def _answers(self) -> bool:
        body = json.dumps({"id": 0, "method": "common.server.version", "params": []}).encode()
        request = urllib.request.Request(
            f"{self.url}/rpc/", data=body, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=2) as response:
                return bool(response.status == 200)
        except (OSError, urllib.error.URLError):
            return False

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    # -- data ------------------------------------------------------------------------------

    def run(self, code: str, /, **params: Any) -> Any:
        """Run ``code`` inside the Tryton venv against the database, in one committed
        transaction as admin (``pool`` and ``params`` in scope); returns its ``result``.

        One ``tryton_run.py`` process serves every call of the session (Tryton's pool loads
        once); it works on the database file, with or without the server."""
        runner = self.runner
        if runner is None or runner.poll() is not None:
            with self.log.open("ab") as log:
                runner = self.runner = subprocess.Popen(
                    [str(self.home / "bin" / "python"), str(RUN), str(self.conf), self.database],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=log,
                    text=True,
                    env=clean_env(),
                )
        assert runner.stdin is not None and runner.stdout is not None
        try:
            runner.stdin.write(json.dumps({"code": code, "params": params}, default=str) + "\n")
            runner.stdin.flush()
            line = runner.stdout.readline()
        except BrokenPipeError:
            line = ""
        if not line:
            raise RuntimeError(f"tryton_run.py exited ({runner.wait(10)}):\n{self.tail()}")
        answer = json.loads(line)
        if "error" in answer:
            raise RuntimeError(f"tryton_run.py: the code failed:\n{answer['error']}")
        return answer["result"]

    def close(self) -> None:
        """Stop the server and the runner."""
        self.stop()
        runner, self.runner = self.runner, None
        if runner is not None:
            try:
                runner.communicate(timeout=10)  # it ends at the end of its input
            except subprocess.TimeoutExpired:
                runner.kill()
                runner.communicate(timeout=10)

    def stock_move(self, sku: str, quantity: float, warehouse: str = "WH") -> None:
        """A done stock move of ``sku``: > 0 received from the supplier into the warehouse's
        storage, < 0 shipped from it to a customer (assigned, then done)."""
        self.run(
            """
Move, Product, Location = (pool.get(m) for m in ("stock.move", "product.product", "stock.location"))
(company,) = pool.get("company.company").search([], limit=1)
(product,) = Product.search([("code", "=", params["sku"])])
(warehouse,) = Location.search([("code", "=", params["warehouse"])])
(supplier,) = Location.search([("code", "=", "SUP")])
(customer,) = Location.search([("code", "=", "CUS")])
storage, quantity = warehouse.storage_location, float(params["quantity"])
source, target = (supplier, storage) if quantity > 0 else (storage, customer)
(move,) = Move.create([{
    "product": product.id, "unit": product.default_uom.id, "quantity": abs(quantity),
    "from_location": source.id, "to_location": target.id, "unit_price": Decimal("1"),
    "currency": company.currency.id,
    "effective_date": dt.date.today(),
}])
if quantity < 0:
    Move.assign([move])
Move.do([move])
result = move.id
""",
            sku=sku,
            quantity=quantity,
            warehouse=warehouse,
        )

    def set_list_price(self, sku: str, price: str | Decimal) -> None:
        """The template's list price (the product's own ``write_date`` does not move)."""
        self.run(
            """
Template = pool.get("product.template")
(template,) = Template.search([("code", "=", params["sku"])])
Template.write([template], {"list_price": Decimal(params["price"])})
""",
            sku=sku,
            price=str(price),
        )

    def create_party(
        self, code: str, name: str, email: str | None = None, phone: str | None = None
    ) -> int:
        """A new party with the contact mechanisms given; its id."""
        mechanisms = [("email", email), ("phone", phone)]
        party_id: int = self.run(
            """
Party = pool.get("party.party")
values = {"code": params["code"], "name": params["name"]}
mechanisms = [{"type": t, "value": v} for t, v in params["mechanisms"] if v]
if mechanisms:
    values["contact_mechanisms"] = [("create", mechanisms)]
(party,) = Party.create([values])
result = party.id
""",
            code=code,
            name=name,
            mechanisms=mechanisms,
        )
        return party_id

    def set_email(self, code: str, email: str) -> None:
        """Change a party's email contact mechanism only (the party's ``write_date`` stays)."""
        self.run(
            """
Mechanism = pool.get("party.contact_mechanism")
(mechanism,) = Mechanism.search(
    [("party.code", "=", params["code"]), ("type", "=", "email")], limit=1)
Mechanism.write([mechanism], {"value": params["email"]})
""",
            code=code,
            email=email,
        )


def start_server(folder: Path) -> TrytonServer:
    """Install (cached), build the database (cached), start a server serving a copy of it."""
    timings: dict[str, float] = {}
    cache = cache_dir()
    home = ensure_venv(cache, timings)
    template, summary = ensure_template(cache, home, timings)
    folder.mkdir(parents=True, exist_ok=True)
    # The session's own copy of the template: another checkout may build a newer one.
    own = shutil.copyfile(template, folder / "template.sqlite")
    for attempt in range(3):
        server = TrytonServer(home, own, folder, summary, timings=timings)
        shutil.copyfile(own, server.db_file)
        try:
            server.start()
            return server
        except RuntimeError:
            if "Address already in use" not in server.tail() or attempt == 2:
                raise
            server.log.unlink()  # the free port was taken meanwhile: another one
    raise AssertionError("unreachable")


@pytest.fixture(scope="session")
def tryton_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TrytonServer]:
    """The session's Tryton server (skipped when Tryton cannot be installed)."""
    from tests.conftest import need_service

    try:
        server = start_server(tmp_path_factory.mktemp("tryton"))
    except TrytonUnavailable as exc:
        need_service("Tryton", str(exc))
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def tryton(tryton_server: TrytonServer) -> TrytonServer:
    """The Tryton server with the populated data as built (whatever earlier tests changed),
    running."""
    tryton_server.reset()
    return tryton_server


def main() -> None:
    """Build the cache (venv and database) ahead, start the server once, print the timings."""
    import tempfile

    started = time.monotonic()
    with tempfile.TemporaryDirectory() as folder:
        server = start_server(Path(folder))
        server.close()
    timings = {**server.timings, "total": time.monotonic() - started}
    print(json.dumps({k: round(v, 2) for k, v in timings.items()}))
    print(f"cache: {cache_dir()}")


if __name__ == "__main__":
    main()
