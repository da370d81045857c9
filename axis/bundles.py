"""Export bundles: the evidence about some messages in one ZIP an auditor takes away, and its
offline check (``axis audit export``, ``axis verify-bundle``; docs/auditors.md).

A bundle holds, for each message: the package bytes exactly as received, its signed receipts, and
its audit events, each with an RFC 6962 inclusion proof to a signed checkpoint of the log. Beside
them: those checkpoints, the axis certificate, the axis's trust directory (CA certificates and
CRLs) and ``manifest.json``, which lists every member with its SHA-256 and is signed by the axis
key (``manifest.sig``). Members are written as they are read, one message at a time: a month of a
ministry's traffic never has to fit in memory (the manifest grows by a few hundred bytes per
message).

``verify`` needs nothing but the bundle, the auditor's own trust directory and, optionally, the
axis certificate to pin and the checkpoints a witness kept. It checks every member against the
manifest, the manifest's signature, every checkpoint's signature (and each against the witness's
copy), every package's signature at its acceptance time, every receipt, and every event's
inclusion in its checkpoint; each fault names the member it concerns.
"""

from __future__ import annotations

import base64
import collections
import hashlib
import json
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import IO, Any

from cryptography import x509

from axis import checkpoints, keystore, merkle, pki, receipts, xmlguard
from axis.errors import AxisError, RequestRefused, RoutingRefused, StoreError
from axis.store import Message, Store
from axis.store.events import Event, chain_hash
from axis.verification import verify_package

FORMAT = "axis-bundle/1"
MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
AXIS_CERTIFICATE = "axis-certificate.pem"
PIECE = 1 << 20
TREES = 8
"""Checkpoint trees an export keeps (each at most ``checkpoints.MAX_RANGE`` leaves)."""
LARGEST_PACKAGE = xmlguard.DEFAULT_LIMITS.max_bytes
LARGEST_OTHER = 64 << 20
"""Members read whole (packages, receipts, JSON) are refused past these sizes before they are
read: a bundle is input, and a small ZIP can claim a huge member."""


# ---------------------------------------------------------------- export


@dataclass(frozen=True)
class Exported:
    messages: int
    members: int
    checkpoint: int
    """The number of the latest checkpoint, which covers every event exported."""


class _Checkpoints:
    """The log's checkpoints, found by the events they cover (binary search on their numbers,
    a few fetched at a time), and the Merkle tree of the last one used."""

    def __init__(self, store: Store, latest: checkpoints.Signed) -> None:
        self.store = store
        self.count = latest.checkpoint.number
        self.last = latest.checkpoint.last
        """The last event any checkpoint covers."""
        self.known: dict[int, checkpoints.Signed] = {self.count: latest}
        self.used: dict[int, checkpoints.Signed] = {}
        self.trees: collections.OrderedDict[int, merkle.Tree] = collections.OrderedDict()
        """The trees of the checkpoints used last (a message's events fall in a few of them)."""

    def numbered(self, number: int) -> checkpoints.Signed:
        if number not in self.known:
            if len(self.known) > 10_000:
                self.known.clear()
            (found,) = self.store.checkpoints(after=number - 1, limit=1)
            self.known[number] = checkpoints.Signed.of(json.loads(found.content))
        return self.known[number]

    def covering(self, seq: int) -> checkpoints.Signed:
        low, high = 1, self.count
        while low <= high:
            middle = (low + high) // 2
            signed = self.numbered(middle)
            if seq < signed.checkpoint.first:
                high = middle - 1
            elif seq > signed.checkpoint.last:
                low = middle + 1
            else:
                self.used[middle] = signed
                return signed
        raise StoreError("store.chain_broken", f"no checkpoint of the log covers event {seq}")

    def proof(self, event: Event) -> dict[str, Any]:
        signed = self.covering(event.seq)
        c = signed.checkpoint
        tree = self.trees.get(c.number)
        if tree is None:
            leaves = (checkpoints.leaf(e.content) for e in self.store.events(c.first) if e.seq <= c.last)
            tree = self.trees[c.number] = merkle.Tree(_until(leaves, c.last - c.first + 1))
            if len(self.trees) > TREES:
                self.trees.popitem(last=False)
        self.trees.move_to_end(c.number)
        return {
            "checkpoint": c.number,
            "index": event.seq - c.first,
            "size": c.last - c.first + 1,
            "path": [h.hex() for h in tree.proof(event.seq - c.first)],
        }


