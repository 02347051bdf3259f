/* Statements: exec, query and stream as operations of a scope.
 *
 * This layer is what every SQL driver shares. It copies the statement and
 * its parameters into a request, registers the request with the scope as an
 * operation (so the scope waits for it and can cancel it), hands it to the
 * driver, and when the driver answers calls the user's callback and ends
 * the operation with what the callback returned. A stream's flow control
 * lives here too, so every driver pauses, resumes and stops the same way:
 * the driver only produces a batch when asked ("more") and finishes early
 * when told ("stop").
 */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

struct acount sql_stats;

/* The layer is no driver, but it keeps counters per runtime as drivers do:
 * this table only names them ("sql.requests") and keys its state. */
static const ascope_driver sql_layer = {.abi = ASCOPE_DRIVER_ABI, .name = "sql"};
static const char *const stat_names[SQLS_NSTATS] = {
    [SQLS_REQUESTS] = "requests",
    [SQLS_TRANSACTIONS] = "transactions",
    [SQLS_ROWS_LIVE] = "rows_live",
};

/* ---- connections --------------------------------------------------------------- */

_Static_assert(sizeof(struct sql_conn) <= sizeof(ascope_sql_header),
               "ascope_sql_header must hold the generic connection state");

void ascope_sql_header_init(ascope_sql *db, const ascope_sql_driver *drv) {
  struct sql_conn *c = (struct sql_conn *)db;
  memset(c, 0, sizeof(ascope_sql_header));
  c->magic = SQL_MAGIC;
  c->drv = drv;
}

struct sql_conn *sql_conn_of(ascope_sql *db) {
  struct sql_conn *c = (struct sql_conn *)db;
  if (c == NULL || c->magic != SQL_MAGIC || c->drv == NULL) return NULL;
  return c;
}

const char *ascope_sql_driver_name(ascope_sql *db) {
  struct sql_conn *c = sql_conn_of(db);
  return c ? c->drv->base.name : NULL;
}

bool sql_driver_ok(const ascope_sql_driver *drv) {
  return drv && drv->sql_abi >= ASCOPE_SQL_ABI_MIN && drv->submit && drv->tx_hook && drv->cancel &&
         drv->more && drv->stop;
}

int ascope_use_sql(ascope *s, const ascope_sql_driver *drv, const char *target,
                   const char *options) {
  if (!sql_driver_ok(drv)) return UV_EINVAL;
  if (target == NULL) return ascope_use(s, &drv->base, NULL, options); /* the driver's default */
  return ascope_use_str(s, &drv->base, target, options);               /* the target is copied */
}

ascope_sql *ascope_sql_resource(ascope *s, size_t index) {
  /* Any SQL driver's connection: its state begins with the generic header. */
  return sql_conn_of(ascope_resource(s, index)) ? ascope_resource(s, index) : NULL;
}

const char *ascope_sql_errcode(ascope_sql *db) {
  struct sql_conn *c = sql_conn_of(db);
  return c ? c->errcode : NULL;
}

const char *ascope_sql_errmsg(ascope_sql *db) {
  struct sql_conn *c = sql_conn_of(db);
  return c ? c->errmsg : NULL;
}

int64_t ascope_sql_stat(const char *name) {
  return acount_read(&sql_stats, stat_names, SQLS_NSTATS, name);
}

static int64_t rt_stat(void *state, const char *name) {
  return acount_read(state, stat_names, SQLS_NSTATS, name);
}

__attribute__((constructor)) static void sql_stats_register(void) {
  ascope_driver_set_stats(&sql_layer, rt_stat);
}

/* ---- requests ------------------------------------------------------------------ */

/* One allocation: the request, the driver's data, the parameters (the
 * values [first, first + n) of p), the text. */
