"""The runtime on the running asyncio loop, and scopes as Python objects.

One ascope runtime per asyncio loop, on that loop's thread: its libuv loop
is driven by the asyncio loop (the backend fd with add_reader, the next
timer with call_later, uv_run(UV_RUN_NOWAIT)), so there is no second thread.

Every callback C may call is one module-level ctypes function object, made
once and never freed, so no callback can be collected while C holds it; the
``void *ud`` C passes back is an integer key into ``_objs``, removed when C
is done with it. Callbacks never raise into C: an exception is reported to
the loop's exception handler and a safe value returned.
"""
from __future__ import annotations

import asyncio
import contextvars
import ctypes
import itertools
import time
import weakref
from collections import deque
from typing import Any, Callable, Deque, Dict, List, Optional

from . import _lib
from . import errors as E

lib = _lib.core()

FAIL_FAST, COLLECT_ALL = 0, 1
CONTINUE, PAUSE, STOP = 0, 1, 2
UV_RUN_NOWAIT = 2


def _code(name: str) -> int:
    v = lib.ascope_err_value(name.encode())
    if name != "UNKNOWN" and v == lib.ascope_err_value(b"UNKNOWN"):
        raise _lib.LibraryNotFound(f"ascope: libascope does not know the status {name}")
    return v


ECANCELED = _code("ECANCELED")
ETIMEDOUT = _code("ETIMEDOUT")
EDRIVER = _code("ASCOPE_EDRIVER")
ECLOSED = _code("ASCOPE_ECLOSED")
EBUSY = _code("ASCOPE_EBUSY")
E2BIG = _code("E2BIG")
EINVAL = _code("EINVAL")

# ---- the handle table: what C's `void *ud` stands for ------------------------
_objs: Dict[int, Any] = {}
_keys = itertools.count(1)


def register(obj: Any) -> int:
    k = next(_keys)
    _objs[k] = obj
    return k


def _report(exc: BaseException, what: str) -> None:
    """An exception inside a callback from C: never let it cross into C."""
    try:
        loop = asyncio.get_running_loop()
        loop.call_exception_handler({"message": f"ascope: exception in {what}", "exception": exc})
    except Exception:  # pragma: no cover - no loop: last resort
        import traceback
        traceback.print_exception(exc)


def counter(value: int, name: str) -> int:
    """A counter's value from C: counters are never negative, UV_EINVAL
    names none."""
    if value == EINVAL:
        raise KeyError(f"no counter {name!r}")
    return value


def cstr(s: str, what: str) -> bytes:
    """s as a C string. C reads up to the first NUL: a str holding one would
    name another file, run another statement or fetch another URL, so it is
    refused, as Python's own open() does."""
    b = s.encode()
    if b"\0" in b:
        raise ValueError(f"{what}: embedded null character")
    return b


# ---- errors -------------------------------------------------------------------
def _s(b: Optional[bytes]) -> Optional[str]:
    return b.decode("utf-8", "replace") if b is not None else None


def status_name(status: int) -> str:
    return lib.ascope_err_name(status).decode()


def make_error(status: int, driver: Optional[str] = None, code: Optional[str] = None,
               message: Optional[str] = None, **extra: Any) -> E.Error:
    """The exception for one ascope error."""
    name = status_name(status)
    if message is None:
        message = lib.ascope_strerror(status).decode()
    cls: type = E.Error
    if code == "POOL_TIMEOUT":  # no connection came free from a pool in time
        return E.TimeoutError(message, status=status, name=name, driver=driver, code=code)
    if driver in ("postgres", "sqlite") or (driver and extra.pop("sql", False)):
        if status == ECANCELED:
            cls = E.Cancelled
        elif status == ECLOSED:
            cls = E.ConnectionClosed
        elif status == ETIMEDOUT:
            cls = E.ConnectTimeout if code and code.startswith("08") else E.TimeoutError
        else:
            cls = E.sql_class(code, message)
    elif driver == "http":
        if status == ETIMEDOUT:
            cls = E.HTTPTimeout
        elif status == E2BIG or code in ("CURLE_FILESIZE_EXCEEDED", "CURLE_TOO_LARGE"):
            cls = E.HTTPTooLarge
        elif code in ("CURLE_COULDNT_CONNECT", "CURLE_COULDNT_RESOLVE_HOST", "CURLE_GOT_NOTHING",
                      "CURLE_RECV_ERROR", "CURLE_SEND_ERROR", "CURLE_PARTIAL_FILE"):
            cls = E.HTTPConnectionError
        elif code and code.isdigit():
            return E.HTTPStatusError(message, status_code=int(code), status=status, name=name,
                                     driver=driver, code=code, response=extra.get("response"))
        else:
            cls = E.HTTPError
    elif driver == "file":
        err = E.FileError(message, status=status, name=name, driver=driver, code=code)
        err.errno = -status if status < 0 and status != EDRIVER else None
        err.strerror = message
        err.filename = extra.get("filename")
        return err
    elif status == ETIMEDOUT:
        cls = E.TimeoutError
    elif status == ECANCELED:
        cls = E.Cancelled
    elif status == ECLOSED:
        cls = E.ClosedError
    return cls(message, status=status, name=name, driver=driver, code=code)


