"""The ``axis`` command: a thin shell over ``axis.*`` and ``adapters.*``.

Every refusal is printed with its stable code. Exit status: 0 success, 1 refused or invalid,
2 usage error (click's own convention). Secrets (passphrases) come from the environment or a
hidden prompt and are never echoed.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import click

from axis import bundles, checkpoints, config, edxml, keystore, pki, report, signing, witness
from axis.errors import AxisError, KeyStoreError
from axis.registry import Registry
from axis.store import Agency, open_store
from axis.verification import VerifiedPackage, sign_package, verify_package

F = TypeVar("F", bound=Callable[..., Any])
CA_PASSPHRASE_ENV = "AXIS_CA_PASSPHRASE"  # noqa: S105 - the name of a variable, not a secret
KEY_PASSPHRASE_ENV = "AXIS_KEY_PASSPHRASE"  # noqa: S105


def _now() -> datetime:
    return datetime.now(UTC)


class AxisGroup(click.Group):
    """Every refusal that escapes a command becomes one line with its stable code, exit status 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except AxisError as error:
            raise click.ClickException(f"{error.code}: {error.message}") from None


def _passphrase(env: str, what: str, *, new: bool = False) -> bytes:
    """From ``$env``, else a hidden prompt (asked twice for a new passphrase). Never echoed."""
    value = os.environ.get(env) or click.prompt(
        f"Passphrase for {what}", hide_input=True, confirmation_prompt=new
    )
    return str(value).encode()


def _with_passphrase(action: Callable[[bytes | None], Any], env: str, what: str) -> Any:
    """Run ``action`` without a passphrase; if the key turns out to be encrypted, ask and retry."""
    try:
        return action(None)
    except KeyStoreError as error:
        if error.code != "keystore.passphrase":
            raise
    return action(_passphrase(env, what))


def keys_dir_option(function: F) -> F:
    return click.option(
        "--dir",
        "directory",
        type=click.Path(file_okay=False, path_type=Path),
        default=Path("keys"),
        show_default=True,
        help="Key store directory.",
    )(function)


@click.group(cls=AxisGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="axis")
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help=f"Configuration file [default: ${config.ENVIRONMENT}, else ./axis.toml].",
)
@click.pass_context
def cli(ctx: click.Context, config_path: Path | None) -> None:
    """axis: the document interchange axis for signed edXML packages."""
    ctx.obj = config_path


def _registry(ctx: click.Context) -> Registry:
    """Open the configured store for this command; it is closed when the command ends."""
    settings = config.load(ctx.find_root().obj)
    store = open_store(settings)
    ctx.call_on_close(store.close)
    return Registry(store, lambda: keystore.read_trust(settings.trust))