ascope_sql_req *req_new_range(ascope_rt *rt, struct sql_conn *c, ascope_sql *db, int kind,
                              const char *text, const ascope_sql_params *p, size_t first,
                              size_t n) {
  /* A connection stays in its runtime: the first request finds its counters. */
  if (c->stats == NULL &&
      (c->stats = ascope_rt_driver_state(rt, &sql_layer, sizeof *c->stats, NULL)) == NULL)
    return NULL;
  size_t head = sizeof(ascope_sql_req) + c->drv->req_size;
  head = (head + _Alignof(max_align_t) - 1) / _Alignof(max_align_t) * _Alignof(max_align_t);
  size_t plen = params_flat_size_range(p, first, n), tlen = text ? strlen(text) + 1 : 0;
  ascope_sql_req *req = ascope_malloc(head + plen + tlen);
  if (req == NULL) return NULL;
  memset(req, 0, sizeof *req + c->drv->req_size);
  req->db = db;
  req->conn = c;
  req->kind = kind;
  params_flatten_range(&req->params, p, first, n, (char *)req + head);
  if (text) {
    char *t = (char *)req + head + plen;
    memcpy(t, text, tlen);
    req->text = t;
  }
  SQL_COUNT(c, SQLS_REQUESTS, 1);
  return req;
}

ascope_sql_req *req_new(ascope_rt *rt, struct sql_conn *c, ascope_sql *db, int kind,
                        const char *text, const ascope_sql_params *p) {
  return req_new_range(rt, c, db, kind, text, p, 0, ascope_sql_params_count(p));
}

void req_free(ascope_sql_req *req) {
  if (req->rows) {
    rows_fini(req->rows);
    ascope_free(req->rows);
    SQL_COUNT(req->conn, SQLS_ROWS_LIVE, -1);
  }
  SQL_COUNT(req->conn, SQLS_REQUESTS, -1);
  ascope_free(req);
}

void *ascope_sql_req_data(ascope_sql_req *req) {
  return req ? req->data : NULL;
}

int ascope_sql_req_kind(const ascope_sql_req *req) {
  return req ? req->kind : 0;
}

const char *ascope_sql_req_text(const ascope_sql_req *req) {
  return req ? req->text : NULL;
}

const ascope_sql_params *ascope_sql_req_params(const ascope_sql_req *req) {
  return req ? &req->params : NULL;
}

ascope_rows *ascope_sql_req_rows(ascope_sql_req *req) {
  if (req == NULL) return NULL;
  if (req->rows == NULL && (req->rows = ascope_malloc(sizeof *req->rows)) != NULL) {
    rows_init(req->rows);
    SQL_COUNT(req->conn, SQLS_ROWS_LIVE, 1);
  }
  return req->rows;
}

ascope_op *ascope_sql_req_op(ascope_sql_req *req) {
  return req ? req->op : NULL;
}

void ascope_sql_req_set_changes(ascope_sql_req *req, int64_t changes, int64_t last_id) {
  if (req == NULL) return;
  req->changes = changes;
  req->last_id = last_id;
}

/* ---- completing ---------------------------------------------------------------- */

void sql_op_end(ascope_op *op, int rc, int status, const char *code, const char *msg) {
  /* The code and message describe the operation's own failure, so they go
   * with it only when the callback passed that failure on. */
  bool own = status < 0 && rc == status;
  ascope_op_end(op, rc, own ? code : NULL, own ? msg : NULL);
}

/* Ends the request's operation; the request itself is freed by the caller. */
static void req_end(ascope_sql_req *req, int rc, int status, const char *code, const char *msg) {
  ascope_op *op = req->op;
  req->op = NULL;
  sql_op_end(op, rc, status, code, msg);
}

int sql_call_user(struct sql_conn *c, ascope *s, ascope_sql_cb cb, void *ud, int status,
                  ascope_rows *rows, const char *code, const char *msg) {
  int rc = status;
  if (cb) {
    const char *oc = c->errcode, *om = c->errmsg; /* a callback may run inside another's */
    if (status < 0) {
      c->errcode = code;
      c->errmsg = msg ? msg : ascope_strerror(status);
    }
    rc = cb(s, status, rows, ud);
    c->errcode = oc;
    c->errmsg = om;
  }
  return rc > 0 ? 0 : rc; /* flow-control codes mean nothing at the end */
}

