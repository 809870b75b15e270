"""What the dashboard server answers, decided before any Panel or Bokeh handler runs.

A request is served only when:
- its ``Host`` header names an allowed host (localhost and 127.0.0.1, plus ``--address`` and each ``--origin``),
  so a page on a foreign name that resolves here (DNS rebinding) is refused, on HTTP and on the websocket alike,
  whatever its ``Origin``. IPv6 literals are refused: Panel 1.9 fails on a ``[::1]`` Host (its Location model
  cannot parse it), and the server binds 127.0.0.1 by default;
- its path is one of the routes the dashboard needs: the page ``/``, its websocket ``/ws``, ``/favicon.ico`` and
  the static files of Bokeh, Panel and plotly.js under ``/static/``.

Everything else Panel and Bokeh would add is refused with 404: ``/components/<module>/…`` (it imports the module
named in the URL), ``/autoload.js`` (embeds the app into a foreign page), ``/metadata``, and any route a later
Panel version adds.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from tornado import web
from tornado.httputil import HTTPServerRequest, split_host_and_port

LOCAL_HOSTS = ("localhost", "127.0.0.1")
SERVED_PATHS = re.compile(r"/(?:ws|favicon\.ico|static/[^\x00]*)?")


def host_name(value: str) -> str:
    """The host of a ``Host`` header or an ``--origin`` value, lowercased, without port or IPv6 brackets."""
    value = value.strip().lower()
    if value.startswith("["):  # [::1]:5006
        return value[1:].split("]", 1)[0]
    if value.count(":") > 1:  # a bare IPv6 address
        return value
    return split_host_and_port(value)[0]


class RefusedHandler(web.RequestHandler):
    """Answers a refused request with a one-line plain-text reason (never echoing the request)."""

    def initialize(self, status_code: int, reason: str) -> None:
        self.status_code, self.reason = status_code, reason

    def prepare(self) -> None:
        self.set_status(self.status_code)
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.finish(self.reason + "\n")

    def check_xsrf_cookie(self) -> None:  # every method is refused the same way
        pass


class RequestGuard:
    """The allowed hosts and routes of one server; `install` puts it in front of a tornado application."""

    def __init__(self, hosts: Iterable[str]) -> None:
        self.hosts = frozenset(name for name in map(host_name, (*LOCAL_HOSTS, *hosts)) if name and ":" not in name)

    def refusal(self, request: HTTPServerRequest) -> tuple[int, str] | None:
        """(status, reason) when ``request`` must be refused, else None."""
        host = request.headers.get("Host", "")  # browsers always send it; a request without one is refused
        if host_name(host) not in self.hosts:
            return 403, ("this kdviz server does not answer for the host the request named; if you reach it under "
                         "another name, start it with kdviz serve ... --origin NAME")
        path = request.path or ""
        if not SERVED_PATHS.fullmatch(path) or any(part in ("..", ".") for part in path.split("/")):
            return 404, "not found"
        return None

    def install(self, application: web.Application) -> None:
        """Route every request of ``application`` through `refusal` first (HTTP and websocket upgrades alike)."""
        find_handler = application.find_handler

        def guarded(request: HTTPServerRequest, **kwargs):
            refused = self.refusal(request)
            if refused is not None:
                status, reason = refused
                return application.get_handler_delegate(request, RefusedHandler, {"status_code": status, "reason": reason})
            return find_handler(request, **kwargs)

        application.find_handler = guarded
