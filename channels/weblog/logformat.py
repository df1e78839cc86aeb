"""Access-log lines → :class:`Hit` s → page events: the logic of the log import, without I/O.

A format is an Apache ``LogFormat`` string (``%h %l %u %t "%r" %>s %b``) compiled to one regex;
the known ones are in :data:`FORMATS`, most specific first, and :func:`detect` picks the one
that fits most of a file's first lines. A directive between double quotes matches a quoted
value with ``\\"`` escapes, elsewhere a run of non-blanks. ``%T`` also takes fractional
seconds, which is how nginx writes ``$request_time``. :class:`PageViews` turns hits into
``page`` events and says which to leave out (static assets, bots, errors).

Speed is the point (the import's target is >= 100,000 lines/s end to end): one compiled regex
per format, the fields picked out of ``match.groups()`` by one ``itemgetter`` call, timestamps
parsed by slicing (no ``strptime``) behind a cache as neighbouring lines share their second,
and per user agent, visitor and host the derived values computed once.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from operator import itemgetter
from typing import Any, Final, NamedTuple

from channels.weblog.useragents import UserAgentParser
from gateway.errors import TouchpointError
from gateway.events import Event, possible
from gateway.privacy import anonymize_ip

#: The known formats by name, in the order :func:`detect` tries them (most specific first).
FORMATS: Final = {
    "vhost_combined": '%v:%p %h %l %u %t "%r" %>s %O "%{Referer}i" "%{User-Agent}i"',
    "nginx_request_time": '%h %l %u %t "%r" %>s %b "%{Referer}i" "%{User-Agent}i" %T',
    "combined": '%h %l %u %t "%r" %>s %b "%{Referer}i" "%{User-Agent}i"',
    "vhost_common": '%v %h %l %u %t "%r" %>s %b',
    "common": '%h %l %u %t "%r" %>s %b',
}

#: Non-empty lines :func:`detect` looks at.
SAMPLE_LINES: Final = 50

#: Why :meth:`PageViews.skip_reason` leaves a hit out.
REASONS: Final = ("error", "no_request", "static", "bot")
#: Extensions of the paths counted as static assets, not pages.
STATIC_EXTENSIONS: Final = frozenset(
    (
        "css", "js", "mjs", "map", "json", "xml", "txt", "ico", "png", "jpg", "jpeg", "gif",
        "webp", "avif", "svg", "svgz", "bmp", "tif", "tiff", "woff", "woff2", "ttf", "otf", "eot",
        "mp4", "webm", "ogg", "mp3", "wav", "flac", "m4a", "avi", "mov", "swf",
    )
)  # fmt: skip
#: Entries of each PageViews cache (user agents, visitors) before it starts afresh.
_CACHE_SIZE: Final = 100_000

_MONTHS: Final = {
    "Jan": 1, "Feb": 2, "Mar": 3, "Apr": 4, "May": 5, "Jun": 6,
    "Jul": 7, "Aug": 8, "Sep": 9, "Oct": 10, "Nov": 11, "Dec": 12,
}  # fmt: skip
_TIME_SEPARATORS: Final = ("/", "/", ":", ":", ":", " ")
_TIME_CACHE_SIZE: Final = 4096
#: Characters of an anonymous id at most (as ingest takes them); a longer cookie is not one.
MAX_ID: Final = 255
#: Bytes sent and seconds taken that no real response has (an event could not even carry the
#: first past 2^63).
_BYTES_LIMIT: Final = 2**53
_SECONDS_LIMIT: Final = 86_400.0 * 365

_DIRECTIVE: Final = re.compile(r"%([<>]?)(?:!?\d{3}(?:,\d{3})*)?(?:\{([^}]*)\})?([a-zA-Z%])")
_QUOTED = r'[^"\\]*(?:\\.[^"\\]*)*'
_TOKEN = r"\S+"
#: directive letter → (field it fills, "" for none; its regex). Between double quotes every
#: directive but %t is a quoted string instead.
_DIRECTIVES: Final = {
    "h": ("host", _TOKEN),
    "a": ("host", _TOKEN),
    "l": ("", _TOKEN),
    "u": ("", _TOKEN),
    "t": ("time", r"[^\]]+"),
    "r": ("request", ""),  # see _REQUEST
    "s": ("status", r"\d{3}"),
    "b": ("bytes", r"\d+|-"),
    "B": ("bytes", r"\d+"),
    "O": ("bytes_sent", r"\d+|-"),
    "I": ("", r"\d+|-"),
    "D": ("request_time", r"\d+|-"),
    "T": ("request_time", r"\d+(?:\.\d*)?|-"),
    "v": ("vhost", _TOKEN),
    "V": ("vhost", _TOKEN),
    "p": ("port", r"\d+"),
    "m": ("method", _TOKEN),
    "U": ("path", r"[^\s?]+"),
    "q": ("query", r"\S*"),
    "H": ("protocol", _TOKEN),
    "i": ("header", _TOKEN),
    "C": ("cookie", _TOKEN),
    "n": ("", _TOKEN),
    "e": ("", _TOKEN),
    "o": ("", _TOKEN),
    "X": ("", r"[-+X]"),
    "k": ("", r"\d+"),
    "P": ("", r"\d+"),
    "L": ("", _TOKEN),
}
#: The order in which :meth:`LogFormat.parse` picks the fields out of a match.
_FIELDS: Final = (
    "host", "time", "method", "path", "query", "protocol", "status", "bytes",
    "bytes_sent", "request_time", "vhost", "port", "referrer", "user_agent", "cookie",
)  # fmt: skip
#: ``%r``, the request line, as method, path, query string (with its ``?``) and protocol. In
#: quotes, a line that is not ``METHOD TARGET PROTOCOL`` (``-`` for a connection closed before
#: a request came) still fits, with the four fields empty.
_REQUEST: Final = r"(\S+) ([^\s?]*)(\?\S*)? (\S+)"
_REQUEST_QUOTED: Final = rf'(?:(\S+) ([^\s?"]*)(\?[^\s"]*)? ([^\s"]+)|{_QUOTED})'
#: Seconds per unit of ``%D`` (microseconds) and ``%{UNIT}T``.
_UNITS: Final = {"D": 1e-6, "T": 1.0, "s": 1.0, "ms": 1e-3, "us": 1e-6}


class LogFormatError(TouchpointError):
    """A ``--log-format`` string that cannot be used, or no format fits a file."""


class Hit(NamedTuple):
    """One request as the log saw it; text fields are ``""`` when the log has ``-`` or lacks
    them, but for the user agent, which is ``-`` when the client sent none."""

    host: str
    #: When the request was received, UTC.
    time: datetime
    method: str
    path: str
    #: The query string with its ``?``, or ``""``.
    query: str
    protocol: str
    #: 0 when the format does not log it.
    status: int
    #: Response size in bytes (``%b``/``%B``, else ``%O``); 0 when unknown.
    bytes: int
    referrer: str
    user_agent: str
    vhost: str
    #: Server port, 0 when the format does not say.
    port: int
    #: Seconds the server took, when the format has ``%D`` or ``%T``.
    request_time: float | None
    #: Value of the visitor cookie the format was compiled for, when the line carries it.
    cookie: str | None


class LogFormat:
    """A compiled Apache ``LogFormat`` string; :meth:`parse` turns a line into a :class:`Hit`.

    ``cookie`` names the cookie whose value :attr:`Hit.cookie` gets, from ``%{NAME}C`` or from
    a whole ``%{Cookie}i`` header.
    """

    def __init__(self, spec: str, *, name: str = "custom", cookie: str = "") -> None:
        self.spec = spec
        self.name = name
        self.cookie_name = cookie
        compiled = _compile(spec, cookie)
        self.fields = frozenset(compiled.positions)
        if "time" not in self.fields:
            raise LogFormatError(f"log format {spec!r} has no %t: events need a time")
        if "path" not in self.fields:
            raise LogFormatError(f"log format {spec!r} has neither %r nor %U: events need a path")
        self.regex = re.compile(compiled.pattern)
        # The last group is always empty: it stands for every field the format lacks.
        missing = len(compiled.positions)
        self._pick = itemgetter(*[compiled.positions.get(f, missing) for f in _FIELDS])
        self._time_unit = compiled.time_unit
        self._cookie_header = compiled.cookie_header
        self._times: dict[str, datetime] = {}

    def __repr__(self) -> str:
        return f"LogFormat({self.spec!r}, name={self.name!r})"

    def parse(self, line: str) -> Hit | None:
        """The line's hit, or None when the line does not fit the format (or is truncated)."""
        match = self.regex.match(line)
        if match is None:
            return None
        (host, stamp, method, path, query, protocol, status, size, sent, took,
         vhost, port, referrer, agent, cookie) = self._pick(match.groups(""))  # fmt: skip
        when = self._times.get(stamp)
        if when is None:
            when = parse_time(stamp)
            if when is None:
                return None
            if len(self._times) >= _TIME_CACHE_SIZE:
                self._times.clear()
            self._times[stamp] = when
        size = size if size and size != "-" else sent
        if not (size.isascii() and port.isascii() and took.isascii()):  # ٣ is a digit to int()
            return None
        try:  # numbers no server writes (20 digits and more) make a line malformed
            sent_bytes = int(size) if size and size != "-" else 0
            port_number = int(port) if port else 0
            seconds = float(took) * self._time_unit if took and took != "-" else None
        except ValueError:  # over 4,300 digits
            return None
        if not (
            sent_bytes < _BYTES_LIMIT
            and port_number < 65_536
            and (seconds is None or seconds < _SECONDS_LIMIT)
        ):
            return None
        return Hit(
            "" if host == "-" else host,
            when,
            method,
            path,
            query,
            protocol,
            int(status) if status else 0,
            sent_bytes,
            "" if referrer == "-" else referrer,
            agent,
            "" if vhost == "-" else vhost,
            port_number,
            seconds,
            _cookie(cookie, self.cookie_name) if self._cookie_header else _value(cookie),
        )


