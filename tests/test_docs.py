"""The documentation lists exactly the refusal codes the code can raise."""

from __future__ import annotations

import re

from tests.conftest import REPO

CODE = re.compile(r"\"((?:xml|edxml|identifier|signature|certificate|keystore)\.[a-z_]+)\"")


def test_refusal_codes_are_documented() -> None:
    sources = [*REPO.joinpath("axis").glob("*.py"), REPO / "cli.py"]
    raised = {m for path in sources for m in CODE.findall(path.read_text())} - {"edxml.xsd"}
    documented = set(
        re.findall(
            r"`((?:xml|edxml|identifier|signature|certificate|keystore)\.[a-z_]+)`",
            (REPO / "docs" / "refusals.md").read_text(),
        )
    )
    assert raised - documented == set(), "raised but not documented"
    assert documented - raised == set(), "documented but never raised"
