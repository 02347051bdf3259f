/* The PostgreSQL driver's vtable: a connection's acquire, release, cancel
 * and abort, the SQL requests' entry points, and the PostgreSQL-only
 * operations (COPY, LISTEN), which ride on the generic layer's requests so
 * they register, cancel and report like any statement.
 *
 * Everything here runs on the loop thread. The core's resource state holds
 * only a pointer to the connection (struct pg_conn, on the heap): the
 * connection outlives the state while its handles close, and after an
 * abort, until its late completion.
 */
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct acount pg_stats;

extern const ascope_sql_driver pg_driver;

/* ---- the connection: acquire, release, cancel, abort --------------------------------- */

static void init_handle(struct pg_conn *c, uv_handle_t *h) {
  h->data = c;
  uv_unref(h); /* the scopes keep the loop alive, not an idle connection */
  c->open_handles++;
}

static void pg_acquire(ascope_res *res, const void *arg, const char *options) {
  struct pg_state_mem *st = ascope_res_state(res);
  ascope_sql_header_init((ascope_sql *)st, &pg_driver);
  char err[300];
  struct pg_conn *c = ascope_calloc(1, sizeof *c);
  if (c == NULL) {
    ascope_res_done(res, UV_ENOMEM, NULL, "out of memory");
    return;
  }
  if (pg_options_parse(&c->opt, options, err, sizeof err) != 0) {
    ascope_free(c);
    ascope_res_done(res, UV_EINVAL, NULL, err);
    return;
  }
  c->stats = ascope_rt_driver_state(ascope_res_rt(res), &pg_driver.base, sizeof *c->stats, NULL);
  if (c->stats == NULL) {
    ascope_free(c);
    ascope_res_done(res, UV_ENOMEM, NULL, "out of memory");
    return;
  }
  PG_COUNT(c, PGS_CONNECTIONS, 1);
  c->res = res;
  c->loop = ascope_rt_loop(ascope_res_rt(res));
  c->state = PG_RESOLVING;
  pg_cache_init(&c->cache, c->opt.cache);
  uv_timer_init(c->loop, &c->timer); /* these cannot fail */
  uv_check_init(c->loop, &c->check);
  uv_prepare_init(c->loop, &c->prepare);
  uv_timer_init(c->loop, &c->retry);
  init_handle(c, (uv_handle_t *)&c->timer);
  init_handle(c, (uv_handle_t *)&c->check);
  init_handle(c, (uv_handle_t *)&c->prepare);
  init_handle(c, (uv_handle_t *)&c->retry);
  st->c = c;
  int rc = pg_dsn_start(c, arg, err, sizeof err);
  if (rc) pg_acquire_fail(c, rc, rc == UV_EINVAL ? NULL : "08001", err);
}

static void pg_acquire_cancel(ascope_res *res) {
  struct pg_conn *c = ((struct pg_state_mem *)ascope_res_state(res))->c;
  if (c->state == PG_RESOLVING || c->state == PG_CONNECTING || c->probing) {
    c->probing = false;
    pg_acquire_fail(c, ASCOPE_ECANCELED, NULL, "cancelled while connecting");
  }
}

static void pg_release(ascope_res *res, int outcome) {
  (void)outcome; /* a connection closes the same way whatever happened */
  pg_close(((struct pg_state_mem *)ascope_res_state(res))->c, false);
}

/* The release deadline passed: close now (PQfinish, the watch closed),
 * without waiting for a cancel request still out; the release completes
 * when the handles have closed. */
static void pg_abort(ascope_res *res) {
  struct pg_conn *c = ((struct pg_state_mem *)ascope_res_state(res))->c;
  PG_COUNT(c, PGS_ABORTED, 1);
  pg_close(c, true);
}

/* Pools: an idle connection, in no transaction, that the server has not
 * dropped as far as libpq knows. */
