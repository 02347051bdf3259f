"""Files: ``async with ascope.open(path, "w", atomic=True) as f``, on libuv's threadpool."""
from __future__ import annotations

import asyncio
import ctypes
import weakref
from collections import deque
from typing import Any, Deque, Optional, Union

from . import _lib
from . import _core as C

__all__ = ["open", "File"]

fl = _lib.driver("file")
_SIZE_MAX = ctypes.c_size_t(-1).value


def _file_error(f: "File", status: int, what: str) -> BaseException:
    name = C.status_name(status)
    msg = f"{what} {f.path}: {C.lib.ascope_strerror(status).decode()}"
    return C.make_error(status, "file", name, msg, filename=f.path)


def _done_cb(s: int, status: int, ud: int) -> int:
    try:
        fut, f, what = C._objs.pop(ud)
        if not fut.cancelled():
            if status < 0:
                fut.set_exception(_file_error(f, status, what))
            else:
                fut.set_result(None)
    except BaseException as e:
        C._report(e, "a file callback")
    return 0


def _data_cb(s: int, status: int, data: int, n: int, ud: int) -> int:
    try:
        fut, f, what = C._objs.pop(ud)
        if not fut.cancelled():
            if status < 0:
                fut.set_exception(_file_error(f, status, what))
            else:
                fut.set_result(ctypes.string_at(data, n) if n else b"")
    except BaseException as e:
        C._report(e, "a file callback")
    return 0


def _stream_cb(s: int, status: int, data: int, n: int, ud: int) -> int:
    try:
        ref = C._objs.get(ud)
        it = ref() if ref is not None else None
        if it is None:
            C._objs.pop(ud, None)
            return C.STOP if data else 0
        if data:
            if it._stopping:
                C._objs.pop(ud, None)
                it._end()
                return C.STOP
            it._chunks.append(ctypes.string_at(data, n))
            it._wake()
            if len(it._chunks) >= it._high:
                it._paused = True
                return C.PAUSE
            return C.CONTINUE
        C._objs.pop(ud, None)
        if status < 0 and not it._stopping:
            it._err = _file_error(it._f, status, "reading")
        it._end()
    except BaseException as e:
        C._report(e, "a file stream callback")
    return 0


_done_cb_c = _lib.FILE_CB(_done_cb)
_data_cb_c = _lib.FILE_DATA_CB(_data_cb)
_stream_cb_c = _lib.FILE_DATA_CB(_stream_cb)


class _Chunks:
    """``async for chunk in f``: the file from its start in chunks, read ahead
    by the driver, paused while ``prefetch`` chunks wait unread."""

    def __init__(self, f: "File", chunk_size: int, prefetch: int = 8) -> None:
        self._f = f
        self._chunk = chunk_size
        self._high = max(1, prefetch)
        self._chunks: Deque[bytes] = deque()
        self._op = ctypes.c_void_p()
        self._started = self._ended = self._paused = self._stopping = False
        self._err: Optional[BaseException] = None
        self._waiter: Optional[asyncio.Future] = None

    def _wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    def _end(self) -> None:
        self._ended = True
        self._wake()

    def _resume(self) -> None:
        if self._paused and not self._ended:
            self._paused = False
            C.lib.ascope_op_resume(self._op)
            self._f._rt.kick()

    def _stop(self) -> None:
        if self._started and not self._ended and not self._stopping:
            self._stopping = True
            self._chunks.clear()
            if self._paused:
                self._paused = False
                C.lib.ascope_op_resume(self._op)
            self._f._rt.kick()

    def __aiter__(self) -> "_Chunks":
        return self

    async def __anext__(self) -> bytes:
        f = self._f
        if not self._started:
            sc = C.scope_for(f._scope)
            k = C.register(weakref.ref(self))
            rc = fl.ascope_file_stream(C.handle_of(sc), f._f, self._chunk, 0, _stream_cb_c, k,
                                       ctypes.byref(self._op))
            if rc < 0:
                del C._objs[k]
                raise _file_error(f, rc, "reading")
            self._started = True
            sc.streams.add(self)
            f._rt.kick()
        while True:
            if self._chunks:
                c = self._chunks.popleft()
                # Hysteresis: resume once half drained, not at every chunk, so
                # the reads ahead are not stopped and restarted each time.
                if self._paused and len(self._chunks) <= self._high // 2:
                    self._resume()
                return c
            if self._ended:
                if self._err is not None:
                    err, self._err = self._err, None
                    raise err
                raise StopAsyncIteration
            self._waiter = f._rt.loop.create_future()
            try:
                await self._waiter
            except asyncio.CancelledError:
                self._stop()
                raise
            finally:
                self._waiter = None

    def __del__(self) -> None:
        try:
            self._stop()
        except Exception:
            pass


