"""notifier: real-time notifications over Socket.IO, with a durable inbox and replay."""

__version__ = "0.1.0"

from .app import create_app
from .errors import ErrorCode, NotifierError
from .keys import NOTIFIER
from .service import Notifier
from .settings import Settings
from .threadsafe import ThreadSafeNotifier

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
