/* Transactions as uses: BEGIN on acquire, COMMIT or ROLLBACK by the scope's
 * outcome, savepoints when nested. The cases every SQL driver shares
 * (commit, rollback on a failure, a deadline, a cancel) are the SQL
 * conformance suite's (tests/conformance/sql_suite.c); here, SQLite's own:
 * BEGIN modes and locks, a failed COMMIT, SQLite's own rollback. Every
 * outcome is checked against the database file itself, read with plain
 * sqlite3. */
#include "fault_vfs.h"
#include "sqlite_support.h"

#include <sqlite3.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

TestSuite(sqlite_tx, .init = t_init, .fini = t_fini);

static const char *db_path(void) {
  return t_path("tx.db");
}

static void schema(void) {
  t_raw(db_path(), "CREATE TABLE t(v TEXT)");
}

static int64_t rows_with(const char *v) {
  char sql[128];
  snprintf(sql, sizeof sql, "SELECT count(*) FROM t WHERE v = '%s'", v);
  return t_raw_int(db_path(), sql);
}

static void insert(ascope *s, ascope_sql *db, const char *v, ascope_sql_cb cb, void *ud) {
  ascope_sql_params *p = ascope_sql_params_new();
  ascope_sql_params_add_text(p, v, ASCOPE_SQL_NTS);
  cr_assert_eq(ascope_sql_exec(s, db, "INSERT INTO t VALUES ($1)", p, cb, ud), 0);
  ascope_sql_params_free(p);
}

/* A scope with a connection and a transaction on it, in one use list. */
static int run_tx(t_scope *t, const char *tx_options, uint64_t timeout_ms) {
  ascope *s = ascope_new(T_rt);
  cr_assert_eq(ascope_use_sqlite(s, db_path(), "busy_timeout=2000"), 0);
  cr_assert_eq(ascope_use_sql_tx_at(s, ascope_sqlite(), 0, tx_options), 0);
  if (timeout_ms) ascope_set_timeout(s, timeout_ms);
  return t_run(s, t);
}

/* ---- ok: COMMIT ------------------------------------------------------------------------------ */

static void commit_body(ascope *s, t_scope *t) {
  (void)t;
  ascope_sql *db = ascope_resource(s, 0);
  ascope_sql_tx *tx = ascope_resource(s, 1);
  cr_assert_not_null(tx);
  cr_assert_eq(ascope_sql_tx_db(tx), db);
  cr_assert_eq(ascope_sql_tx_depth(tx), 1);
  cr_assert_eq(ascope_sql_stat("transactions"), 1);
  insert(s, db, "a", NULL, NULL);
  insert(s, db, "b", NULL, NULL);
}

Test(sqlite_tx, begin_modes) {
  schema();
  const char *modes[] = {"begin=deferred", "begin=immediate", "begin=exclusive"};
  for (int i = 0; i < 3; i++) {
    t_scope t = {.body = commit_body};
    cr_assert_eq(run_tx(&t, modes[i], 0), 0, "%s: %s", modes[i], t.msg);
  }
  cr_assert_eq(rows_with("a"), 3);
  t_scope t = {.body = commit_body};
  cr_assert_eq(run_tx(&t, "begin=sometimes", 0), UV_EINVAL);
  cr_assert_eq(t.body_calls, 0);
}

/* ---- every failure: ROLLBACK ----------------------------------------------------------------- */

static void op_error_body(ascope *s, t_scope *t) {
  (void)t;
  ascope_sql *db = ascope_resource(s, 0);
  insert(s, db, "x", NULL, NULL);
  ascope_sql_exec(s, db, "INSERT INTO nowhere VALUES (1)", NULL, NULL, NULL);
}