static int pg_check(ascope_res *res) {
  struct pg_conn *c = ((struct pg_state_mem *)ascope_res_state(res))->c;
  /* A reset's own statements may still be in flight (pipelined ahead of
   * the next scope's): the transaction status is the server's once they
   * are answered, and the reset saw to it. */
  bool ok = c->state == PG_READY && PQstatus(c->pg) == CONNECTION_OK && c->send_head == NULL &&
            c->solo == NULL && c->listeners == NULL && !c->hold && c->cancel_job == NULL &&
            (c->nsteps || PQtransactionStatus(c->pg) == PQTRANS_IDLE);
  return ok ? 0 : ASCOPE_ECLOSED;
}

/* ---- requests ----------------------------------------------------------------------------- */

static void take_special(struct pg_conn *c, struct pg_req *r) {
  struct pg_special *sp = c->special;
  c->special = NULL;
  r->kind = sp->kind;
  r->fill = sp->fill;
  r->fill_ud = sp->fill_ud;
  r->data = sp->data;
  r->len = sp->len;
  r->op = ascope_sql_req_op(r->req);
  if (sp->kind == K_COPY_IN) ascope_op_set_resume(r->op, pg_copy_resume);
  if (sp->op) *sp->op = r->op;
}

/* What PostgreSQL cannot take is refused before anything is queued. */
static int params_ok(const ascope_sql_params *p) {
  size_t n = ascope_sql_params_count(p);
  if (n > 65535) return UV_E2BIG;
  for (size_t i = 0; i < n; i++) {
    size_t len;
    const void *b = ascope_sql_params_bytes(p, i, &len);
    int t = ascope_sql_params_type(p, i);
    if (t == ASCOPE_SQL_TEXT && memchr(b, '\0', len)) return UV_EINVAL; /* text has no NUL */
    if (t == ASCOPE_SQL_BLOB && len > INT32_MAX) return UV_E2BIG;
  }
  return 0;
}

static int pg_submit(ascope_sql *db, ascope_sql_req *req) {
  struct pg_conn *c = pg_conn_of(db);
  struct pg_req *r = ascope_sql_req_data(req);
  if (c->state != PG_READY || c->closing) return ASCOPE_ECLOSED;
  int rc = params_ok(ascope_sql_req_params(req));
  if (rc) return rc;
  /* The values must match the statement's parameters. Sent, too few come
   * back as a protocol error (08P01, which reads as the connection's), and
   * too many run unnoticed (every value goes with its type). Refused here,
   * like a text holding a NUL: nothing is queued, so the statements before
   * it still answer first. */
  size_t n = ascope_sql_params_count(ascope_sql_req_params(req));
  if (n > 0 && (size_t)pg_sql_params(ascope_sql_req_text(req)) != n) return UV_EINVAL;
  r->req = req;
  r->c = c;
  if (!c->session_dirty && pg_sql_touches_session(ascope_sql_req_text(req)))
    c->session_dirty = true; /* a pool's reset undoes it */
  switch (ascope_sql_req_kind(req)) {
  case ASCOPE_SQL_QUERY:
    r->kind = K_QUERY;
    break;
  case ASCOPE_SQL_STREAM:
    r->kind = K_STREAM;
    break;
  default:
    r->kind = ascope_sql_params_count(ascope_sql_req_params(req)) == 0 &&
                      pg_sql_is_script(ascope_sql_req_text(req))
                  ? K_SCRIPT
                  : K_EXEC;
    break;
  }
  if (c->special) {
    const char *channel = c->special->channel;
    take_special(c, r);
    if (channel && (r->channel = ascope_strdup(channel)) == NULL) return UV_ENOMEM;
  } else if (pg_sql_is_copy(ascope_sql_req_text(req))) {
    /* COPY runs outside the pipeline: to or from a file it works as any
     * statement; with STDIN or STDOUT it fails, pointing to the COPY calls */
    if (ascope_sql_params_count(ascope_sql_req_params(req))) return UV_EINVAL;
    r->kind = K_SCRIPT;
  }
  pg_queue(c, r);
  pg_sched_flush(c);
  return 0;
}

