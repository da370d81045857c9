"""The operator's client protocol ("VXP") as its Java SDK speaks it: bytes and headers in, values
out, no I/O and no clock (``../shared/VXP.md`` is the source of every rule here).

Requests. Every parameter the application ever gave a service object travels as an
``XroadVnpt-<name>`` header, and the whole set is signed: ``XroadVnpt-sign-header`` is a JSON
object of them, ``XroadVnpt-hash-header`` its HMAC-SHA256 under the system's secret (as text).
Only that signed JSON is read here; the individual headers repeat it and are not needed (HTTP
folds the case of their names, and the SDK sends ``docId`` and ``docid`` as two parameters).
Parameters accumulate on a service object, so a request carries values left by earlier calls;
:class:`Params` says how a method's parameter is found among them.

Answers. The SDK reads ``status``, ``ErrorCode`` and ``ErrorDesc`` unconditionally, then the
method's own keys (``DocId``, ``data``, ``count``) — on a FAIL too for some methods; a missing
key or a JSON ``null`` anywhere it reads makes the application see nothing at all. So every
answer carries every key of its method (:data:`ANSWER_KEYS`), items never hold ``null``, and
the JSON is ASCII (``sendEdoc``'s answer is decoded as US-ASCII).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from axis.errors import RequestRefused

PREFIX = "XroadVnpt-"
SIGNATURE_HEADERS = ("sign-header-key", "sign-header", "hash-header")
VIETNAM = timezone(timedelta(hours=7))
"""The SDK writes its timestamp in the JVM's zone; agency machines run in Vietnam's."""
TIMESTAMP = re.compile(r"(\d{2})(\d{2})(\d{4})T(\d{2})(\d{2})(\d{2})\+(\d{4})", re.ASCII)
"""``ddMMyyyy'T'HHmmss+SSSS``: the four digits after ``+`` are milliseconds, not a zone."""
ABSENT = ("", "null", "undefined")
"""Values applications write for "no value" (``"docId": null`` in their own JSON text)."""
CRLF = b"\r\n"
"""What the SDK appends to the file it sends, outside ``hash-file``."""
MAX_SIGNED_HEADER = 64 * 1024
"""The SDK's signed header holds a dozen short parameters; anything far larger is not the SDK."""

OK, FAIL, SUCCESS = "OK", "FAIL", "Success"
ANSWER_KEYS: dict[str, dict[str, Any]] = {
    "sendEdoc": {"DocId": ""},
    "getEdoc": {"data": ""},
    "getReceivedEdocList": {"data": []},
    "getSentEdocList": {"data": []},
    "countReceiveEdoc": {"count": 0},
    "countReceiveStatus": {"count": 0},
    "getAgenciesList": {"data": []},
    "getAgenciesListQD20": {"data": []},
    "getSynchronizeUnit": {"data": []},
    "updateStatus": {},
    "registerAgency": {},
    "deleteAgency": {},
}
"""Beside the envelope, the keys each JSON method reads, with the value a FAIL answer carries."""
DOWNLOAD = "downloadEdoc"
"""The one method answered with the package's raw bytes (and refused with an empty body)."""
REFUSAL_HEADER, REFUSAL_DETAIL_HEADER = "X-Axis-Refusal", "X-Axis-Refusal-Detail"
"""Where a ``downloadEdoc`` refusal's code and sentence go: the SDK saves any body as the package."""


@dataclass(frozen=True)
class Params:
    """The signed parameters of one request, in the order signed.

    A name is found by its exact spelling first, then ignoring case (``docid`` for ``docId``),
    the first signed one winning; values applications write for "nothing" count as absent. A
    parameter left by an earlier call on the same service object is indistinguishable from a
    fresh one, so no method refuses a request for carrying extra parameters.
    """

    items: tuple[tuple[str, str], ...]

    def get(self, name: str) -> str | None:
        exact = [v for n, v in self.items if n == name]
        folded = exact or [v for n, v in self.items if n.lower() == name.lower()]
        value = folded[0].strip() if folded else None
        return None if value is None or value in ABSENT else value

    def require(self, name: str) -> str:
        value = self.get(name)
        if value is None:
            raise RequestRefused("request.invalid", f"this method needs the parameter {name!r} in jsonHeaders")
        return value


