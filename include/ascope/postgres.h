/* ascope — the PostgreSQL driver: a connection as a use of a scope.
 *
 * Statements go through the generic interface of sql.h, so user code is the
 * one written for SQLite. libpq runs non-blocking on the loop: the socket is
 * watched with uv_poll, host names are resolved with uv_getaddrinfo, and a
 * cancel request (PQcancel, which blocks) runs on libuv's threadpool.
 *
 * Every connection is in pipeline mode: statements from any number of scopes
 * sharing it are sent without waiting for one another, each followed by its
 * own sync point (by default), so a failing statement fails only its own
 * operation. Statements queued during one loop iteration are sent together
 * at its end.
 *
 * Target: a libpq connection string, "host=... dbname=..." or
 * "postgresql://...": multi-host lists, target_session_attrs and every other
 * libpq keyword pass through. Options, "key=value" separated by spaces or
 * commas:
 *   connect_timeout=ms   the whole connect, resolution included (default:
 *                        the DSN's connect_timeout, else 15000)
 *   cancel_timeout=ms    after a cancel request, how long the connection may
 *                        take to come back to idle before it is closed
 *                        (default 5000)
 *   cache=n              prepared statements kept per connection, least
 *                        recently used out first (default 64; 0: none). A
 *                        text is prepared the second time it is run.
 *   batch=n              rows per stream batch (default 256)
 *   results=auto|text    auto (default): a cached statement whose columns
 *                        all have a binary form (bool, integers, floats,
 *                        bytea, text types) asks for binary results; text:
 *                        always text
 *   sync=statement|batch statement (default): each statement has its own
 *                        sync point, so its own implicit transaction and
 *                        error scope. batch: the plain statements (exec,
 *                        query) sent in one round share one, for speed: they
 *                        run in one implicit transaction, and if one fails
 *                        the others are rolled back and sent again, each
 *                        with its own sync point (so each still succeeds or
 *                        fails alone, but effects outside the transaction,
 *                        as nextval() or a session advisory lock, may
 *                        happen twice). docs/drivers/postgres.md.
 * Transaction options (ascope_use_sql_tx): isolation=read_committed|
 * repeatable_read|serializable, read_only=0|1, deferrable=0|1.
 *
 * Parameters: an int64 is sent as int4 when it fits (as PostgreSQL types a
 * literal), else int8; a double as float8, a bool as bool, a blob as bytea,
 * all binary; text as text of unknown type, so the server infers it (a
 * date, a json, a numeric...). NULL is of unknown type.
 * Results: bool, int2/4/8, oid, float4/8, bytea, and text types decode to
 * their ascope_sql types; numeric, timestamps and every other type come as
 * text, in the server's output form.
 *
 * Errors: ascope_err_driver() is "postgres"; ascope_err_code() the SQLSTATE
 * ("23505"), and the message the server's, followed by its DETAIL and HINT
 * when given. Connecting fails with code "08001"; a connection lost makes
 * the statements on it fail with ASCOPE_ECLOSED and code "08006" (the one
 * running gets the server's own error when it sent one, as "57P01" for a
 * terminated backend). A cancelled statement completes with
 * ASCOPE_ECANCELED; the server's statement_timeout is the server's error,
 * ASCOPE_EDRIVER with "57014". Passwords never appear in messages.
 * docs/drivers/postgres.md has the details.
 */
#ifndef ASCOPE_POSTGRES_H
#define ASCOPE_POSTGRES_H

#include "sql.h"

#ifdef __cplusplus
extern "C" {
#endif

ASCOPE_EXTERN const ascope_sql_driver *ascope_postgres(void);
/* ascope_use_sql(s, ascope_postgres(), dsn, options) */
ASCOPE_EXTERN int ascope_use_postgres(ascope *s, const char *dsn, const char *options);

/* ---- COPY ----------------------------------------------------------------- */
/* COPY ... FROM STDIN. The data comes from fill, called on the loop thread
 * whenever the connection can take more: it writes up to cap bytes at buf,
 * sets *len (0: the end of the data) and returns ASCOPE_CONTINUE; or returns
 * ASCOPE_PAUSE (nothing now: call ascope_op_resume(*op) when there is); or a
 * negative status, which aborts the COPY (nothing is copied) and fails the
 * operation with it. cb runs once: ascope_rows_changes() is the number of
 * rows copied. The connection runs nothing else meanwhile. */
typedef int (*ascope_postgres_fill_fn)(ascope *s, void *buf, size_t cap, size_t *len, void *ud);
typedef ascope_postgres_fill_fn ascope_pg_fill_fn; /* its name before 0.2 */
ASCOPE_EXTERN int ascope_postgres_copy_in(ascope *s, ascope_sql *db, const char *sql,
                                          ascope_postgres_fill_fn fill, void *fill_ud,
                                          ascope_sql_cb cb, void *ud, ascope_op **op);
/* The same from memory: data is not copied and must stay valid until cb has
 * run. */
ASCOPE_EXTERN int ascope_postgres_copy_in_buffer(ascope *s, ascope_sql *db, const char *sql,
                                                 const void *data, size_t len, ascope_sql_cb cb,
                                                 void *ud);
/* COPY ... TO STDOUT, as a stream (the sql.h stream contract): each batch
 * holds rows of one column, "data", each one COPY data message (in text and
 * csv formats one line, newline included; TEXT), with back-pressure. */
ASCOPE_EXTERN int ascope_postgres_copy_out(ascope *s, ascope_sql *db, const char *sql,
                                           ascope_sql_cb cb, void *ud, ascope_op **op);

/* ---- LISTEN / NOTIFY ------------------------------------------------------ */
/* LISTEN channel, then the notifications on it as a stream: rows of three
 * columns, "channel" (TEXT), "payload" (TEXT) and "pid" (INT64, the
 * notifying backend). The stream never ends by itself: ASCOPE_STOP, an
 * error or the scope's cancellation ends it, with UNLISTEN. channel is a
 * name, quoted as an identifier (it is not folded to lower case). While the
 * stream is paused and nothing else runs on the connection, the socket is
 * not read: notifications wait in the server. */
ASCOPE_EXTERN int ascope_postgres_listen(ascope *s, ascope_sql *db, const char *channel,
                                         ascope_sql_cb cb, void *ud, ascope_op **op);

/* ---- the connection -------------------------------------------------------- */
/* The server process serving the connection (pg_backend_pid()); 0 if none,
 * or if the connection goes through a transaction pooler (no one process
 * serves it). */
ASCOPE_EXTERN int ascope_postgres_backend_pid(ascope_sql *db);
/* Process-wide counters, every runtime's summed (per runtime:
 * ascope_rt_stat(rt, "postgres.<name>")): "connections" (alive), "opened", "closed",
 * "broken" (lost or closed after a failed cancel), "aborted" (releases cut
 * short by the release timeout), "cancels" (cancel
 * requests sent), "retried" (statements another's cancel request hit, sent
 * again), "prepared" (statements prepared on a server), "deallocated",
 * "statements" (sent), "syncs" (sync points sent), "flushes" (rounds of
 * sending: what one loop iteration queued goes out in one), "corked" (rounds
 * of several statements held in the kernel until the round's end, on TCP),
 * "max_pipeline" (the most statements ever in flight on one connection). */
ASCOPE_EXTERN int64_t ascope_postgres_stat(const char *name);

#ifdef __cplusplus
}
#endif
#endif /* ASCOPE_POSTGRES_H */