class File(C.ScopeCM):
    """An open file for one ``async with`` block, closed exactly once at its end.

    With ``atomic=True`` (modes "w", "w+", "x", "x+") the data goes to a
    temporary file beside the target, renamed over it (after fsync) only if
    the block ends normally; an exception, a cancellation or a timeout
    removes it and leaves the target untouched.
    """

    def __init__(self, path: Union[str, "os.PathLike[str]"], mode: str = "r", *, atomic: bool = False,
                 chunk_size: int = 1 << 16) -> None:
        import os
        self.path = os.fspath(path)
        self.mode = mode + (" atomic" if atomic else "")
        self.chunk_size = chunk_size
        self._index = 0
        self._f = None
        self._rt: Optional[C.Runtime] = None

    def _uses(self, s: int) -> None:
        self._index = C.lib.ascope_use_count(s)
        rc = fl.ascope_use_file(s, self.path.encode(), self.mode.encode())
        if rc < 0:
            raise _file_error(self, rc, f"open({self.mode!r})")

    def _on_body(self, sc: C.Scope) -> None:
        self._f = C.lib.ascope_resource(sc.s, self._index)
        self._rt = sc.rt

    def _op(self, start: Any, what: str) -> "asyncio.Future[Any]":
        sc = C.scope_for(self._scope)
        fut = self._rt.loop.create_future()
        k = C.register((fut, self, what))
        rc = start(C.handle_of(sc), k)
        if rc < 0:
            del C._objs[k]
            raise _file_error(self, rc, what)
        self._rt.kick()
        return fut

    async def write(self, data: Union[bytes, str], offset: int = -1) -> int:
        """Writes all of data (after the previous write, or at offset)."""
        b = data.encode() if isinstance(data, str) else bytes(data)
        await self._op(lambda s, k: fl.ascope_file_write(s, self._f, b, len(b), offset, _done_cb_c, k),
                       "writing")
        return len(b)

    async def read(self, n: int = -1, offset: int = -1) -> bytes:
        """n bytes (fewer at the end) at offset or the file position; n=-1: the whole file."""
        if n < 0:
            return await self._op(
                lambda s, k: fl.ascope_file_read_all(s, self._f, _SIZE_MAX, _data_cb_c, k), "reading")
        return await self._op(lambda s, k: fl.ascope_file_read(s, self._f, n, offset, _data_cb_c, k),
                              "reading")

    async def sync(self) -> None:
        """fsync(2), after every write before it."""
        await self._op(lambda s, k: fl.ascope_file_sync(s, self._f, _done_cb_c, k), "syncing")

    def iter_chunked(self, n: int, prefetch: int = 8) -> _Chunks:
        """The file in chunks of n bytes, as an ``async for``."""
        return _Chunks(self, n, prefetch)

    def __aiter__(self) -> _Chunks:
        return _Chunks(self, self.chunk_size)


def open(path: Any, mode: str = "r", *, atomic: bool = False, chunk_size: int = 1 << 16) -> File:  # noqa: A001
    """``async with ascope.open(path, mode) as f`` — see :class:`File`."""
    return File(path, mode, atomic=atomic, chunk_size=chunk_size)
