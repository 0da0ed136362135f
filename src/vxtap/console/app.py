"""The web console at `/console`: pages over the API, for people rather than scripts.

Every read and write goes through `VxtapClient` into the API application itself
(`vxtap.console.loopback`), so the console has no rules of its own: a refusal is
the API's message, shown next to the field it names, and nothing is stored.
Pages are rendered on the server (Jinja2); the only scripts are the live counter
refresher (static/live.js) and the fleet status refresher (static/refresh.js), which
swaps in fragments the server renders with the same templates as the page.
Sign-in, cookie and anti-forgery rules: docs/console.md.

(No `from __future__ import annotations` here: FastAPI resolves the routes'
dependency annotations at definition time, and they are local to `create_console`.)
"""

import secrets
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import anyio
import jinja2
from fastapi import Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from vxtap import auth
from vxtap.client import ApiError, VxtapClient
from vxtap.console import PREFIX, signin
from vxtap.console.forms import FormState, optional, port_label, refused
from vxtap.console.loopback import api_client
from vxtap.wire.answers import HostOut, PortV1Out, SessionOut

HERE = Path(__file__).parent
SESSION_COOKIE = "vxtap_console"
SIGNIN_COOKIE = "vxtap_console_signin"  # the sign-in form's own anti-forgery token
CSRF_FIELD = "csrf_token"
MAX_PAGES_AT_ONCE = 8
MAX_FORM_BYTES = 64 * 1024
MULTI_FIELDS = frozenset({"traffic_mirror_sources"})
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
    "frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}
PROTOCOLS = ("TCP", "UDP", "ICMP", "ICMPV6", "ALL")
RULE_FIELDS = (
    "priority",
    "protocol",
    "action",
    "ethertype",
    "source_cidr_block",
    "source_port_range",
    "destination_cidr_block",
    "destination_port_range",
    "description",
)
Values = dict[str, str | list[str]]


@dataclass(frozen=True)
class SourceHost:
    """A host that owns one of a session's sources, and whether it applied the latest
    change (`status` is the fleet status; None with `unknown` when the API has none)."""

    host: str
    status: HostOut | None
    unknown: str | None
    last_counter_report: str | None


class NotSignedIn(Exception):
    pass


class TooLarge(Exception):
    """A form larger than any of the console's forms can be (the API's own body limit
    applies only behind the API's middleware, which the console's pages do not pass)."""


class Forged(Exception):
    """A write without this session's anti-forgery token."""


@dataclass(frozen=True)
class Visitor:
    token: str
    session: signin.ConsoleSession
    credential: auth.Credential


