/* The SQLite driver's vtable: a connection's acquire, release, cancel and
 * abort, and the SQL requests' entry points. All of it runs on the loop
 * thread; what touches SQLite is queued as a job and runs in a hop.
 *
 * The resource state the core owns holds only a pointer to the connection
 * (struct sq_conn), which lives on the heap: a hop may still be running
 * when the core gives up on a release (abort), and the core may reuse its
 * state memory the moment the driver says the release is done. The heap
 * connection outlives both as long as a hop needs it, and is freed only
 * when no work item refers to it.
 *
 * The interrupt guard: sqlite3_interrupt() stops whatever the connection
 * runs, so it is only ever called under conn->mu while conn->running is the
 * very job meant, and conn->db is not NULL. The hop clears running under the
 * same mutex before it moves on, and a close takes db away under it before
 * closing: an interrupt can never reach another statement or a connection
 * being closed.
 */
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct acount sq_stats;

extern const ascope_sql_driver sq_driver;

static struct sq_conn *conn_of(ascope_sql *db) {
  return ((struct sq_state *)db)->c;
}

/* Interrupts j if, and only if, it is what the connection runs now, and
 * is not a write inside a savepoint (uncut: interrupted, SQLite would roll
 * back the whole transaction, the enclosing scopes' work with it; stmt.c
 * lets it finish and rolls back its savepoint instead) — unless force: the
 * connection is being closed, and its transaction goes anyway. */
static void interrupt_if_running(struct sq_conn *c, struct sq_job *j, bool force) {
  if (c->running != j || (j->uncut && !force)) return;
  if (c->db) sqlite3_interrupt(c->db);
  sq_gate_kick(c->sched); /* it may be waiting for the gate's token (gate.c) */
}

/* ---- the connection: acquire, release, cancel, abort ------------------------------- */

/* A connection with its options parsed, not yet queued. NULL and a status
 * and message in *status, *msg when it cannot be made. */
static struct sq_conn *conn_new(ascope_res *r, const char *path, const char *options, int *status,
                                char *msg, size_t msglen) {
  struct sq_conn *c = ascope_calloc(1, sizeof *c);
  *status = UV_ENOMEM;
  snprintf(msg, msglen, "out of memory");
  if (c == NULL) return NULL;
  if (sq_options_parse(&c->opt, options, msg, msglen) != 0) {
    *status = UV_EINVAL;
  } else if (path == NULL && c->opt.mode != MODE_MEMORY) {
    *status = UV_EINVAL;
    snprintf(msg, msglen, "no database path given");
  } else if ((path == NULL || (c->path = ascope_strdup(path)) != NULL) &&
             (c->rts = sq_rt_get(ascope_res_rt(r), &c->sched)) != NULL) {
    if (uv_mutex_init(&c->mu) == 0) return c;
    sq_sched_put(c->sched);
  }
  ascope_free(c->path);
  ascope_free(c);
  return NULL;
}

static void sq_acquire(ascope_res *r, const void *arg, const char *options) {
  struct sq_state *st = ascope_res_state(r);
  ascope_sql_header_init((ascope_sql *)st, &sq_driver);
  int status;
  char msg[160];
  struct sq_conn *c = conn_new(r, arg, options, &status, msg, sizeof msg);
  if (c == NULL) { /* a failed acquire leaves nothing behind */
    ascope_res_done(r, status, NULL, msg);
    return;
  }
  c->res = r;
  c->work.data = c;
  c->open_job.kind = JOB_OPEN;
  c->close_job.kind = JOB_CLOSE;
  sq_cache_init(&c->cache, c->opt.cache);
  st->c = c;
  SQ_COUNT(c->rts, SQ_CONNECTIONS, 1);
  sq_enqueue(c, &c->open_job);
}

/* An open still waiting for a thread is dropped; one running finishes and
 * the acquire completes with what it gave (a release then closes it). */
