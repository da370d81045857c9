"""Verification cost of one signed edXML package, against the floor of the same primitives.

Ours: ``axis.verification.verify_package`` (pre-check, hardened parse, signature policy, chain and
CRL check, signxml verify, XSD validation, model). The floor, measured in the same run on the same
bytes: one hardened parse + exclusive c14n of the document + SHA-256 + one RSA-2048 verify.
Also: how long each denial-of-service input takes to be refused. Prints a table and writes
bench/results/verify.json. Figures, not assertions.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from lxml import etree

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from adapters.demo import example_document  # noqa: E402
from axis import edxml, keystore, signing, xmlguard  # noqa: E402
from axis.errors import AxisError  # noqa: E402
from axis.verification import verify_package  # noqa: E402

SIZES = {"10 KB": 10_000, "100 KB": 100_000, "2 MB": 2_000_000}
RESULTS = Path(__file__).resolve().parent / "results"


def timed(function, budget: float = 2.0, minimum: int = 5) -> float:  # type: ignore[no-untyped-def]
    """Median seconds per call, repeating for about ``budget`` seconds."""
    samples: list[float] = []
    deadline = time.perf_counter() + budget
    while len(samples) < minimum or time.perf_counter() < deadline:
        start = time.perf_counter()
        function()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def floor(data: bytes, public_key, signature: bytes, signed_info: bytes) -> None:  # type: ignore[no-untyped-def]
    root = etree.fromstring(data, xmlguard.parser())
    hashlib.sha256(etree.tostring(root, method="c14n", exclusive=True)).digest()
    public_key.verify(signature, signed_info, padding.PKCS1v15(), hashes.SHA256())


def main() -> None:
    now = datetime.now(UTC)
    rows = []
    with tempfile.TemporaryDirectory() as temporary:
        store = keystore.KeyStore(Path(temporary) / "keys")
        store.init(now)
        key_path, cert_path = store.issue("000.00.00.G22", store.root / "agencies", now)
        key, cert = keystore.read_private_key(key_path), keystore.read_certificates(cert_path)[0]
        trust = keystore.read_trust(store.trust)
        base = example_document(now)
        for label, size in SIZES.items():
            payload = os.urandom(max(0, (size - 4_800) * 3 // 4))
            document = replace(base, attachments=(replace(base.attachments[0], data=payload),))
            data = signing.sign(edxml.build(document), key, cert)
            root = etree.fromstring(data)
            signature = root.find(f".//{{{signing.DS}}}Signature")
            signed_info = etree.tostring(
                signature.find(f"{{{signing.DS}}}SignedInfo"), method="c14n", exclusive=True
            )
            value = base64.b64decode(signature.find(f"{{{signing.DS}}}SignatureValue").text)
            ours = timed(lambda data=data: verify_package(data, trust, now))
            base_cost = timed(
                lambda data=data, value=value, signed_info=signed_info: floor(
                    data, cert.public_key(), value, signed_info
                )
            )
            precheck = timed(lambda data=data: xmlguard.precheck(data))
            rows.append(
                {
                    "package": label,
                    "bytes": len(data),
                    "verify_ms": ours * 1e3,
                    "verify_per_s": 1 / ours,
                    "mb_per_s": len(data) / ours / 1e6,
                    "floor_ms": base_cost * 1e3,
                    "precheck_ms": precheck * 1e3,
                    "ratio_floor_over_ours": base_cost / ours,
                }
            )
        attacks = {
            "depth 10 000": b"<a>" * 10_000 + b"</a>" * 10_000,
            "30 000 xmlns on root": b"<a "
            + b" ".join(b'xmlns:n%d="u:%d"' % (i, i) for i in range(30_000))
            + b"/>",
            "100 000 attributes": b"<a " + b" ".join(b'a%d="1"' % i for i in range(100_000)) + b"/>",
            "billion laughs": b'<!DOCTYPE a [<!ENTITY a "lol"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;">]><a>&b;</a>',
        }
        refusals = {}
        for name, attack in attacks.items():

            def refuse(attack: bytes = attack) -> None:
                try:
                    verify_package(attack, trust, now)
                except AxisError:
                    return
                raise AssertionError("not refused")

            refusals[name] = timed(refuse, budget=0.5) * 1e3

    print(
        f"{'package':<8} {'bytes':>9} {'verify ms':>10} {'pkg/s':>8} {'MB/s':>7} {'floor ms':>9} {'pre-check ms':>13} {'floor/ours':>11}"
    )
    for row in rows:
        print(
            f"{row['package']:<8} {row['bytes']:>9} {row['verify_ms']:>10.2f} {row['verify_per_s']:>8.0f} "
            f"{row['mb_per_s']:>7.1f} {row['floor_ms']:>9.2f} {row['precheck_ms']:>13.3f} {row['ratio_floor_over_ours']:>10.0%}"
        )
    print("\nrefusal time of hostile inputs (one core, single-threaded)")
    for name, ms in refusals.items():
        print(f"  {name:<24} {ms:8.2f} ms")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "verify.json").write_text(json.dumps({"verify": rows, "refusal_ms": refusals}, indent=2))


if __name__ == "__main__":
    main()
