"""Scopes of your own, locks and semaphores: ascope's, for ascope's scopes."""
from __future__ import annotations

import asyncio
from typing import Any, Optional

from . import _core as C

__all__ = ["scope", "Scope", "Lock", "Semaphore"]


class Scope(C.ScopeCM):
    """``async with ascope.scope():`` — a scope with no resource of its own.

    Work started inside it through a resource of an enclosing block
    (statements on a connection, requests of a session) belongs to it: when
    the block is cancelled or times out, that work alone is cancelled, and
    the enclosing connection or session carries on. ``timeout`` (seconds)
    is the block's deadline, as ``asyncio.timeout``'s: ascope's work in it is
    cancelled in C, the task is cancelled wherever it awaits, and
    ``ascope.TimeoutError`` (a ``TimeoutError``) leaves the block once
    everything in it was released.
    """

    def __new__(cls, timeout: Optional[float] = None, name: Optional[str] = None) -> "Scope":
        # A deadline needs a timer of the loop's beside C's: a class of its
        # own, so that the scope without one pays for no extra frames.
        if cls is Scope and timeout is not None:
            cls = _TimedScope
        return super().__new__(cls)

    def __init__(self, timeout: Optional[float] = None, name: Optional[str] = None) -> None:
        self._timeout = timeout
        self._name = name

    def _uses(self, s: int) -> None:
        if self._timeout is not None:
            C.lib.ascope_set_timeout(s, max(1, int(self._timeout * 1000)))
        if self._name:
            C.lib.ascope_set_name(s, C.cstr(self._name, "name"))


class _TimedScope(Scope):
    """A Scope with a deadline: C's, and a timer of the loop's for whatever
    else the block awaits."""

    def __init__(self, timeout: Optional[float] = None, name: Optional[str] = None) -> None:
        super().__init__(timeout, name)
        self._timer: Optional[asyncio.TimerHandle] = None
        self._task: Optional["asyncio.Task[Any]"] = None
        self._expired = False
        self._cancelling = 0
        self._deadline = 0.0

    async def __aenter__(self) -> Any:
        # Read before C starts its own deadline, which is thus never earlier
        # than this one (libuv's whole milliseconds aside): see _c_failed.
        self._deadline = asyncio.get_running_loop().time() + (self._timeout or 0.0)
        value = await super().__aenter__()
        # ascope's deadline cuts its operations short in C; this one reaches
        # whatever else the block awaits (asyncio.sleep, a queue).
        self._task = asyncio.current_task()
        self._cancelling = getattr(self._task, "cancelling", lambda: 0)()
        self._expired = False
        self._timer = asyncio.get_running_loop().call_at(self._deadline, self._expire)
        if self._scope is not None:
            self._scope.on_fail = self._c_failed
        return value

    def _expire(self) -> None:
        self._timer = None
        self._expired = True
        if self._task is not None:
            self._task.cancel()

    def _c_failed(self) -> None:
        # C failed the scope. At the deadline (C's timer, started after this
        # one's clock was read, fires at most libuv's millisecond before it),
        # it is this deadline: one cancellation of the task, now, not a
        # second from the timer while the block is ending on the first. Any
        # other failure (the scope cancelled from above) is not a timeout.
        timer = self._timer
        if timer is not None and asyncio.get_running_loop().time() >= self._deadline - 0.002:
            timer.cancel()
            self._expire()

    async def __aexit__(self, et, exc, tb) -> bool:
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()
        raised: Optional[BaseException] = None
        try:
            await super().__aexit__(et, exc, tb)
        except asyncio.CancelledError as e:
            # A cancellation while the block's uses were released, raised
            # once they were: the deadline's, when it came then, is the
            # block's timeout as much as one in the block.
            raised = e
            et, exc = type(e), e
        # The cancellation is ours (as asyncio.timeout counts it) unless
        # another came too: then it goes on as a CancelledError.
        ours = self._expired and et is not None and issubclass(et, asyncio.CancelledError)
        uncancel = getattr(self._task, "uncancel", None)
        if self._expired and uncancel is not None and uncancel() > self._cancelling:
            ours = False
        if not ours:
            if raised is not None:
                raise raised
            return False
        errors = self._scope.errors if self._scope is not None else []
        if errors and errors[0].status == C.ETIMEDOUT:
            raise errors[0] from exc
        ms = max(1, int(self._timeout * 1000)) if self._timeout is not None else 0
        raise C.make_error(C.ETIMEDOUT, message=f"the scope's deadline of {ms} ms passed") from exc


def scope(timeout: Optional[float] = None, name: Optional[str] = None) -> Scope:
    return Scope(timeout, name)


class _Sync:
    _new: Any
    _use: Any

    def __init__(self, *args: Any) -> None:
        self._args = args
        self._h = None
        self._rt: Optional[C.Runtime] = None

    def _handle(self, rt: C.Runtime) -> int:
        if self._h is None:
            self._rt = rt
            self._h = self._new(rt.rt, *self._args)
            if not self._h:
                raise MemoryError("ascope lock")
        elif self._rt is not rt:
            raise RuntimeError("an ascope lock belongs to the loop it was first used on")
        return self._h

    def __call__(self) -> "_SyncUse":
        return _SyncUse(self)

    async def __aenter__(self) -> None:
        import asyncio
        u = _SyncUse(self)
        await u.__aenter__()
        held = self.__dict__.setdefault("_held", {})
        held.setdefault(asyncio.current_task(), []).append(u)

    async def __aexit__(self, et, exc, tb) -> bool:
        import asyncio
        task = asyncio.current_task()
        stack = self._held[task]
        u = stack.pop()
        if not stack:
            del self._held[task]
        return await u.__aexit__(et, exc, tb)

    def close(self) -> None:
        """Frees the lock: its waiters fail with ClosedError."""
        h, self._h = self._h, None
        if h:
            self._free(h)


class _SyncUse(C.ScopeCM):
    def __init__(self, sync: _Sync) -> None:
        self._sync = sync

    def _uses(self, s: int) -> None:
        C.check(self._sync._use(s, self._sync._handle(C.runtime())), "lock")


class Lock(_Sync):
    """``async with lock:`` — FIFO, cancellation-safe; a use of a scope."""

    _new = staticmethod(lambda rt: C.lib.ascope_lock_new(rt))
    _use = staticmethod(lambda s, h: C.lib.ascope_use_lock(s, h))
    _free = staticmethod(lambda h: C.lib.ascope_lock_free(h))


class Semaphore(_Sync):
    """``async with sem:`` — one of n permits for the block."""

    def __init__(self, permits: int = 1) -> None:
        super().__init__(permits)

    _new = staticmethod(lambda rt, n: C.lib.ascope_sem_new(rt, n))
    _use = staticmethod(lambda s, h: C.lib.ascope_use_sem(s, h))
    _free = staticmethod(lambda h: C.lib.ascope_sem_free(h))
