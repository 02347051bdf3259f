/* The transaction use: `async with conn.transaction():`.
 *
 * Acquiring it runs BEGIN, releasing it COMMIT when the scope's outcome is
 * ok and ROLLBACK otherwise, the way __aexit__ commits or rolls back by the
 * exception it is handed. The connection counts its open levels: a
 * transaction used while another is open on the same connection (a child
 * scope inside a parent's transaction) becomes a savepoint at the next
 * level, released or rolled back to by its own scope's outcome.
 *
 * The statements are not operations of the scope (acquire and release run
 * outside its body) but requests with an internal completion; the driver
 * queues them in order with everything else on the connection, so COMMIT
 * always follows the body's last statement.
 */
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct ascope_sql_tx { /* the use's state */
  ascope_res *res;
  ascope_sql *db;
  struct sql_conn *conn;
  ascope_sql_req *req; /* the BEGIN, COMMIT or ROLLBACK in flight */
  unsigned depth;      /* open levels below this one: 0 = the outermost */
  bool open;           /* BEGIN succeeded: the level counts */
  bool cancelled;      /* the driver was told to cancel req */
};
_Static_assert(sizeof(struct ascope_sql_tx) <= ASCOPE_SQL_TX_STATE_SIZE,
               "ASCOPE_SQL_TX_STATE_SIZE must hold the transaction state");

ascope_sql *ascope_sql_tx_db(ascope_sql_tx *tx) {
  return tx ? tx->db : NULL;
}

unsigned ascope_sql_tx_depth(ascope_sql_tx *tx) {
  return tx ? tx->depth + 1 : 0;
}

int ascope_use_sql_tx(ascope *s, ascope_sql *db, const char *options) {
  struct sql_conn *c = sql_conn_of(db);
  if (c == NULL) return UV_EINVAL;
  return ascope_use(s, &c->drv->tx, db, options);
}

/* The connection is not acquired yet, so the use names it by index, in its
 * options: "use=N" is the generic layer's key, which drivers skip. */
int ascope_use_sql_tx_at(ascope *s, const ascope_sql_driver *drv, size_t index,
                         const char *options) {
  if (drv == NULL || drv->sql_abi < ASCOPE_SQL_ABI_MIN) return UV_EINVAL;
  char small[256];
  size_t n = (options ? strlen(options) : 0) + 32;
  char *buf = n <= sizeof small ? small : ascope_malloc(n);
  if (buf == NULL) return UV_ENOMEM;
  snprintf(buf, n, "use=%zu%s%s", index, options ? " " : "", options ? options : "");
  int rc = ascope_use(s, &drv->tx, NULL, buf);
  if (buf != small) ascope_free(buf);
  return rc;
}

/* "use=N" in options, else SIZE_MAX. */
static size_t use_index(const char *options) {
  for (const char *p = options; p && (p = strstr(p, "use=")) != NULL; p += 4) {
    if (p != options && p[-1] != ' ' && p[-1] != ',') continue;
    char *end;
    unsigned long long v = strtoull(p + 4, &end, 10);
    if (end != p + 4) return (size_t)v;
  }
  return SIZE_MAX;
}

static ascope_sql *tx_target(ascope_res *r, const void *arg, const char *options) {
  if (arg) return (ascope_sql *)arg;
  size_t i = use_index(options);
  return i == SIZE_MAX ? NULL : ascope_resource(ascope_res_scope(r), i);
}

/* ---- BEGIN ------------------------------------------------------------------------ */

static void begun(ascope_sql_req *req, int status, const char *code, const char *message) {
  ascope_sql_tx *tx = req->ctx;
  tx->req = NULL;
  if (status == 0) {
    tx->open = true;
    tx->conn->tx_depth++;
    atomic_fetch_add(&sql_stat_transactions, 1);
  }
  /* A failed BEGIN opened nothing: there is nothing of ours to clean up. */
  ascope_res_done(tx->res, status, code, message);
}

void ascope_sql__tx_acquire(ascope_res *r, const void *arg, const char *options) {
  ascope_sql_tx *tx = ascope_res_state(r);
  tx->res = r;
  tx->db = tx_target(r, arg, options);
  tx->conn = sql_conn_of(tx->db);
  if (tx->conn == NULL) {
    ascope_res_done(r, UV_EINVAL, NULL, "the transaction names no held SQL connection");
    return;
  }
  tx->depth = tx->conn->tx_depth;
  ascope_sql_req *req = req_new(tx->conn, tx->db, ASCOPE_SQL_TX, NULL, NULL);
  if (req == NULL) {
    ascope_res_done(r, UV_ENOMEM, NULL, "out of memory starting a transaction");
    return;
  }
  req->on_done = begun;
  req->ctx = tx;
  tx->req = req;
  int rc = tx->conn->drv->tx_hook(tx->db, req, ASCOPE_SQL_TX_BEGIN, tx->depth, options);
  if (rc < 0) {
    tx->req = NULL;
    req_free(req);
    ascope_res_done(r, rc, NULL, rc == UV_EINVAL ? "bad transaction options" : NULL);
  }
}

void ascope_sql__tx_cancel(ascope_res *r) {
  ascope_sql_tx *tx = ascope_res_state(r);
  if (tx->req == NULL || tx->cancelled) return;
  tx->cancelled = true;
  tx->conn->drv->cancel(tx->db, tx->req);
}

/* ---- COMMIT or ROLLBACK -------------------------------------------------------- */

static void ended(ascope_sql_req *req, int status, const char *code, const char *message) {
  ascope_sql_tx *tx = req->ctx;
  tx->req = NULL;
  /* Whatever the answer, the level is closed: a driver whose COMMIT fails
   * rolls back before it answers. */
  if (tx->conn->tx_depth) tx->conn->tx_depth--;
  atomic_fetch_sub(&sql_stat_transactions, 1);
  ascope_res_done(tx->res, status, code, message);
}

void ascope_sql__tx_release(ascope_res *r, int outcome) {
  ascope_sql_tx *tx = ascope_res_state(r);
  tx->cancelled = false;
  int action = outcome == 0 ? ASCOPE_SQL_TX_COMMIT : ASCOPE_SQL_TX_ROLLBACK;
  ascope_sql_req *req = req_new(tx->conn, tx->db, ASCOPE_SQL_TX, NULL, NULL);
  int rc = UV_ENOMEM;
  if (req) {
    req->on_done = ended;
    req->ctx = tx;
    tx->req = req;
    rc = tx->conn->drv->tx_hook(tx->db, req, action, tx->depth, NULL);
    if (rc < 0) {
      tx->req = NULL;
      req_free(req);
    }
  }
  if (rc < 0) { /* the connection is gone or going: the transaction goes with it */
    if (tx->conn->tx_depth) tx->conn->tx_depth--;
    atomic_fetch_sub(&sql_stat_transactions, 1);
    ascope_res_done(r, rc, NULL, "could not end the transaction");
  }
}

/* The release deadline passed. Nothing here can be forced: the connection
 * runs the statement in order. Ask the driver to cut it short; its late
 * answer completes the orphaned use, which the core then recycles. */
void ascope_sql__tx_abort(ascope_res *r) {
  ascope_sql__tx_cancel(r);
}
