"""The administrator's commands against a real configuration, store and development PKI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from axis import keystore, pki
from axis.registry import token_hash
from axis.store import SQLiteStore
from cli import cli


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("AXIS_CONFIG", raising=False)
    result = CliRunner().invoke(cli, ["init", "--dir", "site", "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["admin_token"]
    return tmp_path / "site"


def axis(site: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--config", str(site / "axis.toml"), *args], catch_exceptions=False)


def test_init_writes_config_data_keys_and_refuses_twice(site: Path) -> None:
    assert (site / "axis.toml").exists() and (site / "data" / "axis.sqlite3").exists()
    assert (site / "keys" / "trust" / "ca.pem").exists()
    again = CliRunner().invoke(cli, ["init", "--dir", str(site)])
    assert again.exit_code == 1 and "config.exists" in again.output


def test_config_lookup_order(site: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert CliRunner().invoke(cli, ["agency", "list"]).exit_code == 1  # no ./axis.toml here
    monkeypatch.setenv("AXIS_CONFIG", str(site / "axis.toml"))
    assert CliRunner().invoke(cli, ["agency", "add", "000.00.00.G22", "--name", "VPCP"]).exit_code == 0
    monkeypatch.delenv("AXIS_CONFIG")
    monkeypatch.chdir(site)
    listed = CliRunner().invoke(cli, ["agency", "list", "--json"])
    assert [a["organ_id"] for a in json.loads(listed.output)] == ["000.00.00.G22"]


def test_agencies_in_both_forms_with_parents_suspend_and_resume(site: Path) -> None:
    assert axis(site, "agency", "add", "000.00.00.G22", "--name", "Văn phòng Chính phủ").exit_code == 0
    assert (
        axis(
            site, "agency", "add", "G22.01", "--name", "Cục Kiểm soát TTHC", "--parent", "000.00.00.G22"
        ).exit_code
        == 0
    )
    rows = json.loads(axis(site, "agency", "list", "--json").output)
    assert {(r["organ_id"], r["form"], r["parent"]) for r in rows} == {
        ("000.00.00.G22", "qcvn102", None),
        ("G22.01", "qd20", "000.00.00.G22"),
    }
    assert axis(site, "agency", "suspend", "G22.01").exit_code == 0
    assert json.loads(axis(site, "agency", "show", "G22.01", "--json").output)["status"] == "suspended"
    assert axis(site, "agency", "resume", "G22.01").exit_code == 0
    table = axis(site, "agency", "list").output
    assert "ORGAN_ID" in table and "Văn phòng Chính phủ" in table


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["agency", "add", "28.22.H17", "--name", "x"], "identifier.organ_id"),
        (
            ["agency", "add", "000.00.00.H41", "--name", "x", "--parent", "000.00.00.H99"],
            "store.unknown_agency",
        ),
        (["agency", "show", "000.00.00.H99"], "store.unknown_agency"),
        (["agency", "suspend", "000.00.00.H99"], "store.unknown_agency"),
        (["endpoint", "revoke", "nobody"], "store.unknown_endpoint"),
        (["endpoint", "add", "e", "--agency", "000.00.00.H99", "--pull"], "store.unknown_agency"),
        (
            ["endpoint", "add", "e", "--agency", "000.00.00.G22", "--push-url", "ftp://x"],
            "store.bad_endpoint",
        ),
        (["cert", "revoke", "ab" * 32], "store.unknown_certificate"),
    ],
)
def test_clear_errors_for_unknown_ids_and_malformed_input(site: Path, args: list[str], code: str) -> None:
    axis(site, "agency", "add", "000.00.00.G22", "--name", "VPCP")
    result = axis(site, *args)
    assert result.exit_code == 1 and code in result.output


def test_duplicates_are_refused(site: Path) -> None:
    assert axis(site, "agency", "add", "000.00.00.G22", "--name", "VPCP").exit_code == 0
    duplicate = axis(site, "agency", "add", "000.00.00.G22", "--name", "VPCP")
    assert duplicate.exit_code == 1 and "store.duplicate" in duplicate.output


def test_import_is_all_or_nothing(site: Path, tmp_path: Path) -> None:
    good = tmp_path / "good.csv"
    good.write_text(
        "organ_id,name,parent\n000.00.00.H41,UBND Tỉnh Nghệ An,\n000.00.15.H41,Sở TTTT,000.00.00.H41\n"
    )
    bad = tmp_path / "bad.csv"
    bad.write_text("organ_id,name,parent\n000.00.00.H14,UBND Tỉnh Cao Bằng,\n28.22.H17,broken,\n")
    refused = axis(site, "agency", "import", str(bad))
    assert refused.exit_code == 1 and "store.bad_import" in refused.output and "line 3" in refused.output
    assert json.loads(axis(site, "agency", "list", "--json").output) == []
    assert axis(site, "agency", "import", str(good)).exit_code == 0
    assert len(json.loads(axis(site, "agency", "list", "--json").output)) == 2


def test_endpoint_token_is_shown_once_and_stored_as_a_hash(site: Path) -> None:
    axis(site, "agency", "add", "000.00.00.H41", "--name", "UBND Tỉnh Nghệ An")
    created = axis(site, "endpoint", "add", "nghean", "--agency", "000.00.00.H41", "--pull", "--json")
    token = json.loads(created.stdout)["token"]
    assert len(token) >= 40
    listing = axis(site, "endpoint", "list", "--json").output
    assert token not in listing
    database = (site / "data" / "axis.sqlite3").read_bytes()
    assert token.encode() not in database
    store = SQLiteStore(site / "data")
    try:
        found = store.endpoint_by_token(token_hash(token))
        assert found is not None and found.agencies == ("000.00.00.H41",)
        assert axis(site, "endpoint", "revoke", "nghean").exit_code == 0
        assert store.endpoint_by_token(token_hash(token)) is None
    finally:
        store.close()
    both = axis(site, "endpoint", "add", "x", "--agency", "000.00.00.H41")
    assert both.exit_code == 2


def test_certificates_rollover_revoke_and_chain_check(site: Path, tmp_path: Path) -> None:
    axis(site, "agency", "add", "000.00.00.H41", "--name", "UBND Tỉnh Nghệ An")
    store = keystore.KeyStore(site / "keys")
    first = store.issue("000.00.00.H41", tmp_path / "one", pki_now())[1]
    second = store.issue("000.00.00.H41", tmp_path / "two", pki_now())[1]
    assert axis(site, "cert", "add", "000.00.00.H41", str(first)).exit_code == 0
    assert axis(site, "cert", "add", "000.00.00.H41", str(second)).exit_code == 0
    listed = json.loads(axis(site, "cert", "list", "--agency", "000.00.00.H41", "--json").output)
    assert len(listed) == 2 and {c["status"] for c in listed} == {"active"}
    assert axis(site, "cert", "revoke", listed[0]["fingerprint"]).exit_code == 0
    statuses = {
        c["fingerprint"]: c["status"] for c in json.loads(axis(site, "cert", "list", "--json").output)
    }
    assert statuses[listed[0]["fingerprint"]] == "revoked" and statuses[listed[1]["fingerprint"]] == "active"
    rogue = pki.issue(pki.create_ca("rogue", pki_now()), "x", pki_now(), organ_id="000.00.00.H41")
    rogue_pem = tmp_path / "rogue.pem"
    rogue_pem.write_bytes(pki.certificate_pem(rogue.certificate))
    refused = axis(site, "cert", "add", "000.00.00.H41", str(rogue_pem))
    assert refused.exit_code == 1 and "certificate.untrusted" in refused.output


def test_crl_import_accepts_only_trusted_issuers(site: Path, tmp_path: Path) -> None:
    ours = axis(site, "crl", "import", str(site / "keys" / "trust" / "ca.crl"))
    assert ours.exit_code == 0, ours.output
    rogue_ca = pki.create_ca("rogue", pki_now())
    rogue_crl = tmp_path / "rogue.crl"
    rogue_crl.write_bytes(pki.crl_pem(pki.crl(rogue_ca, [], pki_now(), 1)))
    refused = axis(site, "crl", "import", str(rogue_crl))
    assert refused.exit_code == 1 and "certificate.untrusted" in refused.output


def pki_now():  # type: ignore[no-untyped-def]
    from datetime import UTC, datetime

    return datetime.now(UTC)


def test_auditor_token_is_stored_hashed_with_its_role(site: Path) -> None:
    created = axis(site, "token", "add", "auditor", "Kiểm toán Nhà nước", "--json")
    secret = json.loads(created.stdout)["token"]
    store = SQLiteStore(site / "data")
    try:
        assert store.role_by_token(token_hash(secret)) == "auditor"
        assert store.role_by_token(token_hash(secret + "x")) is None
    finally:
        store.close()
    assert axis(site, "token", "add", "root", "x").exit_code == 2


def test_import_without_a_header_line_says_the_header_is_needed(site: Path, tmp_path: Path) -> None:
    headless = tmp_path / "headless.csv"
    headless.write_text("000.00.00.H41,UBND Tỉnh Nghệ An,\n")
    refused = axis(site, "agency", "import", str(headless))
    assert refused.exit_code == 1 and "store.bad_import" in refused.output
    assert "first line must be the header organ_id,name[,parent]" in refused.output
    assert json.loads(axis(site, "agency", "list", "--json").output) == []


def test_role_tokens_are_listed_without_secrets_and_revoked_by_id_or_name(site: Path) -> None:
    auditor = json.loads(axis(site, "token", "add", "auditor", "Kiểm toán Nhà nước", "--json").stdout)["token"]
    admins = [json.loads(axis(site, "token", "add", "admin", "Trần Văn A", "--json").stdout)["token"] for _ in range(2)]
    listed = axis(site, "token", "list", "--json")
    assert listed.exit_code == 0, listed.output
    rows = json.loads(listed.output)
    assert [(r["name"], r["role"], r["revoked_at"]) for r in rows] == [
        ("initial admin", "admin", None),
        ("Kiểm toán Nhà nước", "auditor", None),
        ("Trần Văn A", "admin", None),
        ("Trần Văn A", "admin", None),
    ]
    assert set(rows[0]) == {"id", "name", "role", "created_at", "revoked_at"}
    table = axis(site, "token", "list").output
    for secret in (auditor, *admins):
        assert secret not in listed.output + table and token_hash(secret) not in listed.output + table
    store = SQLiteStore(site / "data")
    try:
        assert store.role_by_token(token_hash(auditor)) == "auditor"  # cached now
        revoked = axis(site, "token", "revoke", str(rows[1]["id"]))
        assert revoked.exit_code == 0 and "Kiểm toán Nhà nước" in revoked.output
        assert store.role_by_token(token_hash(auditor)) is None  # another process's cache sees it at once
        assert axis(site, "token", "revoke", "Trần Văn A").exit_code == 0
        assert [store.role_by_token(token_hash(t)) for t in admins] == [None, None]
        assert axis(site, "token", "revoke", "Trần Văn A").exit_code == 0  # again: no change, no new event
        revocations = [json.loads(e.content) for e in store.events() if '"token.revoked"' in e.content]
        assert sorted(e["subject"] for e in revocations) == ["Kiểm toán Nhà nước", "Trần Văn A", "Trần Văn A"]
    finally:
        store.close()
    assert [r["revoked_at"] is None for r in json.loads(axis(site, "token", "list", "--json").output)] == [True, False, False, False]
    unknown = axis(site, "token", "revoke", "nobody")
    assert unknown.exit_code == 1 and "store.unknown_token" in unknown.output