def _show(rows: list[dict[str, Any]], columns: list[str], as_json: bool) -> None:
    """Rows as JSON, or as a plain aligned table."""
    if as_json:
        click.echo(json.dumps(rows, ensure_ascii=False, indent=2))
        return
    if not rows:
        click.echo("(none)")
        return
    cells = [
        [
            (
                ""
                if row.get(c) is None
                else ", ".join(row[c])
                if isinstance(row[c], (list, tuple))
                else str(row[c])
            )
            for c in columns
        ]
        for row in rows
    ]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    click.echo("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
    for row in cells:
        click.echo("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


def json_option(function: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")(function)


@cli.command("init")
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("."),
    show_default=True,
    help="Where to create axis.toml, data/ and keys/.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the admin token as JSON.")
def init_command(directory: Path, as_json: bool) -> None:
    """Create axis.toml, the data directory, a development PKI and the first admin token (shown once)."""
    path = directory / config.DEFAULT_FILE
    if path.exists():
        raise config.ConfigError("config.exists", f"{path} already exists; refusing to overwrite it")
    directory.mkdir(parents=True, exist_ok=True)
    settings_path = path
    keystore.write_public(settings_path, config.TEMPLATE.encode())
    settings = config.load(settings_path)
    keystore.KeyStore(settings.keys).init(_now())
    store = open_store(settings)
    try:
        token = Registry(store, lambda: keystore.read_trust(settings.trust)).add_role_token(
            "admin", "initial admin"
        )
    finally:
        store.close()
    if as_json:
        click.echo(json.dumps({"config": str(settings_path), "admin_token": token}))
        return
    click.echo(f"configuration  {settings_path}")
    click.echo(f"data           {settings.data}")
    click.echo(f"keys           {settings.keys}")
    click.echo(f"admin token    {token}")
    click.echo("The admin token is shown once; store it in a secret manager.", err=True)


# ---------------------------------------------------------------- agencies


@cli.group()
def agency() -> None:
    """Registered agencies (cơ quan, đơn vị)."""


def _agency_row(a: Agency) -> dict[str, Any]:
    return {
        "organ_id": a.organ_id,
        "form": a.form,
        "name": a.name,
        "parent": a.parent,
        "status": a.status,
        "created_at": a.created_at,
    }


@agency.command("add")
@click.argument("organ_id")
@click.option("--name", required=True, help='Official name, e.g. "UBND Tỉnh Nghệ An".')
@click.option("--parent", help="OrganId of the parent agency (must be registered).")
@click.pass_context
def agency_add(ctx: click.Context, organ_id: str, name: str, parent: str | None) -> None:
    """Register an agency under ORGAN_ID (either identifier form, kept as given)."""
    added = _registry(ctx).add_agency(organ_id, name, parent)
    click.echo(f"registered {added.organ_id} ({added.form}) {added.name}")


@agency.command("list")
@json_option
@click.pass_context
def agency_list(ctx: click.Context, as_json: bool) -> None:
    """List registered agencies."""
    rows = [_agency_row(a) for a in _registry(ctx).store.agencies()]
    _show(rows, ["organ_id", "name", "parent", "status"], as_json)


@agency.command("show")
@click.argument("organ_id")
@json_option
@click.pass_context
def agency_show(ctx: click.Context, organ_id: str, as_json: bool) -> None:
    """Show one agency with its certificates and the endpoints acting for it."""
    registry = _registry(ctx)
    found = registry.agency(organ_id)
    row = _agency_row(found)
    row["certificates"] = [
        c.fingerprint for c in registry.store.certificates(organ_id) if c.status == "active"
    ]
    row["endpoints"] = [
        e.name for e in registry.store.endpoints() if organ_id in e.agencies and e.status == "active"
    ]
    if as_json:
        click.echo(json.dumps(row, ensure_ascii=False, indent=2))
    else:
        for key, value in row.items():
            click.echo(
                f"{key:<13} {', '.join(value) if isinstance(value, list) else ('' if value is None else value)}"
            )


def _set_status(ctx: click.Context, organ_id: str, status: str) -> None:
    _registry(ctx).set_status(organ_id, status)
    click.echo(f"{organ_id} is {status}")


@agency.command("suspend")
@click.argument("organ_id")
@click.pass_context
def agency_suspend(ctx: click.Context, organ_id: str) -> None:
    """Suspend an agency: it can neither send nor receive until resumed."""
    _set_status(ctx, organ_id, "suspended")


@agency.command("resume")
@click.argument("organ_id")
@click.pass_context
def agency_resume(ctx: click.Context, organ_id: str) -> None:
    """Resume a suspended agency."""
    _set_status(ctx, organ_id, "active")


@agency.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.pass_context
def agency_import(ctx: click.Context, file: Path) -> None:
    """Register agencies from a CSV (organ_id,name[,parent]); all rows or none."""
    rows = _registry(ctx).import_agencies(file.read_text(encoding="utf-8-sig"))
    click.echo(f"registered {len(rows)} agencies")


# ---------------------------------------------------------------- endpoints


@cli.group()
def endpoint() -> None:
    """Connection points: an agency's software or a platform acting for many agencies."""


@endpoint.command("add")
@click.argument("name")
@click.option(
    "--agency",
    "agencies",
    multiple=True,
    required=True,
    help="OrganId the endpoint may act for (repeatable).",
)
@click.option("--push-url", help="The axis POSTs packages to this URL.")
@click.option("--pull", is_flag=True, help="The endpoint polls its inbox instead.")
@click.option("--client-cert-fingerprint", help="Require this mTLS client certificate (SHA-256).")
@click.option("--vxp-system-id", help="Also reachable by VXP software (docs/vxp.md) as this system id (pull only).")
@click.option("--vxp-admin", is_flag=True, help="The VXP system id may register and delete agencies.")
@click.option(
    "--vxp-source",
    "vxp_sources",
    multiple=True,
    help="The VXP system id may call only from this address or network, e.g. 10.1.2.0/24 (repeatable).",
)
@click.option("--json", "as_json", is_flag=True, help='Print {"token": ...} (and "vxp_secret") as JSON.')
@click.pass_context
def endpoint_add(
    ctx: click.Context,
    name: str,
    agencies: tuple[str, ...],
    push_url: str | None,
    pull: bool,
    client_cert_fingerprint: str | None,
    vxp_system_id: str | None,
    vxp_admin: bool,
    vxp_sources: tuple[str, ...],
    as_json: bool,
) -> None:
    """Create an endpoint and print its bearer token (and VXP secret) once."""
    if bool(push_url) == pull:
        raise click.UsageError("give exactly one of --push-url URL or --pull")
    if vxp_system_id is not None and not pull:
        raise click.UsageError("a VXP system id needs --pull: VXP software polls for its documents")
    if vxp_system_id is None and (vxp_admin or vxp_sources):
        raise click.UsageError("--vxp-admin and --vxp-source need --vxp-system-id")
    registry = _registry(ctx)
    shown: dict[str, str] = {}
    if vxp_system_id is not None:
        box = keystore.SecretBox.at(keystore.KeyStore(config.load(ctx.find_root().obj).keys).secrets)
        created, token, secret = registry.add_vxp_endpoint(
            name, list(agencies), vxp_system_id, box, admin=vxp_admin, sources=vxp_sources
        )
        shown = {"token": token, "vxp_secret": secret}
    else:
        created, token = registry.add_endpoint(name, list(agencies), push_url, client_cert_fingerprint)
        shown = {"token": token}
    if as_json:
        click.echo(json.dumps(shown))
        return
    click.echo(f"endpoint {created.name} ({created.mode}) for {', '.join(created.agencies)}")
    for label, value in shown.items():
        click.echo(f"{label:<10} {value}")
    click.echo("Shown once: the token is stored only as a hash, the VXP secret only sealed.", err=True)


@endpoint.command("list")
@json_option
@click.pass_context
def endpoint_list(ctx: click.Context, as_json: bool) -> None:
    """List endpoints (never their tokens)."""
    rows = [
        {
            "name": e.name,
            "mode": e.mode,
            "agencies": list(e.agencies),
            "push_url": e.push_url,
            "status": e.status,
            "created_at": e.created_at,
        }
        for e in _registry(ctx).store.endpoints()
    ]
    _show(rows, ["name", "mode", "agencies", "push_url", "status"], as_json)


@endpoint.command("revoke")
@click.argument("name")
@click.pass_context
def endpoint_revoke(ctx: click.Context, name: str) -> None:
    """Revoke an endpoint: its token stops working at once."""
    _registry(ctx).store.revoke_endpoint(name, _now().isoformat())
    click.echo(f"endpoint {name} revoked")


@cli.group()
def token() -> None:
    """Bearer tokens for people: administrators and auditors."""


@token.command("add")
@click.argument("role", type=click.Choice(["admin", "auditor"]))
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help='Print {"token": ...} as JSON.')
@click.pass_context
def token_add(ctx: click.Context, role: str, name: str, as_json: bool) -> None:
    """Create an admin (registry writes, requeue) or auditor (read-only) token, shown once."""
    secret = _registry(ctx).add_role_token(role, name)
    click.echo(json.dumps({"token": secret}) if as_json else f"{role} token for {name}: {secret}")


@token.command("list")
@json_option
@click.pass_context
def token_list(ctx: click.Context, as_json: bool) -> None:
    """List role tokens by id, name, role and creation time (never the tokens or their hashes)."""
    _show(_registry(ctx).store.role_tokens(), ["id", "name", "role", "created_at", "revoked_at"], as_json)


@token.command("revoke")
@click.argument("which", metavar="NAME-OR-ID")
@click.pass_context
def token_revoke(ctx: click.Context, which: str) -> None:
    """Revoke a role token by its id (from `axis token list`), or every token with that NAME; it
    stops working at once, on a running axis too. A name made of digits is read as an id."""
    for revoked in _registry(ctx).revoke_role_tokens(which):
        click.echo(f"{revoked['role']} token {revoked['id']} ({revoked['name']}) revoked at {revoked['revoked_at']}")


# ---------------------------------------------------------------- certificates and CRLs


@cli.group()
def cert() -> None:
    """Signing certificates bound to agencies by fingerprint."""


@cert.command("add")
@click.argument("organ_id")
@click.argument("pem", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.pass_context
def cert_add(ctx: click.Context, organ_id: str, pem: Path) -> None:
    """Bind the certificate in PEM to agency ORGAN_ID (it must chain to the trust anchors)."""
    record = _registry(ctx).add_certificate(organ_id, pem.read_bytes())
    click.echo(f"certificate {record.fingerprint} bound to {organ_id}, valid until {record.not_after}")


@cert.command("list")
@click.option("--agency", "organ_id", help="Only this agency's certificates.")
@json_option
@click.pass_context
def cert_list(ctx: click.Context, organ_id: str | None, as_json: bool) -> None:
    """List registered certificates."""
    rows = [
        {
            "fingerprint": c.fingerprint,
            "organ_id": c.organ_id,
            "subject": c.subject,
            "not_after": c.not_after,
            "status": c.status,
        }
        for c in _registry(ctx).store.certificates(organ_id)
    ]
    _show(rows, ["fingerprint", "organ_id", "not_after", "status"], as_json)


@cert.command("revoke")
@click.argument("fingerprint")
@click.pass_context
def cert_revoke(ctx: click.Context, fingerprint: str) -> None:
    """Stop accepting packages signed with this certificate."""
    _registry(ctx).revoke_certificate(fingerprint)
    click.echo(f"certificate {fingerprint} revoked")


@cli.group()
def crl() -> None:
    """Certificate revocation lists of the trusted CAs."""


@crl.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.pass_context
def crl_import(ctx: click.Context, file: Path) -> None:
    """Add a CRL (PEM or DER) to the trust directory; it must be signed by a trusted CA."""
    settings = config.load(ctx.find_root().obj)
    path, revocations = keystore.import_crl(settings.trust, file.read_bytes())
    click.echo(f"CRL of {revocations.issuer.rfc4514_string()} ({len(list(revocations))} revoked) saved as {path}")


# ---------------------------------------------------------------- keys


@cli.group()
def keys() -> None:
    """The key store: development CA, axis key, agency certificates, CRL."""


@keys.command("init")
@keys_dir_option
@click.option(
    "--encrypt",
    is_flag=True,
    help=f"Encrypt the CA and axis keys (passphrase from ${CA_PASSPHRASE_ENV} or a prompt).",
)
def keys_init(directory: Path, encrypt: bool) -> None:
    """Create a development CA (standing in for the state CA), its CRL and the axis's signing key."""
    passphrase = _passphrase(CA_PASSPHRASE_ENV, "the CA key", new=True) if encrypt else None
    store = keystore.KeyStore(directory)
    store.init(_now(), passphrase)
    click.echo(f"CA certificate   {store.ca_certificate}")
    click.echo(f"trust directory  {store.trust}")
    click.echo(f"axis certificate {store.axis_certificate}")


@keys.command("issue")
@click.argument("organ_id")
@keys_dir_option
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where to write the key and certificate [default: DIR/agencies].",
)
@click.option("--name", help="Agency name for the certificate subject.")
@click.option("--ec", is_flag=True, help="ECDSA P-256 instead of RSA-2048.")
@click.option(
    "--encrypt",
    is_flag=True,
    help=f"Encrypt the new key (passphrase from ${KEY_PASSPHRASE_ENV} or a prompt).",
)
def keys_issue(
    organ_id: str, directory: Path, out: Path | None, name: str | None, ec: bool, encrypt: bool
) -> None:
    """Issue a signing certificate for agency ORGAN_ID; writes ORGAN_ID.key (0600) and ORGAN_ID.pem."""
    store = keystore.KeyStore(directory)
    key_passphrase = _passphrase(KEY_PASSPHRASE_ENV, f"the key of {organ_id}", new=True) if encrypt else None
    key_path, cert_path = _with_passphrase(
        lambda ca_pass: store.issue(
            organ_id,
            out or directory / "agencies",
            _now(),
            name=name,
            kind="ec" if ec else "rsa",
            ca_passphrase=ca_pass,
            key_passphrase=key_passphrase,
        ),
        CA_PASSPHRASE_ENV,
        "the CA key",
    )
    certificate = keystore.read_certificates(cert_path)[0]
    click.echo(str(key_path))
    click.echo(str(cert_path))
    click.echo(f"fingerprint {pki.fingerprint(certificate)}", err=True)


@keys.command("revoke")
@click.argument("fingerprint")
@keys_dir_option
def keys_revoke(fingerprint: str, directory: Path) -> None:
    """Revoke the certificate with SHA-256 FINGERPRINT: add it to the CA's CRL."""
    store = keystore.KeyStore(directory)
    certificate = _with_passphrase(
        lambda ca_pass: store.revoke(fingerprint, _now(), ca_pass),
        CA_PASSPHRASE_ENV,
        "the CA key",
    )
    click.echo(f"revoked {certificate.subject.rfc4514_string()}; CRL updated at {store.crl}")


@keys.command("crl")
@keys_dir_option
def keys_crl(directory: Path) -> None:
    """Re-sign the CRL with a fresh validity window (a CRL expires after 30 days)."""
    store = keystore.KeyStore(directory)
    renewed = _with_passphrase(
        lambda ca_pass: store.refresh_crl(_now(), ca_pass),
        CA_PASSPHRASE_ENV,
        "the CA key",
    )
    click.echo(
        f"CRL {store.crl} valid until {renewed.next_update_utc.isoformat() if renewed.next_update_utc else '?'}"
    )


# ---------------------------------------------------------------- sign and verify


@cli.command("sign")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--key",
    "key_path",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Agency private key (PEM).",
)
@click.option(
    "--cert",
    "cert_path",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Agency certificate (PEM); intermediates may follow it.",
)
@click.option(
    "-o",
    "--out",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write the signed package.",
)
@click.option("--replace", is_flag=True, help="Remove an existing (or placeholder) Signature before signing.")
def sign_command(file: Path, key_path: Path, cert_path: Path, out: Path, replace: bool) -> None:
    """Sign an edXML package with an agency key (RSA-SHA256 or ECDSA-SHA256, exclusive c14n).

    A package the axis would refuse (its shape: edxml.* codes) or whose From is not the
    certificate's agency (signature.signer_not_sender) is refused before it is signed.
    """
    key = _with_passphrase(
        lambda passphrase: keystore.read_private_key(key_path, passphrase),
        KEY_PASSPHRASE_ENV,
        str(key_path),
    )
    certificate, *intermediates = keystore.read_certificates(cert_path)
    signed = sign_package(file.read_bytes(), key, certificate, tuple(intermediates), replace=replace)
    keystore.write_public(out, signed)
    click.echo(f"signed {out} as {certificate.subject.rfc4514_string()}")


