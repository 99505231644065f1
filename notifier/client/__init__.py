"""Python clients for other processes: `Subscriber` (the `/` namespace) and `Worker` (`/workers`).

Both sit on `socketio.AsyncClient`, which already reconnects with jittered backoff; what they
add is what everyone hand-writes: a fresh token on every reconnect and, before the token
expires, in-band on the same connection (when the token is a callable); rejoining rooms from
where they were; dropping duplicates; and typed errors that carry the server's code.
"""

from .connection import NotifierClientError, TokenSource
from .subscriber import Subscriber
from .sync import SyncWorker
from .worker import Worker

__all__ = ["NotifierClientError", "Subscriber", "SyncWorker", "TokenSource", "Worker"]
