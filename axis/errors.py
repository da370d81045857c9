"""Every refusal the axis can give, under one root.

    AxisError                  code, message, fields
    ├── XMLRefused             xml.*          the bytes are not acceptable XML (pre-check, parser)
    ├── PackageRefused         edxml.*        well-formed XML that is not an acceptable edXML package
    ├── IdentifierError        identifier.*   an OrganId or DocumentId of the wrong shape
    ├── SignatureRefused       signature.*    the XML signature breaks the signature policy or does not verify
    ├── CertificateRefused     certificate.*  the signer's certificate is not trusted at the time checked
    ├── KeyStoreError          keystore.*     key material missing, unreadable or already present
    ├── StoreError             store.*        the durable store cannot do what was asked, or found damage
    ├── RoutingRefused         sender.* recipient.* message.* status.*
    │                                         a verified package the registry does not let through
    ├── RequestRefused         auth.* request.*   an HTTP request refused before or beside the package checks
    ├── AdapterError           adapter.*      agency-side software (client, folder bridge, webhook) cannot go on
    └── Refused                any code       the axis refused a request: its code, as the axis gave it

The ``code`` is stable and machine-readable: the HTTP API, the CLI and the logs all use the same
string. The ``message`` is a sentence a person can act on. Extra ``fields`` (line, column, the
offending value) travel with the error for structured output; they never carry secrets.
"""

from __future__ import annotations

from typing import Any


class AxisError(Exception):
    """Root of every refusal; ``code`` names the refusal, ``message`` says what to do about it."""

    prefix = "axis"
    prefixes: tuple[str, ...] = ()
    """Further code prefixes a class may use beside ``prefix``."""

    def __init__(self, code: str, message: str, **fields: Any) -> None:
        if code.split(".", 1)[0] not in (self.prefix, *self.prefixes) or "." not in code:
            raise ValueError(f"refusal code {code!r} must start with one of {(self.prefix, *self.prefixes)}")
        super().__init__(message)
        self.code = code
        self.message = message
        self.fields = fields

    def __reduce__(self) -> tuple[Any, ...]:
        """Refusals cross process boundaries (the verification pool) with their code and fields."""
        return (_restore, (type(self), self.code, self.message, self.fields))

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"

    def as_dict(self) -> dict[str, Any]:
        return {"code": self.code, "detail": self.message, **self.fields}


def _restore(cls: type[AxisError], code: str, message: str, fields: dict[str, Any]) -> AxisError:
    return cls(code, message, **fields)


class XMLRefused(AxisError):
    prefix = "xml"


class PackageRefused(AxisError):
    prefix = "edxml"


class IdentifierError(AxisError):
    prefix = "identifier"


class SignatureRefused(AxisError):
    prefix = "signature"


class CertificateRefused(AxisError):
    prefix = "certificate"


class KeyStoreError(AxisError):
    prefix = "keystore"


class StoreError(AxisError):
    prefix = "store"


class RoutingRefused(AxisError):
    """Step 4 of the path (authorise): a valid, verified package the registry does not let through."""

    prefix = "sender"
    prefixes = ("recipient", "message", "status")


class RequestRefused(AxisError):
    """An HTTP request refused for who sent it or how (credentials, size, media type, load)."""

    prefix = "request"
    prefixes = ("auth",)


class AdapterError(AxisError):
    """Agency-side trouble: the axis unreachable, a description that does not make a package,
    a package the adapter does not serve."""

    prefix = "adapter"


class Refused(AxisError):
    """What the axis answered to a request it refused, read back from its problem+json: the same
    stable code the axis gave, the HTTP status, and how long it asked to wait (``Retry-After``)."""

    def __init__(self, code: str, message: str, *, status: int, retry_after: float | None = None) -> None:
        if "." not in code:
            code = f"request.{code}"
        Exception.__init__(self, message)
        self.code = code
        self.message = message
        self.fields = {"status": status}
        self.status = status
        self.retry_after = retry_after

    def __reduce__(self) -> tuple[Any, ...]:
        return (_refused, (self.code, self.message, self.status, self.retry_after))

    @property
    def transient(self) -> bool:
        """Worth sending again later: the axis is busy, draining or short of disk."""
        return self.status == 429 or self.status >= 500


def _refused(code: str, message: str, status: int, retry_after: float | None) -> Refused:
    return Refused(code, message, status=status, retry_after=retry_after)