static void sq_cancel(ascope_res *r) {
  struct sq_conn *c = ((struct sq_state *)ascope_res_state(r))->c;
  uv_mutex_lock(&c->mu);
  bool waiting = c->open_job.queued && c->running != &c->open_job;
  if (waiting) sq_remove(c, &c->open_job);
  atomic_store(&c->open_job.cancelled, true); /* a busy wait in the open gives up */
  interrupt_if_running(c, &c->open_job, false);
  uv_mutex_unlock(&c->mu);
  if (!waiting) return;
  c->dead_status = ASCOPE_ECANCELED;
  if (c->where == W_RUNNING) { /* a hop is on its way: its end completes the acquire */
    c->dead = true;
    return;
  }
  sq_conn_free(c);
  ascope_res_done(r, ASCOPE_ECANCELED, NULL, "cancelled while waiting to open");
}

static void sq_release(ascope_res *r, int outcome) {
  (void)outcome; /* a connection closes the same way whatever happened */
  struct sq_conn *c = ((struct sq_state *)ascope_res_state(r))->c;
  sq_enqueue(c, &c->close_job); /* behind everything queued or staged */
  c->closing = true;
}

/* The release deadline passed. With no hop on the connection, close it here
 * and now (sqlite3_close_v2 on the loop thread, once) and answer what is
 * still queued. With a hop running, interrupt what it runs and let the hop
 * close the database; its end completes the release, late. */
static void sq_abort(ascope_res *r) {
  struct sq_conn *c = ((struct sq_state *)ascope_res_state(r))->c;
  SQ_COUNT(c->rts, SQ_ABORTED, 1);
  uv_mutex_lock(&c->mu);
  c->aborted = true;
  if (c->running) {
    atomic_store(&c->running->cancelled, true);
    interrupt_if_running(c, c->running, true);
  }
  uv_mutex_unlock(&c->mu);
  if (c->where == W_RUNNING) return;
  sq_unready(c);
  sq_close_db(c);
  sq_flush(c, ASCOPE_ECLOSED);
  sq_conn_free(c);
  ascope_res_done(r, 0, NULL, NULL);
}

/* Pools: an open connection, not closing. SQLite has no server to drop
 * it; what a scope left behind is the reset's. */
static int sq_check(ascope_res *r) {
  struct sq_conn *c = ((struct sq_state *)ascope_res_state(r))->c;
  return c->opened && !c->closing && !c->dead ? 0 : ASCOPE_ECLOSED;
}

/* ---- requests ------------------------------------------------------------------------ */

static int enqueue(struct sq_conn *c, struct sq_job *j) {
  return c->closing ? ASCOPE_ECLOSED : sq_enqueue(c, j);
}

static int sq_submit(ascope_sql *db, ascope_sql_req *req) {
  struct sq_job *j = ascope_sql_req_data(req);
  j->kind = JOB_REQ;
  j->req = req;
  return enqueue(conn_of(db), j);
}

static int sq_tx_hook(ascope_sql *db, ascope_sql_req *req, int action, unsigned depth,
                      const char *options) {
  struct sq_job *j = ascope_sql_req_data(req);
  j->kind = JOB_TX;
  j->req = req;
  j->tx_action = action;
  j->tx_depth = depth;
  if (action == ASCOPE_SQL_TX_BEGIN && sq_tx_options_parse(options, &j->tx_begin) != 0)
    return UV_EINVAL;
  return enqueue(conn_of(db), j);
}

/* A job not yet started leaves the queue and is answered now. Anything
 * else is flagged: a running one is interrupted, a parked stream is let go
 * so its hop ends it, an answered one keeps its answer. COMMIT and ROLLBACK
 * always stay queued (a transaction must not be left open): a cancelled
 * COMMIT rolls back instead, and a ROLLBACK is never interrupted. */
