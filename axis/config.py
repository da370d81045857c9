"""Configuration: ``--config FILE``, else ``$AXIS_CONFIG``, else ``./axis.toml``.

Paths inside the file are relative to the file. ``axis init`` writes a complete file; every key
has a default, so an operator only writes what differs.
"""

from __future__ import annotations

import os
import re
import socket
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

from axis.errors import AxisError

T = TypeVar("T")
ENVIRONMENT = "AXIS_CONFIG"
DEFAULT_FILE = "axis.toml"


class ConfigError(AxisError):
    prefix = "config"


@dataclass(frozen=True)
class Server:
    """``[server]``: how ``axis serve`` listens and what it accepts (DESIGN.md's limits)."""

    host: str = "127.0.0.1"
    port: int = 8080
    tls_certificate: Path | None = None
    """PEM certificate chain of the server; with ``tls_key`` the API is served over HTTPS."""
    tls_key: Path | None = None
    client_ca: Path | None = None
    """PEM CA certificates; when set, clients must present a TLS certificate issued by one (mTLS)."""
    max_package: int = 64 * 1024 * 1024
    verify_timeout: float = 10.0
    verify_workers: int = 0
    """Verification processes; 0 = one per core."""
    verify_memory: int = 1024 * 1024 * 1024
    """Address space each verification process may use (bytes); a package needing more is refused
    (``request.too_complex``). 0 = not capped."""
    recipient_backlog: int = 100_000
    """Deliveries waiting for one agency before new packages to it are refused with 429."""
    min_free_disk: int = 256 * 1024 * 1024
    """Free bytes the data directory must keep after a package is written, else 507."""
    shutdown_grace: float = 30.0
    """Seconds SIGTERM waits for requests and push attempts in flight."""
    inbox_page: int = 100
    max_wait: float = 60.0
    """Longest long-poll an inbox request may ask for."""
    idle_timeout: float = 30.0
    """Seconds a connection may stay without a complete request: from its start, and from each
    answer (keep-alive). Slowly-sent headers count as no request."""
    body_timeout: float = 60.0
    """Seconds a request body may go without a byte arriving before it is refused (408)."""
    max_connections: int = 0
    """Connections held at once; 0 = the descriptor limit less a reserve of 256. Beyond it a new
    connection is answered 503 ``request.overloaded``."""
    node: str = field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    """This node's name, unique among the nodes sharing a store, written on the leases it takes.
    Name each node (``axis-1``, ...) so that one starting again after a crash takes its leases back
    at once; by default (host and process id) they return when their deadline passes."""


@dataclass(frozen=True)
class Vxp:
    """``[vxp]``: the facade that answers the operator's Java SDK (adapters/vxp, docs/vxp.md)."""

    prefix: str = "/vxp"
    """Where ``axis serve`` mounts the facade; "" turns it off."""
    window: float = 0.0
    """Seconds a signed timestamp may be off from the axis's clock; 0 = not checked. The SDK signs
    once per service object, so its timestamp is as old as the object: only clients that re-sign
    every call can pass a positive window."""
    allow_plain_http: bool = False
    """Answer VXP calls over plain HTTP on a listener that is not loopback (behind a TLS-terminating
    proxy). Without it such calls are refused: the SDK's HMAC is a per-object constant that anyone
    who sees one request can replay."""
    admin_window: float = 300.0
    """``registerAgency`` and ``deleteAgency`` (admin system ids) need a signed timestamp this
    close to the axis's clock and a signature the system has not used before: their body is not
    signed, so a seen request must not be replayable with another agency in it. 0 turns them off."""
    rate: float = 20.0
    """Calls per second each system id may make, on average; 0 = unlimited."""
    burst: int = 100
    """Calls a system id may make at once above ``rate``."""


@dataclass(frozen=True)
class Delivery:
    """``[delivery]``: the retry schedule and time-to-live of deliveries."""

    ttl: float = 7 * 24 * 3600.0
    backoff_initial: float = 1.0
    backoff_max: float = 15 * 60.0
    jitter: float = 0.2
    lease: float = 60.0
    """Seconds a leased delivery stays claimed; longer than ``push_timeout``, so a push in flight
    never outlives its lease."""
    push_concurrency: int = 4
    push_timeout: float = 20.0
    housekeeping: float = 5.0
    """Seconds between sweeps for stale leases and expired deliveries."""


@dataclass(frozen=True)
class Console:
    """``[console]``: the administrators' and auditors' pages in the browser (docs/console.md)."""

    prefix: str = "/console"
    """Where ``axis serve`` mounts the console; "" turns it off."""
    session_timeout: float = 1800.0
    """Seconds a console session lasts without a request; signing in again starts a new one."""


@dataclass(frozen=True)
class Audit:
    """``[audit]``: the signed checkpoints of the audit log (docs/auditors.md)."""

    checkpoint_interval: float = 60.0
    """Seconds between checkpoints, made when events were logged since the last one; 0 = only on
    demand (``POST /v1/audit/checkpoints``, ``axis audit checkpoint``)."""


@dataclass(frozen=True)
class StoreSettings:
    """``[store]``: where the axis keeps everything."""

    url: str = ""
    """``postgresql://...``: a PostgreSQL database several axis nodes share; "" = the store of one
    node in ``[axis] data`` (axis/store/: the store decides its engine)."""


