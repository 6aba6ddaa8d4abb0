"""The routes' dependencies: the signed-in user, the role a route needs, the CSRF check."""

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Form, HTTPException, Request
from kafka import KafkaProducer

from fraud.config import ConsoleSettings, KafkaSettings
from workers.console.auth import SESSION_COOKIE, LoginLimiter, User, Users, tokens_match
from workers.console.reader import TopicReader
from workers.console.store import Store


@dataclass
class Console:
    """What the routes share, on `app.state.console`."""

    settings: ConsoleSettings
    kafka: KafkaSettings
    store: Store
    users: Users
    limiter: LoginLimiter
    producer: KafkaProducer | None
    reader: TopicReader | None


class SignInRequired(Exception):
    """No valid session: a page answers with a redirect to /login (app.py's handler)."""


def console(request: Request) -> Console:
    return request.app.state.console


def signed_in(request: Request) -> User:
    user = console(request).users.session(request.cookies.get(SESSION_COOKIE))
    if user is None:
        raise SignInRequired()
    return user


def role(needed: str):
    """A dependency: the signed-in user, who must have at least `needed`'s rights (403)."""

    def check(user: Annotated[User, Depends(signed_in)]) -> User:
        if not user.may(needed):
            raise HTTPException(403, f"this needs the {needed} role; you are a {user.role}")
        return user

    return check


def csrf_checked(needed: str):
    """A dependency for a POST: `role(needed)` and the form's CSRF token (403 otherwise)."""

    def check(user: Annotated[User, Depends(role(needed))], csrf: str = Form("")) -> User:
        if not tokens_match(csrf, user.csrf):
            raise HTTPException(403, "the form's CSRF token is missing or wrong: reload the page")
        return user

    return check


# The routes' user parameters: signed in (any role, GET), and for a POST with its CSRF
# token checked, at least a viewer (sign out), an analyst (verdicts) or an admin (bank).
SignedIn = Annotated[User, Depends(signed_in)]
AnyRole = Annotated[User, Depends(csrf_checked("viewer"))]
Analyst = Annotated[User, Depends(csrf_checked("analyst"))]
Admin = Annotated[User, Depends(csrf_checked("admin"))]
