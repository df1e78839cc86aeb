"""Typed configuration: ``config.toml`` → frozen dataclasses, validated at startup.

Loading order: the TOML file, then ``TOUCHPOINT_<SECTION>__<KEY>`` environment overrides
(``TOUCHPOINT_HTTP__PORT=8081``, ``TOUCHPOINT_SITES__DEMO__WRITE_KEY=...``), then validation.
Secrets are written ``{ env = "NAME" }`` and loaded into :class:`Secret`, whose repr is masked.
Any problem raises :class:`ConfigError` with one line naming the file and the key.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import msgspec

from gateway.config.erp import (
    CustomerColumns,
    ErpConfig,
    ErpFilesConfig,
    ErpSqlConfig,
    ErpTrytonConfig,
    ProductColumns,
    SaleColumns,
    StockColumns,
    StoreColumns,
)
from gateway.config.sections import (
    AdminConfig,
    AgentsConfig,
    BusConfig,
    CollectorConfig,
    DataConfig,
    HttpConfig,
    KioskConfig,
    LogConfig,
    PosConfig,
    ReadinessConfig,
    RedisConfig,
    SiteConfig,
    StoreConfig,
    TerminalConfig,
    WarehouseConfig,
    WebConfig,
)
from gateway.config.values import Name, Port, Positive, Seconds, Secret
from gateway.errors import ConfigError

ENV_PREFIX = "TOUCHPOINT_"
DEFAULT_PATH = "config.toml"

__all__ = [
    "AdminConfig",
    "AgentsConfig",
    "BusConfig",
    "CollectorConfig",
    "Config",
    "ConfigError",
    "CustomerColumns",
    "DataConfig",
    "ErpConfig",
    "ErpFilesConfig",
    "ErpSqlConfig",
    "ErpTrytonConfig",
    "HttpConfig",
    "KioskConfig",
    "LogConfig",
    "Name",
    "Port",
    "PosConfig",
    "Positive",
    "ProductColumns",
    "ReadinessConfig",
    "RedisConfig",
    "SaleColumns",
    "Seconds",
    "Secret",
    "SiteConfig",
    "StockColumns",
    "StoreColumns",
    "StoreConfig",
    "TerminalConfig",
    "WarehouseConfig",
    "WebConfig",
    "load",
    "loads",
]


@dataclass(frozen=True)
class Config:
    http: HttpConfig = field(default_factory=HttpConfig)
    data: DataConfig = field(default_factory=DataConfig)
    log: LogConfig = field(default_factory=LogConfig)
    redis: RedisConfig = field(default_factory=RedisConfig)
    bus: BusConfig = field(default_factory=BusConfig)
    agents: AgentsConfig = field(default_factory=AgentsConfig)
    collector: CollectorConfig = field(default_factory=CollectorConfig)
    readiness: ReadinessConfig = field(default_factory=ReadinessConfig)
    warehouse: WarehouseConfig = field(default_factory=WarehouseConfig)
    admin: AdminConfig = field(default_factory=AdminConfig)
    web: WebConfig = field(default_factory=WebConfig)
    sites: Mapping[Name, SiteConfig] = field(default_factory=dict)
    pos: PosConfig = field(default_factory=PosConfig)
    stores: Mapping[Name, StoreConfig] = field(default_factory=dict)
    erp: ErpConfig = field(default_factory=ErpConfig)
    #: The file this was loaded from (for messages); not a setting.
    source: str = field(default="<defaults>", compare=False)

    @property
    def data_dir(self) -> Path:
        """``data.dir``, relative paths taken from the config file's folder."""
        path = Path(self.data.dir)
        if not path.is_absolute() and self.source not in ("<defaults>", "<string>"):
            path = Path(self.source).resolve().parent / path
        return path

    @property
    def erp_drop_dir(self) -> Path:
        """``erp.files.dir``, relative paths taken like ``data.dir``; default under it."""
        if not self.erp.files.dir:
            return self.data_dir / "erp-drop"
        path = Path(self.erp.files.dir)
        if not path.is_absolute() and self.source not in ("<defaults>", "<string>"):
            path = Path(self.source).resolve().parent / path
        return path

    def site_for_key(self, write_key: str) -> str | None:
        for name, site in self.sites.items():
            if site.write_key == write_key:
                return name
        return None


def load(
    path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None
) -> Config:
    """Load, override from the environment and validate; raise ConfigError on any problem."""
    if path is not None and not str(path):  # --config "": not the default without a word
        raise ConfigError("--config", "", "is empty")
    path = Path(path or os.environ.get("TOUCHPOINT_CONFIG") or DEFAULT_PATH)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(path), "", f"cannot read: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(str(path), "", f"not UTF-8 (byte {exc.start}): TOML is") from None
    return loads(text, source=str(path), env=env)