Test(sqlite_tx, op_error_rolls_back) {
  schema();
  t_scope t = {.body = op_error_body};
  cr_assert_eq(run_tx(&t, NULL, 0), ASCOPE_EDRIVER);
  cr_assert_str_eq(t.code, "SQLITE_ERROR");
  cr_assert(strstr(t.msg, "no such table"), "%s", t.msg);
  cr_assert_eq(rows_with("x"), 0);
}

/* ---- nested: savepoints ---------------------------------------------------------------------- */

struct nest {
  t_scope t;
  ascope *parent;
  ascope_sql *db;
  int step;
  int child_status[4];
  unsigned depth[4], gdepth;
};

static void next_child(struct nest *n);

static void child_done(ascope *s, int status, void *ud) {
  (void)s;
  struct nest *n = ud;
  n->child_status[n->step++] = status;
  next_child(n);
}

static void grandchild_body(ascope *s, void *ud) {
  struct nest *n = ud;
  n->gdepth = ascope_sql_tx_depth(ascope_resource(s, 0));
  insert(s, n->db, "g", NULL, NULL);
}

/* Child 0 commits "c0" and, inside, a grandchild commits "g"; child 1 fails
 * after inserting "c1"; child 2 is cancelled on purpose after "c2"; child 3
 * commits "c3". Each is a savepoint inside the parent's transaction. */
static void child_body(ascope *s, void *ud) {
  struct nest *n = ud;
  ascope_sql_tx *tx = ascope_resource(s, 0);
  n->depth[n->step] = ascope_sql_tx_depth(tx);
  char v[4] = {'c', (char)('0' + n->step), 0};
  insert(s, n->db, v, NULL, NULL);
  if (n->step == 0) {
    ascope *g = ascope_child(s);
    ascope_use_sql_tx(g, n->db, NULL);
    ascope_start(g, grandchild_body, NULL, n);
  } else if (n->step == 1) {
    ascope_sql_exec(s, n->db, "INSERT INTO nowhere VALUES (1)", NULL, NULL, NULL);
  } else if (n->step == 2) {
    ascope_cancel(s);
  }
}

static void next_child(struct nest *n) {
  if (n->step == 4) return;
  ascope *c = ascope_child(n->parent);
  cr_assert_not_null(c);
  cr_assert_eq(ascope_use_sql_tx(c, n->db, NULL), 0);
  cr_assert_eq(ascope_start(c, child_body, child_done, n), 0);
}

static void nest_body(ascope *s, t_scope *t) {
  struct nest *n = (struct nest *)t;
  n->parent = s;
  n->db = ascope_resource(s, 0);
  insert(s, n->db, "p", NULL, NULL);
  next_child(n); /* one after another: sibling transactions on one connection would interleave */
}

Test(sqlite_tx, nested_scopes_are_savepoints) {
  schema();
  struct nest n = {.t.body = nest_body};
  ascope *s = ascope_new(T_rt);
  ascope_use_sqlite(s, db_path(), NULL);
  ascope_use_sql_tx_at(s, ascope_sqlite(), 0, NULL);
  ascope_set_mode(s, ASCOPE_COLLECT_ALL); /* a failing child does not fail the parent */
  cr_assert_eq(t_run(s, &n.t), 0, "%s", n.t.msg);
  cr_assert_eq(n.child_status[0], 0);
  cr_assert_eq(n.child_status[1], ASCOPE_EDRIVER);
  cr_assert_eq(n.child_status[2], ASCOPE_ECANCELED);
  cr_assert_eq(n.child_status[3], 0);
  cr_assert_eq(n.depth[0], 2);
  cr_assert_eq(n.depth[3], 2);
  cr_assert_eq(n.gdepth, 3, "the grandchild's savepoint is inside its parent's");
  cr_assert_eq(rows_with("p"), 1);
  cr_assert_eq(rows_with("c0"), 1);
  cr_assert_eq(rows_with("g"), 1);
  cr_assert_eq(rows_with("c1"), 0, "rolled back to its savepoint");
  cr_assert_eq(rows_with("c2"), 0, "cancelled: rolled back to its savepoint");
  cr_assert_eq(rows_with("c3"), 1);
}

