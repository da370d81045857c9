"""A real axis on 127.0.0.1 for the adapter tests, and helpers to run adapters as processes."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from adapters import vxp
from axis.server.runtime import Running, start
from tests.conftest import REPO
from tests.server.conftest import Network, make_network


@pytest.fixture
async def network(tmp_path: Path) -> Network:
    (tmp_path / "axis").mkdir()
    return make_network(tmp_path / "axis")


@pytest.fixture
async def axis(network: Network) -> AsyncIterator[Running]:
    running = await start(network.settings, extensions=[vxp.mount])
    try:
        yield running
    finally:
        await running.stop()


def environment(**values: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), **values}


async def axis_command(*args: str, env: dict[str, str] | None = None, stdin: bytes | None = None, timeout: float = 120) -> tuple[int, str, str]:
    """Run ``axis ARGS`` as its own process; return (exit status, stdout, stderr)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "from cli import main; main()", *args,
        cwd=REPO, env=env or environment(), stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(stdin), timeout)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


class Adapter:
    """A long-running ``axis adapter ...`` process; its log goes to a file."""

    def __init__(self, process: asyncio.subprocess.Process, log: Path, first: dict[str, object]) -> None:
        self.process, self.log, self.first = process, log, first

    @classmethod
    async def spawn(cls, log: Path, *args: str, env: dict[str, str] | None = None) -> Adapter:
        with log.open("ab") as stderr:
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-c", "from cli import main; main()", *args,
                cwd=REPO, env=env or environment(), stdout=asyncio.subprocess.PIPE, stderr=stderr,
            )
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), 60)
        assert line.startswith(b"{"), f"the adapter did not start: {log.read_text()[-3000:]}"
        return cls(process, log, json.loads(line))

    async def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.process.returncode is None:
            self.process.send_signal(sig)
        code = await asyncio.wait_for(self.process.wait(), 60)
        self.process._transport.close()  # type: ignore[attr-defined]
        return code
