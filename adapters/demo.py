"""``axis demo``: the axis's main job end to end, told as a story, in a temporary directory.

Real processes over real HTTP on 127.0.0.1: ``axis serve``, a drop-folder bridge for the Government
Office's legacy software, a push receiver for a ministry, a province platform's push receiver
serving two departments, another province's platform (a folder bridge, offline at first) serving
two more, the signing gateway of a ministry whose software keeps the operator's VXP SDK, and the
people's CLI for a ministry that pulls by hand. Documents with attachments, a status sequence, a
revoke, a recipient that catches up, a forged package, a placeholder-signed package signed by the
gateway. Every receipt is
verified against the axis certificate. The demo exits 0 only if every expected outcome happened.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp

from adapters.vxp import protocol
from axis import edxml, keystore, pki, receipts
from axis.verification import verify_package

VPCP = edxml.Organization(
    organ_id="000.00.00.G22",
    organ_name="Văn phòng Chính phủ",
    organ_add="Số 1 Hoàng Hoa Thám, Quận Ba Đình, Hà Nội",
    email="vpcp@chinhphu.vn",
)
NGHE_AN = edxml.Organization(organ_id="000.00.00.H41", organ_name="UBND Tỉnh Nghệ An", email="nghean@gov.vn")
CAO_BANG = edxml.Organization(organ_id="000.00.00.H14", organ_name="UBND Tỉnh Cao Bằng", email="caobang@gov.vn")

AGENCIES = {
    "000.00.00.G22": ("Văn phòng Chính phủ", None),
    "000.00.00.G09": ("Bộ Tài chính", None),
    "000.00.00.G10": ("Bộ Nội vụ", None),
    "000.00.00.G12": ("Bộ Tư pháp", None),
    "000.00.00.H41": ("UBND Tỉnh Nghệ An", None),
    "000.00.01.H41": ("Sở Nội vụ tỉnh Nghệ An", "000.00.00.H41"),
    "000.00.02.H41": ("Sở Tài chính tỉnh Nghệ An", "000.00.00.H41"),
    "000.00.00.H14": ("UBND Tỉnh Cao Bằng", None),
    "000.00.01.H14": ("Sở Nội vụ tỉnh Cao Bằng", "000.00.00.H14"),
    "000.00.02.H14": ("Sở Tài chính tỉnh Cao Bằng", "000.00.00.H14"),
}
G22, G09, G10, G12 = "000.00.00.G22", "000.00.00.G09", "000.00.00.G10", "000.00.00.G12"
NA_NOIVU, NA_TAICHINH, CB_NOIVU, CB_TAICHINH = "000.00.01.H41", "000.00.02.H41", "000.00.01.H14", "000.00.02.H14"
RECIPIENTS = [G09, G10, NA_NOIVU, NA_TAICHINH, CB_NOIVU, CB_TAICHINH]


def example_document(at: datetime) -> edxml.DocumentPackage:
    """A realistic official letter from the Government Office to two provinces, with one attachment."""
    stamp = at.strftime("%Y/%m/%d %H:%M:%S")
    return edxml.DocumentPackage(
        sender=VPCP,
        recipients=(NGHE_AN, CAO_BANG),
        document_id=f"000.00.00.G22,{at:%Y/%m/%d},1234/VPCP-KSTT",
        subject="V/v triển khai kết nối, liên thông văn bản điện tử qua Trục liên thông văn bản quốc gia",
        content="Đề nghị các địa phương hoàn thành kết nối trước ngày 31/12.",
        code=edxml.Code(code_number="1234", code_notation="VPCP-KSTT"),
        promulgation_info=edxml.PromulgationInfo(place="Hà Nội", promulgation_date=f"{at:%Y/%m/%d}"),
        document_type=edxml.DocumentType(type="1", type_detail="0", type_name="Công văn"),
        signer_info=edxml.SignerInfo(
            competence="KT. BỘ TRƯỞNG, CHỦ NHIỆM", position="Phó Chủ nhiệm", full_name="Nguyễn Văn A"
        ),
        due_date=f"{at + timedelta(days=14):%Y/%m/%d}",
        to_places=("Như trên", "Lưu: VT, KSTT"),
        other_info=edxml.OtherInfo(priority=2, promulgation_amount=3, page_amount=2, direction=False),
        steering_type=1,
        trace_headers=(edxml.TraceHeader(organ_id="000.00.00.G22", timestamp=stamp),),
        bussiness=edxml.Bussiness(bussiness_doc_type=0, bussiness_doc_reason="Văn bản điện tử mới", paper=0),
        attachments=(
            edxml.Attachment(
                name="1234-VPCP-KSTT.pdf",
                data=b"%PDF-1.4\n% C\xc3\xb4ng v\xc4\x83n 1234/VPCP-KSTT\n%%EOF\n",
                content_type="application/pdf",
                description="Công văn 1234/VPCP-KSTT",
                content_id="cid:1",
            ),
        ),
    )


def files(folder: Path, pattern: str = "*") -> list[Path]:
    return sorted(p for p in folder.glob(pattern) if p.is_file() and not p.name.startswith("."))


def drop(folder: Path, name: str, data: bytes) -> None:
    """What agency software should do: write under a hidden name, then rename into the outbox."""
    (folder / f".{name}.part").write_bytes(data)
    (folder / f".{name}.part").rename(folder / name)


@dataclass
class Story:
    say: Callable[[str], None]
    failures: int = 0
    checked: int = 0

    def expect(self, ok: bool, what: str, detail: str = "") -> bool:
        self.checked += 1
        if not ok:
            self.failures += 1
        self.say(f"  {'ok  ' if ok else 'FAIL'}  {what}{f'  ({detail})' if detail else ''}")
        return ok

    async def until(self, what: str, check: Callable[[], Any], timeout: float = 30) -> bool:
        """Wait (bounded) for ``check`` to hold, then report it."""
        deadline = time.monotonic() + timeout
        while True:
            value = check()
            if asyncio.iscoroutine(value):
                value = await value
            if value or time.monotonic() > deadline:
                return self.expect(bool(value), what, "" if value else f"not within {timeout:g} s")
            await asyncio.sleep(0.1)


@dataclass
class Processes:
    root: Path
    environment: dict[str, str]
    running: list[asyncio.subprocess.Process] = field(default_factory=list)

    async def command(self, *args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "cli", *args, env={**self.environment, **(env or {})},
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(process.communicate(), 120)
        return process.returncode or 0, out.decode(), err.decode()

    async def start(self, name: str, *args: str, env: dict[str, str] | None = None) -> tuple[asyncio.subprocess.Process, dict[str, Any]]:
        """Start a long-running ``axis`` process; wait for its first JSON line (it is ready)."""
        with (self.root / f"{name}.log").open("ab") as log:
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "cli", *args, env={**self.environment, **(env or {})},
                stdout=asyncio.subprocess.PIPE, stderr=log,
            )
        self.running.append(process)
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), 60)
        if not line.startswith(b"{"):
            raise RuntimeError(f"{name} did not start; see {self.root / f'{name}.log'}")
        return process, json.loads(line)

    async def stop_all(self) -> None:
        for process in reversed(self.running):
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
        for process in self.running:
            try:
                await asyncio.wait_for(process.wait(), 60)
            except TimeoutError:
                process.kill()
                await process.wait()


PLACEHOLDER = (
    '<edXML:Signature xmlns:edXML="http://www.mic.gov.vn/TBT/QCVN_102_2016"><edXML:SignatureValue/></edXML:Signature>'
)


def with_placeholder(package: edxml.Package) -> bytes:
    """A package as agency software writes it: a stub signature in the edXML namespace."""
    built = edxml.build(package)
    return built.replace(b"</edXMLHeader>", PLACEHOLDER.encode() + b"</edXMLHeader>", 1)


@dataclass
class LegacySoftware:
    """Agency software on the operator's SDK, as it speaks (docs/vxp.md): one service object (one
    timestamp), every parameter signed, the file sent with CRLF after it."""

    http: aiohttp.ClientSession
    endpoint: str
    system_id: str
    secret: str
    params: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.params.update(systemid=self.system_id, timestamp=protocol.format_timestamp(datetime.now(UTC)))

    async def call(self, method: str, json_headers: dict[str, str], body: bytes = b"",
                   content_type: str = "application/json") -> dict[str, Any]:
        self.params.update({"Content-Type": content_type, **json_headers})
        headers = {**protocol.sign(self.params, self.secret.encode()), "Content-Type": content_type}
        async with self.http.post(f"{self.endpoint}/{method}", data=body, headers=headers) as response:
            return dict(await response.json(content_type=None))

    async def send_edoc(self, json_headers: dict[str, str], data: bytes) -> dict[str, Any]:
        self.params["hash-file"] = protocol.file_hash(data)
        return await self.call("sendEdoc", json_headers, data + b"\r\n", "application/octet-stream")

    async def received(self) -> list[dict[str, Any]]:
        answer = await self.call("getReceivedEdocList", {"servicetype": "eDoc", "messagetype": "edoc"})
        return list(answer.get("data") or [])


async def eventually(read: Callable[[], Any], timeout: float = 30) -> Any:
    """Poll ``read()`` (a coroutine function) until it returns something (bounded); its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = await read()
        if value or time.monotonic() > deadline:
            return value
        await asyncio.sleep(0.2)