/* ---- a write cancelled while it runs, inside a savepoint --------------------------------- */

/* Interrupted, a write inside a transaction makes SQLite roll the whole
 * transaction back: a child scope's cancel would take its parent's work
 * with it. The driver lets such a write finish and rolls back only the
 * child's savepoint. A child runs a long INSERT in its savepoint and is
 * cancelled (the scope, or the statement alone) once its hop is running;
 * the parent's rows before and after must commit. The cancel may still
 * land before the INSERT's first step on a busy machine: then it never
 * ran, and the same rows must be there. On a machine busier still the
 * INSERT (about 0.1 s) may even end before the loop thread gets to cancel
 * it: then nothing is cancelled and the child commits it. */
#define BIG_INSERT                                                                                 \
  "INSERT INTO t SELECT 'big' FROM (WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 "      \
  "FROM c WHERE x < 300000) SELECT x FROM c)"

struct cut {
  t_scope t, child;
  ascope *parent, *kid;
  ascope_sql *db;
  ascope_op *op;
  bool alone;               /* cancel the statement (ascope_op_cancel), not the scope */
  bool stream;              /* the write as a stream (INSERT ... RETURNING) */
  bool journal_fault;       /* journal reads fail from the cancel to the write's end */
  bool big_ended, too_late; /* the write's last call came; ... before the cancel */
  int big_status, later_status, after_status, read_status;
  char big_msg[256], big_code[64], later_code[64], read_code[64];
};

static struct cut *cut_of(t_scope *child) {
  return (struct cut *)((char *)child - offsetof(struct cut, child));
}

static int on_big(ascope *s, int status, ascope_rows *rows, void *ud);
static int on_later(ascope *s, int status, ascope_rows *rows, void *ud) {
  (void)s, (void)rows;
  struct cut *x = ud;
  x->later_status = status;
  t_copy(x->later_code, sizeof x->later_code, ascope_sql_errcode(x->db));
  return 0;
}

#define COUNT_ROWS "SELECT count(*) FROM t"

/* A short read, run once before so that it is tried on the loop thread. */
static int on_later(ascope *s, int status, ascope_rows *rows, void *ud);
static int on_read(ascope *s, int status, ascope_rows *rows, void *ud) {
  (void)rows;
  struct cut *x = ud;
  x->read_status = status;
  t_copy(x->read_code, sizeof x->read_code, ascope_sql_errcode(x->db));
  insert(s, x->db, "later", on_later, x);
  return 0;
}

static int on_big(ascope *s, int status, ascope_rows *rows, void *ud) {
  struct cut *x = ud;
  if (x->stream && rows) return ASCOPE_CONTINUE; /* a batch: the end is what counts */
  if (x->journal_fault) t_vfs_fail_journal_reads(false);
  x->big_ended = true;
  x->big_status = status;
  t_copy(x->big_msg, sizeof x->big_msg, ascope_sql_errmsg(x->db));
  t_copy(x->big_code, sizeof x->big_code, ascope_sql_errcode(x->db));
  if (x->alone) /* the scope goes on: a read alone in the queue, then a write */
    cr_assert_eq(ascope_sql_query(s, x->db, COUNT_ROWS, NULL, on_read, x), 0);
  return x->alone ? 0 : status;
}

static void cut_when_running(void *ud) {
  struct cut *x = ud;
  if (ascope_rt_stat(T_rt, "sqlite.running") == 0) {
    t_after(1, cut_when_running, x); /* its hop has not started yet */
    return;
  }
  if (x->big_ended) { /* nothing left to cancel (and x->op is gone) */
    x->too_late = true;
    return;
  }
  if (x->journal_fault) t_vfs_fail_journal_reads(true);
  if (x->alone)
    ascope_op_cancel(x->op);
  else
    ascope_cancel(x->kid);
}