class _Compiled(NamedTuple):
    pattern: str
    #: Field → its index in ``match.groups()``.
    positions: dict[str, int]
    #: Seconds per unit of the format's request time.
    time_unit: float
    #: Whether the visitor cookie is to be found in a whole ``Cookie:`` header.
    cookie_header: bool


def _compile(spec: str, cookie: str) -> _Compiled:
    """Translate ``spec`` to a regex with one group per field the importer uses."""
    parts: list[str] = []
    positions: dict[str, int] = {}
    time_unit, cookie_header = 1.0, False
    end = 0
    for found in _DIRECTIVE.finditer(spec):
        parts.append(re.escape(spec[end : found.start()]))
        end = found.end()
        _, arg, letter = found.groups()
        arg = arg or ""
        if letter == "%":
            parts.append("%")
            continue
        if letter not in _DIRECTIVES:
            raise LogFormatError(f"log format {spec!r}: %{letter} is not supported")
        field, regex = _DIRECTIVES[letter]
        quoted = spec[found.start() - 1 : found.start()] == '"' and spec[end : end + 1] == '"'
        if quoted and letter != "t":
            regex = _QUOTED
        if field == "header":
            header = arg.lower()
            field = {"referer": "referrer", "user-agent": "user_agent"}.get(header, "")
            if header == "cookie" and cookie and "cookie" not in positions:
                field, cookie_header = "cookie", True
        elif field == "cookie" and arg != cookie:
            field = ""
        elif field == "request_time":
            time_unit = _UNITS.get(arg or letter, 0.0)
            if not time_unit:
                raise LogFormatError(f"log format {spec!r}: unknown time unit {arg!r}")
        elif letter == "t" and arg:
            raise LogFormatError(f"log format {spec!r}: only the default %t time is supported")
        if letter == "r":
            names: tuple[str, ...] = ("method", "path", "query", "protocol")
            regex = _REQUEST_QUOTED if quoted else _REQUEST
        else:
            names, regex = (field,), f"({regex})"
        if all(names) and not positions.keys() & set(names):
            positions.update({name: len(positions) + i for i, name in enumerate(names)})
        else:  # a field not used, or given twice: no groups
            regex = re.sub(r"\((?!\?)", "(?:", regex)
        parts.append(rf"\[{regex}\]" if letter == "t" else regex)
    parts.append(re.escape(spec[end:]))
    pattern = "".join(parts) + r"[ \t]*\r?\n?\Z" + "()"
    return _Compiled(pattern, positions, time_unit, cookie_header)


