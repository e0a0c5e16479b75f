"""The bearer token check, as a plain ASGI middleware: it runs before routing, so it covers every path
(the docs and the schema too) at the cost of one header comparison per request."""

from __future__ import annotations

import secrets

from starlette.responses import JSONResponse

OPEN_PATHS = frozenset({"/health"})


class BearerAuth:
    """Every path but ``/health`` needs ``Authorization: Bearer <token>``; otherwise 401."""

    def __init__(self, app, token: str):
        self.app, self.expected = app, f"Bearer {token}".encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["path"] not in OPEN_PATHS:
            given = next((v for k, v in scope["headers"] if k == b"authorization"), b"")
            if not secrets.compare_digest(given, self.expected):
                response = JSONResponse({"detail": "Missing or wrong bearer token"}, status_code=401,
                                        headers={"WWW-Authenticate": "Bearer"})
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
