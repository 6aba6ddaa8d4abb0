"""`fraud console`: the analysts' web application (issue 20), in FastAPI's "Bigger
Applications" layout: this module builds the app; pages.py has the pages (GET),
actions.py what changes something (POST: sign-in, verdicts, bank changes), live.py the
server-sent events and the alert page's status, auth.py the users, sessions, CSRF and the
sign-in limit, store.py the SQLite database, reader.py the thread that fills it from the
topics, main.py the process.

Server-rendered pages (jinja2, autoescaped) and one small script (static/console.js): no
CDN, no build step; every asset installs with the package. The pages forbid framing
and any script or style not served by the console itself (Content-Security-Policy).
"""

from pathlib import Path

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

from workers.console import actions, live, pages
from workers.console.deps import Console, SignInRequired

STATIC = Path(__file__).parent / "static"
HEADERS = {
    "content-security-policy": "default-src 'self'; frame-ancestors 'none'; form-action 'self'",
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
}


def create_app(console: Console) -> FastAPI:
    app = FastAPI(title="fraud-stream console", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.console = console

    @app.middleware("http")
    async def security_headers(request: Request, call_next):
        answer = await call_next(request)
        for name, value in HEADERS.items():
            answer.headers.setdefault(name, value)
        if request.url.path != "/events":
            answer.headers.setdefault("cache-control", "no-store")
        return answer

    @app.exception_handler(SignInRequired)
    async def sign_in_first(request: Request, exc: SignInRequired):
        if request.method == "GET" and not request.url.path.endswith(".json"):
            return RedirectResponse("/login", status_code=303)
        raise HTTPException(401, "sign in first")

    @app.exception_handler(HTTPException)
    async def problem(request: Request, exc: HTTPException):
        body = pages.templates.get_template("problem.html").render(
            status=exc.status_code, detail=exc.detail
        )
        return HTMLResponse(body, status_code=exc.status_code)

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    # Message ids may hold "/": the routes under /alerts/ with a suffix come before the
    # alert page, which would take the rest of the path as the id.
    app.include_router(live.router)
    app.include_router(actions.router)
    app.include_router(pages.router)
    return app
