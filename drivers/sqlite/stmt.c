/* Running a statement on a pool thread (or a short one on the loop
 * thread, loop.c): bind, step, copy the rows out.
 *
 * Values are bound, never spliced: a parameter is data to SQLite whatever
 * its text says. Rows are copied into the request's result as they are
 * stepped (SQLite's column pointers die at the next step). A stream steps
 * one batch per hop and keeps its statement between hops, so while the user
 * pauses SQLite produces nothing and memory holds one batch.
 */
#include "internal.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

#define BATCH_BYTES (1u << 20) /* a batch also ends at this much data */

/* ---- parameters -------------------------------------------------------------------- */

static int bind_one(sqlite3_stmt *s, int slot, const ascope_sql_params *p, size_t i) {
  size_t len;
  const void *b;
  switch (ascope_sql_params_type(p, i)) {
  case ASCOPE_SQL_BOOL:
  case ASCOPE_SQL_INT64:
    return sqlite3_bind_int64(s, slot, ascope_sql_params_int64(p, i));
  case ASCOPE_SQL_DOUBLE:
    return sqlite3_bind_double(s, slot, ascope_sql_params_double(p, i));
  case ASCOPE_SQL_TEXT: /* STATIC: the request owns the bytes until it is answered */
    b = ascope_sql_params_bytes(p, i, &len);
    return sqlite3_bind_text64(s, slot, b, len, SQLITE_STATIC, SQLITE_UTF8);
  case ASCOPE_SQL_BLOB:
    b = ascope_sql_params_bytes(p, i, &len);
    return sqlite3_bind_blob64(s, slot, b, len, SQLITE_STATIC);
  default:
    return sqlite3_bind_null(s, slot);
  }
}

/* Binds every slot. A cached statement keeps pointers to an earlier
 * request's bytes, which is safe only because each run binds every slot
 * again before it steps: hence the exact count check. */
static int bind_all(struct sq_conn *c, struct sq_job *j, struct sq_stmt *st) {
  const ascope_sql_params *p = ascope_sql_req_params(j->req);
  size_t n = ascope_sql_params_count(p);
  if (n != (size_t)st->nparams) {
    char msg[96];
    snprintf(msg, sizeof msg, "the statement takes %d parameters, %zu were given", st->nparams, n);
    sq_fail_msg(j, ASCOPE_EDRIVER, "SQLITE_RANGE", msg);
    return -1;
  }
  for (int i = 0; i < st->nslots; i++) {
    int rc = bind_one(st->stmt, i + 1, p, (size_t)st->map[i]);
    if (rc != SQLITE_OK) {
      sq_fail(c, j, rc);
      return -1;
    }
  }
  return 0;
}

/* ---- rows ---------------------------------------------------------------------------- */

/* The declared type by SQLite's affinity rules; unknown (NULL) for an
 * expression, which the rows then type by its first value. */
static int decl_type(const char *d) {
  if (d == NULL) return ASCOPE_SQL_NULL;
  if (strcasestr(d, "INT")) return ASCOPE_SQL_INT64;
  if (strcasestr(d, "CHAR") || strcasestr(d, "CLOB") || strcasestr(d, "TEXT"))
    return ASCOPE_SQL_TEXT;
  if (strcasestr(d, "BLOB") || *d == '\0') return ASCOPE_SQL_BLOB;
  if (strcasestr(d, "REAL") || strcasestr(d, "FLOA") || strcasestr(d, "DOUB"))
    return ASCOPE_SQL_DOUBLE;
  if (strcasestr(d, "BOOL")) return ASCOPE_SQL_BOOL;
  return ASCOPE_SQL_NULL;
}

static int set_columns(ascope_rows *rows, sqlite3_stmt *s) {
  int n = sqlite3_column_count(s);
  int rc = ascope_rows_set_columns(rows, (size_t)n);
  for (int i = 0; rc == 0 && i < n; i++) {
    const char *decl = sqlite3_column_decltype(s, i);
    rc = ascope_rows_set_column(rows, (size_t)i, sqlite3_column_name(s, i), decl, decl_type(decl));
  }
  return rc;
}

