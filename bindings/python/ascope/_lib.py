"""Finding and loading libascope and its driver libraries through ctypes.

Where the libraries are looked for, in order:

1. the folders of ``ASCOPE_LIBRARY_PATH`` (``:``-separated): each folder
   itself, and for a build tree also ``<folder>/drivers/<name>``;
2. the system's library path (what ``dlopen("libascope.so.0")`` finds);
3. a build tree of the checkout this package sits in (``build*/``).

Each library is found on its own; a driver library finds ``libascope`` and
``libascope-sql`` through its own DT_NEEDED entries (and, once the core is
loaded by path, through the soname already loaded).
"""
from __future__ import annotations

import ctypes
import os
from ctypes import (CFUNCTYPE, POINTER, c_char_p, c_double, c_int, c_int64, c_size_t,
                    c_uint, c_uint64, c_void_p)
from typing import Dict, List

__all__ = ["LibraryNotFound", "core", "driver", "searched"]

#: The oldest libascope this binding works with (major, minor).
MIN_VERSION = (0, 1)


class LibraryNotFound(ImportError):
    """A libascope library could not be found or loaded."""


_SONAMES = {
    "ascope": "libascope.so.0",
    "sql": "libascope-sql.so.0",
    "sqlite": "libascope-sqlite.so.0",
    "postgres": "libascope-postgres.so.0",
    "http": "libascope-http.so.0",
    "file": "libascope-file.so.0",
}


def _checkout_builds() -> List[str]:
    """The build trees of the checkout this package lives in, newest first."""
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.abspath(os.path.join(here, "..", "..", ".."))
    if not os.path.isfile(os.path.join(root, "include", "ascope", "ascope.h")):
        return []
    found = []
    for name in os.listdir(root):
        d = os.path.join(root, name)
        if name.startswith("build") and os.path.isfile(os.path.join(d, "libascope.so.0")):
            found.append(d)
    # The plain tree first (sanitizer trees need their runtime preloaded),
    # then the most recently built.
    found.sort(key=lambda d: ("asan" in d or "tsan" in d, -os.path.getmtime(d)))
    return found


def _candidates(key: str) -> List[str]:
    soname = _SONAMES[key]
    sub = "" if key == "ascope" else os.path.join("drivers", key)
    out: List[str] = []
    for folder in filter(None, os.environ.get("ASCOPE_LIBRARY_PATH", "").split(":")):
        out.append(os.path.join(folder, soname))
        if sub:
            out.append(os.path.join(folder, sub, soname))
    out.append(soname)  # the system's search path
    for tree in _checkout_builds():
        out.append(os.path.join(tree, sub, soname) if sub else os.path.join(tree, soname))
    return out


searched: Dict[str, List[str]] = {}
_loaded: Dict[str, ctypes.CDLL] = {}
_errors: Dict[str, str] = {}


def _load(key: str) -> ctypes.CDLL:
    if key in _loaded:
        return _loaded[key]
    if key in _errors:
        raise LibraryNotFound(_errors[key])
    tried = []
    for path in _candidates(key):
        if os.sep in path and not os.path.exists(path):
            tried.append(f"{path} (no such file)")
            continue
        try:
            lib = ctypes.CDLL(path)
        except OSError as e:
            tried.append(f"{path} ({e})")
            continue
        _loaded[key] = lib
        searched[key] = tried + [path]
        return lib
    searched[key] = tried
    msg = (f"ascope: cannot load {_SONAMES[key]}; tried:\n  " + "\n  ".join(tried) +
           "\nInstall ascope (cmake --install), or set ASCOPE_LIBRARY_PATH to the folder"
           " holding it (a build tree will do).")
    _errors[key] = msg
    raise LibraryNotFound(msg)


def _sig(lib: ctypes.CDLL, name: str, restype, *argtypes) -> None:
    try:
        f = getattr(lib, name)
    except AttributeError:
        raise LibraryNotFound(
            f"ascope: {lib._name} has no {name}: it is older than this binding") from None
    f.restype = restype
    f.argtypes = list(argtypes)


P = c_void_p

# Callback types (docs/bindings/ffi.md lists every one and its lifetime).
BODY_FN = CFUNCTYPE(None, P, P)
DONE_FN = CFUNCTYPE(None, P, c_int, P)
OP_CANCEL_FN = CFUNCTYPE(None, P)
POOL_CLOSED_FN = CFUNCTYPE(None, P)
SQL_CB = CFUNCTYPE(c_int, P, c_int, P, P)
HTTP_CB = CFUNCTYPE(c_int, P, c_int, P, P)
FILE_CB = CFUNCTYPE(c_int, P, c_int, P)
FILE_DATA_CB = CFUNCTYPE(c_int, P, c_int, P, c_size_t, P)


