"""The documentation lists exactly the refusal codes the code can raise."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

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


def test_readme_names_only_paths_a_clone_has_or_says_a_run_writes_them() -> None:
    """A reader who follows a path in the README finds it in a fresh clone; a git-ignored one (made
    by a run) is named only in a paragraph that says it is written."""
    git = shutil.which("git")
    if git is None or not (REPO / ".git").exists():
        pytest.skip("needs a git checkout")
    tracked = subprocess.run([git, "-C", str(REPO), "ls-files"], capture_output=True, text=True, check=True).stdout.split()
    folders = {t.split("/", 1)[0] for t in tracked if "/" in t}
    wrong = []
    for paragraph in (REPO / "README.md").read_text().split("\n\n"):
        for path in re.findall(r"`([^`\s]+/[^`\s]*)`", paragraph):
            if path.split("/", 1)[0] not in folders or any(t == path or t.startswith(path.rstrip("/") + "/") for t in tracked):
                continue
            ignored = subprocess.run([git, "-C", str(REPO), "check-ignore", "-q", path]).returncode == 0
            if not (ignored and re.search(r"\bwrit", paragraph)):
                wrong.append(path)
    assert wrong == []