@dataclass(frozen=True)
class Config:
    path: Path
    data: Path
    """Database and blob directory."""
    keys: Path
    """Key store (see keys/README.md); its ``trust`` directory holds CA certificates and CRLs."""
    server: Server = field(default_factory=Server)
    delivery: Delivery = field(default_factory=Delivery)
    vxp: Vxp = field(default_factory=Vxp)
    store: StoreSettings = field(default_factory=StoreSettings)
    audit: Audit = field(default_factory=Audit)
    console: Console = field(default_factory=Console)

    @property
    def trust(self) -> Path:
        return self.keys / "trust"


TEMPLATE = """\
# axis configuration. Paths are relative to this file. Every key has a default.
[axis]
data = "data"   # database and package blobs
keys = "keys"   # development CA, axis key, trust directory (CA certificates and CRLs)

[server]
host = "127.0.0.1"
port = 8080
# tls_certificate = "tls/server.pem"   # serve HTTPS
# tls_key = "tls/server.key"
# client_ca = "tls/clients-ca.pem"     # require client certificates (mTLS)
max_package = 67108864      # bytes (64 MiB)
verify_timeout = 10         # seconds per package
verify_workers = 0          # 0 = one per core
verify_memory = 1073741824  # bytes of address space per verification process (1 GiB)
recipient_backlog = 100000  # waiting deliveries per agency before 429
min_free_disk = 268435456   # bytes kept free in the data directory, else 507
shutdown_grace = 30         # seconds SIGTERM waits for work in flight
idle_timeout = 30           # seconds a connection may stay without a complete request
body_timeout = 60           # seconds a request body may stall
max_connections = 0         # 0 = the descriptor limit less 256

[delivery]
ttl = 604800                # seconds before an undelivered package is a dead letter (7 days)
backoff_initial = 1         # seconds, doubling after each failed push
backoff_max = 900           # cap of the backoff (15 minutes)
push_concurrency = 4        # simultaneous pushes per endpoint

[vxp]
prefix = "/vxp"             # the facade for the operator's VXP SDK ("" = off)
window = 0                  # seconds a signed timestamp may be off (0: the SDK signs once per object)
allow_plain_http = false    # VXP over plain HTTP on a non-loopback listener (behind a TLS proxy)
admin_window = 300          # registerAgency/deleteAgency: fresh, unused signatures only (0 = off)
rate = 20                   # calls per second per system id (0 = unlimited)
burst = 100
"""


def _section(cls: type[T], values: dict[str, Any], base: Path, path: Path, name: str) -> T:
    known = {f.name: f for f in fields(cls)}  # type: ignore[arg-type]
    unknown = set(values) - set(known)
    if unknown:
        raise ConfigError(
            "config.invalid", f"{path}: unknown key(s) in [{name}]: {', '.join(sorted(unknown))}"
        )
    converted: dict[str, Any] = {}
    for key, value in values.items():
        default = getattr(cls(), key)
        if "Path" in str(known[key].type):
            converted[key] = base / str(value)
        elif isinstance(default, bool) != isinstance(value, bool) or not isinstance(value, (type(default), int)):
            raise ConfigError("config.invalid", f"{path}: [{name}] {key} must be a {type(default).__name__}")
        else:
            converted[key] = type(default)(value)
    return cls(**converted)


def locate(explicit: Path | None) -> Path:
    if explicit is not None:
        return explicit
    if os.environ.get(ENVIRONMENT):
        return Path(os.environ[ENVIRONMENT])
    return Path(DEFAULT_FILE)


def load(explicit: Path | None = None) -> Config:
    path = locate(explicit)
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(
            "config.missing",
            f"no configuration at {path}: run `axis init`, or pass --config / set ${ENVIRONMENT}",
        ) from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError("config.invalid", f"{path} is not valid TOML: {error}") from None
    section = document.get("axis", {})
    base = path.resolve().parent
    return Config(
        path=path,
        data=base / section.get("data", "data"),
        keys=base / section.get("keys", "keys"),
        server=_section(Server, document.get("server", {}), base, path, "server"),
        delivery=_delivery(path, _section(Delivery, document.get("delivery", {}), base, path, "delivery")),
        vxp=_section(Vxp, document.get("vxp", {}), base, path, "vxp"),
        store=_section(StoreSettings, document.get("store", {}), base, path, "store"),
        audit=_section(Audit, document.get("audit", {}), base, path, "audit"),
        console=_console(path, _section(Console, document.get("console", {}), base, path, "console")),
    )


RESERVED_PATHS = ("/v1", "/healthz", "/readyz", "/metrics")


def _console(path: Path, console: Console) -> Console:
    """A prefix of whole path segments of its own: the console answers everything under it."""
    prefix = console.prefix.rstrip("/")
    if console.prefix and (
        not re.fullmatch(r"(/[A-Za-z0-9._-]+)+", prefix, re.ASCII)
        or any(prefix == r or prefix.startswith(r + "/") or r.startswith(prefix + "/") for r in RESERVED_PATHS)
    ):
        raise ConfigError(
            "config.invalid",
            f"{path}: [console] prefix {console.prefix!r} must be a path of its own, like /console (or \"\" for none)",
        )
    return console


def _delivery(path: Path, delivery: Delivery) -> Delivery:
    if delivery.lease <= delivery.push_timeout:
        raise ConfigError(
            "config.invalid", f"{path}: [delivery] lease must be longer than push_timeout, or a push outlives its lease"
        )
    return delivery