@dataclass(frozen=True)
class SignedRequest:
    """What an HMAC-signed request claims before its signature is checked."""

    system_id: str
    signed: bytes
    """The ``sign-header`` value exactly as its bytes arrived."""
    digest: str
    names: tuple[str, ...]


def read_signature(headers: Mapping[str, str]) -> SignedRequest:
    """The signature headers of a request (``headers`` decoded as aiohttp does: UTF-8 with
    surrogate escapes, so encoding back gives the bytes sent)."""
    system_id = headers.get(PREFIX + "systemid", "")
    names_text, signed, digest = (headers.get(PREFIX + n) for n in SIGNATURE_HEADERS)
    if not system_id or not names_text or not signed or not digest:
        raise RequestRefused(
            "auth.vxp_unsigned",
            f"send {PREFIX}systemid, {PREFIX}sign-header-key, {PREFIX}sign-header and {PREFIX}hash-header"
            " (the SDK always does; downloadEdoc2 sends none and cannot be answered: use downloadEdoc)",
        )
    if not (system_id + digest).isascii():  # both are ASCII when the SDK writes them
        raise RequestRefused("auth.vxp_bad_signature", f"{PREFIX}systemid and {PREFIX}hash-header must be ASCII")
    if len(signed) > MAX_SIGNED_HEADER:
        raise RequestRefused("auth.vxp_header_mismatch", f"the signed header is over {MAX_SIGNED_HEADER} bytes")
    names = tuple(n.strip() for n in names_text.split(";") if n.strip())
    return SignedRequest(system_id.strip(), signed.encode("utf-8", "surrogateescape"), digest.strip().lower(), names)


def signature(signed: bytes, secret: bytes) -> str:
    """The SDK's ``hash-header``: lower-case hex HMAC-SHA256 of the signed header's bytes."""
    return hmac.new(secret, signed, hashlib.sha256).hexdigest()


def verify(request: SignedRequest, secret: bytes) -> Params:
    """Check the HMAC (constant time) and the signed JSON; the signed parameters, the only ones
    with authority. ``systemid`` and ``timestamp`` must be signed and the system id must be the
    one the credential was looked up by."""
    if not hmac.compare_digest(signature(request.signed, secret), request.digest):
        try:
            request.signed.decode("utf-8")
        except UnicodeDecodeError:
            raise RequestRefused(
                "auth.vxp_non_ascii",
                "a parameter holds non-ASCII characters, and their bytes arrived altered, so they cannot"
                " match their HMAC (the SDK sends each character's low 8 bits when the endpoint URL names"
                " a port): write the endpoint URL without a port, or send ASCII values",
            ) from None
        raise RequestRefused("auth.vxp_bad_signature", "the HMAC of the signed header does not match this system's secret")
    try:
        text = request.signed.decode("utf-8")
        pairs = json.loads(text, object_pairs_hook=list) if text.lstrip().startswith("{") else None
    except (ValueError, RecursionError):
        pairs = None
    if not isinstance(pairs, list) or not all(isinstance(p, tuple) and isinstance(p[1], str) for p in pairs):
        raise RequestRefused("auth.vxp_header_mismatch", "the signed header is not a JSON object of strings")
    signed_names = [n for n, _ in pairs]
    if len(set(signed_names)) != len(signed_names) or signed_names != [PREFIX + n for n in request.names]:
        raise RequestRefused(
            "auth.vxp_header_mismatch",
            f"the signed header must name {PREFIX}<name> for each name of sign-header-key, in its order",
        )
    params = Params(tuple((n.removeprefix(PREFIX), v) for n, v in pairs))
    names = {n for n, _ in params.items}
    if "systemid" not in names or "timestamp" not in names:
        raise RequestRefused("auth.vxp_unsigned", "systemid and timestamp must be among the signed parameters")
    if dict(params.items)["systemid"] != request.system_id:
        raise RequestRefused("auth.vxp_header_mismatch", f"the header {PREFIX}systemid differs from its signed value")
    parse_timestamp(dict(params.items)["timestamp"])
    return params


