"""``axis demo``: the axis's main job, told as a story, in a temporary directory.

This stage of the project covers the evidence layer: a development CA stands in for the state
CA, agencies get signing certificates, a document with an attachment is built, signed and
verified, and every kind of forgery the story tries is refused with its code. Each step states
what is expected; the demo exits 0 only if every expectation was met.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from axis import edxml, keystore, pki, signing
from axis.errors import AxisError
from axis.verification import verify_package

DEFAULT_SAMPLES = Path(__file__).resolve().parent.parent.parent / "shared" / "samples" / "edxml-vdxp"
VPCP = edxml.Organization(
    organ_id="000.00.00.G22",
    organ_name="Văn phòng Chính phủ",
    organ_add="Số 1 Hoàng Hoa Thám, Quận Ba Đình, Hà Nội",
    email="vpcp@chinhphu.vn",
)
NGHE_AN = edxml.Organization(organ_id="000.00.00.H41", organ_name="UBND Tỉnh Nghệ An", email="nghean@gov.vn")
CAO_BANG = edxml.Organization(
    organ_id="000.00.00.H14", organ_name="UBND Tỉnh Cao Bằng", email="caobang@gov.vn"
)


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


class Story:
    def __init__(self, say: Callable[[str], None]) -> None:
        self.say = say
        self.failures = 0

    def expect_valid(self, title: str, data: bytes, trust: pki.Trust, at: datetime) -> None:
        try:
            result = verify_package(data, trust, at)
        except AxisError as error:
            self.failures += 1
            self.say(f"  FAIL  {title}: expected valid, refused {error.code}: {error.message}")
            return
        self.say(
            f"  ok    {title}: valid, signed by {result.signature.organ_id} ({result.signature.fingerprint[:16]}…)"
        )

    def expect_refused(self, title: str, data: bytes, trust: pki.Trust, at: datetime, code: str) -> None:
        try:
            verify_package(data, trust, at)
        except AxisError as error:
            if error.code == code:
                self.say(f"  ok    {title}: refused {error.code}")
                self.say(f"          {error.message}")
            else:
                self.failures += 1
                self.say(f"  FAIL  {title}: expected {code}, got {error.code}: {error.message}")
            return
        self.failures += 1
        self.say(f"  FAIL  {title}: expected refusal {code}, but it verified")


def run(samples: Path | None, say: Callable[[str], None]) -> int:
    story = Story(say)
    now = datetime.now(UTC)
    with tempfile.TemporaryDirectory(prefix="axis-demo-") as temporary:
        store = keystore.KeyStore(Path(temporary) / "keys")
        say("1. The operator creates a development CA (standing in for the state CA) and the axis key.")
        store.init(now)
        trust = keystore.read_trust(store.trust)
        say("2. The CA issues signing certificates to the Government Office and Nghệ An province.")
        vpcp_key, vpcp_cert = store.issue(
            "000.00.00.G22", store.root / "agencies", now, name="Văn phòng Chính phủ"
        )
        nghean_key, nghean_cert = store.issue(
            "000.00.00.H41", store.root / "agencies", now, name="UBND Tỉnh Nghệ An"
        )
        key = keystore.read_private_key(vpcp_key)
        cert = keystore.read_certificates(vpcp_cert)[0]

        say("3. The Government Office builds a letter to two provinces with a PDF attached, and signs it.")
        document = example_document(now)
        signed = signing.sign(edxml.build(document), key, cert)
        story.expect_valid("signed letter", signed, trust, now)

        say("4. Forgeries are refused, each with its own reason.")
        story.expect_refused(
            "subject changed after signing",
            signed.replace("V/v triển khai".encode(), "V/v hủy bỏ".encode()),
            trust,
            now,
            "signature.digest_mismatch",
        )
        forged_name = edxml.build(replace(document, sender=NGHE_AN))
        story.expect_refused(
            "Nghệ An's letter signed with the Government Office key",
            signing.sign(forged_name, key, cert),
            trust,
            now,
            "signature.signer_not_sender",
        )
        rogue_ca = pki.create_ca(keystore.CA_NAME, now)
        rogue = pki.issue(rogue_ca, "Văn phòng Chính phủ", now, organ_id="000.00.00.G22")
        story.expect_refused(
            "certificate from a look-alike CA",
            signing.sign(edxml.build(document), rogue.key, rogue.certificate),
            trust,
            now,
            "certificate.untrusted",
        )
        story.expect_refused("unsigned letter", edxml.build(document), trust, now, "signature.missing")

        say(
            "5. Nghệ An's certificate is revoked; what it signs afterwards is refused, what it signed before stays valid."
        )
        status = edxml.StatusPackage(
            sender=NGHE_AN,
            response_for=edxml.ResponseFor(organ_id="000.00.00.G22", document_id=document.document_id),
            status_code="03",
            timestamp=now.strftime("%Y/%m/%d %H:%M:%S"),
            description="Đã tiếp nhận, vào sổ văn bản đến",
        )
        status_signed = signing.sign(
            edxml.build(status),
            keystore.read_private_key(nghean_key),
            keystore.read_certificates(nghean_cert)[0],
        )
        story.expect_valid("status 03 (accepted) from Nghệ An", status_signed, trust, now)
        revoked_at = now + timedelta(minutes=1)
        store.revoke(pki.fingerprint(keystore.read_certificates(nghean_cert)[0]), revoked_at)
        trust = keystore.read_trust(store.trust)
        story.expect_refused(
            "the same status checked after revocation",
            status_signed,
            trust,
            revoked_at + timedelta(seconds=1),
            "certificate.revoked",
        )
        story.expect_valid("the same status checked at its acceptance time", status_signed, trust, now)

        folder = samples or (DEFAULT_SAMPLES if DEFAULT_SAMPLES.is_dir() else None)
        if folder is not None:
            say(f"6. Real packages from agency software ({folder}) are checked as they are:")
            for path in sorted(folder.glob("*.edxml")):
                try:
                    verify_package(path.read_bytes(), trust, now)
                except AxisError as error:
                    say(f"  ok    {path.name}: refused {error.code}")
                else:
                    story.failures += 1
                    say(f"  FAIL  {path.name}: a sample with a placeholder signature verified")
    if story.failures:
        say(f"\n{story.failures} expectation(s) not met.")
        return 1
    say("\nEvery expectation was met.")
    return 0
