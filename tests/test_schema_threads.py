"""libxml2 corrupts its type tables when two threads compile schemas at once (the adapters verify
in threads), after which every compile fails. Fresh processes race their first compiles here; the
race showed up in about one run in eight before schemas were compiled one at a time."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO

RACE = """
import threading
from axis import edxml, receipts, signing
barrier = threading.Barrier(6)
errors = []
def compile_(f):
    barrier.wait()
    try:
        f()
    except Exception as error:
        errors.append(repr(error))
threads = [threading.Thread(target=compile_, args=(f,)) for f in [signing._xmldsig_schema, edxml.schema, receipts.schema] * 2]
for t in threads: t.start()
for t in threads: t.join()
print(errors or "ok")
"""


def test_schemas_compiled_from_racing_threads_all_work() -> None:
    for _ in range(12):
        out = subprocess.run([sys.executable, "-c", RACE], cwd=REPO, capture_output=True, text=True, timeout=60)
        assert out.stdout.strip() == "ok", out.stdout + out.stderr
