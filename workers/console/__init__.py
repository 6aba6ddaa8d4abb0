"""`fraud console`: the analysts' web application (app.py says how it is built)."""

from workers.console.app import create_app
from workers.console.auth import ROLES, LoginLimiter, Users
from workers.console.deps import Console
from workers.console.main import open_store, run_console
from workers.console.reader import TopicReader
from workers.console.store import QueueFilter, Store

__all__ = [
    "ROLES",
    "Console",
    "LoginLimiter",
    "QueueFilter",
    "Store",
    "TopicReader",
    "Users",
    "create_app",
    "open_store",
    "run_console",
]