static int pg_tx_hook(ascope_sql *db, ascope_sql_req *req, int action, unsigned depth,
                      const char *options) {
  struct pg_conn *c = pg_conn_of(db);
  struct pg_req *r = ascope_sql_req_data(req);
  r->req = req;
  r->c = c;
  r->kind = K_TX;
  if (pg_tx_plan(r, action, depth, options) != 0) return UV_EINVAL;
  if (c->state != PG_READY || c->closing) {
    /* The server rolled back whatever the connection held when it went: a
     * ROLLBACK has nothing left to do, a COMMIT or BEGIN cannot happen. */
    if (action == ASCOPE_SQL_TX_ROLLBACK)
      ascope_sql_req_done(req, 0, NULL, NULL);
    else
      ascope_sql_req_done(req, ASCOPE_ECLOSED, "08006",
                          action == ASCOPE_SQL_TX_COMMIT
                              ? "the connection was lost; the transaction was rolled back"
                              : "the connection is closed");
    return 0;
  }
  pg_queue(c, r);
  pg_sched_flush(c);
  return 0;
}

static void remove_victim(struct pg_conn *c, struct pg_req *r) {
  for (struct pg_req **pp = &c->victims; *pp; pp = &(*pp)->next) {
    if (*pp == r) {
      *pp = r->next;
      return;
    }
  }
}

/* Answers r at once, with user code guarded from re-entering the pump. */
static void answer_now(struct pg_conn *c, struct pg_req *r) {
  aguard_enter(&c->pump);
  pg_answer(c, r);
  if (aguard_leave(&c->pump)) pg_kick(c);
}

/* A statement sent with another scope's wanted work behind it: no cancel
 * request may be aimed at it (cancel.c), so its scope stops waiting now,
 * and the statement runs to its end on the server, its answer dropped. */
static void abandon(struct pg_conn *c, struct pg_req *r) {
  r->abandoned = true;
  aguard_enter(&c->pump);
  ascope_sql_req_abandon(r->req, ASCOPE_ECANCELED, NULL,
                         "cancelled after it was sent: it runs to its end on the server, "
                         "its result discarded");
  if (aguard_leave(&c->pump)) pg_kick(c);
}

/* Queued: it goes at once (a COMMIT becomes a ROLLBACK; a ROLLBACK stays).
 * Sent: if a cancel request could only hit another scope's statement, it
 * is abandoned; so it is when a statement still wanted is ahead of it (on a
 * shared connection, another scope's pg_sleep(1)): waiting for its turn to
 * cancel it on the server would hold its scope's end, a deadline's
 * included, until that other work is done. Otherwise the pump sends a
 * cancel request when the backend runs it (cancel.c), and sends nothing new
 * meanwhile. A listener stops listening. */
static void pg_req_cancel(ascope_sql *db, ascope_sql_req *req) {
  struct pg_conn *c = pg_conn_of(db);
  struct pg_req *r = ascope_sql_req_data(req);
  if (r->cancelled) return;
  r->cancelled = true;
  r->batch_out = false; /* a paused stream is paused no more: it ends */
  switch (r->where) {
  case R_QUEUED:
    if (r->kind == K_TX && r->tx_action != ASCOPE_SQL_TX_BEGIN) {
      pg_tx_cancel_queued(r);
      return;
    }
    if (r->kind == K_LISTEN && r->unlisten) return; /* its UNLISTEN must go */
    pg_unqueue(c, r);
    pg_req_fail(r, ASCOPE_ECANCELED, NULL, "cancelled before it was sent");
    answer_now(c, r);
    return;
  case R_LOCAL: /* failed already, waiting for its turn: it need not wait now */
    pg_unlocal(c, r);
    answer_now(c, r);
    return;
  case R_VICTIM:
    if (r->syncs || r->in_seg) break; /* still in the pipeline */
    remove_victim(c, r);
    pg_req_fail(r, ASCOPE_ECANCELED, NULL, "cancelled");
    answer_now(c, r);
    return;
  case R_SENT:
    if ((r->kind == K_EXEC || r->kind == K_QUERY) &&
        (pg_wanted_behind(c, r) || pg_wanted_ahead(c, r))) {
      abandon(c, r);
      return;
    }
    c->cancel_seen = true;
    break;
  case R_LISTENING: {
    aguard_enter(&c->pump);
    pg_listen_end(c, r);
    if (aguard_leave(&c->pump)) pg_kick(c);
    return;
  }
  default:
    break;
  }
  pg_kick(c);
}

