/* Running jobs on a pool thread: open, close, failures, busy waits.
 *
 * Everything here runs inside a hop, on whichever pool thread it got, with
 * the connection to itself: no other thread calls SQLite on it meanwhile,
 * which is why connections are opened SQLITE_OPEN_NOMUTEX. The one call
 * another thread makes is sqlite3_interrupt(), under conn->mu and only
 * while conn->running names the job it is meant for (see driver.c). The
 * handlers also serve a short statement run on the loop thread while no
 * hop is in flight (loop.c), with its budget instead.
 */
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define YIELD_NS (200 * 1000) /* a busy wait this long gives its thread up if others wait */

void sq_fail_msg(struct sq_job *j, int status, const char *code, const char *msg) {
  j->status = status;
  j->code = code;
  ascope_free(j->msg);
  j->msg = msg ? ascope_strdup(msg) : NULL;
}

void sq_fail_lost(struct sq_job *j) {
  sq_fail_msg(j, atomic_load(&j->cancelled) ? ASCOPE_ECANCELED : ASCOPE_EDRIVER,
              "SQLITE_ABORT_ROLLBACK",
              "not run: SQLite rolled the transaction back after an earlier statement failed");
}

void sq_fail_sp_lost(struct sq_conn *c, struct sq_job *j) {
  char msg[160];
  snprintf(msg, sizeof msg,
           "not run: savepoint ascope_%u was rolled back when a statement in it was cancelled",
           c->sp_lost);
  sq_fail_msg(j, atomic_load(&j->cancelled) ? ASCOPE_ECANCELED : ASCOPE_EDRIVER,
              "SQLITE_ABORT_ROLLBACK", msg);
}

static bool is_aborted(struct sq_conn *c) {
  uv_mutex_lock(&c->mu);
  bool a = c->aborted;
  uv_mutex_unlock(&c->mu);
  return a;
}

/* The status a failed SQLite call maps to. An interrupt, or a busy wait the
 * handler gave up, is a cancellation when the job was cancelled, and a
 * closed connection when it was aborted; anything else is the driver's. */
void sq_fail(struct sq_conn *c, struct sq_job *j, int rc) {
  int primary = rc & 0xff;
  int status = ASCOPE_EDRIVER;
  bool cut = primary == SQLITE_INTERRUPT || primary == SQLITE_BUSY;
  if (cut && is_aborted(c))
    status = ASCOPE_ECLOSED;
  else if (cut && atomic_load(&j->cancelled))
    status = ASCOPE_ECANCELED;
  else if (primary == SQLITE_NOMEM)
    status = UV_ENOMEM;
  const char *msg = c->db ? sqlite3_errmsg(c->db) : sqlite3_errstr(rc);
  const char *name = sq_code_name(rc);
  sq_fail_msg(j, status, name ? name : sq_code_name(primary), msg);
}

/* ---- busy waits ------------------------------------------------------------------ */

static void nap(uint64_t ns) {
  struct timespec ts = {(time_t)(ns / 1000000000u), (long)(ns % 1000000000u)};
  nanosleep(&ts, NULL);
}

/* SQLite calls this while a lock it needs is held by another connection.
 * Returning 1 retries, 0 gives up with SQLITE_BUSY. The wait is bounded by
 * busy_timeout per job, ends early when the job is cancelled (a deadline
 * reaches a statement stuck on a lock, not only one running), and a
 * retryable statement gives its thread up when other connections wait for
 * one: the lock's holder may be among them, unable to run and release it
 * while we sleep on its lock. The job is then run again in a later hop. */
int sq_busy_handler(void *ud, int count) {
  struct sq_conn *c = ud;
  if (c->on_loop) { /* never a nap on the loop thread: the pool waits for the lock */
    c->overran = true;
    return 0;
  }
  struct sq_job *j = c->cur;
  if (j == NULL || (atomic_load(&j->cancelled) && !c->no_cut)) return 0;
  uint64_t now = uv_hrtime();
  if (count == 0) {
    c->wait_start = now;
    SQ_COUNT(c->rts, SQ_BUSY, 1);
  }
  if (j->busy_since == 0) j->busy_since = now;
  uint64_t limit = (uint64_t)c->opt.busy_ms * 1000000u, waited = now - j->busy_since;
  if (waited >= limit) return 0;
  if (c->may_yield && now - c->wait_start >= YIELD_NS && sq_sched_waiting(c->sched) > 0) {
    c->yielded = true;
    SQ_COUNT(c->rts, SQ_YIELDS, 1);
    return 0;
  }
  uint64_t step = count < 5 ? 100000u << count : 2000000u; /* 0.1 ms doubling to 2 ms */
  sq_gate_release(c); /* the lock's holder may be the hop waiting for the token */
  nap(step < limit - waited ? step : limit - waited);
  return 1;
}

/* sqlite3_interrupt() alone can lose a cancellation: SQLite clears its
 * interrupt flag when a statement starts while none is active, so an
 * interrupt that lands between the hop taking a job and the job's first
 * step is forgotten. Every 1000 VM steps SQLite asks here too, and the
 * job's own flag does not forget. It is the job's, so it can only ever stop
 * the job it was meant for; a rollback (no_cut) is never stopped. */