static int read_row(ascope_rows *rows, sqlite3_stmt *s) {
  int n = sqlite3_column_count(s), rc = ascope_rows_add_row(rows);
  for (int i = 0; rc == 0 && i < n; i++) {
    const void *b;
    switch (sqlite3_column_type(s, i)) {
    case SQLITE_INTEGER:
      ascope_rows_put_int64(rows, (size_t)i, sqlite3_column_int64(s, i));
      break;
    case SQLITE_FLOAT:
      ascope_rows_put_double(rows, (size_t)i, sqlite3_column_double(s, i));
      break;
    case SQLITE_TEXT:
      b = sqlite3_column_text(s, i);
      rc = b ? ascope_rows_put_text(rows, (size_t)i, b, (size_t)sqlite3_column_bytes(s, i))
             : UV_ENOMEM;
      break;
    case SQLITE_BLOB:
      b = sqlite3_column_blob(s, i);
      rc = ascope_rows_put_blob(rows, (size_t)i, b ? b : "", (size_t)sqlite3_column_bytes(s, i));
      break;
    default:
      break; /* NULL: the row starts with every column NULL */
    }
  }
  return rc;
}

/* ---- exec and query --------------------------------------------------------------------- */

static void set_changes(struct sq_conn *c, struct sq_job *j, int64_t total_before, bool direct) {
  int64_t total = sqlite3_total_changes64(c->db);
  /* sqlite3_changes64 keeps the count of the last INSERT/UPDATE/DELETE, so
   * a statement that changed nothing (DDL, SELECT) reports 0, not that. */
  int64_t n = total == total_before ? 0 : direct ? sqlite3_changes64(c->db) : total - total_before;
  ascope_sql_req_set_changes(j->req, n, sqlite3_last_insert_rowid(c->db));
}

/* Several statements, as one exec without parameters: each is prepared when
 * the previous has run, so a script may create what it then uses. */
static void run_script(struct sq_conn *c, struct sq_job *j, struct sq_stmt *first,
                       const char *tail) {
  int64_t before = sqlite3_total_changes64(c->db);
  int rc;
  while ((rc = sqlite3_step(first->stmt)) == SQLITE_ROW) {
  }
  if (rc != SQLITE_DONE) sq_fail(c, j, rc);
  sq_cache_put(c, first);
  while (rc == SQLITE_DONE && *tail) {
    sqlite3_stmt *s = NULL;
    rc = sqlite3_prepare_v2(c->db, tail, -1, &s, &tail);
    if (rc != SQLITE_OK) {
      sq_fail(c, j, rc);
      return;
    }
    if (s == NULL) break; /* blanks or comments to the end */
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
    }
    if (rc != SQLITE_DONE) sq_fail(c, j, rc);
    sqlite3_finalize(s);
  }
  if (rc == SQLITE_DONE || rc == SQLITE_OK) set_changes(c, j, before, false);
}

static bool busy_retry(struct sq_conn *c, struct sq_job *j, int rc, bool any_row) {
  if ((rc & 0xff) != SQLITE_BUSY || !c->yielded || any_row) return false;
  j->retry = true;
  return true;
}

/* Runs one statement to its end. A query copies its rows out; an exec
 * steps past any and keeps only the counts. */