def create_console(
    api: ASGIApp,
    credentials: Mapping[str, auth.Credential],
    *,
    clock: Callable[[], datetime] | None = None,
) -> FastAPI:
    """The console application; `api` is the application it sends every request to."""
    now = clock or (lambda: datetime.now(UTC))
    sessions = signin.ConsoleSessions(now)
    templates = Jinja2Templates(
        env=jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True)
    )
    console = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    console.mount("/static", StaticFiles(directory=HERE / "static"), name="static")

    console.add_middleware(ConsoleGuard)

    @console.exception_handler(NotSignedIn)
    async def to_sign_in(request: Request, _exc: NotSignedIn) -> Response:
        if request.method in ("GET", "HEAD"):
            return RedirectResponse(f"{PREFIX}/signin", status_code=303)
        return HTMLResponse("not signed in: nothing was changed", status_code=401)

    @console.exception_handler(Forged)
    async def forged(request: Request, _exc: Forged) -> Response:
        return templates.TemplateResponse(
            request,
            "refused.html",
            {"visitor": None, "reason": "the form's anti-forgery token is missing or wrong"},
            status_code=403,
        )

    def _cookie(request: Request, response: Response, name: str, value: str, age: int) -> None:
        response.set_cookie(
            name,
            value,
            max_age=age,
            path=PREFIX,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )

    def visitor(request: Request) -> Visitor:
        token = request.cookies.get(SESSION_COOKIE)
        session = sessions.find(token)
        credential = credentials.get(session.ak) if session else None
        if token is None or session is None or credential is None:
            raise NotSignedIn()
        return Visitor(token, session, credential)

    async def submitted(
        request: Request, who: Annotated[Visitor, Depends(visitor)]
    ) -> tuple[Visitor, Values]:
        """A write's form, once its anti-forgery token matched the session's."""
        form = await request.form()
        if not signin.token_matches(who.session.csrf_token, _text(form.get(CSRF_FIELD))):
            raise Forged()
        values: Values = {}
        for key in form:
            if key == CSRF_FIELD:
                continue
            texts = [v for v in form.getlist(key) if isinstance(v, str)]
            values[key] = texts if key in MULTI_FIELDS else (texts[0] if texts else "")
        return who, values

    Signed = Annotated[Visitor, Depends(visitor)]
    Write = Annotated[tuple[Visitor, Values], Depends(submitted)]

    def page(
        request: Request, who: Visitor | None, name: str, status: int = 200, **context: Any
    ) -> HTMLResponse:
        return templates.TemplateResponse(
            request,
            name,
            {"visitor": who, "csrf": who.session.csrf_token if who else "", **context},
            status_code=status,
        )

    @contextmanager
    def client_of(who: Visitor) -> Iterator[VxtapClient]:
        with api_client(api, who.credential) as client:
            yield client

    def back(path: str) -> RedirectResponse:
        return RedirectResponse(f"{PREFIX}{path}", status_code=303)

    # -- sign-in -------------------------------------------------------------------------

    @console.get("", include_in_schema=False)
    @console.get("/", include_in_schema=False)
    def home() -> RedirectResponse:
        return back("/sessions")

    @console.get("/signin")
    def signin_page(request: Request) -> Response:
        if sessions.find(request.cookies.get(SESSION_COOKIE)) is not None:
            return back("/sessions")
        return _signin_form(request, None)

    def _signin_form(request: Request, error: str | None, ak: str = "") -> Response:
        token = secrets.token_urlsafe(32)
        response = page(
            request,
            None,
            "signin.html",
            401 if error else 200,
            form_token=token,
            error=error,
            ak=ak,
        )
        _cookie(request, response, SIGNIN_COOKIE, token, 600)
        return response

    @console.post("/signin")
    async def signin_submit(request: Request) -> Response:
        form = await request.form()
        expected = request.cookies.get(SIGNIN_COOKIE)
        if not expected or not signin.token_matches(expected, _text(form.get(CSRF_FIELD))):
            raise Forged()
        ak = _text(form.get("ak")) or ""
        try:
            credential = signin.check_sign_in(credentials, ak, _text(form.get("sk")) or "")
        except signin.SignInRefused as refusal:
            return _signin_form(request, refusal.message, ak)
        token, session = sessions.start(credential)
        response = back("/sessions")
        age = int((session.expires_at - now()).total_seconds())
        _cookie(request, response, SESSION_COOKIE, token, age)
        response.delete_cookie(SIGNIN_COOKIE, path=PREFIX, httponly=True, samesite="strict")
        return response

    @console.post("/signout")
    def signout(write: Write) -> Response:
        who, _ = write
        sessions.end(who.token)
        response = back("/signin")
        response.delete_cookie(SESSION_COOKIE, path=PREFIX, httponly=True, samesite="strict")
        return response

    # -- filters and rules -----------------------------------------------------------------

    @console.get("/filters")
    def filters(request: Request, who: Signed) -> HTMLResponse:
        return _filters_page(request, who, None)

    def _filters_page(request: Request, who: Visitor, state: FormState | None) -> HTMLResponse:
        with client_of(who) as client:
            items = list(client.iter_filters())
        return page(request, who, "filters.html", 400 if state else 200, filters=items, state=state)

    @console.post("/filters")
    def filter_create(request: Request, write: Write) -> Response:
        who, values = write
        with client_of(who) as client:
            try:
                created = client.create_filter(
                    _one(values, "name"), optional(_one(values, "description"))
                )
            except ApiError as error:
                return _filters_page(
                    request, who, refused("create", values, error.error_msg, error.error_code)
                )
        return back(f"/filters/{created['id']}")

    @console.get("/filters/{filter_id}")
    def filter_page(request: Request, who: Signed, filter_id: str) -> HTMLResponse:
        return _filter_page(request, who, filter_id, None)

    def _filter_page(
        request: Request, who: Visitor, filter_id: str, state: FormState | None
    ) -> HTMLResponse:
        with client_of(who) as client:
            try:
                shown = client.show_filter(filter_id)
            except ApiError as error:
                return page(request, who, "missing.html", error.status, message=error.error_msg)
            users = [
                s for s in client.iter_sessions() if s["traffic_mirror_filter_id"] == filter_id
            ]
        return page(
            request,
            who,
            "filter.html",
            400 if state else 200,
            filter=shown,
            sessions=users,
            state=state,
            protocols=PROTOCOLS,
        )

    @console.post("/filters/{filter_id}/edit")
    def filter_edit(request: Request, write: Write, filter_id: str) -> Response:
        who, values = write
        with client_of(who) as client:
            try:
                client.update_filter(
                    filter_id,
                    name=_one(values, "name"),
                    description=_one(values, "description"),
                )
            except ApiError as error:
                state = refused("edit", values, error.error_msg, error.error_code)
                return _filter_page(request, who, filter_id, state)
        return back(f"/filters/{filter_id}")

    @console.post("/filters/{filter_id}/delete")
    def filter_delete(request: Request, write: Write, filter_id: str) -> Response:
        who, values = write
        if _one(values, "confirm") != "delete":
            state = FormState("delete", values, errors={"confirm": "type delete to confirm"})
            return _filter_page(request, who, filter_id, state)
        with client_of(who) as client:
            try:
                client.delete_filter(filter_id)
            except ApiError as error:
                state = refused("delete", values, error.error_msg, error.error_code)
                return _filter_page(request, who, filter_id, state)
        return back("/filters")

    @console.post("/filters/{filter_id}/rules")
    def rule_create(request: Request, write: Write, filter_id: str) -> Response:
        who, values = write
        with client_of(who) as client:
            try:
                # Numbers go as typed: the API parses them and names what is wrong.
                client.create_rule(
                    filter_id,
                    direction=_one(values, "direction"),
                    priority=_as_typed(values, "priority"),
                    protocol=_one(values, "protocol"),
                    action=_one(values, "action"),
                    ethertype=_one(values, "ethertype"),
                    source_cidr_block=optional(_one(values, "source_cidr_block")),
                    destination_cidr_block=optional(_one(values, "destination_cidr_block")),
                    source_port_range=optional(_one(values, "source_port_range")),
                    destination_port_range=optional(_one(values, "destination_port_range")),
                    description=optional(_one(values, "description")),
                )
            except ApiError as error:
                state = refused("rule", values, error.error_msg, error.error_code)
                return _filter_page(request, who, filter_id, state)
        return back(f"/filters/{filter_id}")

    @console.get("/rules/{rule_id}")
    def rule_page(request: Request, who: Signed, rule_id: str) -> HTMLResponse:
        return _rule_page(request, who, rule_id, None)

    def _rule_page(
        request: Request, who: Visitor, rule_id: str, state: FormState | None
    ) -> HTMLResponse:
        with client_of(who) as client:
            try:
                rule = client.show_rule(rule_id)
            except ApiError as error:
                return page(request, who, "missing.html", error.status, message=error.error_msg)
        return page(
            request,
            who,
            "rule.html",
            400 if state else 200,
            rule=rule,
            state=state,
            protocols=PROTOCOLS,
        )

    @console.post("/rules/{rule_id}/edit")
    def rule_edit(request: Request, write: Write, rule_id: str) -> Response:
        who, values = write
        with client_of(who) as client:
            try:
                # Every field is sent: an emptied address or port range becomes "any".
                rule = client.update_rule(
                    rule_id,
                    priority=_as_typed(values, "priority"),
                    action=_one(values, "action"),
                    ethertype=_one(values, "ethertype"),
                    protocol=_one(values, "protocol"),
                    source_cidr_block=_one(values, "source_cidr_block"),
                    destination_cidr_block=_one(values, "destination_cidr_block"),
                    source_port_range=_one(values, "source_port_range"),
                    destination_port_range=_one(values, "destination_port_range"),
                    description=_one(values, "description"),
                )
            except ApiError as error:
                state = refused("edit", values, error.error_msg, error.error_code)
                return _rule_page(request, who, rule_id, state)
        return back(f"/filters/{rule['traffic_mirror_filter_id']}")

    @console.post("/rules/{rule_id}/delete")
    def rule_delete(request: Request, write: Write, rule_id: str) -> Response:
        who, values = write
        with client_of(who) as client:
            try:
                filter_id = client.show_rule(rule_id)["traffic_mirror_filter_id"]
                client.delete_rule(rule_id)
            except ApiError as error:
                state = refused("delete", values, error.error_msg, error.error_code)
                return _rule_page(request, who, rule_id, state)
        return back(f"/filters/{filter_id}")

    # -- sessions --------------------------------------------------------------------------

    def _world(client: VxtapClient) -> dict[str, Any]:
        ports = list(client.iter_ports())
        filters = list(client.iter_filters())
        return {
            "ports": ports,
            "port_names": {p["id"]: port_label(p["binding:host_id"], p["name"]) for p in ports},
            "filters": filters,
            "filter_names": {f["id"]: f["name"] for f in filters},
        }

    @console.get("/sessions")
    def sessions_page(request: Request, who: Signed) -> HTMLResponse:
        return _sessions_page(request, who, None)

    def _sessions_page(request: Request, who: Visitor, state: FormState | None) -> HTMLResponse:
        with client_of(who) as client:
            items = list(client.iter_sessions())
            world = _world(client)
        return page(
            request,
            who,
            "sessions.html",
            400 if state else 200,
            sessions=items,
            state=state,
            **world,
        )

    @console.post("/sessions")
    def session_create(request: Request, write: Write) -> Response:
        who, values = write
        with client_of(who) as client:
            try:
                created = client.create_session(
                    _one(values, "name"),
                    description=optional(_one(values, "description")),
                    filter_id=_one(values, "traffic_mirror_filter_id"),
                    sources=_many(values, "traffic_mirror_sources"),
                    target_id=_one(values, "traffic_mirror_target_id"),
                    priority=_as_typed(values, "priority"),
                    virtual_network_id=_as_typed(values, "virtual_network_id"),
                    packet_length=_as_typed(values, "packet_length"),
                    enabled=_one(values, "enabled") == "true",
                )
            except ApiError as error:
                state = refused("create", values, error.error_msg, error.error_code)
                return _sessions_page(request, who, state)
        return back(f"/sessions/{created['id']}")

    @console.get("/sessions/{session_id}")
    def session_page(request: Request, who: Signed, session_id: str) -> HTMLResponse:
        return _session_page(request, who, session_id, None)

    def _session_page(
        request: Request, who: Visitor, session_id: str, state: FormState | None
    ) -> HTMLResponse:
        with client_of(who) as client:
            try:
                shown = client.show_session(session_id)
            except ApiError as error:
                return page(request, who, "missing.html", error.status, message=error.error_msg)
            world = _world(client)
            try:
                flt = client.show_filter(shown["traffic_mirror_filter_id"])
            except ApiError:
                flt = None
            source_hosts = _source_hosts(client, shown)
        return page(
            request,
            who,
            "session.html",
            400 if state else 200,
            session=shown,
            filter=flt,
            state=state,
            source_hosts=source_hosts,
            **world,
        )

    @console.get("/fragments/sessions/{session_id}/hosts")
    def session_hosts_fragment(request: Request, who: Signed, session_id: str) -> HTMLResponse:
        """The session page's hosts table body, for static/refresh.js."""
        with client_of(who) as client:
            try:
                shown = client.show_session(session_id)
            except ApiError as error:
                return HTMLResponse(error.error_msg, status_code=error.status)
            source_hosts = _source_hosts(client, shown)
        return page(request, who, "_session_hosts.html", source_hosts=source_hosts)

    def _session_write(
        request: Request,
        write: tuple[Visitor, Values],
        session_id: str,
        form: str,
        action: Callable[[VxtapClient, Values], SessionOut | None],
        then: str | None = None,
    ) -> Response:
        who, values = write
        with client_of(who) as client:
            try:
                action(client, values)
            except ApiError as error:
                state = refused(form, values, error.error_msg, error.error_code)
                return _session_page(request, who, session_id, state)
        return back(then or f"/sessions/{session_id}")

    @console.post("/sessions/{session_id}/edit")
    def session_edit(request: Request, write: Write, session_id: str) -> Response:
        def edit(client: VxtapClient, values: Values) -> SessionOut:
            return client.update_session(
                session_id,
                name=_one(values, "name"),
                description=_one(values, "description"),
                filter_id=_one(values, "traffic_mirror_filter_id"),
                target_id=_one(values, "traffic_mirror_target_id"),
                priority=_as_typed(values, "priority"),
                virtual_network_id=_as_typed(values, "virtual_network_id"),
                packet_length=_as_typed(values, "packet_length"),
            )

        return _session_write(request, write, session_id, "edit", edit)

    @console.post("/sessions/{session_id}/enabled")
    def session_enable(request: Request, write: Write, session_id: str) -> Response:
        def switch(client: VxtapClient, values: Values) -> SessionOut:
            return client.update_session(session_id, enabled=_one(values, "enabled") == "true")

        return _session_write(request, write, session_id, "enabled", switch)

    @console.post("/sessions/{session_id}/add-sources")
    def session_add_sources(request: Request, write: Write, session_id: str) -> Response:
        def add(client: VxtapClient, values: Values) -> SessionOut:
            return client.add_sources(session_id, _many(values, "traffic_mirror_sources"))

        return _session_write(request, write, session_id, "add-sources", add)

    @console.post("/sessions/{session_id}/remove-sources")
    def session_remove_sources(request: Request, write: Write, session_id: str) -> Response:
        def remove(client: VxtapClient, values: Values) -> SessionOut:
            return client.remove_sources(session_id, _many(values, "traffic_mirror_sources"))

        return _session_write(request, write, session_id, "remove-sources", remove)

    @console.post("/sessions/{session_id}/delete")
    def session_delete(request: Request, write: Write, session_id: str) -> Response:
        _, values = write
        if _one(values, "confirm") != "delete":
            state = FormState("delete", values, errors={"confirm": "type delete to confirm"})
            return _session_page(request, write[0], session_id, state)

        def delete(client: VxtapClient, _values: Values) -> None:
            client.delete_session(session_id)

        return _session_write(request, write, session_id, "delete", delete, then="/sessions")

    # -- ports, explain, live counters -----------------------------------------------------

    @console.get("/ports")
    def ports_page(request: Request, who: Signed) -> HTMLResponse:
        with client_of(who) as client:
            ports = list(client.iter_ports())
            items = list(client.iter_sessions())
        return page(request, who, "ports.html", ports=ports, uses=_port_uses(ports, items))

    @console.get("/explain")
    def explain_page(request: Request, who: Signed) -> HTMLResponse:
        with client_of(who) as client:
            ports = list(client.iter_ports())
        return page(request, who, "explain.html", ports=ports, state=None, verdict=None)

    @console.post("/explain")
    def explain_submit(request: Request, write: Write) -> HTMLResponse:
        from vxtap.console.explain import explain_form

        who, values = write
        with client_of(who) as client:
            ports = list(client.iter_ports())
            verdict, state = explain_form(client, values)
        return page(
            request,
            who,
            "explain.html",
            400 if state else 200,
            ports=ports,
            state=state,
            verdict=verdict,
            values=values,
        )

    # -- hosts: the fleet status of the agent channel ------------------------------------

    @console.get("/hosts")
    def hosts_page(request: Request, who: Signed) -> HTMLResponse:
        with client_of(who) as client:
            fleet = client.list_hosts()
        return page(request, who, "hosts.html", hosts=fleet)

    @console.get("/fragments/hosts")
    def hosts_fragment(request: Request, who: Signed) -> HTMLResponse:
        """The hosts page's table, for static/refresh.js."""
        with client_of(who) as client:
            fleet = client.list_hosts()
        return page(request, who, "_hosts_table.html", hosts=fleet)

    @console.get("/hosts/{host}")
    def host_page(request: Request, who: Signed, host: str) -> HTMLResponse:
        with client_of(who) as client:
            try:
                status = client.show_host(host)
            except ApiError as error:
                return page(request, who, "missing.html", error.status, message=error.error_msg)
            ports = list(client.iter_ports(where={"binding:host_id": host}))
            owned = {p["id"] for p in ports}
            uses = _port_uses(ports, list(client.iter_sessions()))
        return page(
            request,
            who,
            "host.html",
            host=status,
            ports=ports,
            uses={k: v for k, v in uses.items() if k in owned},
        )

    @console.get("/fragments/hosts/{host}")
    def host_fragment(request: Request, who: Signed, host: str) -> HTMLResponse:
        """The host page's status card, for static/refresh.js."""
        with client_of(who) as client:
            try:
                status = client.show_host(host)
            except ApiError as error:
                return HTMLResponse(error.error_msg, status_code=error.status)
        return page(request, who, "_host_status.html", host=status)

    @console.get("/live.json")
    def live(who: Signed) -> JSONResponse:
        """Counters summed over hosts; the page computes rates and keeps the history."""
        with client_of(who) as client:
            stats = client.session_stats()
        body = {"at": now().timestamp(), **stats.model_dump(mode="json")}
        return JSONResponse(body)

    return console


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _one(values: Values, name: str) -> str:
    value = values.get(name, "")
    return value if isinstance(value, str) else (value[0] if value else "")


