"""Settings: defaults, an optional TOML file, ``VOLTHA_*`` environment variables and flags.

Precedence, lowest first: defaults, config file, environment, command-line flags. Every
value is validated in :meth:`Config.validate`, which raises :class:`ConfigError` naming the
setting, so a typo fails at start-up with a clear message instead of deep in a greenlet.

Secrets (the Consul ACL token) come only from the environment or from a file path; they are
never printed by :meth:`Config.public_dict`.
"""

from __future__ import annotations

import dataclasses
import os
import re
import socket
import tomllib
from collections.abc import Mapping
from dataclasses import InitVar, dataclass, field, fields
from pathlib import Path
from typing import Any

from .budget import FencingBudget
from .client_settings import ClientSettings
from .errors import ConfigError

ENV_PREFIX = "VOLTHA_"
LOG_FORMATS = ("auto", "console", "json")
LOG_LEVELS = ("debug", "info", "warning", "error")
_PREFIX_RE = re.compile(r"^[A-Za-z0-9_\-.]+(/[A-Za-z0-9_\-.]+)*$")
_ID_RE = re.compile(r"^[A-Za-z0-9_\-.]{1,128}$")
_SECRET_FIELDS = frozenset({"consul_token"})


def _default_instance_id() -> str:
    return socket.gethostname().split(".")[0] or "voltha"


def _default_consul() -> str:
    """``CONSUL_HTTP_ADDR`` is honoured as a default, the way Consul's own CLI reads it."""
    addr = os.environ.get("CONSUL_HTTP_ADDR", "")
    return re.sub(r"^https?://", "", addr) or "localhost:8500"


def _default_scheme() -> str:
    """``https`` when ``CONSUL_HTTP_ADDR`` says so (or ``CONSUL_HTTP_SSL=true``), as Consul's CLI."""
    addr = os.environ.get("CONSUL_HTTP_ADDR", "")
    if addr.startswith("https://") or os.environ.get("CONSUL_HTTP_SSL", "").lower() == "true":
        return "https"
    return "http"