def _parse_time(value: str | None) -> datetime:
    if value is None:
        return _now()
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not an ISO 8601 time such as 2026-11-21T09:30:00+07:00"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _report(
    path: Path, result: VerifiedPackage | None, error: AxisError | None, at: datetime
) -> dict[str, Any]:
    report: dict[str, Any] = {"file": str(path), "valid": result is not None, "checked_at": at.isoformat()}
    if result is not None:
        signature, package = result.signature, result.package
        report.update(
            sha256=result.sha256,
            signer={
                "organ_id": signature.organ_id,
                "subject": signature.certificate.subject.rfc4514_string(),
                "fingerprint": signature.fingerprint,
                "issuer": signature.certificate.issuer.rfc4514_string(),
            },
            algorithms={
                "signature": signature.signature_method,
                "digest": signature.digest_method,
                "canonicalization": signature.canonicalization,
            },
            package={
                "kind": package.kind,
                "sender": package.sender.organ_id,
                "document_id": package.document_id
                if isinstance(package, edxml.DocumentPackage)
                else package.response_for.document_id,
                "recipients": [r.organ_id for r in package.recipients]
                if isinstance(package, edxml.DocumentPackage)
                else [],
            },
        )
    if error is not None:
        report.update(code=error.code, detail=error.message)
        report.update({k: error.fields[k] for k in ("line", "column") if k in error.fields})
    return report


def _print_report(report: dict[str, Any]) -> None:
    rows: list[tuple[str, str]] = [("file", report["file"])]
    if report["valid"]:
        signer, algorithms, package = report["signer"], report["algorithms"], report["package"]
        names = signing.ALGORITHM_NAMES
        rows += [
            ("sha256", report["sha256"]),
            ("package", f"{package['kind']} {package['document_id']} from {package['sender']}"),
            ("signer", f"{signer['organ_id'] or '(no OrganId in certificate)'}  {signer['subject']}"),
            ("fingerprint", signer["fingerprint"]),
            ("issuer", signer["issuer"]),
            (
                "algorithms",
                f"{names.get(algorithms['signature'], algorithms['signature'])}, "
                f"{names.get(algorithms['digest'], algorithms['digest'])} digest, "
                f"{names.get(algorithms['canonicalization'], algorithms['canonicalization'])}",
            ),
        ]
    rows.append(("checked at", report["checked_at"]))
    rows.append(("verdict", "VALID" if report["valid"] else f"INVALID  {report['code']}"))
    if not report["valid"]:
        rows.append(("reason", report["detail"]))
    for label, value in rows:
        click.echo(f"{label:<12} {value}")