/* The callback's last call: the result, or the error, or a stream's end;
 * then the operation ends. The request itself is freed by the caller. */
static void req_answer(ascope_sql_req *req, int status, const char *code, const char *msg) {
  ascope_rows local, *rows = NULL;
  if (status == 0 && req->kind != ASCOPE_SQL_STREAM) {
    rows = req->rows;
    if (rows == NULL) { /* an exec's result: counts only, no allocation */
      rows_init(&local);
      rows = &local;
    }
    ascope_rows_set_changes(rows, req->changes, req->last_id);
  }
  int rc = sql_call_user(req->conn, req->scope, req->cb, req->ud, status, rows, code, msg);
  req_end(req, rc, status, code, msg);
}

static void req_final(ascope_sql_req *req, int status, const char *code, const char *msg) {
  req_answer(req, status, code, msg);
  req_free(req);
}

void ascope_sql_req_abandon(ascope_sql_req *req, int status, const char *code,
                            const char *message) {
  /* Only once, only while the operation runs, and never for what has a
   * follow-up of its own (transaction steps) or flow control (streams). */
  if (req != NULL && req->on_done == many_row_done && !req->drv_done) {
    many_row_abandon(req, status < 0 ? status : ASCOPE_ECANCELED, code, message);
    return;
  }
  if (req == NULL || req->op == NULL || req->drv_done || req->on_done ||
      req->kind == ASCOPE_SQL_STREAM)
    return;
  req_answer(req, status < 0 ? status : ASCOPE_ECANCELED, code, message);
  /* req->op is NULL now: the driver's late ascope_sql_req_done() frees */
}

void ascope_sql_req_done(ascope_sql_req *req, int status, const char *code, const char *message) {
  if (req == NULL) return;
  req->drv_done = true;
  if (req->on_done) {
    if (!req->answered) req->on_done(req, status, code, message);
    req_free(req);
  } else if (req->op == NULL) {
    req_free(req); /* a stream the user stopped: the driver has let it go */
  } else {
    req_final(req, status, code, message);
  }
}

/* ---- streams -------------------------------------------------------------------- */

/* What a batch callback's return asks for. Called with the request in the
 * driver's hands (last == 0) or not (last). */
static void stream_after_batch(ascope_sql_req *req, int rc, bool last) {
  if (rc == ASCOPE_PAUSE && req->resumed) rc = ASCOPE_CONTINUE;
  req->resumed = false;
  if (rc < 0 || rc == ASCOPE_STOP) {
    /* The driver lets the statement go first; the op then ends with 0
     * (stop) or the failure, and the driver's late answer only frees. */
    if (!last && !req->cancelled) req->conn->drv->stop(req->db, req);
    req_end(req, rc < 0 ? rc : 0, 0, NULL, NULL);
    if (last) req_free(req);
    return;
  }
  if (req->cancelled) {
    /* Cancelled while the batch was out. Unless the driver is finished it
     * answers with ASCOPE_ECANCELED by itself; a pause cannot hold a
     * cancelled scope, so a finished stream ends now. */
    if (last) req_final(req, rc == ASCOPE_PAUSE ? ASCOPE_ECANCELED : 0, NULL, "cancelled");
    return;
  }
  if (rc == ASCOPE_PAUSE) {
    req->paused = true;
    return;
  }
  if (last)
    req_final(req, 0, NULL, NULL);
  else
    req->conn->drv->more(req->db, req);
}

void ascope_sql_req_batch(ascope_sql_req *req, int last) {
  if (req == NULL) return;
  if (last) req->drv_done = true;
  if (req->op == NULL) { /* stopped while the batch was on its way */
    if (last) req_free(req);
    return;
  }
  int rc = ASCOPE_CONTINUE;
  if (req->cb) {
    req->in_cb = true;
    rc = req->cb(req->scope, 0, req->rows, req->ud);
    req->in_cb = false;
  }
  stream_after_batch(req, rc, last);
}

