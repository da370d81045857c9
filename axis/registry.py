"""Who may do what: agencies, their certificates, endpoints and role tokens.

Agencies keep the OrganId form they were registered with. Certificates are bound to an agency by
SHA-256 fingerprint (never by a name inside the certificate), several at once for rollover, and
must chain to the configured trust anchors when added. Endpoints and role tokens authenticate
with bearer tokens: 256 random bits, shown once, stored only as their SHA-256.
"""

from __future__ import annotations

import csv
import hashlib
import io
import ipaddress
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from axis import pki
from axis.errors import IdentifierError, StoreError
from axis.identifiers import organ_id as check_organ_id
from axis.keystore import SecretBox
from axis.store import Agency, CertificateRecord, Endpoint, Store, VxpCredential

ROLES = ("admin", "auditor")


def token_hash(token: str) -> str:
    """Tokens are random and long, so a plain SHA-256 is enough to store them safely."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return secrets.token_urlsafe(32)


ENDPOINT_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}", re.ASCII)


@dataclass
class Registry:
    store: Store
    trust: Callable[[], pki.Trust]
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)

    def _now(self) -> str:
        return self.clock().isoformat()

    # agencies
    def add_agency(self, organ_id: str, name: str, parent: str | None = None) -> Agency:
        checked = check_organ_id(organ_id)
        if parent is not None:
            check_organ_id(parent)
        if not name.strip():
            raise IdentifierError("identifier.organ_name", f"agency {organ_id} needs a name")
        agency = Agency(organ_id, checked.form, name.strip(), self._now(), parent)
        self.store.add_agency(agency)
        return agency

    def import_agencies(self, text: str) -> list[Agency]:
        """CSV whose first line is the header ``organ_id,name[,parent]`` (columns are found by
        name, so a spreadsheet's export works in any column order). Every row is checked before
        any is stored."""
        reader = csv.DictReader(io.StringIO(text))
        missing = [c for c in ("organ_id", "name") if c not in (reader.fieldnames or [])]
        if missing:
            first = ",".join(reader.fieldnames or [])[:80]
            raise StoreError(
                "store.bad_import",
                f"the CSV's first line must be the header organ_id,name[,parent]; it is {first!r}"
                f" (no {' or '.join(missing)} column)",
            )
        rows = []
        for line, row in enumerate(reader, start=2):
            try:
                checked = check_organ_id((row.get("organ_id") or "").strip())
                parent = (row.get("parent") or "").strip() or None
                if parent:
                    check_organ_id(parent)
            except IdentifierError as error:
                raise StoreError("store.bad_import", f"line {line}: {error.message}", line=line) from None
            name = (row.get("name") or "").strip()
            if not name:
                raise StoreError("store.bad_import", f"line {line}: the agency has no name", line=line)
            rows.append(Agency(checked.value, checked.form, name, self._now(), parent))
        self.store.add_agencies(rows)
        return rows

    def agency(self, organ_id: str) -> Agency:
        found = self.store.agency(organ_id)
        if found is None:
            raise StoreError("store.unknown_agency", f"agency {organ_id} is not registered")
        return found

    def set_status(self, organ_id: str, status: str) -> None:
        self.store.set_agency_status(organ_id, status, self._now())

    # certificates
    def add_certificate(self, organ_id: str, pem: bytes) -> CertificateRecord:
        """Bind a signing certificate to an agency; it must chain to the trust anchors now."""
        certificate, *intermediates = pki.load_certificates(pem)
        pki.validate(certificate, intermediates, self.trust(), self.clock())
        record = CertificateRecord(
            fingerprint=pki.fingerprint(certificate),
            organ_id=organ_id,
            pem=pki.certificate_pem(certificate).decode(),
            subject=certificate.subject.rfc4514_string(),
            not_before=certificate.not_valid_before_utc.isoformat(),
            not_after=certificate.not_valid_after_utc.isoformat(),
            added_at=self._now(),
        )
        self.store.add_certificate(record)
        return record

    def revoke_certificate(self, fingerprint: str) -> None:
        self.store.revoke_certificate(fingerprint.lower().replace(":", ""), self._now())

    # endpoints and roles
    def add_endpoint(
        self,
        name: str,
        agencies: list[str],
        push_url: str | None = None,
        client_cert_fingerprint: str | None = None,
    ) -> tuple[Endpoint, str]:
        """Create an endpoint; returns it with its bearer token, which is never shown again."""
        endpoint, token = self._new_endpoint(name, agencies, push_url, client_cert_fingerprint)
        self.store.add_endpoint(endpoint, token_hash(token))
        return endpoint, token

    def add_vxp_endpoint(
        self,
        name: str,
        agencies: list[str],
        system_id: str,
        box: SecretBox,
        *,
        admin: bool = False,
        sources: tuple[str, ...] = (),
    ) -> tuple[Endpoint, str, str]:
        """A pull endpoint that old VXP software also reaches through its system id and a shared
        HMAC secret (sealed in the store), optionally only from the networks in ``sources``.
        Returns the endpoint, its token and the secret: shown once."""
        if not system_id.strip() or len(system_id) > 100 or not system_id.isascii():
            raise StoreError("store.bad_endpoint", "a VXP system id is 1 to 100 ASCII characters")
        networks = []
        for source in sources:
            try:
                networks.append(str(ipaddress.ip_network(source.strip(), strict=False)))
            except ValueError:
                raise StoreError(
                    "store.bad_endpoint", f"{source!r} is not an IP address or network (e.g. 10.1.2.0/24)"
                ) from None
        endpoint, token = self._new_endpoint(name, agencies, None, None)
        secret = new_token()
        credential = VxpCredential(
            system_id, box.seal(secret.encode(), system_id), "admin" if admin else "endpoint", tuple(networks)
        )
        self.store.add_endpoint(endpoint, token_hash(token), credential)
        return endpoint, token, secret

    def _new_endpoint(
        self, name: str, agencies: list[str], push_url: str | None, client_cert_fingerprint: str | None
    ) -> tuple[Endpoint, str]:
        if not ENDPOINT_NAME.fullmatch(name):
            raise StoreError(
                "store.bad_endpoint",
                f"endpoint name {name!r}: use 1 to 64 letters, digits, '.', '_', '-' (it appears in paths and logs)",
            )
        if not agencies:
            raise StoreError("store.bad_endpoint", "an endpoint must act for at least one agency")
        if push_url is not None and not push_url.startswith(("https://", "http://")):
            raise StoreError("store.bad_endpoint", f"push URL {push_url!r} must be http:// or https://")
        endpoint = Endpoint(
            name=name,
            mode="push" if push_url else "pull",
            agencies=tuple(agencies),
            created_at=self._now(),
            push_url=push_url,
            client_cert_fingerprint=client_cert_fingerprint,
        )
        return endpoint, new_token()

    def add_role_token(self, role: str, name: str) -> str:
        if role not in ROLES:
            raise StoreError("store.bad_role", f"role must be one of {', '.join(ROLES)}")
        token = new_token()
        self.store.add_role_token(token_hash(token), role, name, self._now())
        return token

    def revoke_role_tokens(self, which: str) -> list[dict[str, Any]]:
        """Revoke the role token with id ``which`` (digits), else every token named ``which``
        (a person leaving loses all their tokens); it stops working at the next request."""
        return self.store.revoke_role_tokens(which.strip(), self._now())
