from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import anyio
import pytest

from db import notifications
from db.notifications import Draft, IdempotencyMismatch, InvalidCursor, Record

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("database")]

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


async def make(user: str, n: int, type: str = "t", start: datetime = T0) -> list[Record]:
    """`n` notifications one second apart, oldest first."""
    return [
        (await notifications.create(user, type, f"{user} {i}", now=start + timedelta(seconds=i)))[0]
        for i in range(n)
    ]


def titles(records: list[Record]) -> list[str]:
    return [record.title for record in records]


async def test_create_round_trips_every_field() -> None:
    expires = T0 + timedelta(days=1)
    record, created = await notifications.create(
        "alice",
        "execution.finished",
        "Done",
        body="All 3 steps passed",
        data={"execution": "e1", "steps": [1, 2, 3]},
        severity="success",
        link="https://example.com/e/e1",
        expires_at=expires,
        now=T0,
    )
    assert created
    assert await notifications.get_for_user("alice", record.id) == record
    assert (record.user, record.type, record.severity, record.state) == (
        "alice",
        "execution.finished",
        "success",
        "unread",
    )
    assert record.data == {"execution": "e1", "steps": [1, 2, 3]}
    assert (record.created, record.expires_at, record.link) == (
        T0,
        expires,
        "https://example.com/e/e1",
    )


async def test_bad_severity_and_naive_times_are_refused() -> None:
    with pytest.raises(ValueError, match="critical"):
        await notifications.create("alice", "t", "x", severity="critical")
    with pytest.raises(ValueError, match="timezone-aware"):
        await notifications.create("alice", "t", "x", now=datetime(2026, 1, 1))


async def test_idempotency_key_returns_the_first_row() -> None:
    first, created = await notifications.create(
        "alice", "t", "once", producer="billing", idempotency_key="k1"
    )
    again, created_again = await notifications.create(
        "alice", "t", "once", producer="billing", idempotency_key="k1"
    )
    assert created
    assert not created_again
    assert again == first
    other, created_other = await notifications.create(
        "alice", "t", "once", producer="crm", idempotency_key="k1"
    )
    assert created_other
    assert other.id != first.id
    with pytest.raises(IdempotencyMismatch):
        await notifications.create("alice", "t", "twice", producer="billing", idempotency_key="k1")
    assert (await notifications.list_for_user("alice")).items == [other, first]


async def test_one_key_creates_one_notification_per_user() -> None:
    """A create for many users is retried with its one key: each user keeps one row."""
    draft = Draft("deploy", "Deployed", data={"v": 2}, severity="success")
    first = await notifications.create_many(
        ["alice", "bob", "alice"], draft, producer="ci", idempotency_key="k"
    )
    assert [(r.user, created) for r, created in first] == [("alice", True), ("bob", True)]
    retry = await notifications.create_many(
        ["bob", "carol", "alice"], draft, producer="ci", idempotency_key="k"
    )
    assert [(r.user, created) for r, created in retry] == [
        ("bob", False),
        ("carol", True),
        ("alice", False),
    ]
    assert retry[0][0] == first[1][0]
    assert await notifications.unread_counts(["alice", "bob", "carol", "dave"]) == {
        "alice": 1,
        "bob": 1,
        "carol": 1,
        "dave": 0,
    }


async def test_concurrent_retries_of_one_key_create_one_row() -> None:
    async def attempt() -> None:
        await notifications.create("alice", "t", "x", producer="p", idempotency_key="same")

    async with anyio.create_task_group() as group:
        for _ in range(10):
            group.start_soon(attempt)
    assert await notifications.unread_count("alice") == 1


async def test_list_is_newest_first_with_ties_broken_by_id() -> None:
    same = [(await notifications.create("alice", "t", f"tie {i}", now=T0))[0] for i in range(3)]
    older = await make("alice", 1, start=T0 - timedelta(seconds=5))
    page = await notifications.list_for_user("alice")
    assert page.items == sorted(same, key=lambda r: r.id, reverse=True) + older
    assert page.next_cursor is None


async def test_keyset_pagination_is_stable_while_newer_rows_arrive() -> None:
    await make("alice", 7)
    seen: list[str] = []
    cursor = None
    for step in range(10):
        page = await notifications.list_for_user("alice", before_cursor=cursor, limit=3)
        seen += titles(page.items)
        # A newer notification lands between page requests: later pages must not shift.
        await notifications.create(
            "alice", "t", f"new {step}", now=T0 + timedelta(hours=1, seconds=step)
        )
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == [f"alice {i}" for i in range(6, -1, -1)]


async def test_ties_at_a_page_boundary_are_neither_lost_nor_repeated() -> None:
    for i in range(5):
        await notifications.create("alice", "t", f"tie {i}", now=T0)
    first = await notifications.list_for_user("alice", limit=2)
    second = await notifications.list_for_user("alice", limit=2, before_cursor=first.next_cursor)
    third = await notifications.list_for_user("alice", limit=2, before_cursor=second.next_cursor)
    ids = [r.id for r in first.items + second.items + third.items]
    assert len(ids) == len(set(ids)) == 5
    assert third.next_cursor is None


