/* ascope — the driver side of the SQL interface: what a SQL driver
 * implements and calls. User code needs only sql.h; a SQL driver includes
 * this header too. docs/guides/writing-a-driver.md ("SQL drivers") walks
 * through one.
 *
 * A SQL driver is an ascope_driver (base: the connection use, its arg the
 * target string) extended with the SQL operations. Its per-connection state
 * begins with an ascope_sql_header, initialised in acquire with
 * ascope_sql_header_init(); that state is the ascope_sql the user holds.
 *
 * The generic layer registers every statement with its scope, calls the
 * user's callbacks, runs the stream's flow control and the transaction
 * use (BEGIN/COMMIT/ROLLBACK and savepoints, which it asks of the driver
 * through tx_hook); the driver queues, runs and completes requests:
 *   submit/tx_hook  queue a request (0), or refuse it (negative: nothing
 *                   queued);
 *   cancel     at most once per request, until the driver completed it:
 *              stop it soon (a queued one at once); it still completes;
 *   more       a stream whose batch was delivered: produce the next batch;
 *   stop       a stream whose batch was delivered: end it, then complete.
 * The driver answers each request exactly once with ascope_sql_req_done(),
 * or for a stream with ascope_sql_req_batch(..., last = 1); every answer on
 * the loop thread, possibly from inside the call that asked. Results are
 * built into ascope_sql_req_rows(req) with the ascope_rows_put_* functions,
 * which may run on any one thread at a time; an exec needs no rows, only
 * ascope_sql_req_set_changes().
 */
#ifndef ASCOPE_SQL_DRIVER_H
#define ASCOPE_SQL_DRIVER_H

#include "driver.h"
#include "sql.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The table's version, as ASCOPE_DRIVER_ABI: members are only appended.
 * Version 2 dropped the transaction vtable drivers used to embed (the
 * generic layer owns the transaction use now), so 1 is not accepted. */
#define ASCOPE_SQL_ABI 2
#define ASCOPE_SQL_ABI_MIN 2 /* the oldest version the generic layer accepts */

typedef struct ascope_sql_req ascope_sql_req;

/* ASCOPE_SQL_EXEC, _QUERY and _STREAM come from sql.h */
#define ASCOPE_SQL_TX 4

/* tx actions; depth 0 is the outermost transaction (BEGIN, COMMIT,
 * ROLLBACK), depth d > 0 a savepoint inside d open levels (SAVEPOINT,
 * RELEASE, ROLLBACK TO + RELEASE). */
#define ASCOPE_SQL_TX_BEGIN 1
#define ASCOPE_SQL_TX_COMMIT 2
#define ASCOPE_SQL_TX_ROLLBACK 3

/* Room the generic layer keeps at the start of every connection's state.
 * Its content is the generic layer's alone (like the reserved fields of a
 * libuv handle): a driver embeds it first, calls ascope_sql_header_init()
 * and never reads or writes it. Its size is part of the ABI. */
typedef struct ascope_sql_header {
  void *reserved[8];
} ascope_sql_header;

struct ascope_sql_driver {
  ascope_driver base;                                 /* the connection use */
  uint32_t sql_abi;                                   /* ASCOPE_SQL_ABI */
  uint32_t req_size;                                  /* bytes of driver data in each request */
  int (*submit)(ascope_sql *db, ascope_sql_req *req); /* exec, query, stream */
  /* BEGIN/COMMIT/ROLLBACK or a savepoint. options: the user's, given to
   * ascope_use_sql_tx() (for BEGIN only; NULL otherwise). */
  int (*tx_hook)(ascope_sql *db, ascope_sql_req *req, int action, unsigned depth,
                 const char *options);
  void (*cancel)(ascope_sql *db, ascope_sql_req *req);
  void (*more)(ascope_sql *db, ascope_sql_req *req);
  void (*stop)(ascope_sql *db, ascope_sql_req *req);
};

ASCOPE_EXTERN void ascope_sql_header_init(ascope_sql *db, const ascope_sql_driver *drv);

/* requests: read on any thread while the driver holds them */
ASCOPE_EXTERN void *ascope_sql_req_data(ascope_sql_req *req); /* req_size bytes, zeroed */
ASCOPE_EXTERN int ascope_sql_req_kind(const ascope_sql_req *req);
ASCOPE_EXTERN const char *ascope_sql_req_text(const ascope_sql_req *req);
ASCOPE_EXTERN const ascope_sql_params *ascope_sql_req_params(const ascope_sql_req *req);
ASCOPE_EXTERN ascope_rows *ascope_sql_req_rows(ascope_sql_req *req); /* made on first call */
/* The request's operation, for a driver that handles its resume itself
 * (ascope_op_set_resume); NULL for a transaction step, or once it ended. */
ASCOPE_EXTERN ascope_op *ascope_sql_req_op(ascope_sql_req *req);
ASCOPE_EXTERN void ascope_sql_req_set_changes(ascope_sql_req *req, int64_t changes,
                                              int64_t last_id); /* exec's counts */
/* answers: on the loop thread. code and message are copied. */
ASCOPE_EXTERN void ascope_sql_req_done(ascope_sql_req *req, int status, const char *code,
                                       const char *message);
ASCOPE_EXTERN void ascope_sql_req_batch(ascope_sql_req *req, int last);
/* A cancelled exec or query the driver cannot stop (it is already on its
 * way and stopping it could hit another request): the user's callback
 * hears status now and the operation ends, but the request stays the
 * driver's until its own ascope_sql_req_done(), which then only frees it.
 * Not for streams or transaction steps. */
ASCOPE_EXTERN void ascope_sql_req_abandon(ascope_sql_req *req, int status, const char *code,
                                          const char *message);

/* building results: one thread at a time */
ASCOPE_EXTERN int ascope_rows_set_columns(ascope_rows *r, size_t n);
ASCOPE_EXTERN int ascope_rows_set_column(ascope_rows *r, size_t col, const char *name,
                                         const char *decl, int type);
ASCOPE_EXTERN int ascope_rows_add_row(ascope_rows *r); /* every column NULL */
ASCOPE_EXTERN void ascope_rows_put_null(ascope_rows *r, size_t col);
ASCOPE_EXTERN void ascope_rows_put_bool(ascope_rows *r, size_t col, int value);
ASCOPE_EXTERN void ascope_rows_put_int64(ascope_rows *r, size_t col, int64_t value);
ASCOPE_EXTERN void ascope_rows_put_double(ascope_rows *r, size_t col, double value);
ASCOPE_EXTERN int ascope_rows_put_text(ascope_rows *r, size_t col, const char *text, size_t len);
ASCOPE_EXTERN int ascope_rows_put_blob(ascope_rows *r, size_t col, const void *data, size_t len);
ASCOPE_EXTERN void ascope_rows_set_changes(ascope_rows *r, int64_t changes, int64_t last_id);
ASCOPE_EXTERN void ascope_rows_clear(ascope_rows *r); /* drops the rows, keeps the columns */

#ifdef __cplusplus
}
#endif
#endif /* ASCOPE_SQL_DRIVER_H */