static void run_once(struct sq_conn *c, struct sq_job *j, struct sq_stmt *st, bool query) {
  if (bind_all(c, j, st) != 0) return;
  ascope_rows *rows = query ? ascope_sql_req_rows(j->req) : NULL; /* NULL: out of memory */
  if (query && set_columns(rows, st->stmt) != 0) {
    sq_fail_msg(j, UV_ENOMEM, "SQLITE_NOMEM", "out of memory reading the result");
    return;
  }
  int64_t before = sqlite3_total_changes64(c->db);
  c->may_yield = true;
  int rc;
  while ((rc = sqlite3_step(st->stmt)) == SQLITE_ROW) {
    if (query && read_row(rows, st->stmt) != 0) {
      sq_fail_msg(j, UV_ENOMEM, "SQLITE_NOMEM", "out of memory reading the result");
      return;
    }
  }
  if (rc == SQLITE_DONE) {
    /* a query's counts are 0 (docs/sql.md): SQLite's last insert rowid is
     * the connection's, left by whatever statement inserted last */
    if (!query) set_changes(c, j, before, true);
  } else if (busy_retry(c, j, rc, ascope_rows_count(rows) > 0))
    ascope_rows_clear(rows);
  else
    sq_fail(c, j, rc);
}

static struct sq_stmt *prepare(struct sq_conn *c, struct sq_job *j, const char **tail) {
  int rc;
  struct sq_stmt *st = sq_cache_get(c, ascope_sql_req_text(j->req), tail, &rc);
  if (st == NULL && rc != SQLITE_OK) sq_fail(c, j, rc);
  return st;
}

static bool single(struct sq_conn *c, struct sq_job *j, struct sq_stmt *st, const char *tail) {
  if (*tail == '\0') return true;
  sq_cache_put(c, st);
  sq_fail_msg(j, ASCOPE_EDRIVER, "SQLITE_MISUSE",
              "several statements in one text: only ascope_sql_exec without parameters runs a "
              "script");
  return false;
}

/* ---- writes inside a savepoint ---------------------------------------------------------- */

/* A write inside a savepoint is not interrupted when cancelled: SQLite
 * answers an interrupted write inside a transaction by rolling back the
 * whole transaction, every enclosing scope's work included, where the
 * cancel meant only this scope's level. It runs to its end instead, and
 * then its savepoint is rolled back (ROLLBACK TO) and refuses everything
 * until its scope ends it — the level is lost, as a PostgreSQL
 * subtransaction is after an error, and nothing above it. A write in the
 * transaction's own level is interrupted as before: the transaction is
 * lost either way. Marked under mu, so that a cancel from the loop either
 * sees the mark or came first, and then the write does not start. */
static bool mark_uncut(struct sq_conn *c, struct sq_job *j, sqlite3_stmt *st, bool script) {
  if (c->levels < 2 || (!script && sqlite3_stmt_readonly(st))) return true;
  uv_mutex_lock(&c->mu);
  bool go = !atomic_load(&j->cancelled);
  j->uncut = go;
  uv_mutex_unlock(&c->mu);
  if (!go) sq_fail_msg(j, ASCOPE_ECANCELED, NULL, "cancelled");
  return go;
}

/* After an uncut write: if it was cancelled meanwhile, its savepoint goes. */
static void settle_uncut(struct sq_conn *c, struct sq_job *j) {
  if (!j->uncut) return;
  uv_mutex_lock(&c->mu);
  j->uncut = false;
  uv_mutex_unlock(&c->mu);
  if (!atomic_load(&j->cancelled)) return;
  /* The write failed on its own and took the transaction with it (an I/O
   * error, a full disk): there is no savepoint left to roll back to, and
   * its own error, not the cancel, is what happened (run.c marks the
   * transaction lost). */
  if (j->status != 0 && sqlite3_get_autocommit(c->db)) return;
  unsigned d = c->levels - 1;
  char sql[64];
  snprintf(sql, sizeof sql, "ROLLBACK TO ascope_%u", d);
  c->no_cut = true;
  int rc = sqlite3_exec(c->db, sql, NULL, NULL, NULL);
  c->no_cut = false;
  SQ_COUNT(c->rts, SQ_SAVEPOINT_CANCELS, 1);
  if (rc == SQLITE_OK) {
    c->sp_lost = d;
    sq_fail_msg(j, ASCOPE_ECANCELED, NULL,
                "cancelled while it ran: the write was let finish, then its savepoint rolled back");
    return;
  }
  /* The rollback failed (an I/O error reading the journal, say). SQLite
   * answers most such failures by rolling the whole transaction back; the
   * others leave the savepoint where it was, its write in it. Either way
   * the level is gone, and the message says which, with SQLite's reason. */
  char msg[256];
  bool all = sqlite3_get_autocommit(c->db);
  snprintf(msg, sizeof msg, "cancelled while it ran: rolling its savepoint back failed (%s), %s",
           sqlite3_errmsg(c->db),
           all ? "and SQLite rolled the whole transaction back"
               : "so the savepoint refuses everything until its scope ends");
  if (all)
    c->tx_lost = true;
  else
    c->sp_lost = d;
  sq_fail_msg(j, ASCOPE_ECANCELED, sq_code_name(sqlite3_extended_errcode(c->db)), msg);
}

