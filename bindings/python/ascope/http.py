"""HTTP: ``async with ascope.http.Session(base_url=...) as http``, on libcurl multi.

A buffered request is one operation of the session's scope, and a streamed
one runs in a scope of its own inside it; either way cancelling the awaiting
task (or an ``asyncio.timeout`` expiring) cancels that request alone, and
the session's kept-alive connections, DNS cache and TLS sessions are shared
by every request made through it.
"""
from __future__ import annotations

import asyncio
import ctypes
import urllib.parse
import json as _json
from typing import Any, AsyncIterator, Dict, List, Mapping, Optional, Tuple

from . import _lib
from . import _core as C
from . import errors as E
from .sql import _opts

__all__ = ["Session", "Response"]

hl = _lib.driver("http")
_len = ctypes.c_size_t()
_plen = ctypes.byref(_len)
_op = ctypes.c_void_p()
_pop = ctypes.byref(_op)


def _ms(seconds: Optional[float]) -> Optional[int]:
    return None if seconds is None else max(1, int(seconds * 1000))


def _without_userinfo(url: str) -> str:
    """url without its "user:password@": what a response shows before its
    head (the driver's URL replaces it then), so that no error carries it."""
    parts = urllib.parse.urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def _head(resp: int, r: "Response") -> None:
    r.status = hl.ascope_http_resp_status(resp)
    u = hl.ascope_http_resp_url(resp)  # after redirects; no user:password@
    if u:
        r.url = u.decode("utf-8", "replace")
    # Every header in one call: "name\0value\0" pairs.
    p = hl.ascope_http_resp_headers(resp, _plen)
    if not _len.value:
        return
    parts = ctypes.string_at(p, _len.value - 1).decode("latin-1").split("\0")
    pairs = list(zip(parts[::2], parts[1::2]))
    r.header_list = pairs
    h = r.headers
    for k, v in pairs:
        h.setdefault(k.lower(), v)


def _body(resp: int) -> bytes:
    p = hl.ascope_http_resp_body(resp, ctypes.byref(_len))
    return ctypes.string_at(p, _len.value) if _len.value else b""


class Response(C.Stream):
    """A response: ``status``, ``url`` (where it came from, after any
    redirects, without a user or password), ``headers`` (lower-case names,
    first value), ``header_list`` (every header in order) and the body."""

    _by_bytes = True  # a streamed body is held up to 1 MiB, whatever its chunks

    def __init__(self, method: str, url: str) -> None:
        self.method = method
        self.url = _without_userinfo(url)
        self.status = 0
        self.headers: Dict[str, str] = {}
        self.header_list: List[Tuple[str, str]] = []
        self._body: Optional[bytes] = None
        # streamed
        self._stream_init(1 << 20)
        self._head_fut: Optional[asyncio.Future] = None
        self._scope: Optional[C.Scope] = None

    @property
    def ok(self) -> bool:
        return self.status < 400

    def raise_for_status(self) -> None:
        """Raises HTTPStatusError if the status is 400 or more."""
        if self.status >= 400:
            raise E.HTTPStatusError(f"{self.method} {self.url}: HTTP {self.status}",
                                    status_code=self.status, response=self, status=C.EDRIVER,
                                    name="ASCOPE_EDRIVER", driver="http", code=str(self.status))

    @property
    def body(self) -> bytes:
        return self._body or b""

    async def read(self) -> bytes:
        """The whole body (of a streamed response: the rest of it)."""
        if self._body is None:
            parts = [c async for c in self.iter_chunked(1 << 20)]
            self._body = b"".join(parts)
        return self._body

    async def text(self, encoding: str = "utf-8") -> str:
        return (await self.read()).decode(encoding, "replace")

    async def json(self) -> Any:
        return _json.loads(await self.read())

    async def iter_chunked(self, n: int) -> AsyncIterator[bytes]:
        """The body in chunks of n bytes (the last may be shorter), as it
        arrives; the transfer pauses while chunks wait unread."""
        if self._body is not None and self._scope is None:
            for i in range(0, len(self._body), n):
                yield self._body[i:i + n]
            return
        # No byte is held here across a yield or a wait: what was taken and
        # not handed out goes back to the response, so that a loop left
        # early (a break) loses nothing for the next reader (read(), another
        # iter_chunked).
        buf = bytearray()
        while True:
            while self._items and len(buf) < n:
                c = self._take()
                need = n - len(buf)
                if len(c) > need:
                    self._untake(c[need:])
                    c = c[:need]
                buf += c
            if len(buf) >= n:
                out = bytes(buf)
                buf.clear()
                yield out
                continue
            if self._paused and not self._ended:
                self._resume()
                continue  # it may deliver before it returns: look again
            if self._ended and not self._items:
                sc = self._scope
                if sc is not None and sc.done is not None:
                    await sc.finish()
                    if sc.status < 0:
                        raise _request_error(sc, self)
                if buf:
                    out = bytes(buf)
                    buf.clear()
                    yield out
                return
            if buf:
                self._untake(bytes(buf))
                buf.clear()
            # A cancellation here is the request's scope's to handle (the
            # block's exit cancels it), not a stop of the body.
            await self._wait(stop_if_cancelled=False)


