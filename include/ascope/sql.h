/* ascope — one SQL interface over every SQL driver.
 *
 * As Go's database/sql is one interface over many drivers, user code written
 * against this header is the same for SQLite and PostgreSQL: only the driver
 * handed to ascope_use_sql() and its target and options strings differ.
 *
 * A connection is a use of a scope; statements are operations of a scope;
 * a transaction is one more use, committed or rolled back by the scope's
 * outcome. Parameters are always bound, never spliced into the SQL text.
 * Placeholders are $1, $2… (portable) or the driver's own (? for SQLite).
 *
 * Every call is made on the loop thread. docs/sql.md describes each one;
 * a SQL driver implements sql_driver.h.
 */
#ifndef ASCOPE_SQL_H
#define ASCOPE_SQL_H

#include "ascope.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ascope_sql ascope_sql;               /* a connection: ascope_resource() of its use */
typedef struct ascope_sql_tx ascope_sql_tx;         /* a transaction: its use's resource */
typedef struct ascope_sql_params ascope_sql_params; /* bound parameters */
typedef struct ascope_rows ascope_rows;             /* a result, or one batch of a stream */
typedef struct ascope_sql_driver ascope_sql_driver;

/* ---- value types: parameters and results -------------------------------- */
#define ASCOPE_SQL_NULL 0
#define ASCOPE_SQL_BOOL 1
#define ASCOPE_SQL_INT64 2
#define ASCOPE_SQL_DOUBLE 3
#define ASCOPE_SQL_TEXT 4
#define ASCOPE_SQL_BLOB 5

#define ASCOPE_SQL_NTS ((size_t)-1) /* a text length meaning "up to the NUL" */

/* ---- connections and transactions: uses of a scope ----------------------- */
/* A connection: target is the driver's (a path for SQLite, a DSN for
 * PostgreSQL), options a "key=value key=value" string; both are copied. */
ASCOPE_EXTERN int ascope_use_sql(ascope *s, const ascope_sql_driver *drv, const char *target,
                                 const char *options);
/* A connection named by one URL, the driver picked by its scheme:
 * "postgresql://user@host/db?..." or "postgres://…" (libpq's URI, handed
 * over whole), "sqlite:path" or "sqlite:///abs/path" (the path after the
 * scheme; "sqlite::memory:"), "<name>:…" for any other SQL driver (the URL
 * whole). The driver is found as ascope_sql_driver_find() finds it: linked
 * in, registered, or loaded as a plugin. A URL without a scheme is
 * UV_EINVAL at once; a driver that cannot be found fails the acquire with
 * UV_ENOENT and a message saying where it was looked for. */
ASCOPE_EXTERN int ascope_use_sql_url(ascope *s, const char *url, const char *options);
/* A SQL driver by name ("sqlite", "postgres", a plugin's): registered, or
 * loaded from ASCOPE_DRIVER_PATH or the installed plugin folder (see
 * ascope_driver_find in driver.h). NULL, and the reason in errbuf, when
 * there is none or it is not a SQL driver. */
ASCOPE_EXTERN const ascope_sql_driver *ascope_sql_driver_find(const char *name, char *errbuf,
                                                              size_t errlen);
/* The index-th use as a SQL connection, once acquired; NULL if that use is
 * not a SQL connection (or not held). */
ASCOPE_EXTERN ascope_sql *ascope_sql_resource(ascope *s, size_t index);
/* A transaction on a connection held by an enclosing scope: BEGIN when
 * acquired; when released, COMMIT if the scope's outcome is ok, ROLLBACK
 * otherwise (error, deadline, cancel). While another transaction is open on
 * the connection it becomes SAVEPOINT / RELEASE / ROLLBACK TO. options are
 * the driver's ("begin=immediate" for SQLite); NULL for the default. A
 * level is its scope's: while one is open, another must come from within
 * it (a child's savepoint), or its acquire fails with ASCOPE_EBUSY. */
ASCOPE_EXTERN int ascope_use_sql_tx(ascope *s, ascope_sql *db, const char *options);
/* The same on the connection acquired by use number `index` of this very
 * scope (`async with connect() as c, c.transaction():`), of driver drv. */
ASCOPE_EXTERN int ascope_use_sql_tx_at(ascope *s, const ascope_sql_driver *drv, size_t index,
                                       const char *options);
/* Pools of connections (ascope_pool_* in ascope.h): a pool of drv's
 * connections to target, or of the driver and target one URL names (as
 * ascope_use_sql_url reads it). options: the pool's keys (min, max,
 * acquire_timeout_ms, idle_timeout_ms, max_lifetime_ms) and the driver's
 * connection options together. NULL on bad options, an unknown driver
 * (with the reason in errbuf, when given) or out of memory. */
ASCOPE_EXTERN ascope_pool *ascope_sql_pool_new(ascope_rt *rt, const ascope_sql_driver *drv,
                                               const char *target, const char *options);
ASCOPE_EXTERN ascope_pool *ascope_sql_pool_new_url(ascope_rt *rt, const char *url,
                                                   const char *options, char *errbuf,
                                                   size_t errlen);