static void cut_child_body(ascope *s, t_scope *t) {
  struct cut *x = cut_of(t);
  int kind = x->stream ? ASCOPE_SQL_STREAM : ASCOPE_SQL_EXEC;
  const char *sql = x->stream ? BIG_INSERT " RETURNING v" : BIG_INSERT;
  cr_assert_eq(ascope_sql_start(s, x->db, kind, sql, NULL, on_big, x, &x->op), 0);
  t_after(1, cut_when_running, x);
}

static int on_after(ascope *s, int status, ascope_rows *rows, void *ud) {
  (void)s, (void)rows;
  ((struct cut *)ud)->after_status = status;
  return status;
}

static void after_body(ascope *s, void *ud) {
  struct cut *x = ud;
  insert(s, x->db, "after", on_after, x);
}

static void cut_child_done(ascope *s, int status, void *ud) {
  struct cut *x = cut_of(ud);
  t_done(s, status, ud);
  /* the parent's transaction goes on: a sibling writes in it next */
  cr_assert_eq(ascope_start(ascope_child(x->parent), after_body, NULL, x), 0);
}

static void cut_body(ascope *s, t_scope *t) {
  struct cut *x = (struct cut *)t;
  x->parent = s;
  x->db = ascope_resource(s, 0);
  insert(s, x->db, "p", NULL, NULL);
  for (int i = 0; i < 3; i++) ascope_sql_query(s, x->db, COUNT_ROWS, NULL, NULL, NULL);
  x->child.body = cut_child_body;
  x->kid = ascope_child(s);
  cr_assert_eq(ascope_use_sql_tx(x->kid, x->db, NULL), 0);
  cr_assert_eq(ascope_start(x->kid, t_body, cut_child_done, &x->child), 0);
}

enum cut_outcome { CUT_BEFORE_FIRST_STEP, CUT_WHILE_RUNNING, CUT_TOO_LATE };

/* How the cancel found the write. One that ended before the cancel came is
 * checked here: committed with its savepoint, nothing cancelled. */
static enum cut_outcome run_cut(struct cut *x) {
  schema();
  int64_t before = ascope_sqlite_stat("savepoint_cancels");
  x->t.body = cut_body;
  ascope *s = ascope_new(T_rt);
  ascope_use_sqlite(s, db_path(), NULL);
  ascope_use_sql_tx_at(s, ascope_sqlite(), 0, NULL);
  ascope_set_mode(s, ASCOPE_COLLECT_ALL); /* the child's failure is not the parent's */
  cr_assert_eq(t_run(s, &x->t), 0, "the parent: %s", x->t.msg);
  cr_assert_eq(x->after_status, 0);
  cr_assert_eq(rows_with("p"), 1, "the parent's work before the child is kept");
  cr_assert_eq(rows_with("after"), 1, "... and after it");
  if (x->too_late) {
    fprintf(stderr, "note: the write ended before the loop thread could cancel it\n");
    cr_assert_eq(x->big_status, 0, "%s", x->big_msg);
    cr_assert_eq(x->child.status, 0, "%s", x->child.msg);
    cr_assert_eq(rows_with("big"), 300000);
    cr_assert_eq(ascope_sqlite_stat("savepoint_cancels") - before, 0);
    return CUT_TOO_LATE;
  }
  cr_assert_eq(x->big_status, ASCOPE_ECANCELED, "%s", x->big_msg);
  cr_assert_eq(rows_with("big"), 0, "the cancelled write is rolled back with its savepoint");
  bool ran = strstr(x->big_msg, "while it ran") != NULL; /* else cancelled before its first step */
  cr_assert_eq(ascope_sqlite_stat("savepoint_cancels") - before, ran ? 1 : 0);
  if (!ran) fprintf(stderr, "note: the cancel came before the write's first step\n");
  return ran ? CUT_WHILE_RUNNING : CUT_BEFORE_FIRST_STEP;
}