async def free_port() -> int:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = int(server.sockets[0].getsockname()[1])
    server.close()
    await server.wait_closed()
    return port


async def run_story(root: Path, say: Callable[[str], None]) -> Story:
    story = Story(say)
    repo = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(repo), os.environ.get("PYTHONPATH")]))}
    processes = Processes(root, env)
    http = aiohttp.ClientSession()
    try:
        await _story(story, processes, http, root)
    finally:
        await http.close()
        await processes.stop_all()
    return story


async def _story(story: Story, processes: Processes, http: aiohttp.ClientSession, root: Path) -> None:  # noqa: PLR0915 - one story
    say = story.say
    now = datetime.now(UTC)

    say("1. The operator creates the axis (development CA standing in for the state CA) and starts it.")
    code, out, err = await processes.command("init", "--dir", str(root / "axis"), "--json")
    if not story.expect(code == 0, "axis init", err.strip()):
        return
    admin_token = json.loads(out)["admin_token"]
    config = root / "axis" / "axis.toml"
    _, listening = await processes.start("axis-serve", "--config", str(config), "serve", "--port", "0")
    url = listening["url"]
    say(f"      axis serve is listening on {url}")
    trust = root / "axis" / "keys" / "trust"
    keys = keystore.KeyStore(root / "axis" / "keys")

    async def call(method: str, path: str, token: str, body: Any = None) -> tuple[int, Any]:
        async with http.request(method, url + path, json=body, headers={"Authorization": f"Bearer {token}"}) as response:
            return response.status, await response.json(content_type=None)

    say("2. The administrator registers ten agencies, their certificates and six endpoints (admin API).")
    agency_keys = root / "agency-keys"
    for organ_id, (name, parent) in AGENCIES.items():
        status, _ = await call("POST", "/v1/admin/agencies", admin_token, {"organ_id": organ_id, "name": name, "parent": parent})
        _, certificate = keys.issue(organ_id, agency_keys, now, name=name)
        status2, _ = await call("POST", "/v1/admin/certificates", admin_token, {"organ_id": organ_id, "pem": certificate.read_text()})
        if status != 201 or status2 != 201:
            story.expect(False, f"register {organ_id}", f"HTTP {status}/{status2}")
    ports = {"bonoivu": await free_port(), "nghean": await free_port()}
    endpoints = {
        "vpcp-qlvb": ([G22], None),
        "btc-qlvb": ([G09], None),
        "bnv-qlvb": ([G10], f"http://127.0.0.1:{ports['bonoivu']}/axis"),
        "nghean-lgsp": ([NA_NOIVU, NA_TAICHINH], f"http://127.0.0.1:{ports['nghean']}/axis"),
        "caobang-lgsp": ([CB_NOIVU, CB_TAICHINH], None),
        "btp-gateway": ([G12], None),
    }
    tokens = {}
    for name, (agencies, push_url) in endpoints.items():
        status, body = await call("POST", "/v1/admin/endpoints", admin_token, {"name": name, "agencies": agencies, "push_url": push_url})
        tokens[name] = body.get("token")
        say(f"      {name:<13} {'push ' + push_url if push_url else 'pull':<40} {', '.join(agencies)}")
    status, listed = await call("GET", "/v1/agencies", admin_token)
    story.expect(status == 200 and len(listed["items"]) == 10 and all(tokens.values()), "10 agencies and 6 endpoints registered")

    def adapter_env(endpoint: str) -> dict[str, str]:
        return {"AXIS_URL": url, "AXIS_TOKEN": tokens[endpoint], "AXIS_TRUST": str(trust)}

    def tree(name: str) -> Path:
        return root / "agencies" / name

    folder_args = ["--keys", str(agency_keys), "--settle", "0", "--poll", "0.2"]
    say("3. Agency software connects: the Government Office's legacy software through a drop folder,")
    say("   Bộ Nội vụ and the Nghệ An platform (two departments) through push receivers.")
    say("   The Cao Bằng platform is offline; Bộ Tài chính will pull with the axis CLI.")
    await processes.start("vpcp-folder", "adapter", "folder", "--dir", str(tree("vpcp")), "--agency", G22, *folder_args, env=adapter_env("vpcp-qlvb"))
    await processes.start("bnv-webhook", "adapter", "webhook", "--listen", f"127.0.0.1:{ports['bonoivu']}", "--dir", str(tree("bonoivu")),
                          "--agency", G10, *folder_args, env=adapter_env("bnv-qlvb"))
    await processes.start("nghean-webhook", "adapter", "webhook", "--listen", f"127.0.0.1:{ports['nghean']}", "--dir", str(tree("nghean")),
                          "--agency", NA_NOIVU, "--agency", NA_TAICHINH, *folder_args, env=adapter_env("nghean-lgsp"))

    say("4. The Government Office's software drops a letter with two attachments for six recipients.")
    outbox, sent = tree("vpcp") / G22 / "outbox", tree("vpcp") / G22 / "sent"
    (outbox / "1234-VPCP-KSTT.pdf").write_bytes(b"%PDF-1.4\n% Cong van 1234/VPCP-KSTT\n" + os.urandom(200_000) + b"\n%%EOF\n")
    (outbox / "phu-luc-danh-sach.xlsx").write_bytes(os.urandom(50_000))
    letter = {
        "to": RECIPIENTS, "subject": "V/v triển khai kết nối, liên thông văn bản điện tử qua Trục liên thông văn bản quốc gia",
        "code": "1234/VPCP-KSTT", "type": "Công văn", "place": "Hà Nội", "from_name": "Văn phòng Chính phủ",
        "content": "Đề nghị các bộ, địa phương hoàn thành kết nối trước ngày 31/12.",
        "due_date": f"{now + timedelta(days=14):%Y/%m/%d}", "priority": 2,
        "signer": {"competence": "KT. BỘ TRƯỞNG, CHỦ NHIỆM", "position": "Phó Chủ nhiệm", "full_name": "Nguyễn Văn A"},
        "attachments": [{"file": "1234-VPCP-KSTT.pdf", "description": "Công văn"}, "phu-luc-danh-sach.xlsx"],
    }
    drop(outbox, "cv-1234.json", json.dumps(letter, ensure_ascii=False).encode())
    await story.until("the bridge built, signed and sent it; its signed receipt is in sent/", lambda: (sent / "cv-1234.json.receipt.xml").exists())
    axis_certificate = pki.load_certificates(await (await http.get(url + "/v1/axis/certificate")).read())[0]
    axis_fingerprints = frozenset({pki.fingerprint(axis_certificate)})
    anchors = keystore.read_trust(trust)
    accepted = receipts.verify((sent / "cv-1234.json.receipt.xml").read_bytes(), anchors, axis_fingerprints).receipt
    message_id = accepted.message_id
    story.expect(accepted.kind == "accepted" and list(accepted.recipients) == RECIPIENTS,
                 "the accepted receipt verifies against the axis certificate", f"message {message_id}")

    say("5. Delivery: pushed at once to Bộ Nội vụ and Nghệ An's two departments; Bộ Tài chính pulls.")
    for folder, agency in ((tree("bonoivu"), G10), (tree("nghean"), NA_NOIVU), (tree("nghean"), NA_TAICHINH)):
        await story.until(f"{AGENCIES[agency][0]} has it in {folder.name}/{agency}/inbox, verified",
                          (folder / agency / "inbox" / f"{message_id}.edxml").exists)
    btc = adapter_env("btc-qlvb") | {"AXIS_KEY": str(agency_keys / f"{G09}.key"), "AXIS_CERT": str(agency_keys / f"{G09}.pem")}
    code, out, err = await processes.command("inbox", "--wait", "10", "--json", env=btc)
    waiting = json.loads(out) if code == 0 else []
    story.expect([i["message_id"] for i in waiting] == [message_id], "axis inbox (Bộ Tài chính) lists the letter", err.strip())
    target = root / "btc-1234.edxml"
    code, out, err = await processes.command("fetch", message_id, "-o", str(target), "--ack", "--json", env=btc)
    fetched = json.loads(out) if code == 0 else {}
    story.expect(fetched.get("verified") is True and fetched.get("signer") == G22, "axis fetch --ack: verified, signed by VPCP, acknowledged", err.strip())
    received = edxml.parse(target.read_bytes()) if target.exists() else None
    story.expect(isinstance(received, edxml.DocumentPackage) and len(received.attachments) == 2
                 and received.attachments[0].data == (sent / "1234-VPCP-KSTT.pdf").read_bytes(), "both attachments arrived byte for byte")

    say("6. Sở Nội vụ Nghệ An reports its processing: 01 → 03 → 04 → 05 → 06 (dropped unsigned; the platform signs).")
    assert isinstance(received, edxml.DocumentPackage)
    na_outbox = tree("nghean") / NA_NOIVU / "outbox"
    for n, (code_, text) in enumerate([("01", "Đã nhận"), ("03", "Đã tiếp nhận, vào sổ"), ("04", "Đã phân công xử lý"),
                                       ("05", "Đang xử lý"), ("06", "Hoàn thành")]):
        status_package = edxml.StatusPackage(
            sender=edxml.Organization(organ_id=NA_NOIVU, organ_name=AGENCIES[NA_NOIVU][0]),
            response_for=edxml.ResponseFor(organ_id=G22, document_id=received.document_id),
            status_code=code_, timestamp=f"{datetime.now(UTC).astimezone():%Y/%m/%d %H:%M:%S}", description=text,
            staff_info=edxml.StaffInfo(department="Văn thư", staff="Trần Thị B"),
        )
        drop(na_outbox, f"status-{n}-{code_}.edxml", edxml.build(status_package))
        await story.until(f"status {code_} ({text}) accepted", (tree("nghean") / NA_NOIVU / "sent" / f"status-{n}-{code_}.edxml.receipt.xml").exists)
    await story.until("the Government Office's status/ folder has all five, signed by Sở Nội vụ", lambda: len(files(tree("vpcp") / G22 / "status")) == 5)
    vpcp_env = adapter_env("vpcp-qlvb")
    code, out, err = await processes.command("trail", message_id, "--json", env=vpcp_env)
    trail = json.loads(out) if code == 0 else {"statuses": [], "deliveries": []}
    latest = {s["recipient"]: s["status_code"] for s in trail["statuses"]}
    story.expect(latest.get(NA_NOIVU) == "06", "axis trail: the latest status of Sở Nội vụ Nghệ An is 06 (completed)", err.strip())
    states = {d["recipient"]: d["state"] for d in trail["deliveries"]}
    story.expect(states.get(CB_NOIVU) == "queued" and states.get(CB_TAICHINH) == "queued",
                 "Cao Bằng's deliveries wait in the queue while its platform is offline")

    say("7. A forged package: the letter's subject altered after signing, dropped in the outbox.")
    signed = (sent / "cv-1234.signed.edxml").read_bytes()
    forged = signed.replace("V/v triển khai".encode(), "V/v hủy bỏ".encode())
    drop(outbox, "forged.edxml", forged)
    reason = tree("vpcp") / G22 / "error" / "forged.edxml.reason"
    await story.until("refused by the axis: error/forged.edxml.reason says signature.digest_mismatch",
                      lambda: reason.exists() and reason.read_text().startswith("signature.digest_mismatch"))
    code, out, err = await processes.command("send", "--to", G10, "--subject", "Giả danh", "--from", G22, env=btc)
    story.expect(code == 1 and ("signature.signer_not_sender" in err or "sender.not_granted" in err),
                 "Bộ Tài chính cannot send in the Government Office's name", err.strip().splitlines()[-1] if err.strip() else "")

    say("8. The Government Office revokes a second letter it sent by mistake.")
    mistake = dict(letter, subject="V/v lấy ý kiến (gửi nhầm)", code="1235/VPCP-KSTT", to=[G10, CB_NOIVU], attachments=[])
    drop(outbox, "cv-1235.json", json.dumps(mistake, ensure_ascii=False).encode())
    await story.until("the second letter is accepted", lambda: (sent / "cv-1235.json.receipt.xml").exists())
    first_id = edxml.parse((sent / "cv-1235.signed.edxml").read_bytes())
    assert isinstance(first_id, edxml.DocumentPackage)
    revoke = dict(mistake, subject="V/v thu hồi công văn 1235/VPCP-KSTT", document_id=first_id.document_id,
                  revises={"action": "revoke", "document_id": first_id.document_id, "reason": "Gửi nhầm"})
    revoke.pop("code")
    drop(outbox, "thu-hoi-1235.json", json.dumps(revoke, ensure_ascii=False).encode())
    await story.until("the revoke (BussinessDocType 1) is accepted under the same DocumentId", lambda: (sent / "thu-hoi-1235.json.receipt.xml").exists())
    await story.until("Bộ Nội vụ received the letter and its revoke", lambda: len(files(tree("bonoivu") / G10 / "inbox")) == 3)

    say("9. The Cao Bằng platform comes online and catches up.")
    await processes.start("caobang-folder", "adapter", "folder", "--dir", str(tree("caobang")), "--agency", CB_NOIVU, "--agency", CB_TAICHINH,
                          *folder_args, env=adapter_env("caobang-lgsp"))
    await story.until("Sở Nội vụ Cao Bằng has the letter, the mistaken letter and its revoke", lambda: len(files(tree("caobang") / CB_NOIVU / "inbox")) == 3)
    await story.until("Sở Tài chính Cao Bằng has the letter", lambda: len(files(tree("caobang") / CB_TAICHINH / "inbox")) == 1)

    say("10. Receipts: the Government Office holds a signed 'delivered' receipt from the axis for every recipient.")
    receipts_dir = tree("vpcp") / G22 / "receipts"
    await story.until("six delivered receipts for the letter", lambda: len(files(receipts_dir, f"{message_id}.delivered.*")) == 6)
    verified = 0
    for path in files(receipts_dir):
        try:
            checked = receipts.verify(path.read_bytes(), anchors, axis_fingerprints).receipt
            verified += checked.kind == "delivered"
        except Exception as error:  # noqa: BLE001 - reported as a failed expectation
            story.expect(False, f"receipt {path.name} verifies", str(error))
    story.expect(verified == len(files(receipts_dir)), f"all {verified} receipts verify against the axis certificate")
    tampered = (files(receipts_dir)[0].read_bytes()).replace(b"delivered", b"failed", 1)
    try:
        receipts.verify(tampered, anchors, axis_fingerprints)
        story.expect(False, "an altered receipt is refused")
    except Exception as error:  # noqa: BLE001
        story.expect(True, "an altered receipt is refused", getattr(error, "code", type(error).__name__))

    say("11. Bộ Tư pháp's document software keeps the operator's VXP SDK and writes placeholder signatures:")
    say("    the ministry runs the signing gateway next to it; the software changes only URL, system id, secret.")
    state = root / "btp-gateway"
    code, out, err = await processes.command("adapter", "vxp-gateway", "--state", str(state), "credential", "add",
                                             "QLVB-BTP", "--agency", G12, "--json")
    issued = json.loads(out) if code == 0 else {}
    story.expect(code == 0, "axis adapter vxp-gateway credential add: the SDK's system id and secret, shown once", err.strip())
    _, gateway = await processes.start("btp-gateway", "adapter", "vxp-gateway", "--listen", f"127.0.0.1:{await free_port()}",
                                       "--agency", G12, "--keys", str(agency_keys), "--state", str(state),
                                       env=adapter_env("btp-gateway"))
    sdk = LegacySoftware(http, gateway["url"], issued.get("system_id", ""), issued.get("secret", ""))
    reply = edxml.DocumentPackage(
        sender=edxml.Organization(organ_id=G12, organ_name="Bộ Tư pháp"), recipients=(VPCP,),
        document_id=f"{G12},{now:%Y/%m/%d},88/BTP-VP", subject="V/v góp ý dự thảo quy chế kết nối",
        code=edxml.Code(code_number="88", code_notation="BTP-VP"),
        trace_headers=(edxml.TraceHeader(organ_id=G12, timestamp=f"{now:%Y/%m/%d %H:%M:%S}"),),
    )
    answer = await sdk.send_edoc({"from": G12, "servicetype": "eDoc", "messagetype": "edoc"}, with_placeholder(reply))
    story.expect(answer.get("status") == "OK" and bool(answer.get("DocId")), "sendEdoc through the gateway: OK, DocId is the axis's message id",
                 str(answer.get("ErrorDesc") or ""))
    vpcp_inbox = tree("vpcp") / G22 / "inbox"
    arrived = vpcp_inbox / f"{answer.get('DocId')}.edxml"
    if await story.until("the Government Office's bridge received it", arrived.exists):
        carried = verify_package(arrived.read_bytes(), anchors, datetime.now(UTC))
        story.expect(carried.signature.organ_id == G12 and b"edXML:Signature" not in arrived.read_bytes(),
                     "it carries Bộ Tư pháp's real signature, made by the gateway (the placeholder is gone)")
    drop(outbox, "cv-1236.json", json.dumps(dict(letter, to=[G12], code="1236/VPCP-KSTT", subject="V/v tiếp thu ý kiến góp ý",
                                                 attachments=[]), ensure_ascii=False).encode())
    await story.until("the Government Office answers through its bridge", lambda: (sent / "cv-1236.json.receipt.xml").exists())
    listed = await eventually(sdk.received)
    doc_id = listed[0]["docId"] if listed else ""
    story.expect(len(listed) == 1 and listed[0].get("from") == G22, "getReceivedEdocList at the gateway lists the answer")
    fetched = await sdk.call("getEdoc", {"filePath": "xml", "docId": doc_id}, body=b"{}")
    data = base64.b64decode(fetched.get("data") or "")
    story.expect(verify_package(data, anchors, datetime.now(UTC)).signature.organ_id == G22 if data else False,
                 "getEdoc: the package in base64, verified by the gateway and here (signed by VPCP)")
    done = await sdk.call("updateStatus", {"status": "done", "docId": doc_id}, body=b"{}")
    story.expect(done.get("status") == "OK", "updateStatus done acknowledges it at the axis")
    await story.until("the Government Office holds the 'delivered' receipt for Bộ Tư pháp",
                      lambda: len(files(receipts_dir, f"{doc_id}.delivered.*")) == 1)

    say("12. The auditor reads the statistics.")
    code, out, err = await processes.command("--config", str(config), "token", "add", "auditor", "Kiểm toán Nhà nước", "--json")
    auditor = json.loads(out)["token"] if code == 0 else ""
    status, stats = await call("GET", "/v1/stats", auditor)
    rows = {r["agency"]: r for r in stats.get("items", [])} if status == 200 else {}
    say(f"      {'agency':<15}{'name':<28}{'sent':>5}{'recv':>6}{'deliv':>6}{'pend':>5}{'overdue':>8}")
    for organ_id, (name, _) in AGENCIES.items():
        r = rows.get(organ_id)
        if r:
            say(f"      {organ_id:<15}{name[:27]:<28}{r['sent']:>5}{r['received']:>6}{r['delivered']:>6}{r['pending']:>5}{r['overdue']:>8}")
    story.expect(rows.get(G22, {}).get("sent") == 4, "the Government Office sent 4 documents (the letter, the mistake, the revoke, the answer)")


def run(say: Callable[[str], None], keep: Path | None = None) -> int:
    root = Path(tempfile.mkdtemp(prefix="axis-demo-"))
    started = time.monotonic()
    try:
        story = asyncio.run(run_story(root, say))
    finally:
        if keep is not None:
            shutil.copytree(root, keep, dirs_exist_ok=True)
        shutil.rmtree(root, ignore_errors=True)
    say(f"\n{story.checked} outcomes checked in {time.monotonic() - started:.0f} s.")
    if story.failures:
        say(f"{story.failures} expected outcome(s) did not happen.")
        return 1
    say("Every expected outcome happened.")
    return 0