def _request_error(sc: C.Scope, resp: Optional[Response]) -> E.Error:
    errs = sc.errors or [C.make_error(sc.status)]
    first = errs[0]
    if first.driver == "http" and first.code and first.code.isdigit():
        first = C.make_error(first.status, "http", first.code, first.message, response=resp)
    first.secondary.extend(errs[1:])
    return first


def _buffered_cb(s: int, status: int, resp: int, ud: int) -> int:
    try:
        fut, r, h = C._objs.pop(ud)
        fut._op = None  # the operation ends with this call
        if fut.cancelled():
            return 0
        if resp:
            _head(resp, r)
            r._body = _body(resp)
        if status < 0:
            fut.set_exception(C.make_error(status, "http", C._s(hl.ascope_http_errcode(h)),
                                           C._s(hl.ascope_http_errmsg(h)),
                                           response=r if resp else None))
        else:
            fut.set_result(r)
    except BaseException as e:
        C._report(e, "an HTTP callback")
    return 0  # handled: a request's error is the awaiting task's, not the session's


def _stream_cb(s: int, status: int, resp: int, ud: int) -> int:
    try:
        r: Response = C._objs.get(ud)
        if r is None:
            return C.STOP if resp else 0
        if resp:
            if r._stopping:
                C._objs.pop(ud, None)
                r._finish()
                return C.STOP
            if r._head_fut is not None and not r._head_fut.done():
                _head(resp, r)
                r._head_fut.set_result(None)
                return C.CONTINUE
            chunk = _body(resp)
            return r._deliver(chunk) if chunk else r._delivered(0)
        C._objs.pop(ud, None)
        r._finish()
        return status if status < 0 and not r._stopping else 0
    except BaseException as e:
        C._report(e, "an HTTP stream callback")
        return C.EDRIVER


_buffered_cb_c = _lib.HTTP_CB(_buffered_cb)
_stream_cb_c = _lib.HTTP_CB(_stream_cb)


class _Request:
    """What ``session.get()`` returns: ``await`` it for a buffered response, or
    ``async with`` it to stream the body."""

    def __init__(self, session: "Session", method: str, url: str, data: Optional[bytes],
                 headers: Optional[Mapping[str, str]], options: str) -> None:
        self._session = session
        self._method = method
        self._url = url
        # As the driver resolves it (RFC 3986), for Response.url and messages.
        base = session._base_url
        if not base and not urllib.parse.urlsplit(url).scheme:
            raise ValueError(f"{url!r} is relative and the session has no base_url")
        self._full_url = urllib.parse.urljoin(base, url) if base else url
        self._data = data
        self._headers = headers
        self._options = options
        self._resp: Optional[Response] = None

    def _new(self) -> int:
        q = hl.ascope_http_req_new(self._session._h, C.cstr(self._method, "method"),
                                   C.cstr(self._url, "url"))
        if not q:
            raise C.make_error(C.EINVAL, "http", None, f"bad request {self._method} {self._url}")
        try:
            for k, v in (self._headers or {}).items():
                v = str(v)
                if any(ch in k or ch in v for ch in "\r\n"):  # as http.client: no header splitting
                    raise ValueError(f"header {k!r}: CR or LF in a header")
                C.check(hl.ascope_http_req_header(q, C.cstr(k, "header"), C.cstr(v, "header")),
                        "header")
            if self._data is not None:
                C.check(hl.ascope_http_req_body(q, self._data, len(self._data)), "body")
            if self._options:
                C.check(hl.ascope_http_req_setopt(q, C.cstr(self._options, "options")), "options")
        except BaseException:
            hl.ascope_http_req_free(q)
            raise
        return q

    def _start(self, sc: C.Scope, resp: Response) -> None:
        """A streamed request, in its own scope sc."""
        q = self._new()
        resp._keep = self._data  # the body is not copied: it lives as long as the request
        key = C.register(resp)
        rc = hl.ascope_http_stream(sc.s, q, _stream_cb_c, key, ctypes.byref(resp._op))
        if rc < 0:
            C._objs.pop(key, None)
            raise C.make_error(rc, "http", None, f"{self._method} {self._url}: cannot send")

    def _scope(self) -> C.Scope:
        sess = self._session
        if sess._scope is None or sess._scope.live_handle() is None:
            raise C.make_error(C.ECLOSED, "http", None, "the session is closed")
        return C.Scope(sess._scope.rt, C.scope_for(sess._scope), holds=False)

    def __await__(self):
        return self._send().__await__()

    def _send(self) -> "asyncio.Future[Response]":
        """A buffered request: an operation of the session's scope (of this
        task's innermost scope inside it), its response a future."""
        sess = self._session
        if sess._scope is None or sess._scope.live_handle() is None:
            raise C.make_error(C.ECLOSED, "http", None, "the session is closed")
        s = C.handle_of(C.scope_for(sess._scope))
        rt = sess._scope.rt
        q = self._new()
        resp = Response(self._method, self._full_url)
        resp._keep = self._data  # the body is not copied: it lives as long as the request
        fut = C.OpFuture(loop=rt.loop)
        key = C.register((fut, resp, sess._h))
        rc = hl.ascope_http_send(s, q, _buffered_cb_c, key, _pop)
        if rc < 0:
            C._objs.pop(key, None)
            raise C.make_error(rc, "http", None, f"{self._method} {self._url}: cannot send")
        fut._op = _op.value
        fut._rt = rt
        rt.kick()
        return fut

    async def __aenter__(self) -> Response:
        sc = self._scope()
        resp = Response(self._method, self._full_url)
        resp._scope = sc
        resp._rt = sc.rt
        resp._started = True
        resp._head_fut = sc.rt.loop.create_future()
        failed: List[BaseException] = []

        def body(sc2: C.Scope) -> None:
            try:
                self._start(sc2, resp)
            except BaseException as e:
                failed.append(e)

        await sc.enter(body)
        if failed:
            await sc.finish()
            raise failed[0]
        waiters = {resp._head_fut, sc.done}
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            sc.cancel()
            await sc.wait_done()
            raise
        if not resp._head_fut.done():
            await sc.finish()
            raise _request_error(sc, resp)
        self._resp = resp
        return resp

    async def __aexit__(self, et, exc, tb) -> bool:
        resp = self._resp
        resp._stop()
        sc = resp._scope
        if isinstance(exc, asyncio.CancelledError):
            sc.cancel()
        await sc.wait_done()
        if exc is None and sc.status < 0 and not resp._stopping:
            raise _request_error(sc, resp)
        return False