@dataclass
class Config:
    """Every setting of a node. Field names map to ``VOLTHA_<NAME>`` and ``--<name>``.

    ``Config(session_ttl=15, ...)`` converts and validates like :meth:`load` (raw strings are
    read as the field's type; a bad value raises :class:`ConfigError` here, not later as a
    crashed greenlet). :meth:`load` and :meth:`merged` build unchecked intermediate copies
    (``_checked=False``) because only the final combination has to be valid.
    """

    instance_id: str = field(default_factory=_default_instance_id)
    consul: str = field(default_factory=_default_consul)
    consul_scheme: str = field(default_factory=_default_scheme)
    consul_token: str | None = None
    consul_token_file: str | None = None
    consul_ca_file: str | None = None
    consul_cert_file: str | None = None
    consul_key_file: str | None = None
    consul_verify: bool = True
    prefix: str = "service/voltha"
    rest_port: int = 8880
    rest_bind: str = "127.0.0.1"
    internal_host: str = "127.0.0.1"
    external_host: str = ""
    capacity: float = 1.0
    soak: float = 5.0
    max_soak_delay: float = 30.0
    worker_soak: float = 0.5
    session_ttl: int = 10
    check_ttl: float = 3.0
    lock_delay: float = 4.0
    stop_timeout: float = 4.0
    handover_timeout: float = 30.0
    drain_timeout: float = 30.0
    max_loop_stall: float = 20.0
    freeze_heap: bool = True
    watch_wait: float = 60.0
    seed_workload: int = 0
    log_format: str = "auto"
    log_level: str = "info"
    _checked: InitVar[bool] = True

    def __post_init__(self, _checked: bool) -> None:
        for spec in fields(self):
            setattr(self, spec.name, _convert(spec.name, spec.type, getattr(self, spec.name)))
        if _checked:
            self.validate()

    # Building

    @classmethod
    def load(
        cls,
        flags: Mapping[str, Any] | None = None,
        environ: Mapping[str, str] | None = None,
        config_file: str | None = None,
    ) -> Config:
        """Defaults < file < environment < flags, then validated.

        ``flags``: setting names (``session_ttl`` or ``session-ttl``) to raw strings or typed
        values, e.g. ``vars(args)`` of your own argparse parser; ``None`` values are skipped
        (flags not given), unknown names raise :class:`ConfigError`. ``environ`` defaults to
        ``os.environ`` (``VOLTHA_*``); ``config_file`` to ``VOLTHA_CONFIG`` (TOML).
        """
        environ = os.environ if environ is None else environ
        config = cls(_checked=False)
        path = config_file or environ.get(ENV_PREFIX + "CONFIG")
        if path:
            config = config.merged(read_config_file(path), source=f"file {path}")
        config = config.merged(from_environ(environ), source="environment")
        config = config.merged({k: v for k, v in (flags or {}).items() if v is not None}, source="flag")
        config.validate()
        return config

    def merged(self, values: Mapping[str, Any], *, source: str) -> Config:
        """A copy with ``values`` (raw strings or typed) converted and applied; not validated
        (call :meth:`validate` once every source is merged)."""
        known = {f.name: f for f in fields(self)}
        changes: dict[str, Any] = {}
        for name, raw in values.items():
            name = name.replace("-", "_")
            if name not in known:
                raise ConfigError(f"unknown setting (from {source})", setting=name)
            changes[name] = _convert(name, known[name].type, raw)
        return dataclasses.replace(self, **changes, _checked=False)

    # Validation

    def validate(self) -> None:
        """Raise :class:`ConfigError` for the first bad setting."""
        if not _ID_RE.match(self.instance_id):
            _bad("instance_id", self.instance_id, "use 1-128 of [A-Za-z0-9_-.]")
        self.consul_host_port()
        if self.consul_scheme not in ("http", "https"):
            _bad("consul_scheme", self.consul_scheme, "use http or https")
        if not _PREFIX_RE.match(self.prefix):
            _bad("prefix", self.prefix, "a '/'-separated path of [A-Za-z0-9_-.] without leading '/'")
        _port("rest_port", self.rest_port, allow_zero=True)
        if not 10 <= self.session_ttl <= 86400:
            _bad("session_ttl", self.session_ttl, "Consul accepts 10 to 86400 seconds")
        if not 0 <= self.lock_delay <= 60:
            _bad("lock_delay", self.lock_delay, "Consul accepts 0 to 60 seconds")
        if self.check_ttl and not 1 <= self.check_ttl < self.session_ttl * 2:
            _bad("check_ttl", self.check_ttl, "0 (off) or 1 s up to twice the session TTL")
        for name in ("soak", "max_soak_delay", "worker_soak", "stop_timeout", "handover_timeout",
                     "drain_timeout"):
            if getattr(self, name) < 0:
                _bad(name, getattr(self, name), "must not be negative")
        if self.max_soak_delay and self.max_soak_delay < self.soak:
            _bad("max_soak_delay", self.max_soak_delay, "must be 0 (no cap) or at least the soak")
        if not self.max_loop_stall >= 1:
            _bad("max_loop_stall", self.max_loop_stall, "at least 1 second")
        if not 1 <= self.watch_wait <= 600:
            _bad("watch_wait", self.watch_wait, "Consul accepts blocking waits of 1 to 600 seconds")
        if not self.capacity > 0:
            _bad("capacity", self.capacity, "must be a positive weight")
        if self.seed_workload < 0:
            _bad("seed_workload", self.seed_workload, "must not be negative")
        if self.log_format not in LOG_FORMATS:
            _bad("log_format", self.log_format, f"use one of {', '.join(LOG_FORMATS)}")
        if self.log_level not in LOG_LEVELS:
            _bad("log_level", self.log_level, f"use one of {', '.join(LOG_LEVELS)}")
        if bool(self.consul_cert_file) != bool(self.consul_key_file):
            _bad("consul_cert_file", self.consul_cert_file, "a client certificate needs its key file")
        budget = self.budget()
        if not budget.holds():
            raise ConfigError(
                f"work could outlive the lease: {budget.formula()}; lower stop_timeout or raise "
                "lock_delay/check_ttl", setting="stop_timeout/lock_delay/check_ttl/session_ttl",
            )

    # Derived

    def consul_host_port(self) -> tuple[str, int]:
        host, sep, port = self.consul.rpartition(":")
        if not sep or not host:
            _bad("consul", self.consul, "expected host:port, e.g. localhost:8500")
        if not re.match(r"^[A-Za-z0-9_\-.]+$|^\[[0-9a-fA-F:]+\]$", host):
            _bad("consul", self.consul, "the host part is not a host name or address")
        try:
            number = int(port)
        except ValueError:
            _bad("consul", self.consul, "the port is not a number")
        _port("consul", number)
        return host.strip("[]"), number

    def token(self) -> str | None:
        """The ACL token: ``consul_token`` (environment) or the content of ``consul_token_file``
        (trimmed; a missing or empty file raises :class:`ConfigError` naming it)."""
        if self.consul_token:
            return self.consul_token
        if self.consul_token_file:
            try:
                token = Path(self.consul_token_file).read_text().strip()
            except OSError as exc:
                raise ConfigError(str(exc), setting="consul_token_file") from exc
            if not token:
                # An empty file is a broken deployment (secret not mounted yet), not "no ACLs":
                # going on without a token would surface later as a puzzling permission denied.
                raise ConfigError(f"{self.consul_token_file} is empty", setting="consul_token_file")
            return token
        return None

    def client_settings(self) -> ClientSettings:
        host, port = self.consul_host_port()
        verify: bool | str = self.consul_verify
        if self.consul_verify and self.consul_ca_file:
            verify = self.consul_ca_file
        cert = (self.consul_cert_file, self.consul_key_file) if self.consul_cert_file else None
        return ClientSettings(
            host=host, port=port, scheme=self.consul_scheme, token=self.token(), verify=verify, cert=cert
        )

    def budget(self) -> FencingBudget:
        """The fencing budget these settings imply (see :mod:`voltha_gevent.budget`)."""
        return FencingBudget(session_ttl=self.session_ttl, check_ttl=self.check_ttl,
                             lock_delay=self.lock_delay, stop_timeout=self.stop_timeout)

    @property
    def advertised_host(self) -> str:
        return self.external_host or self.internal_host

    def public_dict(self) -> dict[str, Any]:
        """Every setting, with secrets masked: safe for logs and ``--print-config``."""
        out = dataclasses.asdict(self)
        for name in _SECRET_FIELDS:
            if out.get(name):
                out[name] = "***"
        return out