/* A connection from the pool for the scope: ascope_sql_resource() of the
 * use is the connection, and ascope_use_sql_tx_at() opens a transaction on
 * it as on a connection of the scope's own. When the scope ends, the
 * connection goes back through the driver's reset (which rolls back a
 * transaction left open and undoes session settings), or is closed if it
 * is broken. */
ASCOPE_EXTERN int ascope_use_sql_pool(ascope *s, ascope_pool *pool);
ASCOPE_EXTERN ascope_sql *ascope_sql_tx_db(ascope_sql_tx *tx);
ASCOPE_EXTERN unsigned ascope_sql_tx_depth(ascope_sql_tx *tx); /* 1: BEGIN; 2…: savepoints */
ASCOPE_EXTERN const char *ascope_sql_driver_name(ascope_sql *db);

/* ---- parameters ---------------------------------------------------------- */
/* Values are copied when added, so the caller's buffers may go at once; a
 * statement copies the set when it starts, so one set may be reused for the
 * next statement straight away. An add that fails (out of memory) is also
 * remembered: the statement started with that set returns the error. */
ASCOPE_EXTERN ascope_sql_params *ascope_sql_params_new(void);
ASCOPE_EXTERN void ascope_sql_params_free(ascope_sql_params *p);
ASCOPE_EXTERN void ascope_sql_params_clear(ascope_sql_params *p); /* keeps the memory */
ASCOPE_EXTERN int ascope_sql_params_add_null(ascope_sql_params *p);
ASCOPE_EXTERN int ascope_sql_params_add_bool(ascope_sql_params *p, int value);
ASCOPE_EXTERN int ascope_sql_params_add_int64(ascope_sql_params *p, int64_t value);
ASCOPE_EXTERN int ascope_sql_params_add_double(ascope_sql_params *p, double value);
ASCOPE_EXTERN int ascope_sql_params_add_text(ascope_sql_params *p, const char *text, size_t len);
ASCOPE_EXTERN int ascope_sql_params_add_blob(ascope_sql_params *p, const void *data, size_t len);
/* The FFI form, like PQexecParams: n values, each given as bytes with its
 * type. values[i] NULL is SQL NULL; INT64, DOUBLE and BOOL are text ("42",
 * "-1.5e3", "t"/"f"/"1"/"0"/"true"/"false") parsed strictly; lengths may be
 * NULL (every value NUL-terminated), and a length of ASCOPE_SQL_NTS means
 * "up to the NUL". On an error nothing is added. */
ASCOPE_EXTERN int ascope_sql_params_add_array(ascope_sql_params *p, size_t n, const int *types,
                                              const char *const *values, const size_t *lengths);
ASCOPE_EXTERN size_t ascope_sql_params_count(const ascope_sql_params *p);
ASCOPE_EXTERN int ascope_sql_params_type(const ascope_sql_params *p, size_t i);
ASCOPE_EXTERN int64_t ascope_sql_params_int64(const ascope_sql_params *p, size_t i); /* bool too */
ASCOPE_EXTERN double ascope_sql_params_double(const ascope_sql_params *p, size_t i);
ASCOPE_EXTERN const void *ascope_sql_params_bytes(const ascope_sql_params *p, size_t i,
                                                  size_t *len); /* text, blob */

/* ---- statements: operations of a scope ----------------------------------- */
/* The operation callback shape every driver uses. exec and query call it once: with the result
 * (status 0) or with rows NULL and the error. A stream calls it once per
 * batch of rows (status 0), then a final time with rows NULL and the end
 * status — unless a batch's call returned ASCOPE_STOP or a negative status,
 * which ends the operation there. The return value: 0 carries on (the error
 * was handled); negative fails the scope; for a stream's batches also
 * ASCOPE_PAUSE (hold the next batch until ascope_op_resume) and ASCOPE_STOP.
 * A NULL callback: errors fail the scope. rows is valid during the call.
 * The calls below return 0, or a negative code with nothing queued:
 * ASCOPE_EBUSY when the connection is inside a transaction whose scope does
 * not hold s (a statement from s would join another scope's transaction). */
typedef int (*ascope_sql_cb)(ascope *s, int status, ascope_rows *rows, void *ud);

/* One statement, or with no parameters (params NULL or empty) a script of
 * several; the result has no rows, and ascope_rows_changes/_last_id. */
ASCOPE_EXTERN int ascope_sql_exec(ascope *s, ascope_sql *db, const char *sql,
                                  const ascope_sql_params *params, ascope_sql_cb cb, void *ud);
/* One statement; every row in one result. */
ASCOPE_EXTERN int ascope_sql_query(ascope *s, ascope_sql *db, const char *sql,
                                   const ascope_sql_params *params, ascope_sql_cb cb, void *ud);
/* One statement; rows in bounded batches, with back-pressure: while paused
 * the database produces nothing more. The connection runs nothing else
 * until the database has produced the stream's last row (a paused last
 * batch no longer holds it). op, when not NULL, receives the operation. */
ASCOPE_EXTERN int ascope_sql_stream(ascope *s, ascope_sql *db, const char *sql,
                                    const ascope_sql_params *params, ascope_sql_cb cb, void *ud,
                                    ascope_op **op);