def compile_format(spec: str, *, cookie: str = "") -> LogFormat:
    """A known format's name (``combined``) or an Apache LogFormat string → a LogFormat."""
    if spec in FORMATS:
        return LogFormat(FORMATS[spec], name=spec, cookie=cookie)
    return LogFormat(spec, cookie=cookie)


def detect(lines: Iterable[str], *, cookie: str = "") -> LogFormat | None:
    """The known format that fits most of the first non-empty ``lines`` (ties: the most
    specific); None when none fits any."""
    sample = [line for line in lines if line.strip()][:SAMPLE_LINES]
    best, best_count = None, 0
    for name, spec in FORMATS.items():
        candidate = LogFormat(spec, name=name, cookie=cookie)
        count = sum(candidate.parse(line) is not None for line in sample)
        if count > best_count:
            best, best_count = candidate, count
    return best


def parse_time(stamp: str) -> datetime | None:
    """``10/Oct/2000:13:55:36 -0700`` → an aware UTC datetime; None when it is not one."""
    if len(stamp) != 26 or stamp[21] not in "+-" or not stamp.isascii():  # ASCII digits only
        return None
    if (stamp[2], stamp[6], stamp[11], stamp[14], stamp[17], stamp[20]) != _TIME_SEPARATORS:
        return None
    try:
        local = datetime(
            int(stamp[7:11]),
            _MONTHS[stamp[3:6]],
            int(stamp[0:2]),
            int(stamp[12:14]),
            int(stamp[15:17]),
            int(stamp[18:20]),
            tzinfo=UTC,
        )
        hours, minutes = int(stamp[22:24]), int(stamp[24:26])
        if hours > 14 or minutes > 59:  # offsets run from -12:00 to +14:00
            return None
        offset = timedelta(hours=hours, minutes=minutes)
        return local - offset if stamp[21] == "+" else local + offset
    except (KeyError, ValueError, OverflowError):  # OverflowError: year 1 ahead of UTC...
        return None