def from_environ(environ: Mapping[str, str]) -> dict[str, str]:
    """The ``VOLTHA_*`` variables that name a setting (``VOLTHA_CONFIG`` is the file path)."""
    names = {f.name for f in fields(Config)}
    out = {}
    for key, value in environ.items():
        if key.startswith(ENV_PREFIX):
            name = key[len(ENV_PREFIX) :].lower()
            if name in names:
                out[name] = value
    return out


def read_config_file(path: str) -> dict[str, Any]:
    """A TOML file of settings, flat or under a ``[voltha]`` table."""
    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
    except OSError as exc:
        raise ConfigError(str(exc), setting="config") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}", setting="config") from exc
    table = data.get("voltha", data)
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [voltha] must be a table", setting="config")
    if "consul_token" in table:
        raise ConfigError("put the token in VOLTHA_CONSUL_TOKEN or consul_token_file", setting="consul_token")
    return table


def _convert(name: str, kind: Any, raw: Any) -> Any:
    kind = str(kind)
    try:
        if raw is None or (isinstance(raw, str) and raw == "" and "None" in kind):
            return None
        if kind.startswith("bool"):
            return _to_bool(raw)
        if kind.startswith("int"):
            if isinstance(raw, float) and not raw.is_integer():
                raise ValueError(raw)
            return int(raw)
        if kind.startswith("float"):
            return float(raw)
        return str(raw)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"cannot read {raw!r} as {kind}", setting=name) from exc


def _to_bool(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError(raw)


def _bad(name: str, value: Any, hint: str) -> None:
    raise ConfigError(f"{value!r}: {hint}", setting=name)


def _port(name: str, value: int, *, allow_zero: bool = False) -> None:
    if not (0 if allow_zero else 1) <= value <= 65535:
        _bad(name, value, "a TCP port is 1-65535" + (" (0 picks a free one)" if allow_zero else ""))


__all__ = ["Config", "from_environ", "read_config_file"]