def _until(items: Iterator[bytes] | Iterable[bytes], count: int) -> Iterator[bytes]:
    for n, item in enumerate(items):
        if n >= count:
            return
        yield item


def select(
    store: Store, message_id: str | None = None, start: date | None = None, end: date | None = None,
    agency: str | None = None,
) -> tuple[Iterable[Message], dict[str, Any]]:
    """What to export (one message, or a period's, read a page at a time) and the query as the
    manifest records it. ``message.not_found``, or ``request.invalid`` for neither or both."""
    if (message_id is None) == (start is None or end is None):
        raise RequestRefused("request.invalid", "export one message, or a period (from and to), not both")
    if message_id is not None:
        message = store.message(message_id)
        if message is None:
            raise RoutingRefused("message.not_found", f"no message {message_id}")
        return [message], {"message_id": message_id}
    assert start is not None and end is not None
    return _period(store, start.isoformat(), end.isoformat(), agency), {
        "from": start.isoformat(), "to": end.isoformat(), "agency": agency,
    }


def _period(store: Store, start: str, end: str, agency: str | None) -> Iterator[Message]:
    after = ""
    while page := store.accepted_between(start, end, agency, after):
        yield from page
        after = page[-1].id


def export(
    store: Store,
    messages: Iterable[Message],
    trust_directory: Path,
    key: pki.PrivateKey,
    certificate: x509.Certificate,
    out: Path,
    query: dict[str, Any],
) -> Exported:
    """Write the bundle of ``messages`` to the file ``out``: whole, or not at all (it is written
    beside it and renamed when complete). A checkpoint is made first, so that every event exported
    is covered by one (another node making one at the same moment is fine: it covers them too)."""
    partial = out.with_name(out.name + ".partial")
    try:
        with partial.open("wb") as handle:
            made = _export(store, messages, trust_directory, key, certificate, handle, query)
        partial.replace(out)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return made


def _export(
    store: Store, messages: Iterable[Message], trust_directory: Path, key: pki.PrivateKey,
    certificate: x509.Certificate, out: IO[bytes], query: dict[str, Any],
) -> Exported:
    now = datetime.now(UTC)
    try:
        checkpoints.checkpoint(store, key, certificate, now, force=True)
    except StoreError as error:
        if error.code != "store.conflict":
            raise
    latest = checkpoints.latest(store)
    if latest is None:
        raise StoreError("store.chain_broken", "the audit log is empty: there is nothing to export")
    covering = _Checkpoints(store, latest)
    members: dict[str, str] = {}
    entries: list[dict[str, Any]] = []
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as bundle:

        def write(name: str, pieces: Iterable[bytes]) -> None:
            digest = hashlib.sha256()
            with bundle.open(name, "w", force_zip64=True) as member:
                for piece in pieces:
                    digest.update(piece)
                    member.write(piece)
            members[name] = digest.hexdigest()

        for message in messages:
            folder = f"messages/{message.id}"
            write(f"{folder}/package.xml", _pieces(store.blobs.open(message.sha256)))
            receipt_names = []
            for n, (kind, recipient, xml) in enumerate(store.receipts(message.id), start=1):
                name = f"{folder}/receipts/{n:02d}-{kind}{'-' + recipient if recipient else ''}.xml"
                write(name, [xml])
                receipt_names.append(name)
            events = [  # those logged after the checkpoint above go into a later export
                {"seq": e.seq, "content": e.content, "previous": e.previous, "hash": e.hash, **covering.proof(e)}
                for e in store.message_events(message.id)
                if e.seq <= covering.last
            ]
            write(f"{folder}/events.json", [json.dumps(events, ensure_ascii=False, indent=1).encode()])
            entries.append(
                {
                    "id": message.id, "kind": message.kind, "sender": message.sender,
                    "document_id": message.document_id, "sha256": message.sha256, "accepted_at": message.accepted_at,
                    "package": f"{folder}/package.xml", "receipts": receipt_names, "events": f"{folder}/events.json",
                }
            )
        for _, signed in sorted(covering.used.items()):
            write(f"checkpoints/{checkpoints.kept_name(signed)}", [json.dumps(signed.as_json(), indent=2).encode()])
        write(AXIS_CERTIFICATE, [pki.certificate_pem(certificate)])
        trust = keystore.read_trust(trust_directory)  # parsed and written again: nothing else in those files leaves
        for anchor in trust.anchors:
            write(f"trust/{pki.fingerprint(anchor)[:16]}.pem", [pki.certificate_pem(anchor)])
        for n, crl in enumerate(trust.crls, start=1):
            write(f"trust/crl-{n:02d}.crl", [pki.crl_pem(crl)])
        manifest = json.dumps(
            {
                "format": FORMAT, "created_at": now.isoformat(), "axis": pki.fingerprint(certificate),
                "query": query, "checkpoint": covering.count, "messages": entries, "members": members,
            },
            ensure_ascii=False, indent=1,
        ).encode()
        bundle.writestr(MANIFEST, manifest)
        bundle.writestr(SIGNATURE, base64.b64encode(pki.sign_bytes(key, manifest)))
    return Exported(len(entries), len(members) + 2, covering.count)


