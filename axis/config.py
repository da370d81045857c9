"""Configuration: ``--config FILE``, else ``$AXIS_CONFIG``, else ``./axis.toml``.

Paths inside the file are relative to the file. ``axis init`` writes a complete file; every key
has a default, so an operator only writes what differs.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

from axis.errors import AxisError

ENVIRONMENT = "AXIS_CONFIG"
DEFAULT_FILE = "axis.toml"


class ConfigError(AxisError):
    prefix = "config"


@dataclass(frozen=True)
class Config:
    path: Path
    data: Path
    """Database and blob directory."""
    keys: Path
    """Key store (see keys/README.md); its ``trust`` directory holds CA certificates and CRLs."""

    @property
    def trust(self) -> Path:
        return self.keys / "trust"


TEMPLATE = """\
# axis configuration. Paths are relative to this file.
[axis]
data = "data"   # database and package blobs
keys = "keys"   # development CA, axis key, trust directory (CA certificates and CRLs)
"""


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
    return Config(path=path, data=base / section.get("data", "data"), keys=base / section.get("keys", "keys"))