Test(sqlite_tx, a_write_cancelled_while_it_runs_loses_its_savepoint_not_the_transaction) {
  struct cut x = {.alone = false};
  if (run_cut(&x) != CUT_TOO_LATE) cr_assert_eq(x.child.status, ASCOPE_ECANCELED);
}

/* The same for a write streamed back (RETURNING): SQLite makes its changes
 * at the first step, which is let finish. */
Test(sqlite_tx, a_streamed_write_cancelled_while_it_runs_loses_its_savepoint) {
  struct cut x = {.stream = true};
  if (run_cut(&x) != CUT_TOO_LATE) cr_assert_eq(x.child.status, ASCOPE_ECANCELED);
}

/* Cancelled alone, the write's scope goes on: its savepoint is gone, so what
 * it runs next is refused with the reason, and its commit too. */
Test(sqlite_tx, a_write_cancelled_alone_refuses_the_rest_of_its_savepoint) {
  struct cut x = {.alone = true};
  enum cut_outcome how = run_cut(&x);
  if (how == CUT_WHILE_RUNNING) {
    cr_assert_eq(x.later_status, ASCOPE_EDRIVER);
    cr_assert_str_eq(x.later_code, "SQLITE_ABORT_ROLLBACK");
    cr_assert_eq(x.read_status, ASCOPE_EDRIVER, "a read is refused too, on the loop thread or not");
    cr_assert_str_eq(x.read_code, "SQLITE_ABORT_ROLLBACK");
    cr_assert_eq(x.child.status, ASCOPE_EDRIVER, "its RELEASE is refused: %s", x.child.msg);
    cr_assert(strstr(x.child.msg, "savepoint ascope_1 was rolled back"), "%s", x.child.msg);
    cr_assert_eq(rows_with("later"), 0);
  } else { /* never ran, or ended first: the scope goes on as if no cancel came */
    cr_assert_eq(x.later_status, 0);
    cr_assert_eq(x.read_status, 0);
    cr_assert_eq(x.child.status, 0);
    cr_assert_eq(rows_with("later"), 1);
  }
}

/* The savepoint's ROLLBACK TO can fail too, and SQLite gives no way to make
 * it: here every read of the rollback journal fails (an I/O error) from the
 * cancel until the write's answer. SQLite answers a failed ROLLBACK TO by
 * rolling the whole transaction back, so the write must fail saying so,
 * with SQLite's reason; what the parent sends next is refused as lost, its
 * COMMIT too; and nothing of the transaction reaches the file. With the
 * default page cache the write spills pages to the file mid-way, reads the
 * journal to sync it first, and fails by itself: then its own error is the
 * answer. A cache big enough for the whole write keeps it from spilling. */
static void big_cache_body(ascope *s, t_scope *t) {
  cr_assert_eq(
      ascope_sql_exec(s, ascope_resource(s, 0), "PRAGMA cache_size = -262144", NULL, NULL, NULL),
      0);
  cut_body(s, t);
}

/* Runs the cut with the journal fault; false when the cancel did not find
 * the write running (then no journal was read, and all must commit). */
static bool run_journal_fault(struct cut *x, bool spill, int *status) {
  t_vfs_install();
  schema();
  x->journal_fault = true;
  x->t.body = spill ? cut_body : big_cache_body;
  ascope *s = ascope_new(T_rt);
  ascope_use_sqlite(s, db_path(), NULL);
  ascope_use_sql_tx_at(s, ascope_sqlite(), 0, NULL);
  ascope_set_mode(s, ASCOPE_COLLECT_ALL);
  *status = t_run(s, &x->t);
  if (x->too_late || (x->big_status == ASCOPE_ECANCELED && !strstr(x->big_msg, "while it ran"))) {
    fprintf(stderr, "note: the cancel did not find the write running\n");
    cr_assert_eq(*status, 0, "%s", x->t.msg);
    cr_assert_eq(rows_with("p"), 1);
    cr_assert_eq(rows_with("after"), 1);
    return false;
  }
  cr_assert_gt(t_vfs_failed_reads(), 0, "the journal was read");
  cr_assert_eq(x->after_status, ASCOPE_EDRIVER, "the parent's next write is refused");
  cr_assert_eq(*status, ASCOPE_EDRIVER, "the parent's COMMIT is refused: %s", x->t.msg);
  cr_assert(strstr(x->t.msg, "rolled the transaction back"), "%s", x->t.msg);
  cr_assert_eq(rows_with("p") + rows_with("big") + rows_with("after"), 0,
               "nothing of the transaction is in the file");
  return true;
}

