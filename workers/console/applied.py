"""Whether each worker has applied a bank change yet: asked of the workers' /readyz (their
index version and the bank offsets they applied, workers/scoring/main.py readiness), the
addresses given in `worker_urls`."""

import json
import urllib.error
import urllib.request

TIMEOUT_S = 2.0


def worker_state(url: str) -> dict:
    """A worker's /readyz as {url, index_version, bank_offsets}, or {url, error}."""
    try:
        # http(s) addresses from the console's own settings, not from a user
        with urllib.request.urlopen(f"{url}/readyz", timeout=TIMEOUT_S) as answer:  # noqa: S310
            body = json.loads(answer.read())
    except urllib.error.HTTPError as e:  # 503 while not ready: the body still says
        try:
            body = json.loads(e.read())
        except ValueError:
            return {"url": url, "error": f"HTTP {e.code}"}
    except (OSError, ValueError) as e:
        return {"url": url, "error": type(e).__name__}
    offsets = {int(p): int(o) for p, o in (body.get("bank_offsets") or {}).items()}
    return {"url": url, "index_version": body.get("index_version"), "bank_offsets": offsets}


def applied(state: dict, partition: int, offset: int) -> bool | None:
    """True once the worker applied the change at (partition, offset); None: unknown."""
    if "error" in state:
        return None
    return state["bank_offsets"].get(partition, 0) > offset