def loads(text: str, source: str = "<string>", env: Mapping[str, str] | None = None) -> Config:
    env = os.environ if env is None else env
    try:
        data = tomllib.loads(text)
    except ValueError as exc:  # TOMLDecodeError, and an integer over 4,300 digits
        raise ConfigError(source, "", f"invalid TOML: {exc}") from None
    except RecursionError:
        raise ConfigError(source, "", "invalid TOML: nested too deeply") from None
    _check_keys(data, Config, "", source)
    _apply_env(data, env, source)
    _resolve_secrets(data, Config, "", source, env)
    try:
        config = msgspec.convert(data, Config, dec_hook=_dec_hook)
    except msgspec.ValidationError as exc:
        raise _config_error(source, exc) from None
    _check_stores(config, source)
    _check_erp(config, source)
    _check_redis(config, source)
    return dataclasses.replace(config, source=source)


def _check_redis(config: Config, source: str) -> None:
    """A Redis URL redis-py can connect with (else every command failed with its traceback)."""
    from redis.connection import parse_url

    if config.redis.url.is_set:
        url = config.redis.url.get()
        try:
            parse_url(url)  # type: ignore[no-untyped-call]
            if urlsplit(url).port == 0:  # parse_url drops it: the client would use 6379
                raise ValueError("port 0 is no port")
        except ValueError as exc:
            raise ConfigError(source, "redis.url", str(exc)) from None


def _check_erp(config: Config, source: str) -> None:
    """The chosen ERP connector has what it needs to connect."""
    erp = config.erp
    if erp.connector == "sql" and not erp.sql.dsn.is_set:
        raise ConfigError(source, "erp.sql.dsn", 'required with erp.connector = "sql"')
    if erp.connector == "tryton" and not (erp.tryton.api_key.is_set or erp.tryton.password.is_set):
        raise ConfigError(
            source,
            "erp.tryton.api_key",
            'erp.connector = "tryton" needs an api_key (REST) or a password (JSON-RPC)',
        )


def _check_stores(config: Config, source: str) -> None:
    """A store names a configured site; a terminal or kiosk id names one device in all stores."""
    owners: dict[str, str] = {}
    for name, store in config.stores.items():
        if store.site not in config.sites:
            known = ", ".join(sorted(config.sites)) or "none"
            raise ConfigError(source, f"stores.{name}.site", f"no site {store.site!r} ({known})")
        for terminal in store.terminals:
            if terminal in owners:
                raise ConfigError(
                    source,
                    f"stores.{name}.terminals.{terminal}",
                    f"terminal id already used by store {owners[terminal]!r} (ids are unique)",
                )
            owners[terminal] = name
        for kiosk in store.kiosks:
            if kiosk in owners:
                raise ConfigError(
                    source,
                    f"stores.{name}.kiosks.{kiosk}",
                    f"id already used by store {owners[kiosk]!r} (ids are unique)",
                )
            owners[kiosk] = name


# --- the walk over dataclass fields -------------------------------------------------------------


def _fields(cls: Any) -> dict[str, Any]:
    hints = typing.get_type_hints(cls, include_extras=True)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if f.name != "source"}


def _strip(hint: Any) -> Any:
    """``Annotated[int, Meta]`` → ``int``."""
    while typing.get_origin(hint) is Annotated:
        hint = typing.get_args(hint)[0]
    return hint


def _mapping_value(hint: Any) -> Any | None:
    hint = _strip(hint)
    if typing.get_origin(hint) in (Mapping, dict):
        return typing.get_args(hint)[1]
    return None


def _check_keys(data: dict[str, Any], cls: Any, prefix: str, source: str) -> None:
    known = _fields(cls)
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if key not in known:
            choices = ", ".join(sorted(known))
            raise ConfigError(source, dotted, f"unknown setting (expected one of: {choices})")
        hint = _strip(known[key])
        if dataclasses.is_dataclass(hint) and isinstance(value, dict):
            _check_keys(value, hint, dotted + ".", source)
        elif (inner := _mapping_value(hint)) is not None and isinstance(value, dict):
            inner = _strip(inner)
            if dataclasses.is_dataclass(inner):
                for name, item in value.items():
                    if isinstance(item, dict):
                        _check_keys(item, inner, f"{dotted}.{name}.", source)


