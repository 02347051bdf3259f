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
 *
 * A level belongs to its scope. On a connection several scopes share, a
 * database transaction is the connection's, not the scope's: whatever
 * another scope sent while it was open would commit or roll back with it,
 * and two sibling scopes' BEGINs would open one transaction between them
 * (PostgreSQL only warns about the second), each told it committed what
 * the other rolled back. So, while a level is open or opening, a new level
 * must come from within the innermost level's scope (a child's savepoint),
 * and a statement from within the outermost's; anything else is refused
 * with ASCOPE_EBUSY before it is queued.
 */
#include "internal.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct ascope_sql_tx { /* the use's state */
  ascope_res *res;
  ascope_sql *db;
  struct sql_conn *conn;
  ascope_sql_req *req;  /* the BEGIN, COMMIT or ROLLBACK in flight */
  unsigned depth;       /* open levels below this one: 0 = the outermost */
  ascope *owner;        /* the scope the level belongs to */
  ascope_sql_tx *outer; /* the level this one is inside of, or NULL */
  bool cancelled;       /* the driver was told to cancel req */
};

ascope_sql *ascope_sql_tx_db(ascope_sql_tx *tx) {
  return tx ? tx->db : NULL;
}

unsigned ascope_sql_tx_depth(ascope_sql_tx *tx) {
  return tx ? tx->depth + 1 : 0;
}

/* ---- the uses' vtables ------------------------------------------------------------ */

/* The generic layer owns the transaction use, so a SQL driver neither
 * embeds its vtable nor knows the layout of its state. It comes in two
 * forms: on a connection handed over (arg: the ascope_sql), and on the
 * connection acquired by the index-th use of the same scope (arg: index + 1
 * as a pointer-sized integer: that connection does not exist yet when the
 * use is added, and uses are acquired in order). Each SQL driver gets its
 * own pair, named as the driver, so a failed BEGIN or COMMIT carries the
 * driver's name like its other errors. Drivers are few and live as long as
 * the process: a small table, filled on first use, never emptied. */
static void tx_acquire(ascope_res *r, const void *arg, const char *options);
static void tx_acquire_at(ascope_res *r, const void *arg, const char *options);
static void tx_release(ascope_res *r, int outcome);
static void tx_cancel(ascope_res *r);

struct tx_vtables {
  const ascope_sql_driver *drv;
  ascope_driver on_db, at_index;
};
#define TX_KINDS 32
static struct tx_vtables tx_kinds[TX_KINDS];
static uv_mutex_t tx_kinds_lock;
static uv_once_t tx_kinds_once = UV_ONCE_INIT;

static void tx_kinds_init(void) {
  if (uv_mutex_init(&tx_kinds_lock) != 0) abort(); /* as libuv does when a mutex cannot be made */
}

static ascope_driver tx_vtable(const char *name,
                               void (*acquire)(ascope_res *, const void *, const char *)) {
  /* abort: the release deadline passed. Nothing can be forced, the
   * connection runs the statement in order: ask the driver to cut it short;
   * its late answer completes the orphaned use, which the core recycles. */
  return (ascope_driver){.abi = ASCOPE_DRIVER_ABI,
                         .name = name,
                         .state_size = sizeof(struct ascope_sql_tx),
                         .acquire = acquire,
                         .release = tx_release,
                         .cancel = tx_cancel,
                         .abort = tx_cancel};
}

/* NULL when the table is full (more SQL drivers than any program has). */
static const struct tx_vtables *tx_vtables_of(const ascope_sql_driver *drv) {
  uv_once(&tx_kinds_once, tx_kinds_init);
  uv_mutex_lock(&tx_kinds_lock);
  struct tx_vtables *found = NULL;
  for (int i = 0; i < TX_KINDS && found == NULL; i++) {
    if (tx_kinds[i].drv == NULL) {
      tx_kinds[i].on_db = tx_vtable(drv->base.name, tx_acquire);
      tx_kinds[i].at_index = tx_vtable(drv->base.name, tx_acquire_at);
      tx_kinds[i].drv = drv;
    }
    if (tx_kinds[i].drv == drv) found = &tx_kinds[i];
  }
  uv_mutex_unlock(&tx_kinds_lock);
  return found;
}

int ascope_use_sql_tx(ascope *s, ascope_sql *db, const char *options) {
  struct sql_conn *c = sql_conn_of(db);
  if (c == NULL) return UV_EINVAL;
  const struct tx_vtables *v = tx_vtables_of(c->drv);
  if (v == NULL) return UV_ENOMEM;
  return ascope_use(s, &v->on_db, db, options);
}