/* ---- streams ------------------------------------------------------------------------------ */

static void stream_end(struct sq_conn *c, struct sq_job *j) {
  if (j->st) sq_cache_put(c, j->st);
  j->st = NULL;
  settle_uncut(c, j); /* a write's stream cancelled meanwhile: its savepoint goes */
}

static bool stream_begin(struct sq_conn *c, struct sq_job *j) {
  const char *tail;
  struct sq_stmt *st = prepare(c, j, &tail);
  if (st == NULL) return false; /* an error, or an empty text: the end, with no rows */
  if (!single(c, j, st, tail)) return false;
  if (bind_all(c, j, st) != 0) {
    sq_cache_put(c, st);
    return false;
  }
  j->st = st;
  if (!mark_uncut(c, j, st->stmt, false)) { /* cancelled meanwhile */
    stream_end(c, j);
    return false;
  }
  if (set_columns(ascope_sql_req_rows(j->req), st->stmt) != 0) {
    sq_fail_msg(j, UV_ENOMEM, "SQLITE_NOMEM", "out of memory reading the result");
    stream_end(c, j);
    return false;
  }
  return true;
}

/* One batch: rows until the batch is full, the end, or an error. */
static void run_stream(struct sq_conn *c, struct sq_job *j) {
  ascope_rows *rows = ascope_sql_req_rows(j->req);
  if (atomic_load(&j->cancelled) || j->stop) {
    stream_end(c, j); /* it says why, when its savepoint went */
    if (!j->stop && j->status == 0) sq_fail_msg(j, ASCOPE_ECANCELED, NULL, "cancelled");
    return;
  }
  if (j->st == NULL && !stream_begin(c, j)) return;
  ascope_rows_clear(rows);
  c->may_yield = !j->started;
  unsigned n = 0;
  int rc;
  while ((rc = sqlite3_step(j->st->stmt)) == SQLITE_ROW) {
    j->started = true;
    c->may_yield = false;
    if (read_row(rows, j->st->stmt) != 0) {
      sq_fail_msg(j, UV_ENOMEM, "SQLITE_NOMEM", "out of memory reading the result");
      stream_end(c, j);
      return;
    }
    if (++n >= c->opt.batch || ascope_rows_memory(rows) >= BATCH_BYTES) {
      j->batch = true;
      return;
    }
  }
  if (rc != SQLITE_DONE && busy_retry(c, j, rc, j->started)) {
    stream_end(c, j); /* prepared again next time: a job waiting in the queue holds nothing */
    return;
  }
  if (rc != SQLITE_DONE) sq_fail(c, j, rc);
  stream_end(c, j);
  if (rc == SQLITE_DONE && n > 0) j->batch = j->last = true;
}

