"""The wheel is self-sufficient: built, installed in a fresh venv, and used away from the repository.

``axis verify`` validates every package against ``schemas/edxml.xsd``, which it loads through
``importlib.resources``; if the schema did not ship with the wheel, the installed command could
not verify anything. The whole path runs with the installed ``axis`` console script in a
directory that is not the repository, with no PYTHONPATH pointing back at it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO

SENDER = "000.00.00.G22"  # the sender of adapters.demo.example_document
# Top-level entries of the repository that a wheel build does not need (or that are generated).
NOT_SOURCES = {
    ".git",
    ".venv",
    "build",
    "dist",
    "keys",
    "data",
    "tests",
    "bench",
    "docs",
    ".pytest_cache",
    ".mypy_cache",
    ".ruff_cache",
}

BUILD_UNSIGNED = """
import sys
from datetime import UTC, datetime
from adapters.demo import example_document
from axis import edxml
with open(sys.argv[1], "wb") as handle:
    handle.write(edxml.build(example_document(datetime.now(UTC).replace(microsecond=0))))
"""

WHERE_FROM = """
import importlib.resources as r
import adapters, axis, cli, schemas
print(r.files("schemas").joinpath("edxml.xsd").is_file())
for module in (schemas, axis, adapters, cli):
    print(module.__file__)
"""


def _ignore(directory: str, names: list[str]) -> set[str]:
    top = Path(directory).resolve() == REPO
    return {n for n in names if (top and n in NOT_SOURCES) or n == "__pycache__" or n.endswith(".egg-info")}


def _clean_env() -> dict[str, str]:
    """The environment without anything that could make Python import the repository's modules."""
    dropped = {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP"}
    env = {k: v for k, v in os.environ.items() if k not in dropped}
    env["PYTHONNOUSERSITE"] = "1"
    return env


def _run(
    args: list[str | Path], cwd: Path, env: dict[str, str], timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def _ok(args: list[str | Path], cwd: Path, env: dict[str, str], timeout: float = 180) -> str:
    result = _run(args, cwd, env, timeout)
    assert result.returncode == 0, f"{args} exited {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result.stdout


def test_installed_wheel_signs_and_verifies_outside_the_repository(tmp_path: Path) -> None:
    env = _clean_env()

    # Build from a copy, so the build leaves no build/ or *.egg-info behind in the working tree.
    source = tmp_path / "source"
    shutil.copytree(REPO, source, ignore=_ignore)
    dist = tmp_path / "dist"
    _ok([sys.executable, "-m", "build", "--wheel", "--outdir", dist, source], tmp_path, env, timeout=300)
    wheels = list(dist.glob("axis-*.whl"))
    assert len(wheels) == 1, wheels

    venv = tmp_path / "venv"
    _ok([sys.executable, "-m", "venv", venv], tmp_path, env)
    python, axis = venv / "bin" / "python", venv / "bin" / "axis"
    _ok([python, "-m", "pip", "install", "--quiet", wheels[0]], tmp_path, env, timeout=300)
    assert axis.is_file()

    work = tmp_path / "work"
    work.mkdir()
    assert not (work / "schemas").exists() and REPO not in work.resolve().parents

    # The schema is a file inside the installed package, and every module comes from the venv.
    lines = _ok([python, "-c", WHERE_FROM], work, env).split()
    assert lines[0] == "True", lines
    site = venv.resolve()
    for file in lines[1:]:
        path = Path(file).resolve()
        assert site in path.parents, f"{file} was not imported from the venv {site}"
        assert REPO not in path.parents, f"{file} was imported from the repository"

    # The whole path with the installed console script, relative paths from a foreign cwd.
    _ok([axis, "keys", "init", "--dir", "K"], work, env)
    _ok([axis, "keys", "issue", SENDER, "--dir", "K", "--out", "K/agencies"], work, env)
    _ok([python, "-c", BUILD_UNSIGNED, "unsigned.edxml"], work, env)
    key, cert = f"K/agencies/{SENDER}.key", f"K/agencies/{SENDER}.pem"
    sign = [axis, "sign", "unsigned.edxml", "--key", key, "--cert", cert, "-o", "signed.edxml"]
    signed = _ok(sign, work, env)
    assert "signed signed.edxml" in signed

    verified = _ok([axis, "verify", "signed.edxml", "--trust", "K/trust"], work, env)
    assert "VALID" in verified and "INVALID" not in verified, verified
    assert f"from {SENDER}" in verified

    # The installed verify is not a rubber stamp: one changed byte in the signed content is refused.
    data = (work / "signed.edxml").read_bytes()
    assert data.count(b"<Subject>V/v ") == 1
    (work / "tampered.edxml").write_bytes(data.replace(b"<Subject>V/v ", b"<Subject>W/v "))
    refused = _run([axis, "verify", "tampered.edxml", "--trust", "K/trust"], work, env)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "INVALID  signature.digest_mismatch" in refused.stdout