def _pieces(stored: bytes | Path | Iterator[bytes]) -> Iterator[bytes]:
    if isinstance(stored, bytes):
        yield stored
        return
    if not isinstance(stored, Path):
        yield from stored
        return
    with stored.open("rb") as handle:
        while piece := handle.read(PIECE):
            yield piece


# ---------------------------------------------------------------- offline verification


@dataclass
class BundleReport:
    bundle: str
    valid: bool = True
    created_at: str | None = None
    axis: str | None = None
    checkpoints: int = 0
    kept_compared: int = 0
    messages: list[dict[str, Any]] = field(default_factory=list)
    faults: list[dict[str, Any]] = field(default_factory=list)

    def fault(self, code: str, message: str, member: str | None = None) -> None:
        self.valid = False
        self.faults.append({"code": code, "member": member, "message": message})

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def verify(
    path: Path, trust: pki.Trust, axis_certificate: x509.Certificate,
    kept: dict[int, checkpoints.Signed] | None = None,
) -> BundleReport:
    """Check a bundle offline (see the module's docstring) against the axis certificate the
    auditor pins (``--axis-cert``, or the one a witness keeps): any certificate of the trusted
    CA could sign a manifest, so the bundle's own is never taken on its word. Every fault is
    reported, with the member it concerns; a manifest not signed by the pinned certificate
    stops the check there (nothing it lists can be believed)."""
    report = BundleReport(str(path))
    try:
        bundle = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError) as error:
        report.fault("bundle.unreadable", f"not a readable ZIP file: {error}")
        return report
    with bundle:
        names = [info.filename for info in bundle.infolist()]
        for twice in sorted({n for n in names if names.count(n) > 1}):
            report.fault("bundle.member_duplicated", f"{twice} appears more than once: which one a reader sees is not defined", twice)
        manifest = _manifest(bundle, report)
        if manifest is None:
            return report
        report.created_at, report.axis = str(manifest.get("created_at")), str(manifest.get("axis"))
        try:
            signed_manifest = pki.signed_bytes(axis_certificate, _read_signature(bundle), _read(bundle, MANIFEST))
        except Exception:  # noqa: BLE001 - a hostile member: reported, never a traceback
            signed_manifest = False
        if not signed_manifest or pki.fingerprint(axis_certificate) != manifest.get("axis"):
            report.fault("bundle.manifest_signature", "manifest.json is not signed by the pinned axis certificate", MANIFEST)
            return report
        _check_members(bundle, manifest, report)
        signed = _check_checkpoints(bundle, manifest, report, axis_certificate, kept or {})
        combined = _with_bundled_crls(bundle, trust, report)
        fingerprints = frozenset({pki.fingerprint(axis_certificate)})
        for entry in manifest["messages"]:
            try:
                report.messages.append(_check_message(bundle, entry, report, combined, fingerprints, signed))
            except Exception as error:  # noqa: BLE001 - a hostile member: reported, never a traceback
                report.fault("bundle.malformed", f"the message's members cannot be checked: {error!r}", str(entry.get("package")))
    return report