def _validate(value: Any, hint: Any, key: str, source: str) -> None:
    """Validate one item of a table of tables, so an error names the item (``sites.demo``)."""
    try:
        msgspec.convert(value, hint, dec_hook=_dec_hook)
    except msgspec.ValidationError as exc:
        error = _config_error(source, exc)
        inner = error.key if error.key != "(top level)" else ""
        raise ConfigError(source, f"{key}.{inner}".rstrip("."), error.reason) from None


def _resolve_secrets(
    data: dict[str, Any], cls: Any, prefix: str, source: str, env: Mapping[str, str]
) -> None:
    for key, hint in _fields(cls).items():
        if key not in data:
            continue
        value, hint = data[key], _strip(hint)
        dotted = f"{prefix}{key}"
        if hint is Secret:
            data[key] = _secret(value, dotted, source, env)
        elif _is_secrets(hint):
            if not isinstance(value, list):
                raise ConfigError(source, dotted, 'expected a list of strings or { env = "NAME" }')
            data[key] = [_secret(v, f"{dotted}[{i}]", source, env) for i, v in enumerate(value)]
        elif dataclasses.is_dataclass(hint) and isinstance(value, dict):
            _resolve_secrets(value, hint, dotted + ".", source, env)
        elif (inner := _mapping_value(hint)) is not None and isinstance(value, dict):
            inner = _strip(inner)
            if dataclasses.is_dataclass(inner):
                for name, item in value.items():
                    if isinstance(item, dict):
                        _resolve_secrets(item, inner, f"{dotted}.{name}.", source, env)
                    _validate(item, inner, f"{dotted}.{name}", source)


def _is_secrets(hint: Any) -> bool:
    """``tuple[Secret, ...]``: several secrets, e.g. a till's current and next key."""
    return typing.get_origin(hint) is tuple and typing.get_args(hint)[:1] == (Secret,)


def _secret(value: Any, key: str, source: str, env: Mapping[str, str]) -> Secret:
    if isinstance(value, Secret | str):
        return value if isinstance(value, Secret) else Secret(value)
    if isinstance(value, dict) and set(value) == {"env"} and isinstance(value["env"], str):
        return Secret(env.get(value["env"]), env=value["env"])
    raise ConfigError(source, key, 'expected a string or { env = "NAME" }')


def _dec_hook(type_: type, obj: Any) -> Any:
    if type_ is Secret and isinstance(obj, Secret):
        return obj
    raise NotImplementedError


def _apply_env(data: dict[str, Any], env: Mapping[str, str], source: str) -> None:
    """Apply ``TOUCHPOINT_A__B__C=value``: each ``__`` descends one table."""
    for name, raw in sorted(env.items()):
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        parts = name[len(ENV_PREFIX) :].lower().split("__")
        where = f"{source} (environment {name})"
        hint = _hint_for(parts, where)
        node = data
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(where, ".".join(parts), "is not a table")
            node = child
        node[parts[-1]] = _coerce(raw, hint, ".".join(parts), where)


def _hint_for(parts: list[str], where: str) -> Any:
    hint: Any = Config
    for i, part in enumerate(parts):
        dotted = ".".join(parts[: i + 1])
        base = _strip(hint)
        if dataclasses.is_dataclass(base):
            fields = _fields(base)
            if part not in fields:
                raise ConfigError(where, dotted, "unknown setting")
            hint = fields[part]
        elif (inner := _mapping_value(base)) is not None:
            hint = inner
        else:
            raise ConfigError(where, dotted, "unknown setting")
    return hint


def _coerce(raw: str, hint: Any, key: str, where: str) -> Any:
    """An environment string → the setting's type (validated again with the rest)."""
    base = _strip(hint)
    if base is Secret:
        return Secret(raw)
    origin = typing.get_origin(base)
    if origin in (tuple, list):
        return [item.strip() for item in raw.split(",") if item.strip()]
    if origin in (typing.Union, types.UnionType) or dataclasses.is_dataclass(base):
        raise ConfigError(where, key, "cannot be set from the environment")
    if base is str or origin is Literal:
        return raw
    try:
        return msgspec.convert(raw, hint, strict=False)
    except msgspec.ValidationError as exc:
        raise ConfigError(where, key, str(exc).split(" - at ")[0].replace("`", "")) from None


def _config_error(source: str, exc: msgspec.ValidationError) -> ConfigError:
    message = str(exc)
    reason, _, at = message.partition(" - at ")
    key = at.strip("`").removeprefix("$").removeprefix(".")
    if reason.startswith("Object missing required field"):
        missing = reason.split("`")[1]
        key, reason = (f"{key}.{missing}" if key else missing), "is required"
    return ConfigError(source, key or "(top level)", reason.replace("`", ""))
