/* ascope — the SQLite driver: a database connection as a use of a scope.
 *
 * Statements go through the generic interface of sql.h. Every SQLite call
 * runs on libuv's threadpool, one connection on one thread at a time, and
 * the statements queued for a connection run in one hand-off. At most a few
 * connections (2 by default) run on the pool at once, so file I/O and DNS,
 * which share it, are never starved.
 *
 * Target: the database's path (NULL or ":memory:" with mode=memory). A
 * target beginning with "file:" is an SQLite URI ("file:app.db?mode=ro"),
 * on every SQLite build; its parameters may narrow the options, not widen them.
 * Options, "key=value" separated by spaces or commas:
 *   mode=rwc|rw|ro|memory   create if missing (default), read-write, read-only,
 *                           a private in-memory database
 *   wal=0|1                 journal_mode=WAL (default 0: the file's mode stays)
 *   busy_timeout=ms         how long a statement waits for a lock (default 5000)
 *   cache=n                 prepared statements kept per connection (default 32)
 *   batch=n                 rows per stream batch (default 256)
 *   foreign_keys=0|1        PRAGMA foreign_keys (default: SQLite's)
 *   synchronous=off|normal|full
 * Transaction options (ascope_use_sql_tx): begin=deferred|immediate|exclusive.
 *
 * Errors: ascope_err_driver() is "sqlite", ascope_err_code() the extended
 * result code's name ("SQLITE_CONSTRAINT_UNIQUE"), the message SQLite's.
 * docs/drivers/sqlite.md has the details.
 */
#ifndef ASCOPE_SQLITE_H
#define ASCOPE_SQLITE_H

#include "sql.h"

#ifdef __cplusplus
extern "C" {
#endif

ASCOPE_EXTERN const ascope_sql_driver *ascope_sqlite(void);
/* ascope_use_sql(s, ascope_sqlite(), path, options) */
ASCOPE_EXTERN int ascope_use_sqlite(ascope *s, const char *path, const char *options);
/* How many connections may run on libuv's threadpool at once, per runtime
 * (default 2). Keep it below UV_THREADPOOL_SIZE. */
ASCOPE_EXTERN int ascope_sqlite_set_concurrency(unsigned n);
/* "SQLITE_BUSY_SNAPSHOT" for an extended result code; NULL if unknown. */
ASCOPE_EXTERN const char *ascope_sqlite_code_name(int code);
/* Process-wide counters, every runtime's summed (per runtime:
 * ascope_rt_stat(rt, "sqlite.<name>")): "connections" (alive), "opened", "closed",
 * "aborted", "hops" (hand-offs to the pool), "running" (hops in flight),
 * "statements" (prepared, alive), "busy" (waits for a lock another
 * connection held), "yields" (of those, given up to let another connection
 * run; the statement runs again later), "savepoint_cancels" (writes inside
 * a savepoint cancelled while they ran: let finish, then the savepoint
 * rolled back, docs/drivers/sqlite.md). */
ASCOPE_EXTERN int64_t ascope_sqlite_stat(const char *name);

#ifdef __cplusplus
}
#endif
#endif /* ASCOPE_SQLITE_H */