def _manifest(bundle: zipfile.ZipFile, report: BundleReport) -> dict[str, Any] | None:
    try:
        manifest = json.loads(_read(bundle, MANIFEST))
    except (KeyError, ValueError, RecursionError, zipfile.BadZipFile, OSError, EOFError) as error:
        report.fault("bundle.manifest", f"manifest.json is missing or not JSON: {error}", MANIFEST)
        return None
    members, messages = (manifest.get("members"), manifest.get("messages")) if isinstance(manifest, dict) else (None, None)
    if (
        not isinstance(manifest, dict) or manifest.get("format") != FORMAT
        or not isinstance(members, dict) or not all(isinstance(v, str) for v in members.values())
        or not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages)
    ):
        report.fault("bundle.manifest", f"manifest.json is not an {FORMAT} manifest", MANIFEST)
        return None
    return manifest


def _read_signature(bundle: zipfile.ZipFile) -> bytes:
    try:
        return base64.b64decode(_read(bundle, SIGNATURE, 4096), validate=True)
    except (KeyError, ValueError, zipfile.BadZipFile, OSError, EOFError):
        return b""


def _check_members(bundle: zipfile.ZipFile, manifest: dict[str, Any], report: BundleReport) -> None:
    listed: dict[str, str] = manifest.get("members", {})
    present = set(bundle.namelist()) - {MANIFEST, SIGNATURE}
    for name in sorted(present - set(listed)):
        report.fault("bundle.member_unlisted", f"{name} is in the bundle but not in its manifest", name)
    for name, expected in sorted(listed.items()):
        if name not in present:
            report.fault("bundle.member_missing", f"{name} is listed in the manifest but missing", name)
            continue
        digest = hashlib.sha256()
        try:
            with bundle.open(name) as member:
                while piece := member.read(PIECE):
                    digest.update(piece)
        except Exception as error:  # noqa: BLE001 - a damaged member fails its CRC; a hostile one, anything
            report.fault("bundle.member_altered", f"{name} cannot be read whole: {error!r}", name)
            continue
        if digest.hexdigest() != expected:
            report.fault("bundle.member_altered", f"{name} is not the member the manifest lists (SHA-256 differs)", name)


def _read(bundle: zipfile.ZipFile, name: str, largest: int = LARGEST_OTHER) -> bytes:
    """A member whole, if it is not larger than ``largest`` (``ValueError``); ``KeyError`` if absent."""
    if bundle.getinfo(name).file_size > largest:
        raise ValueError(f"{name} claims more than {largest} bytes")
    return bundle.read(name)


def _json_member(bundle: zipfile.ZipFile, name: str) -> Any:
    try:
        return json.loads(_read(bundle, name))
    except Exception:  # noqa: BLE001 - missing, too large, not JSON, hostile: the caller reports it
        return None


def _check_checkpoints(
    bundle: zipfile.ZipFile, manifest: dict[str, Any], report: BundleReport, certificate: x509.Certificate | None,
    kept: dict[int, checkpoints.Signed],
) -> dict[int, checkpoints.Signed]:
    good: dict[int, checkpoints.Signed] = {}
    for name in sorted(n for n in manifest.get("members", {}) if n.startswith("checkpoints/")):
        try:
            signed = checkpoints.Signed.of(_json_member(bundle, name) or {})
        except ValueError as error:
            report.fault("bundle.checkpoint", f"{name}: {error}", name)
            continue
        report.checkpoints += 1
        number = signed.checkpoint.number
        if certificate is None or not checkpoints.signed_by(signed, certificate):
            report.fault("bundle.checkpoint_signature", f"checkpoint {number} is not signed by the axis certificate", name)
            continue
        c = signed.checkpoint
        overlapping = [k for k in kept.values() if k.checkpoint.first <= c.last and c.first <= k.checkpoint.last]
        report.kept_compared += len(overlapping)
        if any(k.checkpoint != c for k in overlapping):  # whatever its number: a witness vouched for those events
            report.fault(
                "bundle.witness_mismatch",
                f"checkpoint {number} (events {c.first}..{c.last}) is not what the witness kept for those events:"
                " the log was rewritten and signed again",
                name,
            )
            continue
        good[number] = signed
    return good