int ascope_use_sql_tx_at(ascope *s, const ascope_sql_driver *drv, size_t index,
                         const char *options) {
  if (!sql_driver_ok(drv) || index == SIZE_MAX) return UV_EINVAL;
  const struct tx_vtables *v = tx_vtables_of(drv);
  if (v == NULL) return UV_ENOMEM;
  int rc = ascope_use(s, &v->at_index, (const void *)(uintptr_t)(index + 1), options);
  /* A connection from a shared pool must be this scope's alone while its
   * transaction is open: nothing else may run inside it. (UV_EINVAL: the
   * use is not a pool's, nothing to do.) */
  if (rc == 0) (void)ascope_pool_use_exclusive(s, index);
  return rc;
}

/* ---- whose the connection is ------------------------------------------------------- */

static bool within(ascope *s, ascope *owner) {
  for (; s != NULL; s = ascope_parent(s))
    if (s == owner) return true;
  return false;
}

int sql_tx_admits(struct sql_conn *c, ascope *s) {
  ascope_sql_tx *base = c->top;
  while (base && base->outer) base = base->outer;
  return base == NULL || within(s, base->owner) ? 0 : ASCOPE_EBUSY;
}

/* The level leaves the connection's stack: it failed to begin, or ended. */
static void tx_pop(ascope_sql_tx *tx) {
  if (tx->conn->top == tx) tx->conn->top = tx->outer;
}

/* ---- BEGIN ------------------------------------------------------------------------ */

static void begun(ascope_sql_req *req, int status, const char *code, const char *message) {
  ascope_sql_tx *tx = req->ctx;
  tx->req = NULL;
  if (status == 0)
    SQL_COUNT(tx->conn, SQLS_TRANSACTIONS, 1);
  else
    tx_pop(tx);
  /* A failed BEGIN opened nothing: there is nothing of ours to clean up. */
  ascope_res_done(tx->res, status, code, message);
}

static void tx_begin(ascope_res *r, ascope_sql *db, const char *options) {
  ascope_sql_tx *tx = ascope_res_state(r);
  tx->res = r;
  tx->db = db;
  tx->conn = sql_conn_of(db);
  if (tx->conn == NULL) {
    ascope_res_done(r, UV_EINVAL, NULL, "the transaction names no held SQL connection");
    return;
  }
  struct sql_conn *c = tx->conn;
  tx->owner = ascope_res_scope(r);
  if (c->top && !within(tx->owner, c->top->owner)) {
    ascope_res_done(r, ASCOPE_EBUSY, NULL,
                    "the connection is inside another scope's transaction: give concurrent "
                    "transactions their own connections");
    return;
  }
  tx->outer = c->top;
  tx->depth = tx->outer ? tx->outer->depth + 1 : 0;
  if (tx->depth > 0 && options && *options) { /* a SAVEPOINT would drop them unread */
    ascope_res_done(r, UV_EINVAL, NULL,
                    "a savepoint takes no options: isolation and the like are the outermost "
                    "transaction's");
    return;
  }
  ascope_sql_req *req = req_new(ascope_res_rt(r), c, tx->db, ASCOPE_SQL_TX, NULL, NULL);
  if (req == NULL) {
    ascope_res_done(r, UV_ENOMEM, NULL, "out of memory starting a transaction");
    return;
  }
  c->top = tx;
  req->on_done = begun;
  req->ctx = tx;
  tx->req = req;
  int rc = tx->conn->drv->tx_hook(tx->db, req, ASCOPE_SQL_TX_BEGIN, tx->depth, options);
  if (rc < 0) {
    tx->req = NULL;
    req_free(req);
    tx_pop(tx);
    char msg[200];
    snprintf(msg, sizeof msg, "bad transaction options \"%.150s\" (docs/drivers/%s.md)",
             options ? options : "", c->drv->base.name);
    ascope_res_done(r, rc, NULL, rc == UV_EINVAL ? msg : NULL);
  }
}

static void tx_acquire(ascope_res *r, const void *arg, const char *options) {
  tx_begin(r, (ascope_sql *)arg, options);
}

static void tx_acquire_at(ascope_res *r, const void *arg, const char *options) {
  size_t index = (size_t)(uintptr_t)arg - 1;
  tx_begin(r, ascope_sql_resource(ascope_res_scope(r), index), options);
}

static void tx_cancel(ascope_res *r) {
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
  tx_pop(tx);
  SQL_COUNT(tx->conn, SQLS_TRANSACTIONS, -1);
  ascope_res_done(tx->res, status, code, message);
}

static void tx_release(ascope_res *r, int outcome) {
  ascope_sql_tx *tx = ascope_res_state(r);
  tx->cancelled = false;
  int action = outcome == 0 ? ASCOPE_SQL_TX_COMMIT : ASCOPE_SQL_TX_ROLLBACK;
  ascope_sql_req *req = req_new(ascope_res_rt(r), tx->conn, tx->db, ASCOPE_SQL_TX, NULL, NULL);
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
    tx_pop(tx);
    SQL_COUNT(tx->conn, SQLS_TRANSACTIONS, -1);
    ascope_res_done(r, rc, NULL, "could not end the transaction");
  }
}
