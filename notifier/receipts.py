"""Receipts: each notification's path on each device (delivered, seen, read, actioned).

Clients report them in batches, and the reports of one loop iteration go to the store in one
write, so that a thousand deliveries do not cost a thousand round trips. Seeing, reading or
acting on a notification anywhere cancels its escalation if it has not gone out yet.
"""

from __future__ import annotations

from collections.abc import Callable

from .batching import Batcher
from .clock import Clock, millis
from .escalation import escalation_id
from .records import Receipt, ReceiptKind
from .store import Store

# (kind, seconds from the notification's creation to the receipt) -> the metrics
Observe = Callable[[ReceiptKind, float], None]

_CANCELLING = frozenset({ReceiptKind.SEEN, ReceiptKind.READ, ReceiptKind.ACTIONED})


class Receipts:
    def __init__(self, store: Store, clock: Clock) -> None:
        self._store = store
        self._clock = clock
        self._batcher: Batcher[list[Receipt], int] = Batcher(self._write)
        self.observe: Observe = lambda kind, seconds: None
        # For the metrics: receipt writes, and the receipts they carried.
        self.writes = 0
        self.stored = 0

    async def record(
        self, user_id: str, kind: ReceiptKind, ids: list[str], device: str, action: str | None = None
    ) -> int:
        """Store the user's receipts for `ids` (others' notifications are ignored); how many
        were new."""
        at = millis(self._clock.now())
        receipts = [Receipt(notification_id, user_id, kind, device, at, action) for notification_id in ids]
        return await self._batcher.submit(receipts)

    async def of(self, notification_id: str) -> list[Receipt]:
        return await self._store.list_receipts(notification_id)

    async def close(self) -> None:
        await self._batcher.close()

    async def _write(self, batches: list[list[Receipt]]) -> list[int]:
        receipts = [receipt for batch in batches for receipt in batch]
        added = await self._store.add_receipts(receipts)
        self.writes += 1
        self.stored += len(added)
        cancelled = sorted({r.notification_id for r, _ in added if r.kind in _CANCELLING})
        if cancelled:
            await self._store.cancel_jobs([escalation_id(n) for n in cancelled])
        for receipt, created_at in added:
            self.observe(receipt.kind, max(0, receipt.at - created_at) / 1000)
        new = {(r.notification_id, r.kind, r.device) for r, _ in added}
        return [sum((r.notification_id, r.kind, r.device) in new for r in batch) for batch in batches]
