"""A witness's side of the signed checkpoints: copy them from the axis and keep them.

Whoever keeps copies (an auditor, a ministry, any agency with a token) makes a rewritten log
detectable even by the holder of the axis key: a checkpoint signed again over a changed log is
not the copy kept before. ``pull`` accepts a new checkpoint only when the axis certificate it
names (kept in the directory) signed it and it follows the last copy kept (number, range, the
previous one's digest), and it compares the axis's current copy of the last kept checkpoint
with the witness's. Each copy is one file, ``checkpoint-<number>.json``, never rewritten.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509

from axis import checkpoints, pki
from axis.errors import AxisError
from axis.keystore import write_public
from axis.store.events import GENESIS

PAGE = 1000


class PullError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Pulled:
    added: int
    latest: str | None
    """``number: digest`` of the latest kept checkpoint."""


def certificates(directory: Path) -> dict[str, x509.Certificate]:
    """The axis certificates this witness trusts (``axis-*.pem`` in its directory), by fingerprint."""
    found = {}
    for path in sorted(directory.glob("axis-*.pem")):
        for certificate in pki.load_certificates(path.read_bytes()):
            found[pki.fingerprint(certificate)] = certificate
    return found


def _keep_certificate(directory: Path, certificate: x509.Certificate) -> None:
    write_public(directory / f"axis-{pki.fingerprint(certificate)[:16]}.pem", pki.certificate_pem(certificate))


LARGEST = 16 << 20
"""Bytes read of one answer at most: a server is input like any other."""


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect would carry the token to wherever it points: refused."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirects)


def _fetch(url: str, headers: dict[str, str]) -> bytes:
    request = urllib.request.Request(url, headers=headers)  # noqa: S310 - http(s) only, checked in pull
    try:
        with _OPENER.open(request, timeout=60) as response:
            body: bytes = response.read(LARGEST + 1)
    except urllib.error.HTTPError as error:
        raise PullError("witness.refused", f"{url}: the axis answered {error.code}") from None
    except (urllib.error.URLError, OSError, ValueError) as error:
        raise PullError("witness.unreachable", f"{url}: {error}") from None
    if len(body) > LARGEST:
        raise PullError("witness.refused", f"{url}: the answer is larger than {LARGEST} bytes")
    return body


def _items(url: str, token: str) -> list[Any]:
    """The ``items`` of a checkpoints page, whatever the server answered."""
    try:
        answer = json.loads(_fetch(url, {"Authorization": f"Bearer {token}", "Accept": "application/json"}))
    except (ValueError, RecursionError):
        raise PullError("witness.malformed", f"{url}: the answer is not JSON") from None
    items = answer.get("items") if isinstance(answer, dict) else None
    if not isinstance(items, list):
        raise PullError("witness.malformed", f"{url}: the answer holds no list of checkpoints")
    return items


def _signed(item: Any) -> checkpoints.Signed:
    try:
        return checkpoints.Signed.of(item if isinstance(item, dict) else {})
    except ValueError as error:
        raise PullError("witness.malformed", str(error)) from None


def pull(url: str, token: str, directory: Path, axis_certificate: Path | None = None) -> Pulled:
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise PullError("witness.refused", f"{url!r} is not an http(s) URL of the axis")
    directory.mkdir(parents=True, exist_ok=True)
    if axis_certificate is not None:
        for certificate in pki.load_certificates(axis_certificate.read_bytes()):
            _keep_certificate(directory, certificate)
    trusted = certificates(directory)
    if not trusted:  # the first pull: the axis's own certificate, kept from now on
        parts = urllib.parse.urlsplit(url)
        if parts.scheme != "https" and parts.hostname not in ("127.0.0.1", "::1", "localhost"):
            raise PullError(
                "witness.unpinned",
                "the first pull over plain HTTP cannot trust the certificate it is sent: give --axis-cert, or use https",
            )
        try:
            fetched = pki.load_certificates(_fetch(f"{url}/v1/axis/certificate", {}))
        except (AxisError, ValueError) as error:
            raise PullError("witness.malformed", f"{url}: the axis certificate cannot be read: {error}") from None
        for certificate in fetched[:1]:
            _keep_certificate(directory, certificate)
        trusted = certificates(directory)
    try:
        kept = checkpoints.read_kept(directory)
    except (OSError, ValueError) as error:
        raise PullError("witness.unreadable", f"{directory}: {error}") from None
    latest = kept[max(kept)] if kept else None
    if latest is not None:  # the axis still holds what this witness kept last
        number = latest.checkpoint.number
        page = _items(f"{url}/v1/audit/checkpoints?after={number - 1}&limit=1", token)
        theirs = _signed(page[0]) if page else None
        if theirs is None or theirs.checkpoint != latest.checkpoint:
            raise PullError(
                "witness.rewritten",
                f"the axis no longer holds checkpoint {number} as this witness kept it: its log was rewritten",
            )
    added = 0
    while True:
        after = latest.checkpoint.number if latest else 0
        page = _items(f"{url}/v1/audit/checkpoints?" + urllib.parse.urlencode({"after": after, "limit": PAGE}), token)
        for item in page:
            signed = _signed(item)
            _follows(signed, latest, trusted)
            write_public(directory / checkpoints.kept_name(signed), json.dumps(signed.as_json(), indent=2).encode())
            latest, added = signed, added + 1
        if len(page) < PAGE:
            break
    described = f"{latest.checkpoint.number}: {latest.checkpoint.digest()}" if latest else None
    return Pulled(added, described)


def _follows(signed: checkpoints.Signed, latest: checkpoints.Signed | None, trusted: dict[str, x509.Certificate]) -> None:
    checkpoint = signed.checkpoint
    certificate = trusted.get(checkpoint.axis)
    if certificate is None or not checkpoints.signed_by(signed, certificate):
        raise PullError(
            "witness.bad_signature",
            f"checkpoint {checkpoint.number} is not signed by an axis certificate this witness keeps"
            " (a new axis certificate: pass it with --axis-cert once)",
        )
    expected = (
        (latest.checkpoint.number + 1, latest.checkpoint.last + 1, latest.checkpoint.digest()) if latest else (1, 1, GENESIS)
    )
    if (checkpoint.number, checkpoint.first, checkpoint.previous) != expected:
        raise PullError(
            "witness.fork",
            f"checkpoint {checkpoint.number} does not follow the last one kept"
            f" ({latest.checkpoint.number if latest else 'none'}): the log's history forked",
        )