static void assert_rollback_failed(struct cut *x) {
  cr_assert_eq(x->big_status, ASCOPE_ECANCELED, "%s", x->big_msg);
  cr_assert(strstr(x->big_msg, "rolling its savepoint back failed (disk I/O error), and SQLite "
                               "rolled the whole transaction back"),
            "%s", x->big_msg);
  cr_assert_str_eq(x->big_code, "SQLITE_IOERR_READ");
}

Test(sqlite_tx, a_savepoint_that_cannot_be_rolled_back_loses_the_transaction) {
  struct cut x = {0};
  int status;
  if (run_journal_fault(&x, false, &status)) assert_rollback_failed(&x);
}

/* Cancelled after its last spill (a busy machine), the write ends well and
 * its ROLLBACK TO fails as above. */
Test(sqlite_tx, a_cancelled_write_that_fails_by_itself_keeps_its_own_error) {
  struct cut x = {0};
  int status;
  if (!run_journal_fault(&x, true, &status)) return;
  if (x.big_status == ASCOPE_ECANCELED) {
    fprintf(stderr, "note: the write had spilled for the last time when it was cancelled\n");
    assert_rollback_failed(&x);
    return;
  }
  cr_assert_eq(x.big_status, ASCOPE_EDRIVER, "%s", x.big_msg);
  cr_assert_str_eq(x.big_code, "SQLITE_IOERR_READ");
  cr_assert_str_eq(x.big_msg, "disk I/O error");
}

static void outer_fails_body(ascope *s, t_scope *t) {
  struct nest *n = (struct nest *)t;
  n->parent = s;
  n->db = ascope_resource(s, 0);
  n->step = 3; /* one child, which commits its savepoint */
  next_child(n);
  ascope_sql_exec(s, n->db, "INSERT INTO nowhere VALUES (1)", NULL, NULL, NULL);
}

Test(sqlite_tx, a_released_savepoint_goes_with_its_failed_parent) {
  schema();
  struct nest n = {.t.body = outer_fails_body};
  ascope *s = ascope_new(T_rt);
  ascope_use_sqlite(s, db_path(), NULL);
  ascope_use_sql_tx_at(s, ascope_sqlite(), 0, NULL);
  cr_assert_eq(t_run(s, &n.t), ASCOPE_EDRIVER);
  cr_assert_eq(rows_with("c3"), 0);
}

/* ---- a COMMIT that fails; a BEGIN that cannot get the lock ------------------------------------
 */

struct commit_fail {
  t_scope t;
  ascope_sql *db;
  int child_status;
  t_cb after;
  char code[64];
};

static void fk_child_body(ascope *s, void *ud) {
  struct commit_fail *f = ud;
  ascope_sql_exec(s, f->db, "INSERT INTO kid VALUES (99)", NULL, NULL, NULL); /* deferred check */
}

static void fk_child_done(ascope *s, int status, void *ud) {
  struct commit_fail *f = ud;
  f->child_status = status;
  const ascope_err *e = ascope_error(s);
  snprintf(f->code, sizeof f->code, "%s", e && ascope_err_code(e) ? ascope_err_code(e) : "");
}