int sq_progress_handler(void *ud) {
  struct sq_conn *c = ud;
  if (c->on_loop) { /* no cancel can come meanwhile: the loop thread is here */
    if (++c->loop_ticks <= SQ_LOOP_TICKS &&
        (uv_hrtime() - c->loop_t0 <= SQ_LOOP_NS || sq_cache_misses(c, false) == 0))
      return 0;
    c->overran = true; /* read-only: interrupted, nothing is rolled back or seen */
    return 1;
  }
  if (sq_cut(c)) return 1;
  return !sq_gate(c); /* false: cut while it waited for a token */
}

/* ---- open and close ------------------------------------------------------------ */

/* SQLITE_OPEN_URI: a target beginning with "file:" is a URI on every
 * build of SQLite, not only on those compiled with SQLITE_USE_URI=1. */
static int open_flags(const struct sq_options *o) {
  int f = SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_URI;
#ifdef SQLITE_OPEN_EXRESCODE
  f |= SQLITE_OPEN_EXRESCODE;
#endif
  switch (o->mode) {
  case MODE_RWC:
    return f | SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE;
  case MODE_RW:
    return f | SQLITE_OPEN_READWRITE;
  case MODE_RO:
    return f | SQLITE_OPEN_READONLY;
  case MODE_MEMORY:
    return f | SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_MEMORY;
  }
  return f;
}

static int pragmas(struct sq_conn *c) {
  static const char *const sync[] = {"PRAGMA synchronous=OFF", "PRAGMA synchronous=NORMAL",
                                     "PRAGMA synchronous=FULL"};
  int rc = SQLITE_OK;
  if (c->opt.wal && c->opt.mode != MODE_MEMORY)
    rc = sqlite3_exec(c->db, "PRAGMA journal_mode=WAL", NULL, NULL, NULL);
  if (rc == SQLITE_OK && c->opt.synchronous >= 0)
    rc = sqlite3_exec(c->db, sync[c->opt.synchronous], NULL, NULL, NULL);
  if (rc == SQLITE_OK && c->opt.foreign_keys >= 0)
    rc = sqlite3_exec(c->db,
                      c->opt.foreign_keys ? "PRAGMA foreign_keys=ON" : "PRAGMA foreign_keys=OFF",
                      NULL, NULL, NULL);
  return rc;
}

static void run_open(struct sq_conn *c, struct sq_job *j) {
  sqlite3 *db = NULL;
  const char *path = c->path ? c->path : ":memory:";
  int rc = sqlite3_open_v2(path, &db, open_flags(&c->opt), NULL);
  uv_mutex_lock(&c->mu);
  c->db = db;
  uv_mutex_unlock(&c->mu);
  if (rc == SQLITE_OK) {
    sqlite3_extended_result_codes(db, 1);
    sqlite3_busy_handler(db, sq_busy_handler, c);
    sqlite3_progress_handler(db, 1000, sq_progress_handler, c);
    rc = pragmas(c);
  }
  if (rc != SQLITE_OK) {
    sq_fail(c, j, rc);
    sq_close_db(c); /* a failed acquire cleans up after itself */
  }
}

void sq_close_db(struct sq_conn *c) {
  uv_mutex_lock(&c->mu);
  sqlite3 *db = c->db;
  c->db = NULL; /* from here an interrupt finds nothing to hit */
  for (struct sq_job *j = c->head; j; j = j->next) {
    if (j->st) { /* a stream cut short by an abort */
      sq_cache_put(c, j->st);
      j->st = NULL;
    }
  }
  uv_mutex_unlock(&c->mu);
  sq_cache_clear(c);
  if (db) sqlite3_close_v2(db);
}

void sq_req_after(struct sq_conn *c, struct sq_job *j) {
  if (c->tx_open && j->status != 0 && sqlite3_get_autocommit(c->db)) c->tx_lost = true;
  if (!c->tx_open && !sqlite3_get_autocommit(c->db)) atomic_store(&c->dirty, true);
}

void sq_run(struct sq_conn *c, struct sq_job *j) {
  j->batch = j->last = j->retry = false;
  j->status = 0;
  j->code = NULL;
  c->cur = j;
  c->may_yield = c->yielded = c->no_cut = false;
  switch (j->kind) {
  case JOB_OPEN:
    run_open(c, j);
    break;
  case JOB_CLOSE:
    sq_close_db(c);
    break;
  case JOB_REQ:
    /* An interrupted write (a cancel meant for it, a deadline), and some
     * errors (SQLITE_FULL, SQLITE_IOERR, SQLITE_NOMEM…), make SQLite roll
     * the whole transaction back. What is queued behind must not then run
     * in autocommit — committed at once, though its scope's transaction
     * ends in failure — and the loop's cancellations reach it one at a
     * time, possibly after the hop has started it: it is refused here
     * until the transaction's end comes through. */
    if (c->tx_lost) {
      sq_fail_lost(j);
      break;
    }
    if (c->sp_lost) { /* the same for one savepoint, until its end (stmt.c) */
      sq_fail_sp_lost(c, j);
      break;
    }
    sq_run_stmt(c, j);
    sq_req_after(c, j);
    break;
  case JOB_RESET:
    sq_run_reset(c, j);
    break;
  case JOB_TX:
    sq_run_tx(c, j);
    break;
  }
  c->cur = NULL;
}