def errors_of(s: int) -> List[E.Error]:
    """The error chain of a scope, read inside its done."""
    out = []
    e = lib.ascope_error(s)
    while e:
        out.append(make_error(lib.ascope_err_status(e), _s(lib.ascope_err_driver(e)),
                              _s(lib.ascope_err_code(e)), _s(lib.ascope_err_message(e))))
        e = lib.ascope_err_next(e)
    return out


def check(status: int, what: str = "") -> None:
    if status < 0:
        raise make_error(status, message=f"{what}: {lib.ascope_strerror(status).decode()}"
                         if what else None)


class OpFuture(asyncio.Future):
    """The result of one operation of C's (a statement, a request). Cancelling
    it — the awaiting task cancelled, an ``asyncio.timeout`` expiring,
    ``gather`` cancelled — cancels the operation in C too
    (``ascope_op_cancel``), once; the scope it runs in goes on. Its
    callback clears ``_op`` when it runs: the operation has ended."""

    __slots__ = ("_op", "_rt")

    def cancel(self, msg: Any = None) -> bool:
        if not super().cancel(msg):
            return False
        op, self._op = self._op, None
        if op:  # its callback has not run: the operation is alive
            lib.ascope_op_cancel(op)
            self._rt.kick()
        return True


class Stream:
    """What a cursor's rows, a file's chunks and a response's body share:
    items C delivers in batches through a stream operation (``_op``), read
    by one task. Past ``_high`` held (items; bytes where ``_by_bytes``) the
    operation is paused, and resumed once the reader has taken half; a stop
    ends it at its next batch, dropping what was not read. C's callbacks
    call ``_delivered`` (or ``_deliver``) and ``_finish``; the reader
    ``_next``, or ``_take`` and ``_wait``. A subclass calls ``_stream_init``
    and gives ``_rt``, its runtime."""

    _by_bytes = False
    _rt: "Runtime"

    def _stream_init(self, high: int) -> None:
        self._items: "Deque[Any]" = deque()
        self._held = 0
        self._high = max(1, high)
        self._op = ctypes.c_void_p()
        self._started = self._ended = self._paused = self._stopping = False
        self._err: Optional[BaseException] = None
        self._waiter: "Optional[asyncio.Future[None]]" = None

    # ---- C's side: in the stream's callback
    def _delivered(self, n: int) -> int:
        """n more held (the items the callback appended); the callback's answer."""
        self._held += n
        self._wake()
        if self._held >= self._high:
            self._paused = True
            return PAUSE
        return CONTINUE

    def _deliver(self, item: Any) -> int:
        self._items.append(item)
        return self._delivered(len(item) if self._by_bytes else 1)

    def _finish(self, err: Optional[BaseException] = None) -> None:
        if err is not None:
            self._err = err
        self._ended = True
        self._wake()

    def _wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    # ---- the reader's side
    def _resume(self) -> None:
        if self._paused and not self._ended:
            self._paused = False
            lib.ascope_op_resume(self._op)
            self._rt.kick()

    def _stop(self) -> None:
        """Ends the stream at its next batch (what was not read is dropped)."""
        if self._started and not self._ended and not self._stopping:
            self._stopping = True
            self._items.clear()
            self._held = 0
            if self._paused:
                self._paused = False
                lib.ascope_op_resume(self._op)
            self._rt.kick()

    def _take(self) -> Any:
        item = self._items.popleft()
        self._held -= len(item) if self._by_bytes else 1
        # Hysteresis: resumed once half drained, not at every item, so that
        # the work ahead is not stopped and restarted each time.
        if self._paused and self._held <= self._high // 2:
            self._resume()
        return item

    def _untake(self, item: Any) -> None:
        """Gives back what a reader took and did not hand out: read first next."""
        self._items.appendleft(item)
        self._held += len(item) if self._by_bytes else 1

    async def _wait(self, stop_if_cancelled: bool = True) -> None:
        """Until C delivers or ends the stream."""
        self._waiter = self._rt.loop.create_future()
        try:
            await self._waiter
        except asyncio.CancelledError:
            if stop_if_cancelled:
                self._stop()
            raise
        finally:
            self._waiter = None

    async def _next(self) -> Any:
        """The next item; StopAsyncIteration at the end, or the stream's error."""
        while True:
            if self._items:
                return self._take()
            if self._ended:
                if self._err is not None:
                    err, self._err = self._err, None
                    raise err
                raise StopAsyncIteration
            if self._paused:
                # The resume may deliver the next batch, or the end, before
                # it returns: look again before waiting for a wake-up that
                # has already happened (a cursor with prefetch=1 hung here).
                self._resume()
                continue
            await self._wait()

    async def aclose(self) -> None:
        """Stops the stream and waits until it has ended."""
        self._stop()
        while self._started and not self._ended:
            await self._wait(stop_if_cancelled=False)

    def __del__(self) -> None:
        try:
            self._stop()
        except Exception:
            pass