def _many(values: Values, name: str) -> list[str]:
    value = values.get(name, [])
    return [value] if isinstance(value, str) else list(value)


def _as_typed(values: Values, name: str) -> Any:
    """A number field as typed (None when empty): the API parses and checks it."""
    return optional(_one(values, name))


def _source_hosts(client: VxtapClient, session: SessionOut) -> list[SourceHost]:
    """The hosts of the session's sources with their fleet status, sorted by name.

    One port and one host lookup per source (a session has few), so a refresh does not
    list every port of the project."""
    hosts: set[str] = set()
    for port_id in session["traffic_mirror_sources"]:
        try:
            hosts.add(client.show_port(port_id)["binding:host_id"])
        except ApiError:  # deleted meanwhile: the page's next load shows the new sources
            continue
    reports = client.session_stats().hosts
    found = []
    for host in sorted(hosts):
        try:
            status: HostOut | None = client.show_host(host)
            unknown = None
        except ApiError as error:  # no agent key here and never reported: the API says so
            status, unknown = None, error.error_msg
        found.append(SourceHost(host, status, unknown, reports.get(host)))
    return found


def _port_uses(ports: list[PortV1Out], items: list[SessionOut]) -> dict[str, list[str]]:
    uses: dict[str, list[str]] = {p["id"]: [] for p in ports}
    for s in items:
        for source in s["traffic_mirror_sources"]:
            uses.setdefault(source, []).append(f"source of {s['name']}")
        uses.setdefault(s["traffic_mirror_target_id"], []).append(f"target of {s['name']}")
    return uses


def too_large_answer() -> HTMLResponse:
    return HTMLResponse(f"the form is larger than {MAX_FORM_BYTES} bytes: nothing was changed", 413)


class ConsoleGuard:
    """In front of every console request: the security headers, a bound on pages served
    at once, and a bound on the body, declared or streamed, before it is buffered."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        # A console page holds a worker thread while its API calls run; on PostgreSQL
        # those need worker threads too, so console pages may hold only a few of the 40.
        self.pages_at_once = anyio.Semaphore(MAX_PAGES_AT_ONCE)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_guarded(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers.setdefault(name, value)
            await send(message)

        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > MAX_FORM_BYTES:
            await too_large_answer()(scope, receive, send_guarded)
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > MAX_FORM_BYTES:
                raise TooLarge()
            return message

        async with self.pages_at_once:
            try:
                await self.app(scope, counted, send_guarded)
            except TooLarge:
                if started:
                    raise
                await too_large_answer()(scope, receive, send_guarded)