def parse_timestamp(text: str) -> datetime:
    match = TIMESTAMP.fullmatch(text)
    if match is None:
        raise RequestRefused("auth.vxp_timestamp", f"the timestamp {text!r} is not ddMMyyyyTHHmmss+SSSS")
    day, month, year, hour, minute, second, millis = (int(g) for g in match.groups())
    try:
        return datetime(year, month, day, hour, minute, second, millis * 1000, tzinfo=VIETNAM)
    except ValueError:
        raise RequestRefused("auth.vxp_timestamp", f"the timestamp {text!r} is not a real time") from None


def format_timestamp(at: datetime) -> str:
    local = at.astimezone(VIETNAM)
    return f"{local:%d%m%Y}T{local:%H%M%S}+{local.microsecond // 1000:04d}"


def sign(params: Mapping[str, str], secret: bytes) -> dict[str, str]:
    """The headers the SDK sends for ``params`` (which must hold ``systemid`` and ``timestamp``),
    in the same order: what a client of this protocol sends."""
    signed = json.dumps({PREFIX + n: v for n, v in params.items()}, ensure_ascii=False, separators=(",", ":"))
    return {
        **{PREFIX + n: v for n, v in params.items()},
        PREFIX + "sign-header-key": ";".join(params),
        PREFIX + "sign-header": signed,
        PREFIX + "hash-header": signature(signed.encode(), secret),
    }


def file_hash(data: bytes) -> str:
    """``hash-file`` as the SDK writes it: SHA-256, each byte in hex without zero-padding."""
    return _unpadded(hashlib.sha256(data).digest())


def _unpadded(digest: bytes) -> str:
    return "".join(f"{b:x}" for b in digest)


def sent_file(body: bytes, hash_file: str | None) -> bytes:
    """The file a ``sendEdoc`` body carries. The SDK sends the file's bytes and then CRLF, and
    signs the file's SHA-256 as ``hash-file`` (standard or unpadded hex): the one of ``body``
    without its final CRLF, or ``body`` itself (a client that sends the file alone), whose digest
    matches is the file."""
    if hash_file is None:
        raise RequestRefused(
            "request.hash_mismatch", "sendEdoc needs the signed parameter hash-file, the SHA-256 of the file sent"
        )
    claimed = hash_file.strip().lower()
    candidates = [body[: -len(CRLF)], body] if body.endswith(CRLF) else [body]
    for candidate in candidates:
        digest = hashlib.sha256(candidate).digest()
        if claimed in (digest.hex(), _unpadded(digest)):
            return candidate
    raise RequestRefused("request.hash_mismatch", "hash-file is not the SHA-256 of the file sent")


def answer(method: str, fields: Mapping[str, Any] | None = None) -> bytes:
    """A successful answer: the envelope, the method's keys (defaults filled), ``fields``."""
    return _encode({"status": OK, "ErrorCode": "0", "ErrorDesc": SUCCESS, **ANSWER_KEYS[method], **(fields or {})})


def refusal(method: str | None, code: str, message: str) -> bytes:
    """A FAIL answer that still carries every key ``method`` reads (an unknown method: envelope only)."""
    return _encode({"status": FAIL, "ErrorCode": code, "ErrorDesc": message, **ANSWER_KEYS.get(method or "", {})})


def package_data(data: bytes) -> str:
    """``getEdoc``'s ``data``: the package in base64 (the SDK decodes it)."""
    return base64.b64encode(data).decode("ascii")


def _encode(body: dict[str, Any]) -> bytes:
    return json.dumps(_without_nulls(body), ensure_ascii=True, separators=(",", ":")).encode("ascii")


def _without_nulls(value: Any) -> Any:
    """Items lose their ``None`` keys: the SDK aborts a whole list on one ``null``."""
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value
