"""What the pages ask for while they are open: new alerts as server-sent events (the
queue), and the bank changes a verdict caused with whether each worker applied them (the
alert page)."""

import asyncio
import json

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from fraud.scoring.verdicts import reference_id_for
from workers.console.applied import applied, worker_state
from workers.console.deps import SignedIn, console
from workers.console.pages import when

router = APIRouter()
EVERY_S = 0.5
EXCERPT = 160


def event_row(row: dict) -> dict:
    """An alert as the queue's script shows it (text cut to an excerpt)."""
    text = row.get("text") or ""
    return {
        "message_id": row["message_id"],
        "seq": row["seq"],
        "score": round(row["score"], 3),
        "category": row["category"],
        "status": row["status"],
        "time": when(row["scored_ms"]),
        "sender": row.get("sender") or "",
        "recipient": row.get("recipient") or "",
        "excerpt": text[:EXCERPT] + ("…" if len(text) > EXCERPT else ""),
    }


@router.get("/events")
async def events(request: Request, user: SignedIn, after: int = 0):
    """New and changed alerts after `after` (a seq), as they come: one `alert` event each."""
    store = console(request).store

    async def stream():
        last = after
        yield ": connected\n\n"
        while not await request.is_disconnected():
            rows = await run_in_threadpool(store.alerts_after, last)
            for row in rows:
                last = row["seq"]
                yield f"event: alert\nid: {last}\ndata: {json.dumps(event_row(row))}\n\n"
            await asyncio.sleep(EVERY_S)

    headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    return StreamingResponse(stream(), media_type="text/event-stream", headers=headers)


@router.get("/alerts/{message_id:path}/changes.json")
def changes(request: Request, user: SignedIn, message_id: str) -> dict:
    """The verdicts on the message, the bank changes they caused (its own reference, and
    references disabled because of it), and which workers applied the latest."""
    c = console(request)
    ref_id = reference_id_for(message_id)
    own = c.store.bank_history(ref_id)
    disabled = c.store.query(
        "SELECT * FROM bank_history WHERE reason LIKE ? AND reference_id != ?",
        [f"%(last: {message_id})", ref_id],
    )
    rows = sorted(own + disabled, key=lambda r: (r["written_ms"], r["offset"]))
    workers = [worker_state(url) for url in c.settings.worker_url_list()]
    latest = rows[-1] if rows else None
    for w in workers:
        w["applied"] = None if latest is None else applied(w, latest["partition"], latest["offset"])
    return {
        "verdicts": [
            {k: v[k] for k in ("verdict", "category", "reason", "analyst")}
            | {"time": when(v["sent_ms"])}
            for v in c.store.verdicts(message_id)
        ],
        "changes": [
            {
                "reference_id": r["reference_id"],
                "label": r["label"],
                "category": r["category"],
                "disabled": bool(r["disabled"]),
                "changed_by": r["changed_by"],
                "reason": r["reason"],
                "partition": r["partition"],
                "offset": r["offset"],
                "time": when(r["written_ms"]),
            }
            for r in rows
        ],
        "workers": workers,
    }
