"""``AxisClient``: agency software's side of the axis HTTP API.

Send (build, sign, POST, verify the signed receipt; retried on connection errors and on the
axis's "busy" answers, which is safe because a resubmission returns the original receipt), read
the inbox with long-poll, fetch and verify what arrives, acknowledge it, send statuses, read
receipts and trails. ``receive`` runs the pull loop with a local dedupe (``adapters.seen``), so
the application's handler sees each package once. ``Client`` is the same, synchronous.

Everything received is verified here too, against the agency's own trust directory: the axis
has checked it, but an agency should not have to take the axis's word for a signature.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
from cryptography import x509

from adapters.seen import Seen
from axis import edxml, keystore, pki, signing
from axis import receipts as receipt_xml
from axis.errors import AdapterError, AxisError, Refused
from axis.store.events import canonical, chain_hash
from axis.verification import VerifiedPackage, verify_package

Progress = Callable[[int, int], None]
"""Called with (bytes done, bytes in all) while a package goes up or comes down."""

CHUNK = 256 * 1024
T = TypeVar("T")


@dataclass(frozen=True)
class Signer:
    """An agency's signing key and certificate (``axis keys issue`` wrote them)."""

    key: pki.PrivateKey
    certificate: x509.Certificate

    @classmethod
    def from_files(cls, key: Path, certificate: Path, passphrase: bytes | None = None) -> Signer:
        return cls(keystore.read_private_key(key, passphrase), keystore.read_certificates(certificate)[0])

    @property
    def organ_id(self) -> str | None:
        return pki.organ_id_of(self.certificate)

    def sign(self, data: bytes) -> bytes:
        return signing.sign(data, self.key, self.certificate)


@dataclass(frozen=True)
class Sent:
    message_id: str
    document_id: str
    recipients: tuple[str, ...]
    receipt: bytes
    """The axis's signed ``accepted`` receipt, as it came."""
    resubmitted: bool
    """The axis already had this package: the receipt is the one it gave the first time."""


@dataclass(frozen=True)
class Entry:
    """One line of the inbox: a package waiting for one of the endpoint's agencies."""

    message_id: str
    kind: str
    sender: str
    recipient: str
    document_id: str
    sha256: str
    size: int
    accepted_at: str

    @classmethod
    def from_json(cls, item: dict[str, Any]) -> Entry:
        return cls(**{name: item[name] for name in cls.__dataclass_fields__})


@dataclass(frozen=True)
class Received:
    """A package fetched and verified here: ``package`` for documents and statuses, ``receipt``
    for the axis's receipts."""

    entry: Entry
    data: bytes
    package: VerifiedPackage | None = None
    receipt: receipt_xml.VerifiedReceipt | None = None


def _retry_after(response: aiohttp.ClientResponse) -> float | None:
    try:
        return float(response.headers["Retry-After"])
    except (KeyError, ValueError):
        return None


async def _refusal(response: aiohttp.ClientResponse) -> Refused:
    """The axis's problem+json as a ``Refused`` with the axis's own code."""
    text = await response.text(errors="replace")
    try:
        body = json.loads(text)
        code, detail = str(body["code"]), str(body.get("detail") or body.get("title") or "")
    except (ValueError, KeyError, TypeError):
        code, detail = f"request.http_{response.status}", text[:300] or response.reason or ""
    return Refused(code, detail, status=response.status, retry_after=_retry_after(response))


def _described(message_id: str, response: aiohttp.ClientResponse, size: int) -> Entry:
    h = response.headers
    return Entry(message_id, h["X-Axis-Kind"], h["X-Axis-Sender"], "", "", h["X-Axis-Sha256"], size, h["X-Axis-Accepted-At"])


def check_events(events: list[dict[str, Any]]) -> None:
    """Recompute each audit event's place in the hash chain: SHA-256(previous + "\\n" + its
    canonical JSON). The events of one message are not contiguous in the chain, so each is checked
    against the hash before it that it names; ``axis audit verify`` checks the whole chain."""
    for event in events:
        content = {k: v for k, v in event.items() if k not in ("seq", "previous", "hash")}
        if chain_hash(event["previous"], canonical(content)) != event["hash"]:
            raise AdapterError(
                "adapter.trail_altered",
                f"audit event {event['seq']} does not match its hash: the trail was altered; report it to the operator",
            )