static void fk_after_body(ascope *s, void *ud) {
  struct commit_fail *f = ud;
  ascope_sql_query(s, f->db, "SELECT count(*) FROM kid", NULL, t_cb_fn, &f->after);
}

static void fk_child_done_then(ascope *s, int status, void *ud);

static void fk_body(ascope *s, t_scope *t) {
  struct commit_fail *f = (struct commit_fail *)t;
  f->db = ascope_resource(s, 0);
  ascope *c = ascope_child(s);
  ascope_use_sql_tx(c, f->db, NULL);
  ascope_start(c, fk_child_body, fk_child_done_then, f);
}

static ascope *fk_parent;

/* After the failed COMMIT the connection is usable, out of any transaction:
 * a new one begins on it. */
static void fk_child_done_then(ascope *s, int status, void *ud) {
  fk_child_done(s, status, ud);
  ascope *c = ascope_child(fk_parent);
  cr_assert_not_null(c);
  ascope_use_sql_tx(c, ((struct commit_fail *)ud)->db, NULL); /* BEGIN works again */
  ascope_start(c, fk_after_body, NULL, ud);
}

Test(sqlite_tx, a_failed_commit_rolls_back_and_is_reported) {
  t_raw(db_path(),
        "CREATE TABLE mom(id INTEGER PRIMARY KEY);"
        "CREATE TABLE kid(mom INTEGER REFERENCES mom(id) DEFERRABLE INITIALLY DEFERRED)");
  struct commit_fail f = {.t.body = fk_body};
  ascope *s = ascope_new(T_rt);
  fk_parent = s;
  ascope_use_sqlite(s, db_path(), "foreign_keys=1");
  ascope_set_mode(s, ASCOPE_COLLECT_ALL);
  cr_assert_eq(t_run(s, &f.t), 0, "%s", f.t.msg);
  cr_assert_eq(f.child_status, ASCOPE_EDRIVER);
  cr_assert_str_eq(f.code, "SQLITE_CONSTRAINT_FOREIGNKEY");
  cr_assert_eq(f.after.status, 0);
  cr_assert_eq(f.after.first, 0, "the failed transaction left nothing");
  cr_assert_eq(t_raw_int(db_path(), "SELECT count(*) FROM kid"), 0);
}

