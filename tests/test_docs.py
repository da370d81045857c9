"""The documentation lists exactly the refusal codes the code can raise."""

from __future__ import annotations

import re

from tests.conftest import REPO

# A refusal code is the first argument of an error constructor or helper: ``Refused("xml.malformed", ...``.
CODE = re.compile(r"\(\s*\"((?:xml|edxml|identifier|signature|certificate|keystore|store|config|sender|recipient|message|status|request|auth|adapter)\.[a-z_]+)\"")


def test_refusal_codes_are_documented() -> None:
    sources = [*REPO.joinpath("axis").rglob("*.py"), *REPO.joinpath("adapters").rglob("*.py"), REPO / "cli.py"]
    raised = {m for path in sources for m in CODE.findall(path.read_text())} - {"edxml.xsd"}  # a file name
    documented = set(
        re.findall(
            r"`((?:xml|edxml|identifier|signature|certificate|keystore|store|config|sender|recipient|message|status|request|auth|adapter)\.[a-z_]+)`",
            (REPO / "docs" / "refusals.md").read_text(),
        )
    )
    assert raised - documented == set(), "raised but not documented"
    assert documented - raised == set(), "documented but never raised"
