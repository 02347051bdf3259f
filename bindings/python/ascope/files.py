"""Files: ``async with ascope.open(path, "w", atomic=True) as f``, on libuv's threadpool."""
from __future__ import annotations

import asyncio
import ctypes
import os
import weakref
from collections import deque
from typing import Any, Deque, Optional, Tuple, Union

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
                it._finish()
                return C.STOP
            return it._deliver(ctypes.string_at(data, n))
        C._objs.pop(ud, None)
        it._finish(_file_error(it._f, status, "reading") if status < 0 and not it._stopping
                   else None)
    except BaseException as e:
        C._report(e, "a file stream callback")
    return 0


_done_cb_c = _lib.FILE_CB(_done_cb)
_data_cb_c = _lib.FILE_DATA_CB(_data_cb)
_stream_cb_c = _lib.FILE_DATA_CB(_stream_cb)


# ---- chunks read straight into the bytes handed out --------------------------
# On CPython a bytes object made with PyBytes_FromStringAndSize(NULL, n) is
# n bytes not yet written, at a fixed offset inside the object. Reading into
# it (ascope_file_read_into, on the threadpool) saves the copy string_at
# would make of every chunk; nothing else sees the object until the read
# has finished. The layout is checked once; anywhere else, or if the check
# fails, chunks come from the driver's own stream as before.
def _bytes_maker() -> Optional[Any]:
    import sys
    if sys.implementation.name != "cpython":
        return None
    try:
        make = ctypes.pythonapi.PyBytes_FromStringAndSize
        make.restype = ctypes.py_object
        make.argtypes = (ctypes.c_char_p, ctypes.c_ssize_t)
        off = sys.getsizeof(b"") - 1  # the header; the terminating NUL is the 1
        probe = make(b"ascope-probe", 12)
        if ctypes.string_at(id(probe) + off, 12) != b"ascope-probe":
            return None
    except Exception:
        return None

    def fresh(n: int) -> Tuple[bytes, int]:
        b = make(None, n)
        return b, id(b) + off
    return fresh


_fresh_bytes = _bytes_maker()


def _into_cb(s: int, status: int, data: int, n: int, ud: int) -> int:
    try:
        ra, slot = C._objs.pop(ud)
        ra._landed(slot, status, n)
    except BaseException as e:
        C._report(e, "a file read callback")
    return 0


_into_cb_c = _lib.FILE_DATA_CB(_into_cb)


class _ReadAhead:
    """``async for chunk in f.iter_chunked(n)`` on CPython: up to ``prefetch``
    reads in flight at once, each into the bytes object it hands out, taken
    in file order. A read shorter than asked is the end of the file."""

    def __init__(self, f: "File", chunk_size: int, prefetch: int) -> None:
        self._f = f
        self._chunk = max(1, chunk_size)
        self._depth = max(1, min(prefetch, 4))  # libuv's pool has 4 threads
        self._slots: Deque[list] = deque()  # [bytes, status, n, done]
        self._next = 0  # the offset of the next read
        self._end = False  # a short read seen: issue no more
        self._waiter: Optional[asyncio.Future] = None

    def _issue(self) -> None:
        f = self._f
        s = C.handle_of(C.scope_for(f._scope))
        while not self._end and len(self._slots) < self._depth:
            b, addr = _fresh_bytes(self._chunk)
            slot = [b, 0, 0, False]
            k = C.register((self, slot))
            rc = fl.ascope_file_read_into(s, f._f, addr, self._chunk, self._next, _into_cb_c, k)
            if rc < 0:
                del C._objs[k]
                raise _file_error(f, rc, "reading")
            self._slots.append(slot)
            self._next += self._chunk
        f._rt.kick()

    def _landed(self, slot: list, status: int, n: int) -> None:
        slot[1], slot[2], slot[3] = status, n, True
        if status < 0 or n < self._chunk:
            self._end = True
        w = self._waiter
        if w is not None and not w.done() and self._slots and self._slots[0] is slot:
            w.set_result(None)

    def __aiter__(self) -> "_ReadAhead":
        return self

    async def __anext__(self) -> bytes:
        if not self._slots:
            if self._end:
                raise StopAsyncIteration
            self._issue()
        head = self._slots[0]
        while not head[3]:
            self._waiter = self._f._rt.loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        self._slots.popleft()
        b, status, n, _ = head
        if status < 0:
            self._end = True
            self._slots.clear()  # their reads finish on their own; nothing more is handed out
            raise _file_error(self._f, status, "reading")
        if n == 0:
            self._slots.clear()
            raise StopAsyncIteration
        if not self._end:
            self._issue()
        else:
            # Reads issued past the end come back empty: drop them.
            while self._slots and self._slots[0][3] and self._slots[0][2] == 0 \
                    and self._slots[0][1] >= 0:
                self._slots.popleft()
        return b if n == self._chunk else b[:n]