void sq_run_stmt(struct sq_conn *c, struct sq_job *j) {
  int kind = ascope_sql_req_kind(j->req);
  if (kind == ASCOPE_SQL_STREAM) {
    run_stream(c, j);
    return;
  }
  if (atomic_load(&j->cancelled)) {
    sq_fail_msg(j, ASCOPE_ECANCELED, NULL, "cancelled");
    return;
  }
  const char *tail;
  struct sq_stmt *st = prepare(c, j, &tail);
  if (st == NULL) return; /* an error, or nothing to run */
  bool params = ascope_sql_params_count(ascope_sql_req_params(j->req)) > 0;
  bool script = *tail && kind == ASCOPE_SQL_EXEC && !params;
  if (!script && !single(c, j, st, tail)) return;
  if (!mark_uncut(c, j, st->stmt, script)) {
    sq_cache_put(c, st);
    return;
  }
  if (script) {
    run_script(c, j, st, tail);
    settle_uncut(c, j);
    return;
  }
  uint64_t t0 = 0;
  if (st->loop_kind) {
    sq_stmt_note_start(c);
    t0 = uv_hrtime();
  }
  run_once(c, j, st, kind == ASCOPE_SQL_QUERY);
  if (st->loop_kind) sq_stmt_note_run(c, st, uv_hrtime() - t0);
  sq_cache_put(c, st);
  settle_uncut(c, j);
}

/* ---- on the loop thread ------------------------------------------------------------------ */

int sq_cache_misses(struct sq_conn *c, bool reset) {
  int cur = 0, hi = 0;
  sqlite3_db_status(c->db, SQLITE_DBSTATUS_CACHE_MISS, &cur, &hi, reset);
  return cur;
}

void sq_stmt_note_start(struct sq_conn *c) {
  sq_cache_misses(c, true); /* what other statements read is theirs */
}

/* What a run took says whether the next may be tried on the loop thread:
 * a read-only statement that took few VM steps last time (its plan), and
 * little time or no page from outside the page cache (its data), most
 * likely will again. A run that only looked long, preempted but with all
 * its pages cached, does not count against it. */
void sq_stmt_note_run(struct sq_conn *c, struct sq_stmt *st, uint64_t ns) {
  int steps = sqlite3_stmt_status(st->stmt, SQLITE_STMTSTATUS_VM_STEP, 1);
  bool short_run = steps <= SQ_SHORT_STEPS && (ns <= SQ_SHORT_NS || sq_cache_misses(c, false) == 0);
  if (short_run)
    st->long_runs = 0, st->overran = false;
  else if (st->long_runs < 255)
    st->long_runs++;
}

/* The same run as on a pool thread, with the loop thread's budget in the
 * progress handler (run.c). A statement here is read-only, so the
 * interrupt that ends an overrun rolls nothing back, even inside a
 * transaction; the rows so far are dropped and the job, still first in its
 * queue, runs again from the start on the pool: no one saw the first try. */
bool sq_run_on_loop(struct sq_conn *c, struct sq_job *j, struct sq_stmt *st) {
  j->batch = j->last = j->retry = false;
  j->status = 0;
  j->code = NULL;
  c->cur = j;
  c->may_yield = c->yielded = c->no_cut = false;
  c->on_loop = true;
  c->overran = false;
  c->loop_ticks = 0;
  sq_stmt_note_start(c);
  uint64_t t0 = c->loop_t0 = uv_hrtime();
  bool query = ascope_sql_req_kind(j->req) == ASCOPE_SQL_QUERY;
  run_once(c, j, st, query);
  c->on_loop = false;
  c->cur = NULL;
  bool over = c->overran;
  sq_stmt_note_run(c, st, uv_hrtime() - t0);
  if (over) st->overran = true; /* the pool runs it; until a run is short, it goes there */
  sq_cache_put(c, st);
  if (!over) {
    sq_req_after(c, j);
    return true;
  }
  ascope_free(j->msg);
  j->msg = NULL;
  j->status = 0;
  j->code = NULL;
  if (query) ascope_rows_clear(ascope_sql_req_rows(j->req));
  return false;
}
