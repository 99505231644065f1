"""The fault suite's short form (tests/fault_suite.py has the long one, with the table)."""

from __future__ import annotations

from pathlib import Path

from tests.fault_suite import (
    FAULTS,
    POSTGRES_FAULTS,
    ROOM,
    History,
    Received,
    Watcher,
    check,
    failures,
    run,
    table,
)


async def test_every_fault_in_turn_loses_duplicates_and_reorders_nothing_acknowledged(tmp_path: Path) -> None:
    rows = await run(tmp_path, seconds=4.0)
    print(table(rows))
    assert failures(rows) == [], table(rows)
    # Each phase really published, on every path, and every client was checked.
    for fault in FAULTS:
        row = rows[fault.name]
        assert row.acked >= 10 and row.checked >= 4 * row.acked // 2, (fault.name, table(rows))
    # The rewinds were told, not hidden (clients past the new head reload the room).
    assert rows["Redis back from an older snapshot"].told + rows["Redis restarted empty"].told > 0, table(
        rows
    )


async def test_every_fault_of_a_cluster_on_postgresql_alone_loses_nothing(tmp_path: Path) -> None:
    rows = await run(tmp_path, seconds=4.0, broker="postgresql")
    print(table(rows))
    assert failures(rows) == [], table(rows)
    for fault in POSTGRES_FAULTS:
        row = rows[fault.name]
        assert row.acked >= 10 and row.checked >= 4 * row.acked // 2, (fault.name, table(rows))
        # PostgreSQL keeps everything it acknowledged: no client has anything to reload.
        assert row.told == 0, (fault.name, table(rows))


def test_the_checker_finds_losses_duplicates_and_reordering() -> None:
    history = History()
    history.phase = FAULTS[0].name
    for n in range(4):
        history.sent(f"ws0:{n}", [ROOM]).acked = 1.0
    history.sent("ws0:9", [ROOM])  # never acknowledged: not owed to anyone
    watcher = Watcher("http://127.0.0.1:9", "u0w", "websocket")
    for key, offset in (("ws0:0", 1), ("ws0:2", 2), ("ws0:1", 3), ("ws0:2", 4)):
        watcher.received.append(Received(key, ROOM, "e1", offset))
    row = check(history, [watcher])[FAULTS[0].name]
    assert (row.acked, row.checked, row.delivered, row.told) == (4, 4, 3, 0)
    assert row.lost == ["u0w project:p1 ws0:3"]
    assert row.duplicated == ["u0w project:p1 ws0:2 x2"]
    assert row.out_of_order == ["u0w ws0:1 after n=2"]

    sent = history.published["ws0:3"].sent
    watcher.resets.append((ROOM, sent - 1))  # told before it was sent: still lost
    assert check(history, [watcher])[FAULTS[0].name].lost == ["u0w project:p1 ws0:3"]
    watcher.resets.append((ROOM, sent + 1))  # told after: the client reloads the room
    assert check(history, [watcher])[FAULTS[0].name].lost == []
