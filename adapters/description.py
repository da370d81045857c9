"""A document described in JSON (or by command-line options) and the files it attaches, made into
an edXML package. The folder bridge reads ``*.json`` from an outbox; ``axis send`` reads
``--describe FILE`` or its options. Every field but ``to`` and ``subject`` is optional:

    {
      "to": ["000.00.00.H41", {"organ_id": "000.00.00.H14", "organ_name": "UBND Tỉnh Cao Bằng"}],
      "subject": "V/v ...",
      "code": "1234/VPCP-KSTT",              # số/ký hiệu; makes the DocumentId with the date
      "document_id": "000.00.00.G22,2026/11/21,1234/VPCP-KSTT",   # or given whole
      "content": "...", "type": "Công văn", "place": "Hà Nội", "due_date": "2026/12/05",
      "priority": 2, "to_places": ["Như trên", "Lưu: VT"],
      "signer": {"competence": "...", "position": "...", "full_name": "..."},
      "attachments": ["1234.pdf", {"file": "phu-luc.docx", "description": "Phụ lục"}],
      "revises": {"document_id": "...", "action": "revoke|update|replace", "reason": "..."}
    }

Attachment paths are relative to the description's folder and may not leave it.
"""

from __future__ import annotations

import json
import mimetypes
import secrets
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from axis import edxml
from axis.errors import AdapterError

ACTIONS = {"new": 0, "revoke": 1, "update": 2, "replace": 3}
FIELDS = {
    "to", "subject", "code", "document_id", "content", "type", "place", "due_date", "priority",
    "to_places", "signer", "attachments", "revises", "from_name",
}


def _invalid(message: str) -> AdapterError:
    return AdapterError("adapter.invalid_description", message)


@dataclass(frozen=True)
class Description:
    values: dict[str, Any]
    folder: Path

    @classmethod
    def load(cls, path: Path) -> Description:
        try:
            values = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError, RecursionError) as error:  # RecursionError: nested too deep
            raise _invalid(f"{path.name} is not a JSON document description: {error}") from None
        if not isinstance(values, dict):
            raise _invalid(f"{path.name} must hold a JSON object")
        return cls(values, path.parent)

    def attachments(self) -> list[Any]:
        """The ``attachments`` items: a list, one name or ``{"file": ...}``, or none."""
        items = self.values.get("attachments")
        return [] if items is None else _list(items, "attachments")

    def attachment_paths(self) -> list[Path]:
        """The files this description attaches, checked to lie inside its folder. Every fault of
        the description is an ``adapter.invalid_description``: the folder bridge moves the file
        to ``error/`` on it, where any other exception would stop the bridge for every agency."""
        paths = []
        for item in self.attachments():
            name = item.get("file") if isinstance(item, dict) else item
            if not isinstance(name, str) or not name:
                raise _invalid(f"an attachment must be a file name or {{\"file\": name}}, not {item!r}")
            try:
                path = (self.folder / name).resolve()
                inside = self.folder.resolve() in path.parents
                present = inside and path.is_file()
            except (OSError, ValueError, RuntimeError) as error:  # a NUL byte, a symlink loop, a name too long
                raise _invalid(f"attachment {name!r} cannot name a file: {error}") from None
            if not inside:
                raise _invalid(f"attachment {name!r} lies outside the folder of the description")
            if not present:
                raise AdapterError("adapter.attachment_missing", f"attachment {name!r} is not in {self.folder}")
            paths.append(path)
        return paths

    def package(self, sender: str, at: datetime) -> edxml.DocumentPackage:
        """The package, from ``sender`` (the agency this adapter acts for), dated ``at``."""
        v = self.values
        unknown = sorted(set(v) - FIELDS)
        if unknown:
            raise _invalid(f"unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(FIELDS))}")
        if not v.get("to") or not v.get("subject"):
            raise _invalid("a description needs at least \"to\" (OrganIds) and \"subject\"")
        recipients = tuple(_organization(item) for item in _list(v["to"], "to"))
        code = None
        if v.get("code"):
            number, _, notation = str(v["code"]).partition("/")
            code = edxml.Code(code_number=number, code_notation=notation or None)
        document_id = v.get("document_id") or (
            f"{sender},{at:%Y/%m/%d},{v['code'] if code else secrets.randbelow(10**6)}"
            + ("" if code else "/AXIS")
        )
        revises = v.get("revises")
        bussiness = edxml.Bussiness(bussiness_doc_type=0, paper=0)
        if revises is not None:
            if not isinstance(revises, dict) or revises.get("action") not in ("revoke", "update", "replace"):
                raise _invalid("\"revises\" needs \"action\": revoke, update or replace (and \"document_id\")")
            bussiness = edxml.Bussiness(
                document_id=revises.get("document_id"),
                bussiness_doc_type=ACTIONS[revises["action"]],
                bussiness_doc_reason=revises.get("reason"),
                paper=0,
            )
        signer = v.get("signer") or {}
        attachments = tuple(
            edxml.Attachment(
                name=path.name,
                data=path.read_bytes(),
                content_type=mimetypes.guess_type(path.name)[0] or "application/octet-stream",
                description=item.get("description") if isinstance(item, dict) else None,
            )
            for item, path in zip(self.attachments(), self.attachment_paths(), strict=True)
        )
        try:
            package = edxml.DocumentPackage(
                sender=edxml.Organization(organ_id=sender, organ_name=v.get("from_name")),
                recipients=recipients,
                document_id=str(document_id),
                subject=str(v["subject"]),
                content=v.get("content"),
                code=code,
                promulgation_info=edxml.PromulgationInfo(place=v.get("place"), promulgation_date=f"{at:%Y/%m/%d}"),
                document_type=edxml.DocumentType(type="1", type_name=v["type"]) if v.get("type") else None,
                signer_info=edxml.SignerInfo(**signer) if signer else None,
                due_date=v.get("due_date"),
                to_places=tuple(_list(v.get("to_places") or [], "to_places")),
                other_info=edxml.OtherInfo(priority=int(v["priority"])) if v.get("priority") is not None else None,
                trace_headers=(edxml.TraceHeader(organ_id=sender, timestamp=f"{at:%Y/%m/%d %H:%M:%S}"),),
                bussiness=bussiness,
                attachments=attachments,
            )
        except (TypeError, ValueError, OverflowError) as error:  # OverflowError: "priority": 1e400 is infinite
            raise _invalid(f"the description does not make a document: {error}") from None
        return package


def _list(value: Any, name: str) -> list[Any]:
    if isinstance(value, (str, dict)):
        return [value]
    if not isinstance(value, list):
        raise _invalid(f"{name!r} must be a list")
    return value


def _organization(item: Any) -> edxml.Organization:
    if isinstance(item, str):
        return edxml.Organization(organ_id=item)
    if isinstance(item, dict) and isinstance(item.get("organ_id"), str):
        return edxml.Organization(organ_id=item["organ_id"], organ_name=item.get("organ_name"))
    raise _invalid(f"a recipient must be an OrganId or {{\"organ_id\": ...}}, not {item!r}")