#define ASCOPE_SQL_EXEC 1
#define ASCOPE_SQL_QUERY 2
#define ASCOPE_SQL_STREAM 3
/* The three above in one entry point, for bindings: kind is
 * ASCOPE_SQL_EXEC, ASCOPE_SQL_QUERY or ASCOPE_SQL_STREAM, and
 * op, when not NULL, receives the operation of every kind, so that one
 * statement can be cancelled alone (ascope_op_cancel) while its callback
 * has not run. */
ASCOPE_EXTERN int ascope_sql_start(ascope *s, ascope_sql *db, int kind, const char *sql,
                                   const ascope_sql_params *params, ascope_sql_cb cb, void *ud,
                                   ascope_op **op);
/* One statement run once per row of values, as one operation: params
 * holds nrows rows of values one after the other (its count a multiple of
 * nrows), and each row is a statement of its own, all of them queued in
 * order in this one call, as a burst of ascope_sql_exec calls would be, so
 * a driver pipelines (PostgreSQL) or batches (SQLite) them the same way.
 * The callback is called once, when every row has been answered: with
 * status 0 and a result whose changes are the rows' summed and whose
 * last_id is the last row's; or with the failure of the first row, in row
 * order, that failed (ascope_sql_errcode/_errmsg give its code and
 * message). One row's failure neither stops nor undoes the others — inside
 * a transaction, rolling it back does (and on PostgreSQL the rows after a
 * failure fail too, the transaction being aborted). A row the driver
 * refuses before queueing it (a value it cannot take) ends the batch
 * there: the rows after it are not queued, and the callback hears that
 * row's error. Cancelling the operation (op, when not NULL, receives it)
 * cancels every row not yet answered. Returns 0, or a negative code with
 * nothing queued: the refusals of the calls above, UV_EINVAL for nrows 0
 * or a count not a multiple of it, UV_ENOMEM when the rows' requests
 * cannot all be made. */
ASCOPE_EXTERN int ascope_sql_exec_many(ascope *s, ascope_sql *db, const char *sql,
                                       const ascope_sql_params *params, size_t nrows,
                                       ascope_sql_cb cb, void *ud, ascope_op **op);
/* Inside a callback with status < 0: the database's own code (SQLite's
 * extended code name, PostgreSQL's SQLSTATE) and message; NULL elsewhere. */
ASCOPE_EXTERN const char *ascope_sql_errcode(ascope_sql *db);
ASCOPE_EXTERN const char *ascope_sql_errmsg(ascope_sql *db);

/* ---- results ------------------------------------------------------------- */
/* Rows and columns count from 0. A getter out of range, or a NULL value,
 * gives 0, 0.0 or NULL. Numbers convert between int64 and double; text and
 * blob give their bytes either way (text is NUL-terminated, len excludes
 * the NUL); a number has no text form here. */
ASCOPE_EXTERN size_t ascope_rows_count(const ascope_rows *r);
ASCOPE_EXTERN size_t ascope_rows_columns(const ascope_rows *r);
ASCOPE_EXTERN const char *ascope_rows_column_name(const ascope_rows *r, size_t col);
/* The declared type, else the type of the column's first non-NULL value in
 * this result, else ASCOPE_SQL_NULL. */
ASCOPE_EXTERN int ascope_rows_column_type(const ascope_rows *r, size_t col);
ASCOPE_EXTERN const char *ascope_rows_column_decltype(const ascope_rows *r, size_t col);
ASCOPE_EXTERN int ascope_rows_type(const ascope_rows *r, size_t row, size_t col);
ASCOPE_EXTERN int ascope_rows_is_null(const ascope_rows *r, size_t row, size_t col);
ASCOPE_EXTERN int64_t ascope_rows_int64(const ascope_rows *r, size_t row, size_t col);
ASCOPE_EXTERN double ascope_rows_double(const ascope_rows *r, size_t row, size_t col);
ASCOPE_EXTERN const char *ascope_rows_text(const ascope_rows *r, size_t row, size_t col,
                                           size_t *len);
ASCOPE_EXTERN const void *ascope_rows_blob(const ascope_rows *r, size_t row, size_t col,
                                           size_t *len);
ASCOPE_EXTERN int64_t ascope_rows_changes(const ascope_rows *r); /* rows an exec changed */
ASCOPE_EXTERN int64_t ascope_rows_last_id(const ascope_rows *r); /* 0 where the database has none */
/* Bytes of data the result holds (its buffers may be up to twice that): a
 * stream's batches stay under a bound. */
ASCOPE_EXTERN size_t ascope_rows_memory(const ascope_rows *r);

/* Process-wide counters, every runtime's summed (per runtime:
 * ascope_rt_stat(rt, "sql.<name>")), for tests and metrics: "requests" (statements not
 * yet completed), "transactions" (open), "rows_live" (result objects held by requests). */
ASCOPE_EXTERN int64_t ascope_sql_stat(const char *name);

#ifdef __cplusplus
}
#endif
#endif /* ASCOPE_SQL_H */
