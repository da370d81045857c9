"""Message ids: RFC 9562 version 7 UUIDs, ordered by the time they were made."""

from __future__ import annotations

import uuid

from axis.router import new_message_id

T0 = 1_800_000_000.0


def test_message_ids_are_version_7_and_sort_by_time() -> None:
    ids = [new_message_id(T0 + n / 1000) for n in range(200)]
    parsed = [uuid.UUID(i) for i in ids]
    assert all(u.version == 7 and u.variant == uuid.RFC_4122 for u in parsed)
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert int(ids[0].replace("-", "")[:12], 16) == int(T0 * 1000)
    same_moment = {new_message_id(T0) for _ in range(1000)}
    assert len(same_moment) == 1000  # 74 random bits tell apart ids of the same millisecond