@cli.command("verify")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--trust",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="Trust directory: CA certificates (*.pem, *.crt) and CRLs (*.crl). [default: keys/trust]",
)
@click.option(
    "--at",
    "at_text",
    help="Check certificates at this ISO 8601 time (e.g. the acceptance time) [default: now].",
)
@click.option("--json", "as_json", is_flag=True, help="Print the verdict as JSON.")
def verify_command(file: Path, trust: Path | None, at_text: str | None, as_json: bool) -> None:
    """Verify an edXML package offline: signature policy, certificate chain, CRL, signed content.

    Exit status 0 when valid, 1 when invalid (with the refusal code and reason), 2 on usage errors.
    """
    at = _parse_time(at_text)
    trust_dir = trust or Path("keys/trust")
    try:
        anchors = keystore.read_trust(trust_dir)
    except AxisError as error:
        raise click.UsageError(f"{error.code}: {error.message}") from None
    result: VerifiedPackage | None = None
    failure: AxisError | None = None
    try:
        result = verify_package(file.read_bytes(), anchors, at)
    except AxisError as error:
        failure = error
    report = _report(file, result, failure, at)
    if as_json:
        click.echo(json.dumps(report, ensure_ascii=False, indent=2))
    else:
        _print_report(report)
    sys.exit(0 if result is not None else 1)


@cli.command("verify-receipt")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--trust", type=click.Path(exists=True, file_okay=False, path_type=Path), default=Path("keys/trust"), show_default=True, help="Trust directory.")
@click.option("--axis-cert", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="The axis certificate (GET /v1/axis/certificate): the receipt must be signed by it.")
@click.option("--json", "as_json", is_flag=True, help="Print the verdict as JSON.")
def verify_receipt_command(file: Path, trust: Path, axis_cert: Path | None, as_json: bool) -> None:
    """Verify an axis receipt offline: the axis's signature at the receipt's own time, and what it
    says (kind, message, package SHA-256, sender, recipients). Exit 0 valid, 1 invalid."""
    from axis import receipts

    anchors = keystore.read_trust(trust)
    pinned = frozenset(pki.fingerprint(c) for c in keystore.read_certificates(axis_cert)) if axis_cert else None
    try:
        verified = receipts.verify(file.read_bytes(), anchors, pinned)
    except AxisError as error:
        report: dict[str, Any] = {"file": str(file), "valid": False, "code": error.code, "detail": error.message}
    else:
        r = verified.receipt
        report = {"file": str(file), "valid": True, "kind": r.kind, "message_id": r.message_id, "document_id": r.document_id,
                  "package_sha256": r.package_sha256, "sender": r.sender, "recipients": list(r.recipients), "time": r.time,
                  "acknowledgement_sha256": r.acknowledgement_sha256, "reason": r.reason,
                  "signed_by": verified.signature.fingerprint, "axis_certificate_checked": pinned is not None}
    if as_json:
        _echo_json(report)
    else:
        shown = {label: value for label, value in report.items() if value is not None}
        width = max(map(len, shown))
        for label, value in shown.items():
            click.echo(f"{label:<{width}}  {', '.join(value) if isinstance(value, list) else value}")
    sys.exit(0 if report["valid"] else 1)


@cli.group()
def audit() -> None:
    """The axis's audit log (on the axis's machine)."""