class Session(C.ScopeCM):
    """An HTTP session for one ``async with`` block.

    Keywords (seconds for times): ``base_url``, ``timeout`` (the whole
    transfer), ``connect_timeout``, ``wait_timeout`` (for a connection slot),
    ``max_response_bytes``, ``raise_for_status``, ``max_connections``,
    ``max_host_connections``, ``max_redirects``, ``user_agent``, ``ca_file``,
    ``tls_verify``, ``http_version``, ``proxy``; any other keyword is passed
    to the driver as is (docs/drivers/http.md).
    """

    def __init__(self, base_url: Optional[str] = None, *, timeout: Optional[float] = None,
                 connect_timeout: Optional[float] = None, wait_timeout: Optional[float] = None,
                 **options: Any) -> None:
        opts = dict(base_url=base_url, timeout_ms=_ms(timeout),
                    connect_timeout_ms=_ms(connect_timeout), wait_timeout_ms=_ms(wait_timeout))
        opts.update(options)
        self._options = _opts(opts)
        self._base_url = base_url
        self._h = None
        self._index = 0

    def _uses(self, s: int) -> None:
        self._index = C.lib.ascope_use_count(s)
        C.check(hl.ascope_use_http(s, C.cstr(self._options, "options") or None), "http session")

    def _on_body(self, sc: C.Scope) -> None:
        self._h = C.lib.ascope_resource(sc.s, self._index)

    def request(self, method: str, url: str, *, data: Optional[bytes] = None,
                headers: Optional[Mapping[str, str]] = None, timeout: Optional[float] = None,
                connect_timeout: Optional[float] = None, **options: Any) -> _Request:
        """A request: ``await`` it (buffered) or ``async with`` it (streamed).
        Per-request keywords: ``timeout``, ``connect_timeout``,
        ``max_response_bytes``, ``raise_for_status``, ``max_redirects``…"""
        if isinstance(data, str):
            data = data.encode()
        opts = _opts(dict(timeout_ms=_ms(timeout), connect_timeout_ms=_ms(connect_timeout),
                          **options))
        return _Request(self, method, url, bytes(data) if data is not None else None, headers,
                        opts)

    def get(self, url: str, **kw: Any) -> _Request:
        return self.request("GET", url, **kw)

    def post(self, url: str, data: Optional[bytes] = None, **kw: Any) -> _Request:
        return self.request("POST", url, data=data, **kw)

    def put(self, url: str, data: Optional[bytes] = None, **kw: Any) -> _Request:
        return self.request("PUT", url, data=data, **kw)

    def delete(self, url: str, **kw: Any) -> _Request:
        return self.request("DELETE", url, **kw)
