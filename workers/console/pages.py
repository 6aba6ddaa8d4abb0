"""The console's pages (GET): sign-in, the queue, an alert, the bank, the overview. Each
needs a signed-in user; what a role may change is in actions.py."""

import json
import time
from datetime import UTC, datetime
from pathlib import Path

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.templating import Jinja2Templates

from fraud.scoring.verdicts import reference_id_for
from workers.console.auth import LOGIN_COOKIE, ROLES, User, new_token
from workers.console.deps import SignedIn, console
from workers.console.evidence import evidence_rows, message_segments
from workers.console.overview import overview
from workers.console.store import SORTS, STATUSES, QueueFilter

templates = Jinja2Templates(directory=Path(__file__).parent / "templates")
router = APIRouter()
# The queue's time filter: the last hour, day or week, or everything.
SINCE = {"1h": 3600, "24h": 86400, "7d": 7 * 86400, "all": None}


def when(ms: int | None) -> str:
    if ms is None:
        return ""
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")


templates.env.globals.update(when=when, roles=ROLES)


def page(request: Request, name: str, user: User | None, **context) -> HTMLResponse:
    return templates.TemplateResponse(request, name, {"user": user, **context})


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request, failed: str = "") -> HTMLResponse:
    token = new_token()
    answer = page(request, "login.html", None, login_token=token, failed=failed)
    answer.set_cookie(LOGIN_COOKIE, token, httponly=True, samesite="strict", path="/login")
    return answer


@router.get("/")
def home() -> RedirectResponse:
    return RedirectResponse("/queue", status_code=303)


def _number(value: str) -> float | None:
    try:
        return float(value) if value.strip() else None
    except ValueError:
        raise HTTPException(422, f"not a number: {value[:20]!r}") from None


@router.get("/queue", response_class=HTMLResponse)
def queue(
    request: Request,
    user: SignedIn,
    status: str = "open",
    category: str = "",
    min_score: str = "",
    max_score: str = "",
    since: str = "all",
    sort: str = "newest",
    page_number: int = 1,
) -> HTMLResponse:
    c = console(request)
    if status not in (*STATUSES, "any") or sort not in SORTS or since not in SINCE:
        raise HTTPException(422, "unknown status, sort or time filter")
    span = SINCE[since]
    f = QueueFilter(
        status=None if status == "any" else status,
        category=category or None,
        min_score=_number(min_score),
        max_score=_number(max_score),
        since_ms=None if span is None else int((time.time() - span) * 1000),
        sort=sort,
        page=max(page_number, 1),
        page_size=c.settings.page_size,
    )
    rows, total = c.store.queue(f)
    pages = max((total + f.page_size - 1) // f.page_size, 1)
    query = {"status": status, "category": category, "min_score": min_score}
    query |= {"max_score": max_score, "since": since, "sort": sort}
    return page(
        request,
        "queue.html",
        user,
        rows=rows,
        total=total,
        pages=pages,
        f=f,
        query=query,
        categories=c.store.categories(),
        last_seq=c.store.last_seq(),
        live=f.page == 1 and sort == "newest" and status in ("open", "any"),
        reading=_reading(c),
    )


def _reading(c) -> str | None:
    """Why the console is not up to date with the topics, if it is not."""
    if c.reader is None:
        return None
    if c.reader.error is not None:
        return f"the console stopped reading the topics ({type(c.reader.error).__name__})"
    if not c.reader.caught_up.is_set():
        return "still reading the topics from their start: the queue is filling"
    return None


@router.get("/alerts/{message_id:path}", response_class=HTMLResponse)
def alert(request: Request, user: SignedIn, message_id: str) -> HTMLResponse:
    c = console(request)
    row = c.store.alert(message_id)
    if row is None:
        raise HTTPException(404, "no alert on this message (yet): it may still be read")
    decision = json.loads(row["decision"])
    evidence = evidence_rows(c.store, decision, row["text"])
    campaign = c.store.campaign_of(message_id)
    if campaign is None and decision.get("campaign_id"):
        campaign = c.store.campaign(decision["campaign_id"])
    return page(
        request,
        "alert.html",
        user,
        alert=row,
        decision=decision,
        evidence=evidence,
        text=message_segments(row["text"], evidence),
        distribution=sorted(decision["category_distribution"].items(), key=lambda kv: -kv[1]),
        campaign=campaign,
        verdicts=c.store.verdicts(message_id),
        reference_id=reference_id_for(message_id),
        categories=sorted(set(c.store.categories()) | set(decision["category_distribution"])),
    )


@router.get("/bank", response_class=HTMLResponse)
def bank(
    request: Request,
    user: SignedIn,
    text: str = "",
    category: str = "",
    source: str = "",
    label: str = "",
    reference: int | None = None,
) -> HTMLResponse:
    c = console(request)
    rows, total = c.store.bank_search(text, category, source, label)
    history = c.store.bank_history(reference) if reference is not None else []
    categories = c.store.query("SELECT DISTINCT category FROM bank WHERE category IS NOT NULL")
    return page(
        request,
        "bank.html",
        user,
        rows=rows,
        total=total,
        query={"text": text, "category": category, "source": source, "label": label},
        categories=sorted(r["category"] for r in categories),
        reference=reference,
        history=history,
    )


@router.get("/overview", response_class=HTMLResponse)
def overview_page(request: Request, user: SignedIn) -> HTMLResponse:
    return page(request, "overview.html", user, **overview(console(request).store))