Test(sqlite_tx, begin_immediate_waits_for_the_lock_then_gives_up) {
  schema();
  sqlite3 *holder;
  cr_assert_eq(sqlite3_open(db_path(), &holder), SQLITE_OK);
  cr_assert_eq(sqlite3_exec(holder, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);
  t_scope t = {.body = commit_body};
  ascope *s = ascope_new(T_rt);
  ascope_use_sqlite(s, db_path(), "busy_timeout=100");
  ascope_use_sql_tx_at(s, ascope_sqlite(), 0, "begin=immediate");
  cr_assert_eq(t_run(s, &t), ASCOPE_EDRIVER);
  cr_assert_str_eq(t.code, "SQLITE_BUSY");
  cr_assert_eq(t.body_calls, 0);
  cr_assert_geq(t.t_done - t.t_start, 90, "it waited for busy_timeout");
  sqlite3_exec(holder, "ROLLBACK", NULL, NULL, NULL);
  sqlite3_close(holder);
}

Test(sqlite_tx, a_begin_stuck_on_a_lock_is_cut_by_the_deadline) {
  schema();
  sqlite3 *holder;
  cr_assert_eq(sqlite3_open(db_path(), &holder), SQLITE_OK);
  cr_assert_eq(sqlite3_exec(holder, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);
  t_scope t = {.body = commit_body};
  ascope *s = ascope_new(T_rt);
  ascope_use_sqlite(s, db_path(), "busy_timeout=20000");
  ascope_use_sql_tx_at(s, ascope_sqlite(), 0, "begin=immediate");
  ascope_set_timeout(s, 100);
  cr_assert_eq(t_run(s, &t), ASCOPE_ETIMEDOUT);
  cr_assert_lt(t.t_done - t.t_start, 2000, "not the 20 s busy timeout");
  cr_assert_eq(t.body_calls, 0);
  sqlite3_exec(holder, "ROLLBACK", NULL, NULL, NULL);
  sqlite3_close(holder);
}

/* ---- SQLite's own rollback ------------------------------------------------------------------- */

/* SQLite rolls the whole transaction back by itself when a write inside it
 * is interrupted (and on SQLITE_FULL, SQLITE_IOERR, SQLITE_NOMEM…). What is
 * queued behind that write must not then run in autocommit — committed at
 * once, though its scope's transaction ends in failure: it fails with
 * SQLITE_ABORT_ROLLBACK. Here a child scope's long write is cancelled while
 * it runs; the parent's INSERT, queued behind it, is not cancelled. */
#define SLOW_WRITE                                                                                 \
  "INSERT INTO t SELECT count(*) FROM (WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL "                \
  "SELECT x + 1 FROM c WHERE x < 2000000000) SELECT x FROM c)"

struct lost {
  t_scope t, child_t;
  ascope *parent, *child;
  ascope_sql *db;
  t_cb slow, after;
  sqlite3 *probe;
};
static struct lost *lost;

/* The write holds the database's RESERVED lock: a second writer is refused. */
static bool write_running(void *ud) {
  (void)ud;
  int rc = sqlite3_exec(lost->probe, "BEGIN IMMEDIATE", NULL, NULL, NULL);
  if (rc == SQLITE_OK) sqlite3_exec(lost->probe, "ROLLBACK", NULL, NULL, NULL);
  return rc == SQLITE_BUSY;
}

static void cancel_child(void *ud) {
  (void)ud;
  ascope_cancel(lost->child);
}

static void slow_write_body(ascope *s, void *ud) {
  (void)ud;
  lost->child_t.body_calls++;
  cr_assert_eq(ascope_sql_exec(s, lost->db, SLOW_WRITE, NULL, t_cb_fn, &lost->slow), 0);
  /* the parent's, behind it on the connection */
  cr_assert_eq(ascope_sql_exec(lost->parent, lost->db, "INSERT INTO t VALUES ('after')", NULL,
                               t_cb_fn, &lost->after),
               0);
  t_when(write_running, cancel_child, NULL);
}

static void lost_body(ascope *s, t_scope *t) {
  (void)t;
  lost->parent = s;
  lost->db = lost->after.db = ascope_resource(s, 0);
  lost->child = ascope_child(s);
  cr_assert_eq(ascope_start(lost->child, slow_write_body, t_done, &lost->child_t), 0);
}

Test(sqlite_tx, nothing_runs_outside_a_transaction_sqlite_rolled_back) {
  schema();
  struct lost l = {.t.body = lost_body, .after.pass = true};
  lost = &l;
  cr_assert_eq(sqlite3_open(db_path(), &l.probe), SQLITE_OK);
  cr_assert_eq(run_tx(&l.t, NULL, 0), ASCOPE_EDRIVER, "%s", l.t.msg);
  sqlite3_close(l.probe);
  cr_assert_eq(l.child_t.status, ASCOPE_ECANCELED);
  cr_assert_eq(l.slow.status, ASCOPE_ECANCELED);
  cr_assert_eq(l.after.calls, 1);
  cr_assert_eq(l.after.status, ASCOPE_EDRIVER);
  cr_assert_str_eq(l.after.code, "SQLITE_ABORT_ROLLBACK");
  cr_assert_str_eq(l.t.code, "SQLITE_ABORT_ROLLBACK", "%s", l.t.msg);
  cr_assert_eq(rows_with("after"), 0, "it ran in autocommit and was committed");
  cr_assert_eq(t_raw_int(db_path(), "SELECT count(*) FROM t"), 0);
}