class _TraceEvent(ctypes.Structure):
    _fields_ = [("size", c_size_t), ("kind", c_int), ("status", c_int), ("outcome", c_int),
                ("ts_ns", c_uint64), ("scope_id", c_uint64), ("parent_id", c_uint64),
                ("id", c_uint64), ("scope_name", c_char_p), ("driver", c_char_p),
                ("target", c_char_p), ("code", c_char_p), ("message", c_char_p)]


TRACE_FN = CFUNCTYPE(None, POINTER(_TraceEvent), P)


def core() -> ctypes.CDLL:
    """libascope, with every signature the binding uses declared."""
    if "ascope" in _loaded:
        return _loaded["ascope"]
    lib = _load("ascope")
    _sig(lib, "ascope_version", c_uint)
    v = lib.ascope_version()
    have = (v >> 16, (v >> 8) & 0xFF)
    if have < MIN_VERSION:
        del _loaded["ascope"]
        raise LibraryNotFound(f"ascope: libascope {have[0]}.{have[1]} is older than "
                              f"{MIN_VERSION[0]}.{MIN_VERSION[1]}")
    s = _sig
    s(lib, "ascope_strerror", c_char_p, c_int)
    s(lib, "ascope_err_name", c_char_p, c_int)
    s(lib, "ascope_err_value", c_int, c_char_p)
    s(lib, "ascope_rt_new", P, P)
    s(lib, "ascope_rt_free", c_int, P)
    s(lib, "ascope_rt_loop", P, P)
    s(lib, "ascope_rt_stat", c_int64, P, c_char_p)
    s(lib, "ascope_rt_set_trace", c_int, P, TRACE_FN, P)
    s(lib, "ascope_new", P, P)
    s(lib, "ascope_child", P, P)
    s(lib, "ascope_gen", c_uint64, P)
    s(lib, "ascope_check", P, P, c_uint64)
    s(lib, "ascope_set_mode", c_int, P, c_int)
    s(lib, "ascope_set_timeout", c_int, P, c_uint64)
    s(lib, "ascope_set_name", c_int, P, c_char_p)
    s(lib, "ascope_start", c_int, P, BODY_FN, DONE_FN, P)
    s(lib, "ascope_discard", None, P)
    s(lib, "ascope_resource", P, P, c_size_t)
    s(lib, "ascope_use_count", c_size_t, P)
    s(lib, "ascope_pool_close", None, P, POOL_CLOSED_FN, P)
    s(lib, "ascope_pool_stat", c_int64, P, c_char_p)
    s(lib, "ascope_cancel", None, P)
    s(lib, "ascope_error", P, P)
    s(lib, "ascope_err_status", c_int, P)
    s(lib, "ascope_err_driver", c_char_p, P)
    s(lib, "ascope_err_code", c_char_p, P)
    s(lib, "ascope_err_message", c_char_p, P)
    s(lib, "ascope_err_next", P, P)
    s(lib, "ascope_op_begin", P, P, P, OP_CANCEL_FN, P)
    s(lib, "ascope_op_data", P, P)
    s(lib, "ascope_op_end", None, P, c_int, c_char_p, c_char_p)
    s(lib, "ascope_op_resume", c_int, P)
    s(lib, "ascope_op_cancel", c_int, P)
    s(lib, "ascope_lock_new", P, P)
    s(lib, "ascope_lock_free", None, P)
    s(lib, "ascope_use_lock", c_int, P, P)
    s(lib, "ascope_sem_new", P, P, c_uint)
    s(lib, "ascope_sem_free", None, P)
    s(lib, "ascope_use_sem", c_int, P, P)
    # libuv, reached through the core's own dependency: the same libuv.
    s(lib, "uv_backend_fd", c_int, P)
    s(lib, "uv_backend_timeout", c_int, P)
    s(lib, "uv_run", c_int, P, c_int)
    s(lib, "uv_loop_alive", c_int, P)
    return lib