class AxisClient:
    """One endpoint's connection to the axis. ``trust`` (a trust directory) turns on local
    verification of everything received and of every receipt; ``signer`` signs what is built
    here; ``seen`` (the dedupe) remembers what ``receive`` has handed to the application."""

    def __init__(
        self,
        url: str,
        token: str,
        *,
        trust: Path | None = None,
        signer: Signer | None = None,
        seen: Seen | None = None,
        ssl_context: ssl.SSLContext | None = None,
        attempts: int = 6,
        backoff: float = 0.5,
        timeout: float = 300.0,
    ) -> None:
        self.url = url.rstrip("/")
        self._token = token
        self.trust_dir = trust
        self.signer = signer
        self.seen = seen
        self.attempts = attempts
        self.backoff = backoff
        self._ssl = ssl_context
        self._timeout = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=timeout)
        self._session: aiohttp.ClientSession | None = None
        self._axis_fingerprints: frozenset[str] | None = None

    def __repr__(self) -> str:  # the token never appears in logs or tracebacks
        return f"AxisClient({self.url!r})"

    async def __aenter__(self) -> AxisClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    # ------------------------------------------------------------ transport

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=self._timeout,
                headers={"Authorization": f"Bearer {self._token}"},
                connector=aiohttp.TCPConnector(ssl=self._ssl if self._ssl is not None else True),
            )
        return self._session

    async def _retrying(self, attempt: Callable[[], Awaitable[T]]) -> T:
        """Run ``attempt`` until it works, a refusal that is not transient, or ``attempts`` runs out.
        Connection errors and 429/5xx answers are retried with capped exponential backoff and jitter,
        honouring the axis's ``Retry-After``."""
        delay = self.backoff
        for number in range(1, self.attempts + 1):
            try:
                return await attempt()
            except Refused as refused:
                if not refused.transient or number == self.attempts:
                    raise
                wait = refused.retry_after if refused.retry_after is not None else delay
            except (TimeoutError, aiohttp.ClientError) as error:  # refused, reset, cut short, not JSON
                if number == self.attempts:
                    raise AdapterError(
                        "adapter.unreachable",
                        f"the axis at {self.url} did not answer after {self.attempts} attempts ({error or type(error).__name__});"
                        " check the URL and the network, then try again",
                    ) from None
                wait = delay
            await asyncio.sleep(min(wait, 60.0) * random.uniform(0.8, 1.2))  # noqa: S311 - jitter, not a secret
            delay = min(delay * 2, 30.0)
        raise AssertionError("unreachable")

    async def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        async def attempt() -> Any:
            async with self._http().request(method, self.url + path, **kwargs) as response:
                if response.status >= 400:
                    raise await _refusal(response)
                return await response.json()

        return await self._retrying(attempt)

    # ------------------------------------------------------------ sending

    async def send(self, data: bytes, progress: Progress | None = None) -> Sent:
        """POST a signed package; return the axis's answer once its receipt has been checked."""

        async def body() -> AsyncIterator[bytes]:
            for start in range(0, len(data), CHUNK):
                yield data[start : start + CHUNK]
                if progress is not None:
                    progress(min(start + CHUNK, len(data)), len(data))

        async def attempt() -> tuple[int, Any]:
            headers = {"Content-Type": "application/xml", "Content-Length": str(len(data))}
            async with self._http().post(self.url + "/v1/messages", data=body(), headers=headers) as response:
                if response.status >= 400:
                    raise await _refusal(response)
                return response.status, await response.json()

        status, answer = await self._retrying(attempt)
        receipt = answer["receipt"].encode()
        sent = Sent(
            message_id=answer["message_id"],
            document_id=answer["document_id"],
            recipients=tuple(answer["recipients"]),
            receipt=receipt,
            resubmitted=status == 200,
        )
        if self.trust_dir is not None:
            try:
                checked = (await self.verify_receipt(receipt)).receipt
            except (AdapterError, Refused):
                raise
            except AxisError as error:
                raise AdapterError(
                    "adapter.receipt_mismatch",
                    f"the axis accepted {sent.message_id} but its receipt does not verify ({error}); keep the package and report it to the operator",
                ) from None
            if checked.kind != "accepted" or checked.message_id != sent.message_id or checked.package_sha256 != hashlib.sha256(data).hexdigest():
                raise AdapterError(
                    "adapter.receipt_mismatch",
                    f"the axis's receipt for {sent.message_id} does not name this package; keep the package and report it to the operator",
                )
        return sent

    def _signed(self, package: edxml.Package) -> bytes:
        if self.signer is None:
            raise AdapterError("adapter.no_key", "building a package needs the agency's key and certificate (--key, --cert)")
        return self.signer.sign(edxml.build(package))

    async def send_package(self, package: edxml.Package, progress: Progress | None = None) -> tuple[Sent, bytes]:
        """Build, sign and send; return the answer and the signed bytes (the agency's evidence)."""
        data = self._signed(package)
        return await self.send(data, progress), data

    async def send_status(
        self, document: edxml.DocumentPackage | VerifiedPackage, sender: edxml.Organization, code: str, description: str | None = None
    ) -> Sent:
        """Report a processing status (01–06, 15, 16; 13 from the original sender) about a document."""
        original = document.package if isinstance(document, VerifiedPackage) else document
        assert isinstance(original, edxml.DocumentPackage)
        status = edxml.StatusPackage(
            sender=sender,
            response_for=edxml.ResponseFor(organ_id=original.sender.organ_id, document_id=original.document_id),
            status_code=code,
            timestamp=datetime.now(UTC).astimezone().strftime("%Y/%m/%d %H:%M:%S"),
            description=description,
        )
        sent, _ = await self.send_package(status)
        return sent

    # ------------------------------------------------------------ receiving

    async def inbox(self, agency: str | Sequence[str] | None = None, wait: float = 0, limit: int | None = None) -> list[Entry]:
        """What waits for ``agency`` (one OrganId or several; default every agency of the endpoint)."""
        params: list[tuple[str, str]] = [("wait", f"{wait:g}")]
        params += [("agency", a) for a in ([agency] if isinstance(agency, str) else agency or [])]
        if limit is not None:
            params.append(("limit", str(limit)))
        answer = await self._json("GET", "/v1/inbox", params=params)
        return [Entry.from_json(item) for item in answer["items"]]

    async def fetch(self, message_id: str, progress: Progress | None = None) -> bytes:
        """The package's original bytes, checked against the SHA-256 the axis stored."""
        return (await self.download(message_id, progress))[1]

    async def download(self, message_id: str, progress: Progress | None = None) -> tuple[Entry, bytes]:
        """``fetch``, with what the axis says of the package (kind, sender, acceptance time)."""

        async def attempt() -> tuple[Entry, bytes]:
            async with self._http().get(f"{self.url}/v1/messages/{message_id}") as response:
                if response.status >= 400:
                    raise await _refusal(response)
                total = response.content_length or 0
                parts, done = [], 0
                async for chunk in response.content.iter_chunked(CHUNK):
                    parts.append(chunk)
                    done += len(chunk)
                    if progress is not None:
                        progress(done, max(total, done))
                data = b"".join(parts)
                if hashlib.sha256(data).hexdigest() != response.headers.get("X-Axis-Sha256"):
                    raise AdapterError("adapter.corrupt_download", f"{message_id} arrived with other bytes than the axis stored; fetch it again")
                return _described(message_id, response, len(data)), data

        return await self._retrying(attempt)

    async def describe(self, message_id: str) -> Entry:
        """What the axis holds under ``message_id`` for this endpoint (kind, sender, SHA-256,
        acceptance time), from the headers of a fetch whose body is left unread. The push receiver
        confirms each push with it."""

        async def attempt() -> Entry:
            async with self._http().get(f"{self.url}/v1/messages/{message_id}") as response:
                if response.status >= 400:
                    raise await _refusal(response)
                return _described(message_id, response, response.content_length or 0)

        return await self._retrying(attempt)

    async def ack(self, message_id: str, agency: str | None = None, status: bytes | None = None) -> dict[str, Any]:
        """Acknowledge a pulled package (all deliveries to this endpoint's agencies, or ``agency``'s),
        optionally with the signed status 01 as the body."""
        params = {"agency": agency} if agency is not None else {}
        headers = {"Content-Type": "application/xml"} if status else {}
        answer: dict[str, Any] = await self._json(
            "POST", f"/v1/messages/{message_id}/ack", params=params, data=status or b"", headers=headers
        )
        return answer

    async def refuse(self, message_id: str, agency: str | None = None, reason: str | None = None) -> list[str]:
        """The recipient's software cannot take a pulled package: its deliveries (to this endpoint's
        agencies, or ``agency``'s) end as dead letters and the sender gets signed ``failed``
        receipts. Returns the recipients refused now (none when it was refused already)."""
        params = {"agency": agency} if agency is not None else {}
        body = json.dumps({"reason": reason} if reason else {}).encode()
        answer: dict[str, Any] = await self._json(
            "POST", f"/v1/messages/{message_id}/refuse", params=params, data=body,
            headers={"Content-Type": "application/json"},
        )
        return list(answer["refused"])

    async def agencies(self) -> list[dict[str, Any]]:
        """The axis's agency directory (OrganId, name, form, parent, status)."""
        answer = await self._json("GET", "/v1/agencies")
        items: list[dict[str, Any]] = answer["items"]
        return items

    async def receipts(self, message_id: str) -> list[dict[str, Any]]:
        answer = await self._json("GET", f"/v1/messages/{message_id}/receipts")
        items: list[dict[str, Any]] = answer["items"]
        return items

    async def trail(self, message_id: str) -> dict[str, Any]:
        """The message's deliveries, statuses and audit events; every event's hash is recomputed
        here (``check_events``), so an event altered after it was chained is noticed."""
        answer: dict[str, Any] = await self._json("GET", f"/v1/messages/{message_id}/trail")
        check_events(answer["events"])
        return answer

    # ------------------------------------------------------------ local verification

    def _trust(self) -> pki.Trust:
        """The trust directory, read now (CRLs are replaced while adapters run). A directory that
        cannot be read is this side's trouble (``adapter.no_trust``, retried), never a package's."""
        if self.trust_dir is None:
            raise AdapterError("adapter.no_trust", "verifying needs the trust directory of the state CA (--trust)")
        try:
            return keystore.read_trust(self.trust_dir)
        except AxisError as error:
            raise AdapterError("adapter.no_trust", f"the trust directory {self.trust_dir} cannot be read now: {error}") from None

    async def axis_fingerprints(self) -> frozenset[str]:
        """The axis's receipt-signing certificate, fetched once and checked against the trust
        directory: a receipt signed by any other certificate, even one from the same CA, is refused."""
        if self._axis_fingerprints is None:

            async def attempt() -> bytes:
                async with self._http().get(self.url + "/v1/axis/certificate") as response:
                    if response.status >= 400:
                        raise await _refusal(response)
                    return await response.read()

            certificate = pki.load_certificates(await self._retrying(attempt))[0]
            pki.validate(certificate, (), self._trust(), datetime.now(UTC))
            self._axis_fingerprints = frozenset({pki.fingerprint(certificate)})
        return self._axis_fingerprints

    async def verify_receipt(self, data: bytes) -> receipt_xml.VerifiedReceipt:
        """A receipt signed by the axis certificate; when it names another, the certificate is
        fetched again once (the axis may have rolled its key over) before the receipt is refused."""
        trust = self._trust()
        try:
            return await asyncio.to_thread(receipt_xml.verify, data, trust, await self.axis_fingerprints())
        except AxisError as error:
            if error.code != "signature.not_axis":
                raise
            self._axis_fingerprints = None
            return await asyncio.to_thread(receipt_xml.verify, data, trust, await self.axis_fingerprints())

    async def verify(self, entry: Entry, data: bytes) -> Received:
        """Check a fetched package here: an agency's signature at its acceptance time, or the
        axis's signature on a receipt."""
        trust = self._trust()  # raises adapter.no_trust: the caller retries, the package is not judged
        if entry.kind == "receipt":
            return Received(entry, data, receipt=await self.verify_receipt(data))
        at = datetime.fromisoformat(entry.accepted_at)
        return Received(entry, data, package=await asyncio.to_thread(verify_package, data, trust, at))

    async def receive(
        self,
        handler: Callable[[Received], Awaitable[None]],
        *,
        agency: str | Sequence[str] | None = None,
        wait: float = 30,
        stop: asyncio.Event | None = None,
        rejected: Callable[[Entry, bytes, AxisError], Awaitable[None]] | None = None,
    ) -> None:
        """The pull loop: list (long-poll), fetch, verify, hand to ``handler``, remember, acknowledge.

        A package already handed (the axis delivers at least once) is acknowledged again without
        handing it twice. A package that fails verification here goes to ``rejected`` instead, is
        remembered with its refusal code and is acknowledged too: the transport did deliver it, and
        the agency answers a bad package with a status, not by holding the axis's queue. The handler
        runs before the package is remembered: a process killed inside it sees the package again.
        Runs until ``stop`` is set.
        """
        if self.seen is None:
            raise AdapterError("adapter.no_state", "receiving needs a state file for the local dedupe")
        stop = stop or asyncio.Event()
        while not stop.is_set():
            for entry in await self.inbox(agency, wait=wait):
                if not self.seen.has(entry.message_id, entry.recipient):
                    data = await self.fetch(entry.message_id)
                    try:
                        received = await self.verify(entry, data)
                    except (AdapterError, Refused):
                        raise  # the axis certificate or trust could not be read: not the package's fault
                    except AxisError as error:
                        if rejected is not None:
                            await rejected(entry, data, error)
                        self.seen.add(entry.message_id, entry.recipient, entry.kind, error.code)
                    else:
                        await handler(received)
                        self.seen.add(entry.message_id, entry.recipient, entry.kind, "handed")
                await self.ack(entry.message_id, agency=entry.recipient)
                if stop.is_set():
                    return


class Client:
    """``AxisClient`` for synchronous code (scripts, the CLI): every coroutine method runs to the
    end on a private event loop. ``with Client(url, token, ...) as client: client.send(data)``."""

    def __init__(self, url: str, token: str, **options: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self.async_client = AxisClient(url, token, **options)

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return self._loop.run_until_complete(coroutine)

    def __getattr__(self, name: str) -> Any:
        member = getattr(self.async_client, name)
        if not asyncio.iscoroutinefunction(member):
            return member
        return lambda *args, **kwargs: self.run(member(*args, **kwargs))

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if not self._loop.is_closed():
            self._loop.run_until_complete(self.async_client.close())
            self._loop.close()