class _Chunks(C.Stream):
    """``async for chunk in f``: the file from its start in chunks, read ahead
    by the driver, paused while ``prefetch`` chunks wait unread."""

    def __init__(self, f: "File", chunk_size: int, prefetch: int = 8) -> None:
        self._f = f
        self._rt = f._rt
        self._chunk = chunk_size
        self._stream_init(prefetch)

    def _start(self) -> None:
        f = self._f
        sc = C.scope_for(f._scope)
        k = C.register(weakref.ref(self))
        rc = fl.ascope_file_stream(C.handle_of(sc), f._f, self._chunk, 0, _stream_cb_c, k,
                                   ctypes.byref(self._op))
        if rc < 0:
            del C._objs[k]
            raise _file_error(f, rc, "reading")
        self._started = True
        sc.add_stream(self)
        f._rt.kick()

    def __aiter__(self) -> "_Chunks":
        return self

    async def __anext__(self) -> bytes:
        if not self._started:
            self._start()
        return await self._next()


class File(C.ScopeCM):
    """An open file for one ``async with`` block, closed exactly once at its end.

    With ``atomic=True`` (modes "w", "w+", "x", "x+") the data goes to a
    temporary file beside the target, renamed over it (after fsync) only if
    the block ends normally; an exception, a cancellation or a timeout
    removes it and leaves the target untouched.
    """

    def __init__(self, path: Union[str, "os.PathLike[str]"], mode: str = "r", *, atomic: bool = False,
                 chunk_size: int = 1 << 16) -> None:
        self.path = os.fspath(path)
        self.mode = mode + (" atomic" if atomic else "")
        self.chunk_size = chunk_size
        self._index = 0
        self._f = None
        self._rt: Optional[C.Runtime] = None

    async def __aenter__(self) -> Any:
        try:
            return await super().__aenter__()
        except OSError as e:  # the open failed in C: name the file, as open() does
            if getattr(e, "filename", None) is None:
                e.filename = self.path
            raise

    def _uses(self, s: int) -> None:
        self._index = C.lib.ascope_use_count(s)
        rc = fl.ascope_use_file(s, C.cstr(self.path, "path"), C.cstr(self.mode, "mode"))
        if rc == C.EINVAL:  # the mode: the path was checked above
            raise ValueError(f"invalid mode {self.mode!r}: r, r+, w, w+, a, a+, x or x+ (b is "
                             "ignored); atomic=True with w, w+, x or x+")
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

    def iter_chunked(self, n: int, prefetch: int = 8) -> Union[_Chunks, _ReadAhead]:
        """The file from its start in chunks of n bytes, as an ``async for``,
        with reads ahead (at most ``prefetch`` chunks waiting unread)."""
        if _fresh_bytes is not None and n >= 1 << 16:
            return _ReadAhead(self, n, prefetch)
        return _Chunks(self, n, prefetch)

    def __aiter__(self) -> Union[_Chunks, _ReadAhead]:
        return self.iter_chunked(self.chunk_size)


def open(path: Any, mode: str = "r", *, atomic: bool = False, chunk_size: int = 1 << 16) -> File:  # noqa: A001
    """``async with ascope.open(path, mode) as f`` — see :class:`File`."""
    return File(path, mode, atomic=atomic, chunk_size=chunk_size)