static void pg_more(ascope_sql *db, ascope_sql_req *req) {
  struct pg_conn *c = pg_conn_of(db);
  struct pg_req *r = ascope_sql_req_data(req);
  r->batch_out = false;
  pg_kick(c);
}

static void pg_stop(ascope_sql *db, ascope_sql_req *req) {
  struct pg_conn *c = pg_conn_of(db);
  struct pg_req *r = ascope_sql_req_data(req);
  r->stopped = true;
  r->batch_out = false;
  if (r->where == R_LISTENING) {
    aguard_enter(&c->pump);
    pg_listen_end(c, r);
    aguard_leave(&c->pump);
  }
  pg_kick(c);
}

/* ---- the driver ------------------------------------------------------------------------------ */

const ascope_sql_driver pg_driver = {
    .base =
        {
            .abi = ASCOPE_DRIVER_ABI,
            .family = "sql",
            .name = "postgres",
            .state_size = sizeof(struct pg_state_mem),
            .acquire = pg_acquire,
            .release = pg_release,
            .cancel = pg_acquire_cancel,
            .abort = pg_abort,
            .check = pg_check,
            .reset = pg_reset,
        },
    .sql_abi = ASCOPE_SQL_ABI,
    .req_size = sizeof(struct pg_req),
    .submit = pg_submit,
    .tx_hook = pg_tx_hook,
    .cancel = pg_req_cancel,
    .more = pg_more,
    .stop = pg_stop,
};

const ascope_sql_driver *ascope_postgres(void) {
  return &pg_driver;
}

int ascope_use_postgres(ascope *s, const char *dsn, const char *options) {
  return ascope_use_sql(s, &pg_driver, dsn, options);
}

/* ---- PostgreSQL-only operations ----------------------------------------------------------------
 */

static struct pg_conn *ours(ascope_sql *db) {
  const char *name = ascope_sql_driver_name(db);
  return name && strcmp(name, "postgres") == 0 ? pg_conn_of(db) : NULL;
}

/* Starts a generic request whose submit picks up sp. */
static int start_special(ascope *s, ascope_sql *db, struct pg_special *sp, const char *sql,
                         ascope_sql_cb cb, void *ud, ascope_op **op, bool stream) {
  struct pg_conn *c = ours(db);
  if (op) *op = NULL;
  if (c == NULL || sql == NULL) return UV_EINVAL;
  c->special = sp;
  int rc = stream ? ascope_sql_stream(s, db, sql, NULL, cb, ud, op)
                  : ascope_sql_exec(s, db, sql, NULL, cb, ud);
  c->special = NULL; /* also when the generic layer refused before submit */
  if (rc && op) *op = NULL;
  return rc;
}

int ascope_postgres_copy_in(ascope *s, ascope_sql *db, const char *sql,
                            ascope_postgres_fill_fn fill, void *fill_ud, ascope_sql_cb cb, void *ud,
                            ascope_op **op) {
  if (op) *op = NULL;
  if (fill == NULL) return UV_EINVAL;
  struct pg_special sp = {.kind = K_COPY_IN, .fill = fill, .fill_ud = fill_ud, .op = op};
  int rc = start_special(s, db, &sp, sql, cb, ud, NULL, false);
  if (rc && op) *op = NULL;
  return rc;
}

