"""Who may use the console, and how a browser proves it.

- Users have one role: viewer (reads every page), analyst (also gives verdicts), admin
  (also changes the bank). Passwords are hashed with argon2 (argon2-cffi's defaults);
  `fraud console add-user` adds or replaces one.
- A sign-in makes a session: a random token in an HttpOnly, SameSite=Strict cookie (the
  database keeps only its SHA-256), with its own CSRF token, which every form carries and
  every POST must send back (compared in constant time). Before sign-in, the login form
  carries a token that must match a cookie of the same value (double submit).
- Failed sign-ins are limited per name and per client address: after `login_attempts`
  within `login_window_s`, the next one is refused (429) without checking the password.
"""

import hashlib
import hmac
import secrets
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from fraud.errors import ConfigError
from workers.console.store import Store

ROLES = ("viewer", "analyst", "admin")  # each may do what the ones before it may
SESSION_COOKIE = "fraud_console_session"
LOGIN_COOKIE = "fraud_console_login"
MAX_NAME = 64


@dataclass(frozen=True)
class User:
    name: str
    role: str
    csrf: str

    def may(self, role: str) -> bool:
        return ROLES.index(self.role) >= ROLES.index(role)


class Users:
    """The users and their sessions, in the console's database."""

    def __init__(
        self, store: Store, session_ttl_s: float, hasher: PasswordHasher | None = None
    ) -> None:
        """`hasher`: argon2-cffi's defaults (argon2id, 64 MiB, 3 passes) unless given (the
        unit tests give cheaper parameters; a hash records its own, so both verify)."""
        self.store, self.session_ttl_s = store, session_ttl_s
        self.hasher = hasher or PasswordHasher()
        # Checked against when the name is unknown, so that a wrong name takes as long as a
        # wrong password.
        self._dummy = self.hasher.hash(secrets.token_hex(16))

    def add(self, name: str, role: str, password: str) -> bool:
        """Add the user, or replace their role and password; True when new."""
        if role not in ROLES:
            raise ConfigError(f"role {role!r}: expected one of {', '.join(ROLES)}")
        if not name or len(name) > MAX_NAME or not name.isprintable() or name != name.strip():
            raise ConfigError(f"user name {name!r}: 1 to {MAX_NAME} printable characters")
        if len(password) < 8:
            raise ConfigError("password: at least 8 characters")
        new = self.store.one("SELECT name FROM users WHERE name = ?", [name]) is None
        self.store.execute(
            "INSERT OR REPLACE INTO users VALUES (?, ?, ?)",
            [name, role, self.hasher.hash(password)],
        )
        if not new:  # a changed password or role signs the user out everywhere
            self.store.execute("DELETE FROM sessions WHERE name = ?", [name])
        return new

    def check(self, name: str, password: str) -> str | None:
        """The user's role when the password is theirs, else None."""
        row = self.store.one("SELECT role, hash FROM users WHERE name = ?", [name])
        try:
            self.hasher.verify(row["hash"] if row else self._dummy, password)
        except (VerificationError, InvalidHashError):
            return None
        return row["role"] if row else None

    def sign_in(self, name: str) -> str:
        """A new session for `name`: its cookie token."""
        token = new_token()
        self.store.execute(
            "INSERT INTO sessions VALUES (?, ?, ?, ?)",
            [_digest(token), name, new_token(), time.time() + self.session_ttl_s],
        )
        self.store.execute("DELETE FROM sessions WHERE expires < ?", [time.time()])
        return token

    def session(self, token: str | None) -> User | None:
        if not token:
            return None
        row = self.store.one(
            "SELECT s.name, s.csrf, u.role FROM sessions s JOIN users u USING (name) "
            "WHERE s.token_hash = ? AND s.expires > ?",
            [_digest(token), time.time()],
        )
        return User(row["name"], row["role"], row["csrf"]) if row else None

    def sign_out(self, token: str) -> None:
        self.store.execute("DELETE FROM sessions WHERE token_hash = ?", [_digest(token)])


def tokens_match(given: str | None, expected: str | None) -> bool:
    """Two CSRF tokens equal, compared in constant time; never true for a missing one."""
    if not given or not expected:
        return False
    return hmac.compare_digest(given.encode(), expected.encode())


class LoginLimiter:
    """Failed sign-ins per key (a name, a client address) within a sliding window."""

    def __init__(self, attempts: int, window_s: float) -> None:
        self.attempts, self.window_s = attempts, window_s
        self._failures: dict[str, deque[float]] = defaultdict(deque)
        self._lock = threading.Lock()

    def blocked(self, *keys: str) -> bool:
        with self._lock:
            return any(len(self._recent(k)) >= self.attempts for k in keys)

    def failed(self, *keys: str) -> None:
        with self._lock:
            for key in keys:
                self._recent(key).append(time.monotonic())

    def _recent(self, key: str) -> deque[float]:
        failures = self._failures[key]
        while failures and failures[0] < time.monotonic() - self.window_s:
            failures.popleft()
        return failures


def new_token() -> str:
    """A random token: a session's, a CSRF token."""
    return secrets.token_urlsafe(32)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