static void on_op_resume(ascope_op *op) {
  ascope_sql_req *req = ascope_op_data(op);
  if (req->in_cb) {
    req->resumed = true; /* the callback's own PAUSE is void */
    return;
  }
  if (!req->paused || req->cancelled) return;
  req->paused = false;
  if (req->drv_done)
    req_final(req, 0, NULL, NULL); /* the last batch was consumed: the end */
  else
    req->conn->drv->more(req->db, req);
}

static void on_op_cancel(ascope_op *op) {
  ascope_sql_req *req = ascope_op_data(op);
  req->cancelled = true;
  if (req->drv_done) {
    /* The driver is finished; only a paused end is left to deliver. */
    if (req->paused && !req->in_cb) {
      req->paused = false;
      req_final(req, ASCOPE_ECANCELED, NULL, "cancelled");
    }
    return;
  }
  req->paused = false;
  req->conn->drv->cancel(req->db, req);
}

/* ---- starting ------------------------------------------------------------------- */

int sql_start_check(ascope *s, struct sql_conn *c, const char *sql, const ascope_sql_params *p) {
  if (s == NULL || c == NULL || sql == NULL) return UV_EINVAL;
  if (p && p->err) return p->err;
  return sql_tx_admits(c, s);
}

static int sql_start(ascope *s, ascope_sql *db, int kind, const char *sql,
                     const ascope_sql_params *p, ascope_sql_cb cb, void *ud, ascope_op **opp) {
  if (opp) *opp = NULL;
  struct sql_conn *c = sql_conn_of(db);
  int bad = sql_start_check(s, c, sql, p);
  if (bad) return bad;
  ascope_sql_req *req = req_new(ascope_scope_rt(s), c, db, kind, sql, p);
  if (req == NULL) return UV_ENOMEM;
  ascope_op *op = ascope_op_begin(s, &c->drv->base, on_op_cancel, req);
  if (op == NULL) {
    req_free(req);
    return ASCOPE_ECANCELED;
  }
  req->op = op;
  req->scope = s;
  req->cb = cb;
  req->ud = ud;
  if (kind == ASCOPE_SQL_STREAM) ascope_op_set_resume(op, on_op_resume);
  if (opp) *opp = op;
  int rc = c->drv->submit(db, req);
  if (rc < 0) { /* refused: nothing ran, so the op ends quietly and the caller hears */
    if (opp) *opp = NULL;
    req->op = NULL;
    req_free(req);
    ascope_op_end(op, 0, NULL, NULL);
  }
  return rc < 0 ? rc : 0;
}

int ascope_sql_exec(ascope *s, ascope_sql *db, const char *sql, const ascope_sql_params *params,
                    ascope_sql_cb cb, void *ud) {
  return sql_start(s, db, ASCOPE_SQL_EXEC, sql, params, cb, ud, NULL);
}

int ascope_sql_query(ascope *s, ascope_sql *db, const char *sql, const ascope_sql_params *params,
                     ascope_sql_cb cb, void *ud) {
  return sql_start(s, db, ASCOPE_SQL_QUERY, sql, params, cb, ud, NULL);
}

int ascope_sql_stream(ascope *s, ascope_sql *db, const char *sql, const ascope_sql_params *params,
                      ascope_sql_cb cb, void *ud, ascope_op **op) {
  return sql_start(s, db, ASCOPE_SQL_STREAM, sql, params, cb, ud, op);
}

int ascope_sql_start(ascope *s, ascope_sql *db, int kind, const char *sql,
                     const ascope_sql_params *params, ascope_sql_cb cb, void *ud, ascope_op **op) {
  if (kind != ASCOPE_SQL_EXEC && kind != ASCOPE_SQL_QUERY && kind != ASCOPE_SQL_STREAM) {
    if (op) *op = NULL;
    return UV_EINVAL;
  }
  return sql_start(s, db, kind, sql, params, cb, ud, op);
}