def _value(text: str) -> str | None:
    return None if not text or text == "-" else text


def _cookie(header: str, name: str) -> str | None:
    """The value of cookie ``name`` in a ``Cookie:`` header."""
    if not header or name + "=" not in header:
        return None
    for part in header.split(";"):
        key, _, value = part.strip().partition("=")
        if key == name:
            return value.strip('"') or None
    return None


# --- hits → page events -----------------------------------------------------------------------


def visitor_id(key: bytes, ip: str, user_agent: str) -> str:
    """``v-`` + 24 hex of a hash of IP and user agent keyed by the visitor salt."""
    data = f"{ip}\n{user_agent}".encode()
    return "v-" + hashlib.blake2b(data, key=key, digest_size=12).hexdigest()


class PageViews:
    """Hits → page events of one site, static assets, bots and errors left out unless kept;
    holds the caches that keep the hot path fast."""

    def __init__(
        self,
        site: str,
        *,
        key: bytes,
        agents: UserAgentParser,
        anonymize: bool = True,
        keep_static: bool = False,
        keep_bots: bool = False,
        keep_errors: bool = False,
        received_at: datetime | None = None,
    ) -> None:
        self.site = site
        self.key = key
        self.parser = agents
        self.anonymize = anonymize
        self.keep_static, self.keep_bots, self.keep_errors = keep_static, keep_bots, keep_errors
        self.received_at = received_at or datetime.now(UTC)
        self._agents: dict[str, tuple[bool, dict[str, Any] | None]] = {}
        self._visitors: dict[str, str] = {}
        self._origins: dict[tuple[str, int], str] = {}

    def plausible(self, hit: Hit) -> bool:
        """Whether ``hit`` is within the times events can have (what ingest refuses, the
        filter would drop)."""
        return possible(hit.time, self.received_at)

    def skip_reason(self, hit: Hit) -> str | None:
        """Why ``hit`` is not imported (one of :data:`REASONS`), or None."""
        if hit.status >= 400 and not self.keep_errors:
            return "error"
        path = hit.path
        if not path:
            return "no_request"
        if not self.keep_static:
            dot = path.rfind(".")
            if dot > path.rfind("/") and path[dot + 1 :].lower() in STATIC_EXTENSIONS:
                return "static"
        if not self.keep_bots and self._agent(hit.user_agent)[0]:
            return "bot"
        return None

    def event(self, hit: Hit, event_id: str) -> Event:
        """The page event of ``hit`` in the Segment page spec's vocabulary."""
        is_bot, agent = self._agent(hit.user_agent)
        path, search, referrer = hit.path, hit.query, hit.referrer
        url = self._origin(hit.vhost, hit.port) + path + search if hit.vhost else path + search
        page = {"path": path, "url": url, "search": search}
        properties: dict[str, Any] = {
            "path": path,
            "url": url,
            "search": search,
            "method": hit.method,
            "status": hit.status,
            "bytes": hit.bytes,
        }
        if referrer:
            page["referrer"] = properties["referrer"] = referrer
        if hit.request_time is not None:
            properties["request_time"] = hit.request_time
        context: dict[str, Any] = {"page": page, "source": "access-log"}
        if agent is not None:
            context["userAgent"] = hit.user_agent
            context["userAgentData"] = agent
        ip = anonymize_ip(hit.host) if self.anonymize else hit.host
        if ip:
            context["ip"] = ip
        if is_bot:
            context["bot"] = True
        return Event(
            event_id=event_id,
            type="page",
            channel="web",
            site=self.site,
            timestamp=hit.time,
            received_at=self.received_at,
            anonymous_id=hit.cookie
            if hit.cookie and len(hit.cookie) <= MAX_ID
            else self._visitor(hit.host, hit.user_agent),
            properties=properties,
            context=context,
        )

    def _agent(self, ua: str) -> tuple[bool, dict[str, Any] | None]:
        """Whether ``ua`` is a bot, and its parse as context (one shared dict per agent; None
        when there is no user agent: none sent is a bot, none logged is not known)."""
        found = self._agents.get(ua)
        if found is None:
            parsed = self.parser.parse(ua)
            known = ua not in ("", "-")
            found = (parsed.is_bot and bool(ua), parsed.as_context() if known else None)
            if len(self._agents) >= _CACHE_SIZE:
                self._agents.clear()
            self._agents[ua] = found
        return found

    def _visitor(self, ip: str, ua: str) -> str:
        pair = f"{ip}\n{ua}"
        found = self._visitors.get(pair)
        if found is None:
            found = visitor_id(self.key, ip, ua)
            if len(self._visitors) >= _CACHE_SIZE:
                self._visitors.clear()
            self._visitors[pair] = found
        return found

    def _origin(self, vhost: str, port: int) -> str:
        found = self._origins.get((vhost, port))
        if found is None:
            scheme = "https" if port == 443 else "http"
            found = f"{scheme}://{vhost}" + (f":{port}" if port not in (0, 80, 443) else "")
            self._origins[(vhost, port)] = found
        return found