# ---- the runtime: libuv driven by the asyncio loop ------------------------------
class Runtime:
    """An ascope runtime driven by one asyncio loop (see :func:`runtime`)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.rt = lib.ascope_rt_new(None)
        if not self.rt:
            raise MemoryError("ascope_rt_new")
        self.uv = lib.ascope_rt_loop(self.rt)
        self.fd = lib.uv_backend_fd(self.uv)
        self._soon = False
        self._timer: Optional[asyncio.TimerHandle] = None
        self._timer_at = 0.0
        self._running = False
        self.live = 0  # Python scopes started and not done
        self.queued = 0  # statements queued in C since libuv last ran
        self.statements = 0  # statements in flight, every connection's
        #: How long, in microseconds, a statement alone in flight is waited
        #: for by running libuv in a loop before the asyncio loop is let
        #: sleep (0: never). See spin_until.
        self.spin_us = 100
        self._spin_skip = 0  # statements not to spin for, after spins that ran out
        self._spin_backoff = 0
        loop.add_reader(self.fd, self._run)

    def kick(self) -> None:
        """Run the libuv loop soon: after any call that queued work in C."""
        if not self._soon:
            self._soon = True
            self.loop.call_soon(self._run_soon)

    def _run_soon(self) -> None:
        # Only the handle kick() queued clears the flag: a run from the
        # reader or a timer in between leaves it queued, and clearing it
        # there would let the next kick queue a second one — runs that
        # each pay a uv_run for nothing, several per turn in a busy loop.
        self._soon = False
        self._run()

    def run_now(self) -> None:
        """Run the libuv loop at once, from task code (never from a callback
        of C's: libuv loops do not nest). A scope's start and end do this, so
        a body or done that is ready runs in this very call and the awaiting
        task goes on without a turn of the asyncio loop."""
        if self._running:
            self.kick()
        else:
            self._run()

    def spin_until(self, fut: "asyncio.Future[Any]") -> None:
        """Waits up to spin_us for fut by running libuv again and again, when
        nothing else is waiting to run. Called for a statement awaited alone:
        its answer takes tens of microseconds, and an asyncio loop that goes
        to sleep for it pays as much again to be woken (measured on a 2-core
        VM: twice the rate of statements awaited one by one, at no more CPU
        per statement). Never with other callbacks ready on an asyncio loop
        (uvloop does not tell), and never longer than spin_us. A spin that
        runs out (a server farther away than spin_us, a slow statement) is
        not tried for the next 1, 2, 4… 64 statements, so that waiting for
        a remote server costs next to nothing."""
        ready = getattr(self.loop, "_ready", ())  # asyncio's queue of ready callbacks
        if self._running or self.spin_us <= 0 or ready:
            return
        if self._spin_skip:
            self._spin_skip -= 1
            return
        end = time.perf_counter() + self.spin_us / 1e6
        run, uv, now = lib.uv_run, self.uv, time.perf_counter
        self._running = True
        try:
            # A run may make other callbacks ready (another task's answer):
            # they are not held up either.
            while not fut.done() and not ready and now() < end:
                run(uv, UV_RUN_NOWAIT)
        finally:
            self._running = False
        if fut.done():
            self._spin_backoff = 0
        elif not ready:  # it ran out
            self._spin_backoff = min(max(1, 2 * self._spin_backoff), 64)
            self._spin_skip = self._spin_backoff
        self._schedule()

    def _run(self) -> None:
        if self._running:  # pragma: no cover - never nested, but never run twice either
            return
        self._running = True
        self.queued = 0
        try:
            lib.uv_run(self.uv, UV_RUN_NOWAIT)
        finally:
            self._running = False
        self._schedule()

    def _schedule(self) -> None:
        """After a run: when libuv wants to run next."""
        t = lib.uv_backend_timeout(self.uv)
        if t == 0:
            # 0 means "do not block": work is ready, or nothing keeps the
            # loop alive at all. The latter is an idle runtime, which the
            # reader on the backend fd wakes; running again at once would
            # spin the asyncio loop at full CPU for as long as it lives.
            if lib.uv_loop_alive(self.uv):
                self.kick()
        elif t > 0:
            at = self.loop.time() + t / 1000.0
            if self._timer is None or at < self._timer_at - 0.0005 or self._timer.cancelled():
                if self._timer is not None:
                    self._timer.cancel()
                self._timer_at = at
                self._timer = self.loop.call_at(at, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._run()

    def stat(self, name: str) -> int:
        """A counter of the runtime: ascope_rt_stat(rt, name) ("scopes_live", "sqlite.connections"…).
        KeyError for a name that is none (C's UV_EINVAL, which no counter holds)."""
        return counter(lib.ascope_rt_stat(self.rt, cstr(name, "counter")), name)

    def close(self) -> None:
        """Frees the runtime; only once no scope is pending (else the runtime stays)."""
        if self.rt is None:
            return
        if self._timer is not None:
            self._timer.cancel()
        try:
            self.loop.remove_reader(self.fd)
        except Exception:
            pass
        if lib.ascope_rt_free(self.rt) == 0:
            self.rt = None
            fin = getattr(self, "_fin", None)
            if fin is not None:
                fin.detach()  # freed here: the loop's finalizer must not free it again


_runtimes: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Runtime]" = weakref.WeakKeyDictionary()


def _free_rt(rt: int) -> None:
    lib.ascope_rt_free(rt)


def runtime() -> Runtime:
    """The ascope runtime of the running asyncio loop, made on first use."""
    loop = asyncio.get_running_loop()
    r = _runtimes.get(loop)
    if r is None or r.rt is None:
        r = Runtime(loop)
        _runtimes[loop] = r
        # The loop closes its selector (and so drops the reader) when closed;
        # the runtime goes with the loop object.
        # (the raw pointer, not the Runtime, which refers to the loop)
        r._fin = weakref.finalize(loop, _free_rt, r.rt)
    return r


# ---- scopes ---------------------------------------------------------------------
current: "contextvars.ContextVar[Optional[Scope]]" = contextvars.ContextVar("ascope_scope",
                                                                            default=None)


class Scope:
    """One ascope scope, held open (in its body) while the Python block runs.

    The body callback begins one operation with no driver, the *hold*, that
    keeps the scope from releasing; the block's end ends the hold with the
    block's outcome, and the scope then releases its uses in reverse order.
    """

    __slots__ = ("rt", "s", "gen", "key", "hold", "parent", "entered", "done", "status",
                 "errors", "failing", "streams", "_token", "holds", "on_fail", "__weakref__")

    def __init__(self, rt: Runtime, parent: Optional["Scope"] = None, holds: bool = True) -> None:
        self.rt = rt
        self.holds = holds  # False: the scope of one operation, which ends with it
        ps = parent.live_handle() if parent is not None else None
        if parent is not None and ps is None:
            raise make_error(ECANCELED, message="the enclosing ascope scope is ending")
        s = lib.ascope_child(ps) if ps else lib.ascope_new(rt.rt)
        if not s:
            raise make_error(ECANCELED if ps else ECLOSED,
                             message="the enclosing scope takes no new work" if ps else
                             "the runtime takes no new scopes")
        self.s = s
        self.gen = lib.ascope_gen(s)
        self.parent = parent
        # A failing child (a rolled-back transaction, a failed request) must
        # not fail the Python block around it: Python decides, by raising.
        lib.ascope_set_mode(s, COLLECT_ALL)
        self.key = 0
        self.hold = None
        self.entered: Optional[asyncio.Future] = None
        self.done: Optional[asyncio.Future] = None
        self.status = 0
        self.errors: List[E.Error] = []
        self.failing = False
        # Made by the first stream (add_stream): most scopes have none, and
        # walking an empty WeakSet cost a fifth of an empty scope.
        self.streams: "Optional[weakref.WeakSet]" = None
        self._token = None
        self.on_fail: Optional[Callable[[], None]] = None  # told when C fails the scope

    def add_stream(self, st: Any) -> None:
        """A stream of this scope's (a cursor, a file's chunks): stopped
        when the block ends, if it is still running."""
        if self.streams is None:
            self.streams = weakref.WeakSet()
        self.streams.add(st)

    def live_handle(self) -> Optional[int]:
        """The scope pointer, or None once its done ran (a stale handle is never used)."""
        if self.s is None:
            return None
        return lib.ascope_check(self.s, self.gen)

    def discard(self) -> None:
        if self.s is not None and self.key == 0:
            lib.ascope_discard(self.s)
            self.s = None

    async def enter(self, body: Optional[Callable[["Scope"], None]] = None) -> None:
        """Starts the scope and waits until its uses are held (or it failed)."""
        loop = self.rt.loop
        self.entered = loop.create_future()
        self.done = loop.create_future()
        self.key = register((self, body))
        rc = lib.ascope_start(self.s, _body_cb, _done_cb, self.key)
        if rc < 0:
            del _objs[self.key]
            self.key = 0
            self.discard()
            check(rc, "ascope_start")
        self.rt.live += 1
        if self.holds:
            self.rt.run_now()
        else:  # one request of many: they start together at the turn's end
            self.rt.kick()
        try:
            await self.entered
        except asyncio.CancelledError:
            self.cancel()
            # Cancelled after the body ran but before the task resumed: the
            # hold is the block's to end, and the block will never run, so
            # it ends here (else the scope waited for it for ever).
            self._end_hold(ECANCELED)
            await self.wait_done()
            raise
        if self.done.done():  # acquiring failed: the scope already ended
            self.raise_status()
        if self.holds:
            self._token = current.set(self)

    async def finish(self) -> None:
        """The end of an operation's scope: its cancellation is this task's."""
        try:
            await asyncio.shield(self.done)
        except asyncio.CancelledError:
            self.cancel()
            await self.wait_done()
            raise

    def cancel(self) -> None:
        s = self.live_handle()
        if s:
            self.failing = True
            lib.ascope_cancel(s)
            self.rt.kick()

    async def wait_done(self) -> None:
        """Waits for done, even through cancellations: a cancellation that
        came meanwhile is raised once done, here, where it would have been
        raised. (Delivered again later instead, with task.cancel(), it
        surfaced at the caller's next await: after an asyncio.timeout whose
        deadline came during a release had already let its block go, as a
        bare CancelledError, or as nothing when the task then returned.)"""
        cancelled: Optional[BaseException] = None
        while not self.done.done():
            try:
                await asyncio.shield(self.done)
            except asyncio.CancelledError as e:
                cancelled = e
        if cancelled is not None:
            raise cancelled

    def _end_hold(self, status: int, name: Optional[bytes] = None,
                  message: Optional[bytes] = None) -> bool:
        """Ends the hold, once, with the block's outcome, and runs libuv so
        that the release starts at once. False: no hold was left to end."""
        hold, self.hold = self.hold, None
        if not hold:
            return False
        lib.ascope_op_end(hold, status, name, message)
        self.rt.run_now()
        return True

    def raise_status(self) -> None:
        if self.status < 0:
            first = self.errors[0] if self.errors else make_error(self.status)
            first.secondary.extend(self.errors[1:])
            raise first

    async def exit(self, exc: Optional[BaseException]) -> None:
        """Ends the hold with the block's outcome and waits for the release."""
        if self._token is not None:
            try:
                current.reset(self._token)
            except ValueError:  # exited from another context: set it back by hand
                current.set(self.parent)
            self._token = None
        if self.streams:
            for st in list(self.streams):
                st._stop()
        ours = 0  # the status the hold ended with, when this block ended it
        if exc is None:
            self._end_hold(0)
        elif isinstance(exc, asyncio.CancelledError):
            if self.hold:
                self.cancel()
            ours = ECANCELED if self._end_hold(ECANCELED) else 0
        elif self.hold:
            ours = EDRIVER
            self._end_hold(EDRIVER, type(exc).__name__.encode()[:40],
                           str(exc).encode("utf-8", "replace")[:400])
        await self.wait_done()
        if exc is None:
            self.raise_status()
            return
        if isinstance(exc, E.Cancelled) and self.errors and self.errors[0].status != ECANCELED \
                and self.errors[0].status != ours:
            # The block's statement was cancelled because this scope failed
            # (its deadline, say): the cause is what the caller sees.
            first = self.errors[0]
            first.secondary.extend(self.errors[1:])
            raise first
        # The block's own exception propagates; what the release raised
        # rides on it instead of being lost.
        extra = self.errors[1:] if ours and self.errors and self.errors[0].status == ours \
            else self.errors
        if not extra:
            return
        if isinstance(exc, E.Error):
            exc.secondary.extend(e for e in extra if e is not exc)
        else:
            try:
                exc.release_errors = list(extra)  # type: ignore[attr-defined]
            except Exception:
                pass
            if hasattr(exc, "add_note"):
                for e in extra:
                    exc.add_note(f"then, releasing: {e}")


_running_loop = asyncio._get_running_loop  # the running loop, or None: no error


def check_loop(rt: Runtime, what: str = "ascope resource") -> None:
    """Refuses a call from any loop but rt's. A runtime is its loop's: its C
    side is driven on that loop's thread only, and a call from another
    would reach it from a second thread (a statement then ran before
    asyncio's own error about the future's loop came back)."""
    if rt.loop is not _running_loop():
        raise RuntimeError(f"this {what} belongs to the event loop it was opened on: use it from "
                           "that loop's tasks (open another for another loop or thread)")


def scope_for(owner: Scope) -> Scope:
    """The scope a call on owner's resource belongs to: the innermost scope of
    this task inside owner (a transaction), else owner itself. Refused from
    another loop than owner's."""
    if owner.rt.loop is not _running_loop():
        check_loop(owner.rt)
    cur = current.get()
    x = cur
    while x is not None:
        if x is owner:
            return cur  # type: ignore[return-value]
        x = x.parent
    return owner


def handle_of(sc: Scope) -> int:
    # On every statement, so no call into C: the hold is set only between
    # the body's start and the done, which clears it (and s) before C can
    # reuse the scope's memory — a held scope's pointer is never stale.
    s = sc.s
    if not s or sc.hold is None:
        raise make_error(ECLOSED, message="the scope has ended (used outside its async with)")
    return s


def _body(s: int, ud: int) -> None:
    try:
        sc, body = _objs[ud]
        if sc.holds:
            sc.hold = lib.ascope_op_begin(s, None, _hold_cancel_cb, ud) or None
        if body is not None:
            body(sc)
        if not sc.entered.done():
            sc.entered.set_result(None)
    except BaseException as e:  # never into C
        _report(e, "a scope's body")


def _done(s: int, status: int, ud: int) -> None:
    try:
        sc, _ = _objs.pop(ud)
        sc.status = status
        sc.errors = errors_of(s) if status < 0 else []
        sc.s = None
        sc.hold = None
        sc.rt.live -= 1
        if not sc.done.done():
            sc.done.set_result(status)
        if not sc.entered.done():
            sc.entered.set_result(None)
    except BaseException as e:
        _report(e, "a scope's done")


def _hold_cancel(op: int) -> None:
    # The scope failed (a cancel, a deadline, a driver's error): the block
    # goes on until it ends, its new work refused; it ends the hold itself.
    try:
        ent = _objs.get(lib.ascope_op_data(op) or 0)
        if ent is not None:
            ent[0].failing = True
            if ent[0].on_fail is not None:
                ent[0].on_fail()
    except BaseException as e:
        _report(e, "a scope's cancel")


_body_cb = _lib.BODY_FN(_body)
_done_cb = _lib.DONE_FN(_done)
_hold_cancel_cb = _lib.OP_CANCEL_FN(_hold_cancel)


class ScopeCM:
    """Base of the binding's async context managers: one scope per block."""

    _scope: Optional[Scope] = None

    def _uses(self, s: int) -> None:  # pragma: no cover - overridden
        pass

    def _on_body(self, sc: Scope) -> None:
        pass

    def _value(self) -> Any:
        return self

    async def __aenter__(self) -> Any:
        rt = runtime()
        parent = current.get()
        if parent is not None and (parent.rt is not rt or parent.live_handle() is None):
            parent = None
        sc = Scope(rt, parent)
        try:
            self._uses(sc.s)
        except BaseException:
            sc.discard()
            raise
        self._scope = sc
        await sc.enter(self._on_body)
        return self._value()

    async def __aexit__(self, et, exc, tb) -> bool:
        sc = self._scope
        if exc is None and et is not None:
            exc = et()
        await sc.exit(exc)
        return False