def driver(key: str) -> ctypes.CDLL:
    """A driver library ("sql", "sqlite", "postgres", "http", "file"), signatures declared."""
    if key in _loaded:
        return _loaded[key]
    core()
    lib = _load(key)
    s = _sig
    if key == "sql":
        s(lib, "ascope_use_sql_tx", c_int, P, P, c_char_p)
        s(lib, "ascope_sql_resource", P, P, c_size_t)
        s(lib, "ascope_sql_driver_name", c_char_p, P)
        s(lib, "ascope_sql_params_new", P)
        s(lib, "ascope_sql_params_free", None, P)
        s(lib, "ascope_sql_params_clear", None, P)
        s(lib, "ascope_sql_params_add_null", c_int, P)
        s(lib, "ascope_sql_params_add_bool", c_int, P, c_int)
        s(lib, "ascope_sql_params_add_int64", c_int, P, c_int64)
        s(lib, "ascope_sql_params_add_double", c_int, P, c_double)
        s(lib, "ascope_sql_params_add_text", c_int, P, c_char_p, c_size_t)
        s(lib, "ascope_sql_params_add_blob", c_int, P, c_char_p, c_size_t)
        s(lib, "ascope_sql_exec", c_int, P, P, c_char_p, P, SQL_CB, P)
        s(lib, "ascope_sql_query", c_int, P, P, c_char_p, P, SQL_CB, P)
        s(lib, "ascope_sql_stream", c_int, P, P, c_char_p, P, SQL_CB, P, POINTER(P))
        s(lib, "ascope_sql_start", c_int, P, P, c_int, c_char_p, P, SQL_CB, P, POINTER(P))
        s(lib, "ascope_sql_exec_many", c_int, P, P, c_char_p, P, c_size_t, SQL_CB, P, POINTER(P))
        s(lib, "ascope_sql_errcode", c_char_p, P)
        s(lib, "ascope_sql_errmsg", c_char_p, P)
        s(lib, "ascope_rows_count", c_size_t, P)
        s(lib, "ascope_rows_columns", c_size_t, P)
        s(lib, "ascope_rows_column_name", c_char_p, P, c_size_t)
        s(lib, "ascope_rows_type", c_int, P, c_size_t, c_size_t)
        s(lib, "ascope_rows_int64", c_int64, P, c_size_t, c_size_t)
        s(lib, "ascope_rows_double", c_double, P, c_size_t, c_size_t)
        s(lib, "ascope_rows_text", P, P, c_size_t, c_size_t, POINTER(c_size_t))
        s(lib, "ascope_rows_blob", P, P, c_size_t, c_size_t, POINTER(c_size_t))
        s(lib, "ascope_rows_changes", c_int64, P)
        s(lib, "ascope_rows_last_id", c_int64, P)
        s(lib, "ascope_sql_pool_new", P, P, P, c_char_p, c_char_p)
        s(lib, "ascope_use_sql_pool", c_int, P, P)
    elif key == "sqlite":
        driver("sql")
        s(lib, "ascope_use_sqlite", c_int, P, c_char_p, c_char_p)
        s(lib, "ascope_sqlite", P)
    elif key == "postgres":
        driver("sql")
        s(lib, "ascope_use_postgres", c_int, P, c_char_p, c_char_p)
        s(lib, "ascope_postgres", P)
    elif key == "http":
        s(lib, "ascope_use_http", c_int, P, c_char_p)
        s(lib, "ascope_http_req_new", P, P, c_char_p, c_char_p)
        s(lib, "ascope_http_req_free", None, P)
        s(lib, "ascope_http_req_header", c_int, P, c_char_p, c_char_p)
        s(lib, "ascope_http_req_body", c_int, P, c_char_p, c_size_t)
        s(lib, "ascope_http_req_setopt", c_int, P, c_char_p)
        s(lib, "ascope_http_send", c_int, P, P, HTTP_CB, P, POINTER(P))
        s(lib, "ascope_http_stream", c_int, P, P, HTTP_CB, P, POINTER(P))
        s(lib, "ascope_http_resp_status", c_int, P)
        s(lib, "ascope_http_resp_url", c_char_p, P)
        s(lib, "ascope_http_resp_headers", P, P, POINTER(c_size_t))
        s(lib, "ascope_http_errcode", c_char_p, P)
        s(lib, "ascope_http_errmsg", c_char_p, P)
        s(lib, "ascope_http_resp_header_at", c_int, P, c_size_t, POINTER(c_char_p),
          POINTER(c_char_p))
        s(lib, "ascope_http_resp_body", P, P, POINTER(c_size_t))
    elif key == "file":
        s(lib, "ascope_use_file", c_int, P, c_char_p, c_char_p)
        s(lib, "ascope_file_write", c_int, P, P, c_char_p, c_size_t, c_int64, FILE_CB, P)
        s(lib, "ascope_file_sync", c_int, P, P, FILE_CB, P)
        s(lib, "ascope_file_read", c_int, P, P, c_size_t, c_int64, FILE_DATA_CB, P)
        s(lib, "ascope_file_read_all", c_int, P, P, c_size_t, FILE_DATA_CB, P)
        s(lib, "ascope_file_read_into", c_int, P, P, P, c_size_t, c_int64, FILE_DATA_CB, P)
        s(lib, "ascope_file_stream", c_int, P, P, c_size_t, c_int64, FILE_DATA_CB, P, POINTER(P))
    return lib