@pytest.mark.parametrize("cursor", ["", "v1.", "v2.AAAA", "v1.not-base64!!", "v1.AAAA"])
async def test_bad_cursor_is_refused(cursor: str) -> None:
    with pytest.raises(InvalidCursor):
        await notifications.list_for_user("alice", before_cursor=cursor)


async def test_filters_by_type_since_and_state() -> None:
    mentions = await make("alice", 2, type="mention")
    finished = await make("alice", 2, type="execution.finished", start=T0 + timedelta(minutes=1))
    page = await notifications.list_for_user("alice", type="mention")
    assert page.items == mentions[::-1]
    page = await notifications.list_for_user("alice", since=finished[1].created)
    assert page.items == [finished[1]]  # `since` is inclusive
    await notifications.mark_read("alice", [mentions[0].id])
    await notifications.dismiss("alice", [finished[0].id])
    by_state = {
        state: titles((await notifications.list_for_user("alice", state=state)).items)
        for state in (None, "unread", "read", "dismissed")
    }
    assert by_state == {
        None: [finished[1].title, mentions[1].title, mentions[0].title],
        "unread": [finished[1].title, mentions[1].title],
        "read": [mentions[0].title],
        "dismissed": [finished[0].title],
    }
    with pytest.raises(ValueError, match="state"):
        await notifications.list_for_user("alice", state="archived")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="limit"):
        await notifications.list_for_user("alice", limit=0)


async def test_expired_notifications_are_hidden_and_not_counted() -> None:
    await notifications.create("alice", "t", "gone", expires_at=T0 - timedelta(seconds=1), now=T0)
    kept, _ = await notifications.create("alice", "t", "kept", expires_at=T0 + timedelta(days=1))
    assert (await notifications.list_for_user("alice", now=T0)).items == [kept]
    assert await notifications.unread_count("alice", now=T0) == 1


async def test_read_unread_dismiss_return_only_what_changed() -> None:
    a, b, c = await make("alice", 3)
    assert await notifications.unread_count("alice") == 3
    assert set(await notifications.mark_read("alice", [a.id, b.id])) == {a.id, b.id}
    assert await notifications.mark_read("alice", [a.id, b.id]) == []  # already read
    assert await notifications.unread_count("alice") == 1
    assert await notifications.mark_unread("alice", [a.id, c.id]) == [a.id]  # c was unread
    assert await notifications.unread_count("alice") == 2
    assert await notifications.dismiss("alice", [a.id, a.id]) == [a.id]
    assert await notifications.dismiss("alice", [a.id]) == []
    assert await notifications.unread_count("alice") == 1  # dismissed ones no longer count
    assert await notifications.mark_read("alice", []) == []
    assert await notifications.mark_read("alice", [uuid.uuid4()]) == []
    stored = await notifications.get_for_user("alice", a.id)
    assert stored is not None
    assert stored.state == "dismissed"


async def test_read_all_respects_its_upper_bound() -> None:
    """A notification that arrives while the user clicks "mark all read" stays unread."""
    shown = await make("alice", 3)
    late, _ = await notifications.create("alice", "t", "late", now=T0 + timedelta(minutes=5))
    assert await notifications.read_all("alice", up_to=shown[-1].created) == 3
    assert titles((await notifications.list_for_user("alice", state="unread")).items) == ["late"]
    assert await notifications.read_all("alice", up_to=shown[-1].created) == 0
    assert await notifications.read_all("alice") == 1
    assert await notifications.unread_count("alice") == 0
    stored = await notifications.get_for_user("alice", late.id)
    assert stored is not None
    assert stored.read_at is not None


async def test_read_all_up_to_a_cursor_is_exact_among_equal_times() -> None:
    same = [(await notifications.create("alice", "t", f"tie {i}", now=T0))[0] for i in range(4)]
    oldest_first = sorted(same, key=lambda r: r.id)
    assert await notifications.read_all("alice", up_to_cursor=oldest_first[1].cursor) == 2
    unread = (await notifications.list_for_user("alice", state="unread")).items
    assert {r.id for r in unread} == {r.id for r in oldest_first[2:]}


async def test_users_never_see_or_change_each_others_notifications() -> None:
    alice = await make("alice", 2)
    bob = await make("bob", 1)
    ids = [r.id for r in alice + bob]
    assert await notifications.get_for_user("bob", alice[0].id) is None
    assert (await notifications.list_for_user("bob")).items == bob
    assert await notifications.mark_read("bob", ids) == [bob[0].id]
    assert await notifications.dismiss("bob", [alice[0].id]) == []
    assert await notifications.mark_unread("bob", [alice[0].id]) == []
    assert await notifications.read_all("bob") == 0
    assert await notifications.unread_count("alice") == 2
    assert [r.state for r in (await notifications.list_for_user("alice")).items] == ["unread"] * 2


async def test_concurrent_writes_wait_for_the_lock_instead_of_failing() -> None:
    """SQLite has one writer: with the busy timeout, concurrent creates queue up."""
    async with anyio.create_task_group() as group:
        for i in range(30):
            group.start_soon(make, f"user{i % 3}", 2)
    assert sum([await notifications.unread_count(f"user{i}") for i in range(3)]) == 60