def _with_bundled_crls(bundle: zipfile.ZipFile, trust: pki.Trust, report: BundleReport) -> pki.Trust:
    """The auditor's trust, plus the bundle's CRLs that one of its anchors signed (never the
    bundle's anchors: what to trust is the auditor's decision)."""
    crls = list(trust.crls)
    for name in sorted(n for n in bundle.namelist() if n.startswith("trust/") and n.lower().endswith(".crl")):
        try:
            crl = pki.load_crl(_read(bundle, name))
        except (ValueError, AxisError, zipfile.BadZipFile, OSError, EOFError):
            report.fault("bundle.crl", f"{name} is not a CRL", name)
            continue
        issuer = next((a for a in trust.anchors if a.subject == crl.issuer), None)
        if issuer is not None and crl.is_signature_valid(issuer.public_key()):  # type: ignore[arg-type]
            crls.append(crl)
    return pki.Trust(trust.anchors, tuple(crls))


def _check_message(
    bundle: zipfile.ZipFile, entry: dict[str, Any], report: BundleReport, trust: pki.Trust,
    axis: frozenset[str] | None, signed: dict[int, checkpoints.Signed],
) -> dict[str, Any]:
    faults_before = len(report.faults)
    summary: dict[str, Any] = {k: entry.get(k) for k in ("id", "kind", "sender", "document_id", "accepted_at", "sha256")}
    package_name = str(entry.get("package"))
    try:
        data = _read(bundle, package_name, LARGEST_PACKAGE)
        at = datetime.fromisoformat(str(entry.get("accepted_at")))
    except (KeyError, ValueError, zipfile.BadZipFile, OSError, EOFError) as error:
        report.fault("bundle.package", f"the package cannot be read: {error}", package_name)
    else:
        if hashlib.sha256(data).hexdigest() != entry.get("sha256"):
            report.fault("bundle.package", "the package's SHA-256 is not the one accepted", package_name)
        try:
            verified = verify_package(data, trust, at)
            summary["signer"] = verified.signature.organ_id or verified.signature.fingerprint
        except AxisError as error:
            report.fault(f"bundle.{error.code}", f"the package does not verify at its acceptance time: {error.message}", package_name)
        del data
    summary["receipts"] = []
    for name in entry.get("receipts", []):
        try:
            receipt = receipts.verify(_read(bundle, name), trust, axis).receipt
        except (KeyError, ValueError, AxisError, zipfile.BadZipFile, OSError, EOFError) as error:
            report.fault("bundle.receipt", f"the receipt does not verify: {getattr(error, 'message', error)}", name)
            continue
        if receipt.message_id != entry.get("id"):
            report.fault("bundle.receipt", "the receipt is about another message", name)
        summary["receipts"].append({"kind": receipt.kind, "time": receipt.time})
    events_name = str(entry.get("events"))
    events = _json_member(bundle, events_name)
    summary["events"] = []
    for event in events if isinstance(events, list) else []:
        summary["events"].append(_check_event(event, report, signed, events_name))
    if not isinstance(events, list):
        report.fault("bundle.events", "the events cannot be read", events_name)
    summary["valid"] = len(report.faults) == faults_before
    return summary


def _check_event(event: Any, report: BundleReport, signed: dict[int, checkpoints.Signed], name: str) -> dict[str, Any]:
    try:
        seq, content, previous, digest = int(event["seq"]), str(event["content"]), str(event["previous"]), str(event["hash"])
        proof = [bytes.fromhex(h) for h in event["path"]]
        number, index, size = int(event["checkpoint"]), int(event["index"]), int(event["size"])
        said = json.loads(content)
        if not isinstance(said, dict):
            raise ValueError("its content is not a JSON object")
    except (KeyError, TypeError, ValueError, OverflowError, RecursionError) as error:
        report.fault("bundle.events", f"an event is malformed: {error}", name)
        return {}
    shown = {"seq": seq, "kind": said.get("kind"), "at": said.get("at"), "subject": said.get("subject")}
    if chain_hash(previous, content) != digest:
        report.fault("bundle.event_altered", f"event {seq} does not match its hash", name)
    checkpoint = signed.get(number)
    if checkpoint is None:
        report.fault("bundle.event_unproven", f"event {seq} names checkpoint {number}, which the bundle does not prove", name)
        return shown
    c = checkpoint.checkpoint
    if (seq - c.first, c.last - c.first + 1) != (index, size) or not merkle.included(
        checkpoints.leaf(content), index, size, proof, bytes.fromhex(c.root)
    ):
        report.fault("bundle.event_not_included", f"event {seq} is not proved to be in signed checkpoint {number}", name)
    return shown