static void sq_req_cancel(ascope_sql *db, ascope_sql_req *req) {
  struct sq_conn *c = conn_of(db);
  struct sq_job *j = ascope_sql_req_data(req);
  bool ending = j->kind == JOB_TX && j->tx_action != ASCOPE_SQL_TX_BEGIN;
  if (!ending && sq_unstage(c, j)) { /* still on the loop's side: nothing to stop */
    atomic_store(&j->cancelled, true);
    ascope_sql_req_done(req, ASCOPE_ECANCELED, NULL, "cancelled before it ran");
    return;
  }
  uv_mutex_lock(&c->mu);
  atomic_store(&j->cancelled, true);
  /* started and st are the hop's: read only when the job is not running */
  bool drop = c->running != j && j->queued && !j->started && j->st == NULL && !ending;
  if (drop) sq_remove(c, j);
  if (!(ending && j->tx_action == ASCOPE_SQL_TX_ROLLBACK)) interrupt_if_running(c, j, false);
  j->parked = false;
  bool idle = !sq_runnable(c);
  uv_mutex_unlock(&c->mu);
  if (drop) {
    if (idle) sq_unready(c);
    ascope_sql_req_done(req, ASCOPE_ECANCELED, NULL, "cancelled before it ran");
    return;
  }
  sq_wake(c);
}

static void sq_more(ascope_sql *db, ascope_sql_req *req) {
  struct sq_conn *c = conn_of(db);
  struct sq_job *j = ascope_sql_req_data(req);
  uv_mutex_lock(&c->mu);
  j->parked = false;
  uv_mutex_unlock(&c->mu);
  sq_wake(c);
}

static void sq_stop(ascope_sql *db, ascope_sql_req *req) {
  struct sq_conn *c = conn_of(db);
  struct sq_job *j = ascope_sql_req_data(req);
  uv_mutex_lock(&c->mu);
  j->stop = true;
  j->parked = false;
  uv_mutex_unlock(&c->mu);
  sq_wake(c);
}

/* ---- the driver ------------------------------------------------------------------------- */

const ascope_sql_driver sq_driver = {
    .base =
        {
            .abi = ASCOPE_DRIVER_ABI,
            .family = "sql",
            .name = "sqlite",
            .state_size = sizeof(struct sq_state),
            .acquire = sq_acquire,
            .release = sq_release,
            .cancel = sq_cancel,
            .abort = sq_abort,
            .check = sq_check,
            .reset = sq_reset,
        },
    .sql_abi = ASCOPE_SQL_ABI,
    .req_size = sizeof(struct sq_job),
    .submit = sq_submit,
    .tx_hook = sq_tx_hook,
    .cancel = sq_req_cancel,
    .more = sq_more,
    .stop = sq_stop,
};

const ascope_sql_driver *ascope_sqlite(void) {
  return &sq_driver;
}

int ascope_use_sqlite(ascope *s, const char *path, const char *options) {
  return ascope_use_sql(s, &sq_driver, path, options);
}

static const char *const stat_names[SQ_NSTATS] = {
    [SQ_CONNECTIONS] = "connections",
    [SQ_OPENED] = "opened",
    [SQ_CLOSED] = "closed",
    [SQ_ABORTED] = "aborted",
    [SQ_HOPS] = "hops",
    [SQ_RUNNING] = "running",
    [SQ_STATEMENTS] = "statements",
    [SQ_YIELDS] = "yields",
    [SQ_BUSY] = "busy",
    [SQ_RESETS] = "resets",
    [SQ_RESET_JOBS] = "reset_jobs",
    [SQ_LOOP_RUNS] = "loop_runs",
    [SQ_LOOP_OVERRUNS] = "loop_overruns",
    [SQ_GATE_WAITS] = "gate_waits",
    [SQ_GATE_HANDOVERS] = "gate_handovers",
    [SQ_GATE_MOVES] = "gate_moves",
    [SQ_SAVEPOINT_CANCELS] = "savepoint_cancels",
};

int64_t ascope_sqlite_stat(const char *name) {
  return acount_read(&sq_stats, stat_names, SQ_NSTATS, name);
}

/* "sqlite.<name>" of ascope_rt_stat: the runtime's own counters. */
static int64_t rt_stat(void *state, const char *name) {
  return acount_read(state ? &((struct sq_rt *)state)->stats : NULL, stat_names, SQ_NSTATS, name);
}

/* Found by name ("sqlite") once the library is loaded: ascope_driver_find(). */
__attribute__((constructor)) static void sqlite_driver_register(void) {
  ascope_driver_register(&sq_driver.base);
  ascope_driver_set_stats(&sq_driver.base, rt_stat);
}
