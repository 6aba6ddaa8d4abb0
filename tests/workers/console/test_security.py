"""The console's security (workers/console/auth.py): each role can do only what it may,
every form needs its CSRF token, sign-ins are limited, the session cookie is HttpOnly and
SameSite, passwords are argon2 hashes, and the message text never reaches the log."""

import json
import logging

import pytest

from fraud.index.changelog import decode_change
from tests.workers.console.conftest import PASSWORD, SCAM, csrf_of, page_text, sign_in


def test_pages_need_a_sign_in(console_app):
    client = console_app.client
    for path in ("/queue", "/alerts/m-1", "/bank", "/overview"):
        answer = client.get(path, follow_redirects=False)
        assert answer.status_code == 303 and answer.headers["location"] == "/login", path
    assert client.get("/alerts/m-1/changes.json").status_code == 401
    assert SCAM not in client.get("/alerts/m-1").text  # the login page, not the alert


def test_the_session_cookie_is_httponly_and_samesite_and_passwords_are_argon2(console_app):
    answer = sign_in(console_app.client, "viewer")
    assert answer.status_code == 303 and answer.headers["location"] == "/queue"
    cookie = answer.headers["set-cookie"]
    assert "fraud_console_session=" in cookie
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie
    stored = console_app.console.store.query("SELECT hash FROM users")
    assert all(r["hash"].startswith("$argon2id$") for r in stored)
    assert all(PASSWORD not in r["hash"] for r in stored)
    sessions = console_app.console.store.query("SELECT token_hash FROM sessions")
    token = cookie.split("fraud_console_session=")[1].split(";")[0]
    assert [r["token_hash"] for r in sessions] != [token]  # only its digest is kept


def _verdict(client, csrf: str | None):
    data = {"verdict": "fraud", "category": "parcel", "reason": "seen before"}
    if csrf is not None:
        data["csrf"] = csrf
    return client.post("/alerts/m-1/verdict", data=data, follow_redirects=False)


def _bank_change(client, csrf: str | None):
    data = {"action": "disable", "reason": "too broad"}
    if csrf is not None:
        data["csrf"] = csrf
    return client.post("/bank/7", data=data, follow_redirects=False)


@pytest.mark.parametrize(
    ("role", "may_judge", "may_change_bank"),
    [("viewer", False, False), ("analyst", True, False), ("admin", True, True)],
)
def test_each_role_can_do_only_what_it_may(console_app, role, may_judge, may_change_bank):
    client, producer = console_app.client, console_app.producer
    sign_in(client, role)
    assert client.get("/alerts/m-1").status_code == 200  # every role reads
    assert SCAM in page_text(client.get("/alerts/m-1").text)
    csrf = csrf_of(client)
    assert _verdict(client, csrf).status_code == (303 if may_judge else 403)
    assert _bank_change(client, csrf).status_code == (303 if may_change_bank else 403)
    topics = [s["topic"] for s in producer.sent]
    kafka = console_app.console.kafka
    assert topics == [kafka.feedback_topic] * may_judge + [kafka.bank_topic] * may_change_bank
    if may_judge:  # the verdict is the signed-in user's, with the text the console knows
        verdict = json.loads(producer.sent[0]["value"])
        assert verdict == {
            "message_id": "m-1",
            "verdict": "fraud",
            "category": "parcel",
            "reason": "seen before",
            "analyst": role,
            "text": SCAM,
        }
        assert producer.sent[0]["key"] == b"m-1"
    if may_change_bank:
        change = decode_change(producer.sent[-1]["key"], producer.sent[-1]["value"])
        assert change.reference.disabled and change.reference.changed_by == role
        assert change.reference.reason == "too broad" and change.vector.shape == (4,)


def test_a_form_without_its_csrf_token_changes_nothing(console_app):
    client = console_app.client
    sign_in(client, "admin")
    for csrf in (None, "", "not-the-token"):
        assert _verdict(client, csrf).status_code == 403
        assert _bank_change(client, csrf).status_code == 403
    assert client.post("/logout", follow_redirects=False).status_code == 403
    assert console_app.producer.sent == []
    # another session's token is no good either
    other = csrf_of(client)
    client.cookies.clear()
    sign_in(client, "analyst")
    assert _verdict(client, other).status_code == 403
    # the sign-in form has its own token, bound to a cookie
    client.cookies.clear()
    answer = client.post(
        "/login", data={"name": "admin", "password": PASSWORD}, follow_redirects=False
    )
    assert answer.status_code == 403


def test_sign_ins_are_limited_per_name(console_app):
    client = console_app.client
    for _ in range(3):  # login_attempts=3
        answer = sign_in(client, "analyst", "wrong password")
        assert answer.headers["location"] == "/login?failed=1"
    assert sign_in(client, "analyst", PASSWORD).status_code == 429  # even the right one
    assert sign_in(client, "nobody", PASSWORD).status_code == 429  # same client address


def test_the_message_text_never_reaches_the_log(console_app, caplog):
    caplog.set_level(logging.DEBUG)
    client = console_app.client
    sign_in(client, "analyst")
    client.get("/queue")
    client.get("/alerts/m-1")
    _verdict(client, csrf_of(client))
    assert "analyst sent verdict fraud on message m-1" in caplog.text
    assert SCAM not in caplog.text and "parcel-fee" not in caplog.text


def test_add_user_takes_the_password_from_a_file_or_stdin_never_argv(tmp_path, monkeypatch, capsys):
    import io

    from workers.cli.main import main
    from workers.console import Store, Users

    database = tmp_path / "console.sqlite3"
    base = ["console", "--database", str(database), "add-user"]
    (tmp_path / "pw").write_text("a fine password\nsecond line ignored\n")
    assert main([*base, "bo", "--role", "viewer", "--password-file", str(tmp_path / "pw")]) == 0
    monkeypatch.setattr("sys.stdin", io.StringIO("another fine one\n"))
    assert main([*base, "cy", "--role", "admin"]) == 0  # stdin is not a terminal: read it
    store = Store(database)
    users = Users(store, 60)
    assert users.check("bo", "a fine password") == "viewer"
    assert users.check("cy", "another fine one") == "admin"
    store.close()
    capsys.readouterr()
    (tmp_path / "short").write_text("short\n")
    assert main([*base, "dee", "--role", "viewer", "--password-file", str(tmp_path / "short")]) == 2
    assert main([*base, "dee", "--role", "viewer", "--password-file", str(tmp_path / "nope")]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert errors[0] == "fraud: error: password: at least 8 characters"
    assert errors[1].startswith("fraud: error: password file") and len(errors) == 2
    with pytest.raises(SystemExit):  # there is no way to give it on the command line
        main([*base, "dee", "--role", "viewer", "--password", "in the shell history"])