int ascope_postgres_copy_in_buffer(ascope *s, ascope_sql *db, const char *sql, const void *data,
                                   size_t len, ascope_sql_cb cb, void *ud) {
  if (data == NULL && len) return UV_EINVAL;
  struct pg_special sp = {.kind = K_COPY_IN, .data = data ? data : "", .len = len};
  return start_special(s, db, &sp, sql, cb, ud, NULL, false);
}

int ascope_postgres_copy_out(ascope *s, ascope_sql *db, const char *sql, ascope_sql_cb cb, void *ud,
                             ascope_op **op) {
  struct pg_special sp = {.kind = K_COPY_OUT};
  return start_special(s, db, &sp, sql, cb, ud, op, true);
}

int ascope_postgres_listen(ascope *s, ascope_sql *db, const char *channel, ascope_sql_cb cb,
                           void *ud, ascope_op **op) {
  struct pg_conn *c = ours(db);
  if (op) *op = NULL;
  if (c == NULL || channel == NULL || *channel == '\0') return UV_EINVAL;
  if (c->state != PG_READY || c->pg == NULL) return ASCOPE_ECLOSED;
  char *q = PQescapeIdentifier(c->pg, channel, strlen(channel));
  if (q == NULL) return UV_ENOMEM;
  size_t n = strlen(q) + 8;
  char small[192], *sql = n <= sizeof small ? small : ascope_malloc(n);
  if (sql == NULL) {
    PQfreemem(q);
    return UV_ENOMEM;
  }
  snprintf(sql, n, "LISTEN %s", q);
  PQfreemem(q);
  struct pg_special sp = {.kind = K_LISTEN, .channel = channel};
  int rc = start_special(s, db, &sp, sql, cb, ud, op, true);
  if (sql != small) ascope_free(sql);
  return rc;
}

int ascope_postgres_backend_pid(ascope_sql *db) {
  struct pg_conn *c = ours(db);
  /* Behind a pooler the number libpq has is the pooler's, and the server
   * process changes from one transaction to the next: none. */
  return c && c->state == PG_READY && !c->behind_pooler ? c->pid : 0;
}

_Static_assert(PGS_NSTATS <= ACOUNT_MAX, "more counters than a struct acount holds");
static const char *const stat_names[PGS_NSTATS] = {
    [PGS_CONNECTIONS] = "connections",
    [PGS_OPENED] = "opened",
    [PGS_CLOSED] = "closed",
    [PGS_BROKEN] = "broken",
    [PGS_ABORTED] = "aborted",
    [PGS_CANCELS] = "cancels",
    [PGS_RETRIED] = "retried",
    [PGS_PREPARED] = "prepared",
    [PGS_DEALLOCATED] = "deallocated",
    [PGS_STATEMENTS] = "statements",
    [PGS_SYNCS] = "syncs",
    [PGS_FLUSHES] = "flushes",
    [PGS_MAX_PIPELINE] = "max_pipeline",
    [PGS_RESETS] = "resets",
    [PGS_RESET_ROLLBACKS] = "reset_rollbacks",
    [PGS_RESET_SESSIONS] = "reset_sessions",
    [PGS_POOLED] = "pooled",
    [PGS_CORKED] = "corked",
};

int64_t ascope_postgres_stat(const char *name) {
  return acount_read(&pg_stats, stat_names, PGS_NSTATS, name);
}

/* "postgres.<name>" of ascope_rt_stat: the runtime's own counters. */
static int64_t rt_stat(void *state, const char *name) {
  return acount_read(state, stat_names, PGS_NSTATS, name);
}

/* Found by name ("postgres") once the library is loaded: ascope_driver_find(). */
__attribute__((constructor)) static void postgres_driver_register(void) {
  ascope_driver_register(&pg_driver.base);
  ascope_driver_set_stats(&pg_driver.base, rt_stat);
}
