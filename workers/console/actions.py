"""What the console changes (POST, each with its CSRF token): signing in and out, verdicts
(analyst), bank changes (admin).

A verdict goes to the feedback topic as the existing record (fraud/scoring/verdicts.py
`AnalystVerdict`), with the signed-in user as its analyst (never a name from the form)
and the message's text when the console knows it (so the processor needs no copy of its
own). A bank change goes to the bank topic as the reference's record with the fields
changed (fraud/index/changelog.py `changed_upsert`): the workers follow it. The console's
own view changes when it reads them back from the topics.
"""

import logging
from urllib.parse import quote

from fastapi import APIRouter, Form, HTTPException, Request
from fastapi.responses import RedirectResponse

from fraud.errors import SchemaError
from fraud.index.changelog import change_key, changed_upsert
from fraud.scoring.verdicts import AnalystVerdict
from workers.console.auth import LOGIN_COOKIE, SESSION_COOKIE, User, tokens_match
from workers.console.deps import Admin, Analyst, AnyRole, Console, console
from workers.feedback import send_verdict

log = logging.getLogger(__name__)
router = APIRouter()
SEND_TIMEOUT_S = 10


@router.post("/login")
def login(
    request: Request, name: str = Form(""), password: str = Form(""), csrf: str = Form("")
) -> RedirectResponse:
    c = console(request)
    if not tokens_match(csrf, request.cookies.get(LOGIN_COOKIE)):
        raise HTTPException(403, "the sign-in form's token is missing or wrong: reload the page")
    client = request.client.host if request.client else "?"
    keys = (f"name:{name}", f"client:{client}")
    if c.limiter.blocked(*keys):
        log.warning("sign-in refused for %r from %s: too many failures", name[:64], client)
        raise HTTPException(429, "too many failed sign-ins: wait a few minutes")
    role = c.users.check(name, password)
    if role is None:
        c.limiter.failed(*keys)
        log.info("failed sign-in for %r from %s", name[:64], client)
        return RedirectResponse("/login?failed=1", status_code=303)
    log.info("%s signed in (%s)", name, role)
    answer = RedirectResponse("/queue", status_code=303)
    answer.set_cookie(
        SESSION_COOKIE,
        c.users.sign_in(name),
        max_age=int(c.settings.session_ttl_s),
        httponly=True,
        samesite="strict",
        secure=c.settings.secure_cookies,
    )
    answer.delete_cookie(LOGIN_COOKIE, path="/login")
    return answer


@router.post("/logout")
def logout(request: Request, user: AnyRole) -> RedirectResponse:
    console(request).users.sign_out(request.cookies.get(SESSION_COOKIE, ""))
    answer = RedirectResponse("/login", status_code=303)
    answer.delete_cookie(SESSION_COOKIE)
    return answer


def _verdict(c: Console, user: User, message_id: str, verdict: str, category, reason) -> None:
    """Send one verdict on `message_id` as `user`; waits for the broker's acknowledgement."""
    if verdict not in ("fraud", "legit"):
        raise HTTPException(422, "verdict must be fraud or legit")
    known = c.store.message(message_id)
    record = AnalystVerdict(
        message_id=message_id,
        verdict=verdict,
        category=(category or None) if verdict == "fraud" else None,
        reason=reason or None,
        analyst=user.name,
        text=(known or {}).get("text"),
    )
    if c.producer is None:
        raise HTTPException(503, "the console has no producer: it cannot send verdicts")
    send_verdict(c.producer, c.kafka, record).get(SEND_TIMEOUT_S)
    log.info("%s sent verdict %s on message %s", user.name, verdict, message_id)


@router.post("/alerts/{message_id:path}/verdict")
def verdict(
    request: Request,
    user: Analyst,
    message_id: str,
    verdict: str = Form(...),
    category: str = Form(""),
    reason: str = Form(""),
) -> RedirectResponse:
    c = console(request)
    if c.store.alert(message_id) is None:
        raise HTTPException(404, "no alert on this message")
    _verdict(c, user, message_id, verdict, category.strip()[:64], reason.strip()[:1000])
    return RedirectResponse(f"/alerts/{quote(message_id)}?sent={verdict}", status_code=303)


@router.post("/campaigns/{campaign_id}/verdict")
def campaign_verdict(
    request: Request,
    user: Analyst,
    campaign_id: str,
    verdict: str = Form(...),
    category: str = Form(""),
    reason: str = Form(""),
    back: str = Form(""),
) -> RedirectResponse:
    """The same verdict on every member of a campaign not yet judged."""
    c = console(request)
    campaign = c.store.campaign(campaign_id)
    if campaign is None:
        raise HTTPException(404, "no such campaign")
    judged = c.store.judged(campaign["members"])
    for message_id in campaign["members"]:
        if message_id not in judged:
            _verdict(c, user, message_id, verdict, category.strip()[:64], reason.strip()[:1000])
    target = f"/alerts/{quote(back)}" if back in campaign["members"] else "/queue"
    return RedirectResponse(target, status_code=303)


@router.post("/bank/{reference_id}")
def change_reference(
    request: Request,
    user: Admin,
    reference_id: int,
    action: str = Form(...),
    reason: str = Form(...),
    category: str = Form(""),
    weight: str = Form(""),
) -> RedirectResponse:
    """Disable, enable, recategorize or reweight one reference, with a reason."""
    c = console(request)
    row = c.store.one("SELECT raw FROM bank WHERE reference_id = ?", [reference_id])
    if row is None:
        raise HTTPException(404, "no such reference")
    if not reason.strip():
        raise HTTPException(422, "give a reason")
    changes = _changes(action, category, weight)
    try:
        value = changed_upsert(
            reference_id, row["raw"], changed_by=user.name, reason=reason.strip()[:1000], **changes
        )
    except (SchemaError, ValueError) as e:
        raise HTTPException(422, str(e)) from None
    if c.producer is None:
        raise HTTPException(503, "the console has no producer: it cannot change the bank")
    c.producer.send(c.kafka.bank_topic, value, key=change_key(reference_id)).get(SEND_TIMEOUT_S)
    log.info("%s changed reference %d: %s", user.name, reference_id, action)
    return RedirectResponse(f"/bank?reference={reference_id}", status_code=303)


def _changes(action: str, category: str, weight: str) -> dict:
    if action == "disable":
        return {"disabled": True}
    if action == "enable":
        return {"disabled": False}
    if action == "recategorize" and category.strip():
        return {"category": category.strip().lower()[:64]}
    if action == "reweight":
        try:
            return {"weight": float(weight)}
        except ValueError:
            raise HTTPException(422, "weight must be a number > 0") from None
    raise HTTPException(422, "action: disable, enable, recategorize (with a category) or reweight")