@audit.command("verify")
@click.option(
    "--checkpoints", "kept_dir", type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="A witness's kept checkpoints (axis audit pull --keep): each must be the log's own.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.pass_context
def audit_verify(ctx: click.Context, kept_dir: Path | None, as_json: bool) -> None:
    """Check the audit log: the hash chain, every signed checkpoint against the events it covers,
    and (with --checkpoints) the copies a witness kept. Exit 1 naming every fault found."""
    settings = config.load(ctx.find_root().obj)
    certificates = keystore.KeyStore(settings.keys).axis_certificates()
    try:
        kept = checkpoints.read_kept(kept_dir) if kept_dir else {}
    except (OSError, ValueError) as error:
        raise click.UsageError(f"{kept_dir}: {error}") from None
    store = open_store(settings)
    try:
        report = checkpoints.verify_log(store.events(), certificates, kept)
    finally:
        store.close()
    if as_json:
        click.echo(json.dumps({"valid": report.valid, **asdict(report)}, indent=2))
    else:
        covered = f"{report.covered} of them covered by {report.checkpoints} signed checkpoints"
        click.echo(f"{report.events} events, {covered}; head {report.head}")
        if kept_dir:
            click.echo(f"{report.kept} checkpoints kept by a witness compared")
        for fault in report.faults:
            click.echo(f"FAULT {fault['code']}: {fault['message']}")
        click.echo("chain intact, every checkpoint holds" if report.valid else "the audit log does not hold")
    sys.exit(0 if report.valid else 1)


@audit.command("checkpoint")
@click.pass_context
def audit_checkpoint(ctx: click.Context) -> None:
    """Sign a checkpoint of the audit log now (the axis key; AXIS_KEY_PASSPHRASE if it has one)."""
    settings = config.load(ctx.find_root().obj)
    key, certificate = keystore.KeyStore(settings.keys).axis_signer()
    store = open_store(settings)
    try:
        earlier = keystore.KeyStore(settings.keys).axis_certificates()
        made = checkpoints.checkpoint(store, key, certificate, datetime.now(UTC), force=True, earlier=earlier)
    finally:
        store.close()
    if made is None:
        click.echo("the audit log is empty: nothing to cover")
        return
    c = made.checkpoint
    click.echo(f"checkpoint {c.number}: events {c.first}..{c.last}, root {c.root}, digest {c.digest()}")


@audit.command("pull")
@click.argument("url")
@click.option("--keep", "keep_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Where this witness keeps its copies (created if missing).")
@click.option("--axis-cert", "axis_cert", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The axis's certificate (PEM) to check signatures with [default: the one kept in DIR,"
                   " else the axis's own, fetched once and kept].")
def audit_pull(url: str, keep_dir: Path, axis_cert: Path | None) -> None:
    """Copy the axis's new signed checkpoints into DIR, as a witness: each must be signed by the
    axis certificate and follow the one kept before it; a checkpoint that differs from a copy
    kept earlier is a rewritten log (exit 1). The token comes from $AXIS_TOKEN."""
    token = os.environ.get("AXIS_TOKEN", "")
    if not token:
        raise click.UsageError("set AXIS_TOKEN to an endpoint, auditor or admin token of the axis")
    keep_dir.mkdir(parents=True, exist_ok=True)
    try:
        outcome = witness.pull(url.rstrip("/"), token, keep_dir, axis_cert)
    except witness.PullError as error:
        click.echo(f"FAULT {error.code}: {error}", err=True)
        sys.exit(1)
    click.echo(f"{outcome.added} new checkpoints kept in {keep_dir}; latest {outcome.latest or 'none'}")


@audit.command("export")
@click.argument("message_id", required=False)
@click.option("-o", "--output", "output", type=click.Path(dir_okay=False, path_type=Path), help="The ZIP to write.")
@click.option("--from", "start", type=click.DateTime(["%Y-%m-%d"]), help="First day of a period (YYYY-MM-DD).")
@click.option("--to", "end", type=click.DateTime(["%Y-%m-%d"]), help="Day after the period's last (exclusive).")
@click.option("--agency", help="Only what this agency sent or received.")
@click.pass_context
def audit_export(
    ctx: click.Context, message_id: str | None, output: Path | None, start: datetime | None, end: datetime | None,
    agency: str | None,
) -> None:
    """Write the evidence bundle of one message, or of a period's messages (--from, --to, --agency):
    package bytes, receipts, audit events with inclusion proofs to signed checkpoints, the
    certificates and CRLs, a signed manifest. Check it with `axis verify-bundle`."""
    settings = config.load(ctx.find_root().obj)
    key, certificate = keystore.KeyStore(settings.keys).axis_signer()
    target = output or Path(f"axis-bundle-{message_id or f'{start:%Y%m%d}-{end:%Y%m%d}'}.zip")
    store = open_store(settings)
    try:
        selected, query = bundles.select(
            store, message_id, start.date() if start else None, end.date() if end else None, agency
        )
        made = bundles.export(store, selected, settings.trust, key, certificate, target, query)
    finally:
        store.close()
    click.echo(f"{made.messages} messages, {made.members} members, up to checkpoint {made.checkpoint}: {target}")


@cli.command("verify-bundle")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--trust", "trust_dir", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Your trust directory: the CA certificates (and CRLs) you trust.")
@click.option("--axis-cert", "axis_cert", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The axis certificate (PEM) the bundle must be signed with [default: the one the --checkpoints"
                   " witness keeps]; one of the two is required.")
@click.option("--checkpoints", "kept_dir", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Checkpoints a witness kept (axis audit pull --keep): each in the bundle must be the same.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def verify_bundle_command(file: Path, trust_dir: Path, axis_cert: Path | None, kept_dir: Path | None, as_json: bool) -> None:
    """Check an evidence bundle offline: every member against the signed manifest, every package's
    signature at its acceptance time, every receipt, every event's inclusion proof, every
    checkpoint's signature and (with --checkpoints) a witness's copies.

    Exit status 0 when everything holds, 1 when anything does not (each fault named with its
    member), 2 on usage errors."""
    try:
        trust = keystore.read_trust(trust_dir)
        kept = checkpoints.read_kept(kept_dir) if kept_dir else None
        witnessed = list(witness.certificates(kept_dir).values()) if kept_dir else []
        pinned = pki.load_certificates(axis_cert.read_bytes())[0] if axis_cert else (witnessed[-1] if witnessed else None)
    except (AxisError, OSError, ValueError, IndexError) as error:
        raise click.UsageError(str(error)) from None
    if pinned is None:
        raise click.UsageError(
            "pin the axis certificate: --axis-cert PEM (as the operator published it), or --checkpoints DIR of a witness"
            " that keeps it (any certificate of a trusted CA could otherwise sign a bundle)"
        )
    report = bundles.verify(file, trust, pinned, kept)
    if as_json:
        click.echo(json.dumps(report.as_json(), ensure_ascii=False, indent=2))
    else:
        click.echo(f"bundle     {report.bundle}")
        click.echo(f"made       {report.created_at} by the axis certificate {report.axis}")
        click.echo(f"checkpoints {report.checkpoints} signed" + (f", {report.kept_compared} compared with a witness's" if kept_dir else ""))
        for message in report.messages:
            mark = "ok  " if message.get("valid") else "FAIL"
            kinds = ", ".join(r["kind"] for r in message.get("receipts", []))
            click.echo(
                f"{mark} {message.get('id')} {message.get('kind')} {message.get('document_id')} from {message.get('sender')}"
                f" accepted {message.get('accepted_at')}; receipts: {kinds or 'none'};"
                f" {len(message.get('events', []))} events proved"
            )
        for fault in report.faults:
            click.echo(f"FAULT {fault['code']} [{fault['member']}]: {fault['message']}")
        click.echo("the bundle holds" if report.valid else "the bundle does NOT hold")
    sys.exit(0 if report.valid else 1)


@cli.command("report")
@click.option("--period", required=True, help="2026-11 (a month), 2026-Q3, 2026-H1 or 2026.")
@click.option("--agency", help="Only this agency and its units [default: every agency].")
@click.option("--format", "form", type=click.Choice(["csv", "xlsx", "json"]), default="xlsx", show_default=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="The file to write [default: bao-cao-PERIOD.FORMAT].")
@click.pass_context
def report_command(ctx: click.Context, period: str, agency: str | None, form: str, output: Path | None) -> None:
    """The periodic report on sending and receiving electronic documents (Circular 01/2020/TT-VPCP):
    per agency and per parent agency with its units, the axis's totals, and the latest signed
    checkpoint of the audit log in its footer."""
    settings = config.load(ctx.find_root().obj)
    store = open_store(settings)
    try:
        made = report.build(store, report.Period.parse(period), agency)
    finally:
        store.close()
    data = report.render(made, form)
    target = output or Path(f"bao-cao-{made.period.label}.{form}")
    target.write_bytes(data)
    click.echo(f"{len(made.rows)} rows, {made.totals['sent']} documents sent in {made.period.label}: {target}")


@cli.command("serve")
@click.option("--host", help="Address to listen on [default: [server] host of axis.toml].")
@click.option("--port", type=int, help="Port to listen on; 0 picks a free one [default: [server] port].")
@click.pass_context
def serve_command(ctx: click.Context, host: str | None, port: int | None) -> None:
    """Run the axis HTTP API until SIGTERM or Ctrl-C (prints a JSON line with its URL when it listens)."""
    import asyncio

    from adapters import vxp
    from axis.server.runtime import serve

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    asyncio.run(serve(config.load(ctx.find_root().obj), host, port, [vxp.mount]))


# ---------------------------------------------------------------- the people's CLI (an endpoint's side)


def client_options(function: F) -> F:
    """How to reach the axis as an endpoint. The token is best given as $AXIS_TOKEN: a command
    line is visible to every user of the machine."""
    for option in reversed(
        [
            click.option("--url", envvar="AXIS_URL", required=True, help="The axis [env AXIS_URL]."),
            click.option("--token", envvar="AXIS_TOKEN", required=True, help="The endpoint's token [env AXIS_TOKEN]."),
            click.option(
                "--trust",
                envvar="AXIS_TRUST",
                type=click.Path(exists=True, file_okay=False, path_type=Path),
                help="Trust directory of the state CA: verify what arrives and every receipt [env AXIS_TRUST].",
            ),
            click.option("--key", "key_path", envvar="AXIS_KEY", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="The agency's signing key [env AXIS_KEY]."),
            click.option("--cert", "cert_path", envvar="AXIS_CERT", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="Its certificate [env AXIS_CERT]."),
        ]
    ):
        function = option(function)
    return function


def _client(url: str, token: str, trust: Path | None, key_path: Path | None, cert_path: Path | None, **options: Any) -> Any:
    from adapters.client import Client, Signer

    signer = None
    if key_path is not None and cert_path is not None:
        signer = _with_passphrase(
            lambda passphrase: Signer.from_files(key_path, cert_path, passphrase), KEY_PASSPHRASE_ENV, str(key_path)
        )
    elif key_path is not None or cert_path is not None:
        raise click.UsageError("--key and --cert go together")
    return Client(url, token, trust=trust, signer=signer, **options)


class _Bar:
    """A progress bar on stderr for packages over a megabyte, when stderr is a terminal."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.bar: Any = None
        self.done = 0

    def __call__(self, done: int, total: int) -> None:
        if total < 1 << 20 or not sys.stderr.isatty():
            return
        if self.bar is None:
            self.bar = click.progressbar(length=total, label=self.label, file=sys.stderr)
            self.bar.__enter__()
        self.bar.update(done - self.done)
        self.done = done
        if done >= total:
            self.bar.__exit__(None, None, None)


def _echo_json(value: Any) -> None:
    click.echo(json.dumps(value, ensure_ascii=False, indent=2))


@cli.command("send")
@client_options
@click.argument("file", required=False, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--describe", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="A JSON description of the document (docs/adapters.md).")
@click.option("--to", "recipients", multiple=True, help="A recipient OrganId (repeat for several).")
@click.option("--subject", help="Trích yếu: what the document is about.")
@click.option("--code", help="Số/ký hiệu, e.g. 1234/VPCP-KSTT (makes the DocumentId with today's date).")
@click.option("--content", help="The text of the document.")
@click.option("--attach", multiple=True, type=click.Path(exists=True, dir_okay=False, path_type=Path), help="A file to attach (repeat).")
@click.option("--from", "sender", help="The sending agency [default: the OrganId in the certificate].")
@click.option("--receipt", "receipt_out", type=click.Path(dir_okay=False, path_type=Path), help="Write the signed receipt here.")
@json_option
def send_command(
    url: str, token: str, trust: Path | None, key_path: Path | None, cert_path: Path | None, file: Path | None,
    describe: Path | None, recipients: tuple[str, ...], subject: str | None, code: str | None, content: str | None,
    attach: tuple[Path, ...], sender: str | None, receipt_out: Path | None, as_json: bool,
) -> None:
    """Send a document: an edXML FILE (signed, or signed here with --key/--cert), a --describe JSON
    file, or --to/--subject/--attach options. Prints the message id and the checked receipt."""
    from adapters.description import Description
    from adapters.folder import is_signed

    if sum(x is not None and x != () for x in (file, describe, recipients or None)) != 1:
        raise click.UsageError("give one of: FILE, --describe JSON, or --to with --subject")
    with _client(url, token, trust, key_path, cert_path) as client:
        if file is not None:
            data = file.read_bytes()
            if not is_signed(data):
                if client.signer is None:
                    raise click.UsageError(f"{file} is not signed: give --key and --cert to sign it")
                data = client.signer.sign(data)
        else:
            if describe is not None:
                description = Description.load(describe)
            else:
                values = {"to": list(recipients), "subject": subject, "code": code, "content": content,
                          "attachments": [str(p.resolve()) for p in attach]}
                description = Description({k: v for k, v in values.items() if v}, Path("/"))
            if client.signer is None:
                raise click.UsageError("building a document needs --key and --cert")
            organ = sender or client.signer.organ_id
            if organ is None:
                raise click.UsageError("give --from ORGANID (the certificate names no agency)")
            data = client.signer.sign(edxml.build(description.package(organ, _now().astimezone())))
        sent = client.send(data, progress=_Bar("sending"))
    if receipt_out is not None:
        keystore.write_public(receipt_out, sent.receipt)
    answer = {
        "message_id": sent.message_id,
        "document_id": sent.document_id,
        "recipients": list(sent.recipients),
        "resubmitted": sent.resubmitted,
        "receipt_verified": trust is not None,
    }
    if as_json:
        _echo_json({**answer, "receipt": sent.receipt.decode()})
        return
    click.echo(f"{'already accepted' if sent.resubmitted else 'accepted'}  {sent.message_id}")
    click.echo(f"document     {sent.document_id}")
    click.echo(f"recipients   {', '.join(sent.recipients)}")
    click.echo(f"receipt      {'signed by the axis, verified' if trust else 'not verified (give --trust)'}")


@cli.command("inbox")
@client_options
@click.option("--agency", help="Only this agency's inbox [default: every agency of the endpoint].")
@click.option("--wait", type=float, default=0, show_default=True, help="Wait up to this many seconds for something to arrive.")
@click.option("--limit", type=int, help="At most this many items.")
@json_option
def inbox_command(
    url: str, token: str, trust: Path | None, key_path: Path | None, cert_path: Path | None,
    agency: str | None, wait: float, limit: int | None, as_json: bool,
) -> None:
    """List what waits for the endpoint's agencies (documents, statuses, receipts)."""

    with _client(url, token, trust, key_path, cert_path) as client:
        entries = client.inbox(agency, wait=wait, limit=limit)
    _show([asdict(e) for e in entries], ["message_id", "kind", "sender", "recipient", "document_id", "size", "accepted_at"], as_json)


@cli.command("fetch")
@client_options
@click.argument("message_id")
@click.option("-o", "--out", type=click.Path(dir_okay=False, path_type=Path), help="Write the package here [default: MESSAGE_ID.edxml].")
@click.option("--ack", is_flag=True, help="Acknowledge it once it is written (and verified, with --trust).")
@json_option
def fetch_command(
    url: str, token: str, trust: Path | None, key_path: Path | None, cert_path: Path | None,
    message_id: str, out: Path | None, ack: bool, as_json: bool,
) -> None:
    """Download a package (verified here with --trust, at its acceptance time) and optionally acknowledge it."""
    target = out or Path(f"{message_id}.edxml")
    report: dict[str, Any] = {"message_id": message_id, "file": str(target)}
    with _client(url, token, trust, key_path, cert_path) as client:
        entry, data = client.download(message_id, progress=_Bar("fetching"))
        if trust is not None:
            received = client.verify(entry, data)
            if received.package is not None:
                report["signer"] = received.package.signature.organ_id
                report["fingerprint"] = received.package.signature.fingerprint
            report["verified"] = True
        keystore.write_public(target, data)
        if ack:
            report["acknowledged"] = client.ack(message_id)["acknowledged"]
    if as_json:
        _echo_json(report)
        return
    for label, value in report.items():
        click.echo(f"{label:<13}{', '.join(value) if isinstance(value, list) else value}")


@cli.command("status")
@client_options
@click.argument("message_id")
@click.argument("code", type=click.Choice(sorted(edxml.STATUS_CODES)))
@click.option("--description", help="What the status says, for the people reading it.")
@click.option("--from", "sender", help="The agency reporting [default: the OrganId in the certificate].")
@json_option
def status_command(
    url: str, token: str, trust: Path | None, key_path: Path | None, cert_path: Path | None,
    message_id: str, code: str, description: str | None, sender: str | None, as_json: bool,
) -> None:
    """Report a processing status about a received document (03 accepted, 04 assigned, 05 in
    progress, 06 completed, ...; 13 from its sender to take it back)."""
    with _client(url, token, trust, key_path, cert_path) as client:
        if client.signer is None:
            raise click.UsageError("a status is signed: give --key and --cert")
        organ = sender or client.signer.organ_id
        if organ is None:
            raise click.UsageError("give --from ORGANID (the certificate names no agency)")
        document = edxml.parse(client.fetch(message_id))
        if not isinstance(document, edxml.DocumentPackage):
            raise click.UsageError(f"{message_id} is a {document.kind}, not a document")
        sent = client.send_status(document, edxml.Organization(organ_id=organ), code, description)
    if as_json:
        _echo_json({"message_id": sent.message_id, "status": code, "document_id": document.document_id})
        return
    click.echo(f"status {code} sent as {sent.message_id} about {document.document_id}")


@cli.command("receipts")
@client_options
@click.argument("message_id")
@json_option
def receipts_command(
    url: str, token: str, trust: Path | None, key_path: Path | None, cert_path: Path | None,
    message_id: str, as_json: bool,
) -> None:
    """The signed receipts of a message, each verified here with --trust."""
    rows = []
    with _client(url, token, trust, key_path, cert_path) as client:
        for item in client.receipts(message_id):
            row = {"kind": item["kind"], "recipient": item["recipient"], "xml": item["xml"]}
            if trust is not None:
                receipt = client.verify_receipt(item["xml"].encode()).receipt
                row.update(time=receipt.time, verified="yes", sha256=receipt.package_sha256)
            rows.append(row)
    if not as_json:
        for row in rows:
            row.pop("xml")
    _show(rows, ["kind", "recipient", "time", "verified", "sha256"], as_json)


@cli.command("trail")
@client_options
@click.argument("message_id")
@json_option
def trail_command(
    url: str, token: str, trust: Path | None, key_path: Path | None, cert_path: Path | None,
    message_id: str, as_json: bool,
) -> None:
    """What happened to a message: its deliveries, the latest statuses, its events."""
    with _client(url, token, trust, key_path, cert_path) as client:
        trail = client.trail(message_id)
    if as_json:
        _echo_json(trail)
        return
    message = trail["message"]
    click.echo(f"{message['kind']} {message['id']}  {message['document_id']}  from {message['sender']}  accepted {message['accepted_at']}")
    _show(trail["deliveries"], ["recipient", "state", "attempts", "delivered_at", "last_error"], False)
    if trail["statuses"]:
        click.echo("")
        _show(trail["statuses"], ["recipient", "status_code", "updated_at"], False)
    click.echo(f"\n{len(trail['events'])} audit events, each hash recomputed and matching:")
    _show([{"seq": e["seq"], "kind": e.get("kind"), "at": e.get("at"), "hash": e["hash"][:16]} for e in trail["events"]], ["seq", "kind", "at", "hash"], False)


# ---------------------------------------------------------------- adapters for agency software


@cli.group("adapter")
def adapter() -> None:
    """Connect agency software that cannot call the API itself."""


def adapter_options(function: F) -> F:
    for option in reversed(
        [
            click.option("--dir", "directory", required=True, type=click.Path(file_okay=False, path_type=Path), help="The folder tree (docs/adapters.md)."),
            click.option("--agency", "agencies", multiple=True, required=True, help="An agency served (repeat: a platform serves several)."),
            click.option("--keys", "keys_dir", type=click.Path(exists=True, file_okay=False, path_type=Path), help="ORGANID.key + ORGANID.pem for signing what is dropped unsigned."),
            click.option("--url", envvar="AXIS_URL", required=True, help="The axis [env AXIS_URL]."),
            click.option("--token", envvar="AXIS_TOKEN", required=True, help="The endpoint's token [env AXIS_TOKEN]."),
            click.option("--trust", envvar="AXIS_TRUST", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path), help="Trust directory of the state CA [env AXIS_TRUST]."),
            click.option("--settle", type=float, default=1.0, show_default=True, help="Seconds a dropped file must stay unchanged before it is sent."),
            click.option("--poll", type=float, default=1.0, show_default=True, help="Seconds between looks at the outboxes."),
        ]
    ):
        function = option(function)
    return function


def _run_until_signalled(main: Callable[[Any], Any]) -> None:
    """Run ``main(stop)`` until SIGTERM or Ctrl-C sets ``stop``."""
    import asyncio
    import signal

    async def runner() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await main(stop)

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    asyncio.run(runner())


def _bridge(directory: Path, agencies: tuple[str, ...], keys_dir: Path | None, url: str, token: str, trust: Path, settle: float, poll: float) -> Any:
    from adapters.client import AxisClient
    from adapters.folder import FolderBridge, signers_in
    from adapters.layout import Layout

    layout = Layout(directory, agencies)
    signers = _with_passphrase(lambda p: signers_in(keys_dir, agencies, p), KEY_PASSPHRASE_ENV, "the agency keys")
    client = AxisClient(url, token, trust=trust, seen=layout.seen)
    return FolderBridge(layout, client, signers, settle=settle, poll=poll)


@adapter.command("folder")
@adapter_options
def adapter_folder(directory: Path, agencies: tuple[str, ...], keys_dir: Path | None, url: str, token: str, trust: Path, settle: float, poll: float) -> None:
    """The drop-folder bridge for a pull endpoint: sends what is dropped in each agency's outbox/,
    writes what arrives to inbox/, status/ and receipts/. Runs until SIGTERM."""
    bridge = _bridge(directory, agencies, keys_dir, url, token, trust, settle, poll)

    async def main(stop: Any) -> None:
        click.echo(json.dumps({"event": "running", "dir": str(directory), "agencies": list(agencies)}), err=False)
        try:
            await bridge.run(stop)
        finally:
            await bridge.client.close()

    _run_until_signalled(main)


@adapter.command("webhook")
@click.option("--listen", required=True, help="HOST:PORT to receive the axis's pushes on.")
@adapter_options
def adapter_webhook(listen: str, directory: Path, agencies: tuple[str, ...], keys_dir: Path | None, url: str, token: str, trust: Path, settle: float, poll: float) -> None:
    """The push receiver for a push endpoint: verifies each pushed package and writes it to the
    folder tree (inbox/, status/, receipts/); sends what is dropped in outbox/. Runs until SIGTERM."""
    from aiohttp import web

    from adapters.webhook import Webhook

    host, _, port = listen.rpartition(":")
    if not host or not port.isdigit():
        raise click.UsageError("--listen must be HOST:PORT, e.g. 127.0.0.1:8090")
    bridge = _bridge(directory, agencies, keys_dir, url, token, trust, settle, poll)

    async def main(stop: Any) -> None:
        await bridge.client.axis_fingerprints()  # receipts are checked against it: fail now, not at the first push
        webhook = Webhook(bridge.client, tuple(agencies), layout=bridge.layout)
        runner = web.AppRunner(webhook.app(), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, host, int(port))
        await site.start()
        bound = runner.addresses[0]
        click.echo(json.dumps({"event": "listening", "url": f"http://{bound[0]}:{bound[1]}/"}))
        try:
            await bridge.run(stop, receive=False)
        finally:
            await runner.cleanup()
            await bridge.client.close()

    _run_until_signalled(main)


GATEWAY_STATE_ENV = "AXIS_GATEWAY_STATE"
GATEWAY_KEYS = {
    "listen": "listen", "agency": "agencies", "keys": "keys_dir", "state": "state_dir", "url": "url",
    "trust": "trust", "prefix": "prefix", "allow_plain_http": "allow_plain_http",
}
"""``[gateway]`` keys of a gateway's configuration file, and the options they stand for."""


def _gateway_config(ctx: click.Context, param: click.Parameter, value: Path | None) -> None:
    """``--config FILE``: a ``[gateway]`` table whose keys are defaults for the options (paths in
    it relative to the file). The token is not among them: give it as $AXIS_TOKEN."""
    if value is None:
        return
    import tomllib

    try:
        section = tomllib.loads(value.read_text(encoding="utf-8")).get("gateway", {})
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise click.BadParameter(f"{value}: {error}") from None
    unknown = set(section) - set(GATEWAY_KEYS)
    if unknown:
        raise click.BadParameter(f"{value}: unknown key(s) in [gateway]: {', '.join(sorted(unknown))}")
    base = value.resolve().parent
    defaults: dict[str, Any] = {}
    for key, option in GATEWAY_KEYS.items():
        if key in section:
            given = section[key]
            defaults[option] = str(base / given) if key in ("keys", "state", "trust") else given
    ctx.default_map = {**(ctx.default_map or {}), **defaults}


@adapter.group("vxp-gateway", invoke_without_command=True)
@click.option(
    "--config", type=click.Path(exists=True, dir_okay=False, path_type=Path), is_eager=True, expose_value=False,
    callback=_gateway_config, help="A TOML file whose [gateway] table gives these options (docs/vxp-gateway.md).",
)
@click.option("--listen", help="HOST:PORT the agency's software (its VXP SDK) connects to.")
@click.option("--agency", "agencies", multiple=True, help="An agency whose key the gateway holds (repeat: a platform serves several).")
@click.option("--keys", "keys_dir", type=click.Path(file_okay=False, path_type=Path), help="ORGANID.key + ORGANID.pem of each agency [$AXIS_KEY_PASSPHRASE opens encrypted keys].")
@click.option("--state", "state_dir", type=click.Path(file_okay=False, path_type=Path), envvar=GATEWAY_STATE_ENV, default=Path("gateway"), show_default=True, help=f"The gateway's ledger and sealed credentials [env {GATEWAY_STATE_ENV}].")
@click.option("--url", envvar="AXIS_URL", help="The axis [env AXIS_URL].")
@click.option("--token", envvar="AXIS_TOKEN", help="The token of the axis endpoint acting for these agencies [env AXIS_TOKEN].")
@click.option("--trust", envvar="AXIS_TRUST", type=click.Path(file_okay=False, path_type=Path), help="Trust directory of the state CA [env AXIS_TRUST].")
@click.option("--prefix", default="/vxp", show_default=True, help="Path the SDK's endpoint URL ends with.")
@click.option("--allow-plain-http", is_flag=True, help="Answer plain HTTP on a listener that is not loopback (behind a TLS proxy only).")
@click.pass_context
def adapter_vxp_gateway(
    ctx: click.Context, listen: str | None, agencies: tuple[str, ...], keys_dir: Path | None, state_dir: Path,
    url: str | None, token: str | None, trust: Path | None, prefix: str, allow_plain_http: bool,
) -> None:
    """The signing gateway an agency runs next to software built on the operator's VXP SDK: it
    signs what the software sends with the agency's key and serves what arrives, verified.
    Runs until SIGTERM; `credential add` issues the SDK's system id and secret."""
    ctx.meta["gateway_state"] = state_dir
    if ctx.invoked_subcommand is not None:
        return
    missing = [name for name, value in (("--listen", listen), ("--agency", agencies), ("--keys", keys_dir),
                                        ("--url", url), ("--token", token), ("--trust", trust)) if not value]
    if missing:
        raise click.UsageError(f"the gateway needs {', '.join(missing)} (or a --config file giving them)")
    assert listen and keys_dir and url and token and trust
    host, _, port = listen.rpartition(":")
    if not host or not port.isdigit():
        raise click.UsageError("--listen must be HOST:PORT, e.g. 127.0.0.1:8095")
    from adapters.client import AxisClient
    from adapters.folder import signers_in
    from adapters.vxp.gateway import Gateway, serve
    from adapters.vxp.ledger import Ledger
    from axis.errors import AdapterError

    signers = _with_passphrase(lambda p: signers_in(keys_dir, tuple(agencies), p), KEY_PASSPHRASE_ENV, str(keys_dir))
    for agency in agencies:
        signer = signers.get(agency)
        if signer is None or signer.organ_id not in (None, agency):
            raise AdapterError(
                "adapter.no_key",
                f"{keys_dir} must hold {agency}.key and {agency}.pem, a certificate of {agency}: the gateway signs for it",
            )
    gateway = Gateway(Ledger(state_dir), AxisClient(url, token, trust=trust), signers)
    policy = config.Vxp(prefix=prefix, allow_plain_http=allow_plain_http)

    async def main(stop: Any) -> None:
        def announce(endpoint: str) -> None:
            click.echo(json.dumps({"event": "listening", "url": endpoint, "agencies": list(agencies)}))

        await serve(gateway, host, int(port), policy, stop, announce)

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    _run_until_signalled(main)


@adapter_vxp_gateway.group("credential")
def gateway_credential() -> None:
    """System ids and secrets the gateway issues to the agency's software."""


@gateway_credential.command("add")
@click.argument("system_id")
@click.option("--agency", "agencies", multiple=True, required=True, help="An agency the system may act for (repeatable).")
@click.option("--json", "as_json", is_flag=True, help='Print {"system_id", "secret"} as JSON.')
@click.pass_context
def gateway_credential_add(ctx: click.Context, system_id: str, agencies: tuple[str, ...], as_json: bool) -> None:
    """Issue a system id and its secret (shown once, stored sealed) for the SDK's VnptProperties."""
    from adapters.vxp.ledger import Ledger
    from axis.identifiers import organ_id
    from axis.registry import new_token

    for agency in agencies:
        organ_id(agency)
    secret = new_token()
    with Ledger(ctx.meta["gateway_state"]) as ledger:
        ledger.add_system(system_id, agencies, secret)
    if as_json:
        click.echo(json.dumps({"system_id": system_id, "secret": secret}))
        return
    click.echo(f"system id  {system_id}  ({', '.join(agencies)})")
    click.echo(f"secret     {secret}")
    click.echo("Shown once: the secret is stored only sealed.", err=True)


@gateway_credential.command("list")
@json_option
@click.pass_context
def gateway_credential_list(ctx: click.Context, as_json: bool) -> None:
    """The system ids issued (never their secrets)."""
    from adapters.vxp.ledger import Ledger

    with Ledger(ctx.meta["gateway_state"]) as ledger:
        rows = [{"system_id": s, "agencies": list(a), "issued_at": at} for s, a, at in ledger.systems()]
    if as_json:
        click.echo(json.dumps(rows))
        return
    for row in rows:
        click.echo(f"{row['system_id']:<24} {', '.join(row['agencies']):<40} {row['issued_at']}")


@adapter_vxp_gateway.command("status")
@json_option
@click.pass_context
def gateway_status(ctx: click.Context, as_json: bool) -> None:
    """What the gateway sent (with the axis's receipts it keeps) and what waits for the software."""
    from adapters.vxp.ledger import Ledger

    with Ledger(ctx.meta["gateway_state"]) as ledger:
        report = ledger.report()
    if as_json:
        click.echo(json.dumps(report, ensure_ascii=False))
        return
    click.echo(f"received: {report['waiting']} waiting for the software, {report['done']} done, {report['failed']} failed,"
               f" {report['untold']} not yet told to the axis")
    for sent in report["sent"]:
        receipts = ", ".join(f"{r['kind']} {r['recipient']}".strip() for r in sent["receipts"])
        click.echo(f"{sent['message_id']}  {sent['kind']:<8} {sent['document_id']}  {receipts}")


@cli.command("demo")
@click.option("--keep", type=click.Path(file_okay=False, path_type=Path), help="Copy the demo's directory (folders, logs, data) here.")
def demo_command(keep: Path | None) -> None:
    """Run the axis's main job end to end: an axis, nine agencies, five endpoints and their adapters
    as separate processes on 127.0.0.1; tell it as a story; exit 0 only if every outcome happened."""
    from adapters import demo

    sys.exit(demo.run(click.echo, keep))


def main() -> None:
    cli(prog_name="axis")


if __name__ == "__main__":
    main()
