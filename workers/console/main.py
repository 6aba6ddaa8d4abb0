"""The `fraud console` process: the database opened, the topics read into it on a thread,
a producer for verdicts and bank changes, the web application served until
SIGTERM/SIGINT. One ExitStack owns what it opens."""

import logging
from contextlib import ExitStack

from fraud.config import Settings
from workers.console.app import create_app
from workers.console.auth import LoginLimiter, Users
from workers.console.deps import Console
from workers.console.reader import TopicReader
from workers.console.store import Store
from workers.kafka import make_producer
from workers.processes import bind, web_server

log = logging.getLogger(__name__)


def open_store(settings: Settings) -> tuple[Store, Users]:
    store = Store(settings.console.database)
    return store, Users(store, settings.console.session_ttl_s)


def run_console(settings: Settings) -> None:
    """Serve the console; the topics are read from where the database left off (from
    their start for a new database)."""
    import uvicorn  # lazily: the web server is needed only here and by `fraud serve`

    c = settings.console
    log.info("settings %s", settings.model_dump_json())  # secrets are SecretStr: masked
    with ExitStack() as stack:
        sock = bind(c.host, c.port, "--host/--port (FRAUD_CONSOLE__HOST, FRAUD_CONSOLE__PORT)")
        stack.callback(sock.close)
        store, users = open_store(settings)
        stack.callback(store.close)
        if store.one("SELECT name FROM users LIMIT 1") is None:
            log.warning("the console has no users yet: add one with `fraud console add-user`")
        reader = TopicReader(settings.kafka, c, store)
        stack.callback(reader.close)
        reader.start()
        producer = make_producer(settings.kafka)
        stack.callback(producer.close, timeout=10)
        limiter = LoginLimiter(c.login_attempts, c.login_window_s)
        app = create_app(Console(c, settings.kafka, store, users, limiter, producer, reader))
        config = uvicorn.Config(
            app,
            log_config=None,  # the process's logging (workers.cli.main)
            access_log=False,  # URLs hold message ids and searches: nothing is logged per request
            server_header=False,
            timeout_graceful_shutdown=3,  # the live queue's event streams never end by themselves
        )
        host, port = sock.getsockname()[:2]
        log.info("console on http://%s:%d", host, port)
        web_server()(config).run(sockets=[sock])
    log.info("console stopped")
