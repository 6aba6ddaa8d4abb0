"""The console's pages on a database filled by hand: the queue's order, filters and pages,
an alert's evidence with the shared words marked, the bank's search and history, the
overview's figures, the live queue's events, and the texts purged after the retention."""

import json
import re

from fraud.index.changelog import decode_change
from fraud.scoring.verdicts import AnalystVerdict
from tests.workers.console.conftest import REFERENCE, add_alert, page_text, sign_in
from workers.console import QueueFilter


def _ids(html: str) -> list[str]:
    return re.findall(r'<tr data-href="[^"]+" data-id="([^"]+)"', html)


def test_the_queue_orders_filters_and_pages(console_app):
    store, client = console_app.console.store, console_app.client
    for i in range(1, 8):  # m-1 exists (score 0.9): scores 0.31 .. 0.91, newer each
        add_alert(store, f"q-{i}", f"text {i}", score=0.21 + i / 10, ms=1_767_225_600_000 + i)
    sign_in(client, "viewer")
    newest = _ids(client.get("/queue").text)
    assert newest[:3] == ["q-7", "q-6", "q-5"] and len(newest) == 8
    by_score = _ids(client.get("/queue?sort=score").text)
    assert by_score[:2] == ["q-7", "m-1"]
    assert _ids(client.get("/queue?min_score=0.5&max_score=0.8").text) == ["q-5", "q-4", "q-3"]
    assert _ids(client.get("/queue?category=other").text) == []
    rows, total = store.queue(QueueFilter(page=2, page_size=3))
    assert total == 8 and [r["message_id"] for r in rows] == ["q-4", "q-3", "q-2"]
    with store.transaction() as db:
        store.put_verdict(db, AnalystVerdict(message_id="q-7", verdict="legit"), 5, 0, 0)
    assert "q-7" not in _ids(client.get("/queue").text)
    assert _ids(client.get("/queue?status=cleared").text) == ["q-7"]
    assert client.get("/queue?status=nonsense").status_code == 422


def test_an_alert_shows_its_evidence_with_the_shared_words_marked(console_app):
    client = console_app.client
    sign_in(client, "viewer")
    html = client.get("/alerts/m-1").text
    evidence = html[html.index('id="evidence"') :]
    assert REFERENCE in page_text(evidence)
    marked = set(re.findall(r"<mark>([^<]+)</mark>", evidence))
    assert {w.lower() for w in marked} == {"parcel", "held", "pay", "customs", "fee"}
    assert "+44 7700 900001" in html and "0.900" in html and "v-test" in html


def test_the_bank_page_searches_and_shows_a_history(console_app):
    client = console_app.client
    sign_in(client, "viewer")
    assert REFERENCE in client.get("/bank?text=depot").text
    assert REFERENCE not in client.get("/bank?text=lottery").text
    assert REFERENCE in client.get("/bank?category=parcel&source=seed&label=fraud").text
    assert 'id="history"' in client.get("/bank?reference=7").text


def test_the_overview_counts_alerts_and_verdicts(console_app):
    store, client = console_app.console.store, console_app.client
    with store.transaction() as db:
        verdict = AnalystVerdict(message_id="m-1", verdict="fraud", category="parcel")
        store.put_verdict(db, verdict, 1_767_225_660_000, 0, 0)
    sign_in(client, "viewer")
    text = page_text(client.get("/overview").text)
    assert "100.0%" in text and "60 s" in text  # one confirmed, one minute after the alert


def test_the_live_queue_sends_new_alerts(console_app):
    store = console_app.console.store
    first = store.last_seq()
    add_alert(store, "live-1", "a new one")
    rows = store.alerts_after(first)
    assert [r["message_id"] for r in rows] == ["live-1"] and rows[0]["text"] == "a new one"


def test_texts_past_the_retention_are_purged(console_app):
    store = console_app.console.store
    add_alert(store, "old-1", "an old text", ms=1000)
    assert store.purge_texts(3600) >= 1
    assert store.message("old-1")["text"] is None
    assert store.alert("old-1") is not None  # the alert itself stays


def test_a_whole_campaign_is_judged_at_once_as_the_signed_in_user(console_app):
    store, client, producer = console_app.console.store, console_app.client, console_app.producer
    for i in (2, 3):
        add_alert(store, f"m-{i}", f"the same scam, copy {i}")
    with store.transaction() as db:
        record = {"campaign_id": "c-1", "category": "parcel", "members": ["m-1", "m-2", "m-3"]}
        store.put_campaign(db, record)
        store.put_verdict(db, AnalystVerdict(message_id="m-3", verdict="fraud"), 5, 0, 0)
    sign_in(client, "analyst")
    assert "Campaign c-1" in client.get("/alerts/m-1").text
    csrf = re.search(r'name="csrf" value="([^"]+)"', client.get("/queue").text).group(1)
    data = {"csrf": csrf, "verdict": "fraud", "category": "parcel", "reason": "one campaign"}
    data["back"] = "m-1"
    answer = client.post("/campaigns/c-1/verdict", data=data, follow_redirects=False)
    assert answer.status_code == 303 and answer.headers["location"] == "/alerts/m-1"
    sent = [json.loads(s["value"]) for s in producer.sent]
    assert [v["message_id"] for v in sent] == ["m-1", "m-2"]  # m-3 was judged already
    assert {(v["analyst"], v["verdict"], v["reason"]) for v in sent} == {
        ("analyst", "fraud", "one campaign")
    }


def test_an_admin_recategorizes_reweights_and_enables_a_reference(console_app):
    client, producer = console_app.client, console_app.producer
    sign_in(client, "admin")
    csrf = re.search(r'name="csrf" value="([^"]+)"', client.get("/bank").text).group(1)
    for action, extra in (
        ("recategorize", {"category": "Delivery"}),
        ("reweight", {"weight": "2.5"}),
        ("enable", {}),
    ):
        data = {"csrf": csrf, "action": action, "reason": f"{action} it", **extra}
        assert client.post("/bank/7", data=data, follow_redirects=False).status_code == 303
    changes = [decode_change(s["key"], s["value"]).reference for s in producer.sent]
    assert changes[0].category == "delivery" and changes[1].weight == 2.5
    assert not changes[2].disabled and changes[2].reason == "enable it"
    data = {"csrf": csrf, "action": "reweight", "weight": "-1", "reason": "bad"}
    assert client.post("/bank/7", data=data).status_code == 422  # a weight must be > 0
    assert len(producer.sent) == 3


def test_a_message_id_with_a_slash_and_a_question_mark_has_its_page(console_app):
    store, client = console_app.console.store, console_app.client
    odd = "sms/2026 #1?x"
    add_alert(store, odd, "an odd id")
    sign_in(client, "analyst")
    html = client.get("/queue").text
    link = re.search(r'<tr data-href="([^"]+)" data-id="sms/2026 #1\?x"', html).group(1)
    assert link == "/alerts/sms/2026%20%231%3Fx"
    assert "an odd id" in client.get(link).text
    csrf = re.search(r'name="csrf" value="([^"]+)"', client.get(link).text).group(1)
    answer = client.post(
        f"{link}/verdict",
        data={"csrf": csrf, "verdict": "legit", "reason": "ok"},
        follow_redirects=False,
    )
    assert answer.headers["location"] == "/alerts/sms/2026%20%231%3Fx?sent=legit"
    assert json.loads(console_app.producer.sent[0]["value"])["message_id"] == odd
    assert client.get(f"{link}/changes.json").json()["verdicts"] == []  # not read back yet
