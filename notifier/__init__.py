"""notifier: real-time notifications over Socket.IO, with a durable inbox and replay."""

__version__ = "0.1.0"

from .app import create_app
from .errors import ErrorCode, NotifierError
from .keys import NOTIFIER
from .service import Notifier
from .threadsafe import ThreadSafeNotifier
from .settings import Settings

__all__ = [
    "NOTIFIER",
    "ErrorCode",
    "Notifier",
    "NotifierError",
    "Settings",
    "ThreadSafeNotifier",
    "__version__",
    "create_app",
]
