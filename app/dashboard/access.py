"""Browser access to the dashboard once API keys exist.

The API takes keys in a header (`X-API-Key` or `Authorization: Bearer`); a browser following links can send
neither. This ASGI middleware lets it use a cookie instead, for reading only:

- `GET /dashboard/login` shows a form; `POST /dashboard/login` puts the key in an HttpOnly, SameSite=Strict
  cookie and redirects to the page asked for; `GET /dashboard/logout` clears it.
- A GET or HEAD request that carries the cookie and no key header gets the cookie's key as `X-API-Key`;
  the app-wide guard then checks it (the `read` scope for GETs) as for any client. Other methods never
  see the cookie's key, so a page on another site cannot use it to submit, cancel or administer anything.
- A 401 or 403 answer to a dashboard page becomes a redirect to the login form, saying why.

In open mode (no key exists) nothing is asked and the cookie is never needed.
"""

from __future__ import annotations

import html
import re
from http.cookies import SimpleCookie
from urllib.parse import parse_qs, quote, urlencode

from starlette.types import ASGIApp, Message, Receive, Scope, Send

COOKIE = "carrygate_key"
LOGIN = "/dashboard/login"
LOGOUT = "/dashboard/logout"
KEY_PATTERN = re.compile(r"^[A-Za-z0-9_\-.~+/=]{1,512}$")
MAX_FORM_BYTES = 4096
REASONS = {
    "401": "An API key with the read scope is needed to see the dashboard.",
    "403": "This key lacks the read scope.",
    "invalid": "That key was not accepted (unknown, revoked or mistyped).",
}


def _cookie_key(scope: Scope) -> str | None:
    for name, value in scope.get("headers", []):
        if name == b"cookie":
            morsel = SimpleCookie(value.decode("latin-1")).get(COOKIE)
            if morsel is not None and KEY_PATTERN.match(morsel.value):
                return morsel.value
    return None


def _has_key_header(scope: Scope) -> bool:
    return any(name in (b"x-api-key", b"authorization") for name, _ in scope.get("headers", []))


def _safe_next(value: str | None) -> str:
    """Only dashboard paths on this server (no open redirect)."""
    if value and value.startswith("/dashboard") and not value.startswith("//") and "\\" not in value:
        return value
    return "/dashboard"


def _query(scope: Scope) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(scope.get("query_string", b"").decode("latin-1")).items()}


def login_page(next_path: str, reason: str | None) -> bytes:
    notice = f'<p class="notice error" id="login-reason">{html.escape(reason)}</p>' if reason else ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Sign in · carrygate</title><link rel="stylesheet" href="/dashboard/static/dashboard.css"></head>
<body><header class="top"><span class="brand">carrygate</span></header><main>
<h1>Dashboard sign-in</h1>{notice}
<form method="post" action="{LOGIN}" class="filters" id="login-form">
  <input type="hidden" name="next" value="{html.escape(next_path)}">
  <label>API key (read scope)<input type="password" name="key" id="login-key" autocomplete="off" required></label>
  <button type="submit">Open the dashboard</button>
</form>
<p class="muted">The key is kept in an HttpOnly cookie for this site and is only ever sent with reads.
Create one with <code>carrygate keys create --name NAME --scope read</code>.</p>
</main></body></html>""".encode()


class DashboardSession:
    """The middleware described in the module docstring."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path, method = scope["path"], scope["method"]
        if path == LOGIN and method == "GET":
            query = _query(scope)
            reason = REASONS.get(query.get("reason", ""))
            await _respond(send, 200, login_page(_safe_next(query.get("next")), reason), [(b"content-type", b"text/html; charset=utf-8")])
            return
        if path == LOGIN and method == "POST":
            await self._login(scope, receive, send)
            return
        if path == LOGOUT:
            await _respond(send, 303, b"", [(b"location", LOGIN.encode()), (b"set-cookie", _cookie_header("", scope, max_age=0))])
            return
        cookie_key = _cookie_key(scope)
        if cookie_key and method in ("GET", "HEAD") and not _has_key_header(scope):
            scope = dict(scope, headers=[*scope["headers"], (b"x-api-key", cookie_key.encode())])
        if method == "GET" and path.startswith("/dashboard") and not path.startswith(("/dashboard/static", "/dashboard/assets")):
            await self.app(scope, receive, _redirect_when_refused(send, scope, had_key=cookie_key is not None))
            return
        await self.app(scope, receive, send)

    async def _login(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if len(body) > MAX_FORM_BYTES:
                await _respond(send, 413, b"form too large", [(b"content-type", b"text/plain")])
                return
            if not message.get("more_body"):
                break
        form = {k: v[0] for k, v in parse_qs(body.decode("utf-8", errors="replace")).items()}
        key, next_path = form.get("key", "").strip(), _safe_next(form.get("next"))
        if not KEY_PATTERN.match(key):
            location = f"{LOGIN}?{urlencode({'next': next_path, 'reason': 'invalid'})}"
            await _respond(send, 303, b"", [(b"location", location.encode())])
            return
        # The key is checked by the guard on the page it lands on; a bad one comes straight back here.
        await _respond(send, 303, b"", [(b"location", next_path.encode()), (b"set-cookie", _cookie_header(key, scope))])


def _cookie_header(value: str, scope: Scope, max_age: int | None = None) -> bytes:
    parts = [f"{COOKIE}={value}", "Path=/", "HttpOnly", "SameSite=Strict"]
    if scope.get("scheme") == "https":
        parts.append("Secure")
    if max_age is not None:
        parts.append(f"Max-Age={max_age}")
    return "; ".join(parts).encode()


async def _respond(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    await send({"type": "http.response.start", "status": status, "headers": [*headers, (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def _redirect_when_refused(send: Send, scope: Scope, *, had_key: bool) -> Send:
    """Wraps `send`: a 401/403 page answer is replaced by a redirect to the login form."""
    refused = False

    async def wrapped(message: Message) -> None:
        nonlocal refused
        if message["type"] == "http.response.start" and message["status"] in (401, 403):
            refused = True
            reason = "invalid" if message["status"] == 401 and had_key else str(message["status"])
            target = scope["path"] + (f"?{scope['query_string'].decode('latin-1')}" if scope.get("query_string") else "")
            location = f"{LOGIN}?next={quote(target, safe='')}&reason={reason}"
            await send({"type": "http.response.start", "status": 303,
                        "headers": [(b"location", location.encode()), (b"content-length", b"0")]})
            await send({"type": "http.response.body", "body": b""})
            return
        if refused:
            return  # the refused answer's body
        await send(message)

    return wrapped
