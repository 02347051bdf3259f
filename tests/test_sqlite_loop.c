/* Short statements on the loop thread (drivers/sqlite/loop.c): a chain of
 * awaited point SELECTs runs there; a statement whose budget runs out, or
 * that meets a lock, runs again on the pool from the start with the same
 * result, inside a transaction too; cancellation and deadlines reach the
 * chain; FIFO order holds when statements run there and on the pool in
 * turn. No assertion depends on timing: a run that happens to go to the
 * pool instead (a slow machine makes a last run look long) gives the same
 * answers, and conditions are waited for, never slept toward. */
#include "sqlite_support.h"

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

TestSuite(sqlite_loop, .init = t_init, .fini = t_fini);

/* The test's runtime's counters: the process's may hold an earlier test's. */
static int64_t rt_stat(const char *name) {
  char full[64];
  snprintf(full, sizeof full, "sqlite.%s", name);
  return ascope_rt_stat(T_rt, full);
}

#define ROWS 2000
#define BIG 100000 /* rows a count scans: far past the loop thread's budget */

static void make_kv(const char *path, int rows) {
  char sql[512];
  snprintf(sql, sizeof sql,
           "PRAGMA journal_mode=WAL; CREATE TABLE kv(k INTEGER PRIMARY KEY, v INTEGER);"
           "WITH RECURSIVE c(x) AS (SELECT 0 UNION ALL SELECT x + 1 FROM c WHERE x < %d)"
           "INSERT INTO kv SELECT x, 3 * x FROM c",
           rows - 1);
  t_raw(path, sql);
}

/* ---- a chain of awaited point SELECTs ---------------------------------------------------- */

struct chain {
  t_scope t;
  ascope_sql *db;
  ascope_sql_params *p;
  int next, n, wrong, answered, last_status;
  bool forever;     /* until the scope ends */
  ascope_sql_cb cb; /* the next statement's callback: chain_row by default */
};

static void chain_next(ascope *s, struct chain *c);

static int chain_row(ascope *s, int status, ascope_rows *rows, void *ud) {
  struct chain *c = ud;
  c->last_status = status;
  if (status != 0) return status;
  c->answered++;
  int64_t k = ((c->next - 1) * 7) % ROWS; /* the key chain_next asked for */
  if (ascope_rows_count(rows) != 1 || ascope_rows_int64(rows, 0, 0) != 3 * k) c->wrong++;
  chain_next(s, c);
  return 0;
}

static void chain_next(ascope *s, struct chain *c) {
  if (!c->forever && c->next == c->n) return;
  ascope_sql_params_clear(c->p);
  ascope_sql_params_add_int64(c->p, (c->next++ * 7) % ROWS);
  int rc = ascope_sql_query(s, c->db, "SELECT v FROM kv WHERE k = $1", c->p,
                            c->cb ? c->cb : chain_row, c);
  cr_assert(rc == 0 || c->forever, "%d", rc); /* forever: refused once the deadline passed */
}

static void chain_body(ascope *s, t_scope *t) {
  struct chain *c = (struct chain *)t;
  c->db = ascope_resource(s, 0);
  chain_next(s, c);
}

Test(sqlite_loop, awaited_point_selects_run_on_the_loop_thread) {
  make_kv(t_path("kv.db"), ROWS);
  struct chain c = {.t.body = chain_body, .n = 1000, .p = ascope_sql_params_new()};
  cr_assert_eq(t_run_db(&c.t, t_path("kv.db"), "mode=ro"), 0, "%s", c.t.msg);
  ascope_sql_params_free(c.p);
  cr_assert_eq(c.answered, 1000);
  cr_assert_eq(c.wrong, 0);
  /* the first run is the pool's (the statement is not prepared yet); a
   * run that looked long sends the next one there too, so only "some" */
  cr_assert_gt(rt_stat("loop_runs"), 0);
  cr_assert_lt(rt_stat("hops"), 1000, "not one hop per statement");
}

/* ---- over the budget: again on the pool, from the start -------------------------------- */

struct over {
  t_scope t;
  ascope_sql *db;
  bool tx;
  int phase, tries, wrong;
  int64_t loop_before;
  t_cb insert;
};

static void over_next(ascope *s, struct over *o);

static int64_t expect_count(const struct over *o, int64_t below) {
  return below + (o->tx ? 1 : 0); /* the transaction's own row, k = -1 */
}

static int over_row(ascope *s, int status, ascope_rows *rows, void *ud) {
  struct over *o = ud;
  cr_assert_eq(status, 0, "%s", ascope_sql_errmsg(o->db));
  int64_t below = o->phase == 1 ? BIG : 5;
  if (ascope_rows_int64(rows, 0, 0) != expect_count(o, below)) o->wrong++;
  if (o->phase == 1) { /* the long one: was it tried on the loop thread first? */
    if (rt_stat("loop_overruns") > 0) return 0; /* done */
    o->phase = 0;
  } else if (rt_stat("loop_runs") > o->loop_before) {
    o->phase = 1; /* the short one ran on the loop: its next run is tried there */
  }
  o->loop_before = rt_stat("loop_runs");
  cr_assert_lt(++o->tries, 2000, "never tried on the loop thread");
  over_next(s, o);
  return 0;
}

static void over_next(ascope *s, struct over *o) {
  ascope_sql_params *p = ascope_sql_params_new();
  ascope_sql_params_add_int64(p, o->phase == 1 ? BIG : 5);
  cr_assert_eq(ascope_sql_query(s, o->db, "SELECT count(*) FROM kv WHERE k < $1", p, over_row, o),
               0);
  ascope_sql_params_free(p);
}

static void over_body(ascope *s, t_scope *t) {
  struct over *o = (struct over *)t;
  o->db = ascope_resource(s, 0);
  if (o->tx) /* a write first: the interrupted read must not roll it back */
    ascope_sql_exec(s, o->db, "INSERT INTO kv VALUES (-1, 0)", NULL, t_cb_fn, &o->insert);
  over_next(s, o);
}

Test(sqlite_loop, a_statement_over_its_budget_runs_again_on_the_pool_with_the_same_result) {
  make_kv(t_path("kv.db"), BIG + 10);
  struct over o = {.t.body = over_body};
  cr_assert_eq(t_run_db(&o.t, t_path("kv.db"), NULL), 0, "%s", o.t.msg);
  cr_assert_eq(o.wrong, 0);
  cr_assert_geq(rt_stat("loop_overruns"), 1);
}

Test(sqlite_loop, an_overrun_inside_a_transaction_rolls_nothing_back) {
  make_kv(t_path("kv.db"), BIG + 10);
  struct over o = {.t.body = over_body, .tx = true};
  ascope *s = ascope_new(T_rt);
  ascope_use_sqlite(s, t_path("kv.db"), NULL);
  ascope_use_sql_tx_at(s, ascope_sqlite(), 0, NULL);
  cr_assert_eq(t_run(s, &o.t), 0, "%s", o.t.msg);
  cr_assert_eq(o.insert.status, 0);
  cr_assert_eq(o.wrong, 0, "the transaction's own row was seen by every count");
  cr_assert_geq(rt_stat("loop_overruns"), 1);
  cr_assert_eq(t_raw_int(t_path("kv.db"), "SELECT count(*) FROM kv WHERE k = -1"), 1, "committed");
}

/* ---- a lock met on the loop thread: the pool waits for it -------------------------------- */

struct locked {
  struct chain c;
  sqlite3 *holder;
  bool released;
};

static void release_lock(void *ud) {
  struct locked *l = ud;
  cr_assert_eq(sqlite3_exec(l->holder, "COMMIT", NULL, NULL, NULL), SQLITE_OK);
  l->released = true;
}

static int locked_row(ascope *s, int status, ascope_rows *rows, void *ud);

static void locked_next(ascope *s, struct locked *l) {
  ascope_sql_params_clear(l->c.p);
  ascope_sql_params_add_int64(l->c.p, 7);
  cr_assert_eq(ascope_sql_query(s, l->c.db, "SELECT v FROM kv WHERE k = $1", l->c.p, locked_row, l),
               0);
}

/* Runs the SELECT until it ran on the loop thread, then takes an exclusive
 * lock before the next: that one meets it (there, if tried there) and waits
 * on the pool until the lock is let go. */
static int locked_row(ascope *s, int status, ascope_rows *rows, void *ud) {
  struct locked *l = ud;
  cr_assert_eq(status, 0, "%s", ascope_sql_errmsg(l->c.db));
  cr_assert_eq(ascope_rows_int64(rows, 0, 0), 21);
  l->c.answered++;
  if (l->holder) {
    cr_assert(l->released, "answered while the lock was held");
    return 0;
  }
  if (rt_stat("loop_runs") > 0) {
    cr_assert_eq(sqlite3_open(t_path("kv.db"), &l->holder), SQLITE_OK);
    cr_assert_eq(sqlite3_exec(l->holder, "BEGIN EXCLUSIVE", NULL, NULL, NULL), SQLITE_OK);
    t_when(t_busy_waiting, release_lock, l);
  }
  cr_assert_lt(l->c.answered, 2000, "never ran on the loop thread");
  locked_next(s, l);
  return 0;
}

static void locked_body(ascope *s, t_scope *t) {
  struct locked *l = (struct locked *)t;
  l->c.db = ascope_resource(s, 0);
  locked_next(s, l);
}

Test(sqlite_loop, a_read_that_meets_a_lock_waits_for_it_on_the_pool) {
  t_raw(t_path("kv.db"), "CREATE TABLE kv(k INTEGER PRIMARY KEY, v INTEGER);"
                         "INSERT INTO kv VALUES (7, 21)"); /* a rollback journal: readers block */
  struct locked l = {.c.t.body = locked_body, .c.p = ascope_sql_params_new()};
  cr_assert_eq(t_run_db(&l.c.t, t_path("kv.db"), NULL), 0, "%s", l.c.t.msg);
  ascope_sql_params_free(l.c.p);
  cr_assert(l.released);
  sqlite3_close(l.holder);
  cr_assert_gt(rt_stat("busy"), 0, "the pool waited for the lock");
}

/* ---- cancellation and deadlines ------------------------------------------------------------ */

/* The chain, once it runs on the loop thread, goes on forever in a child
 * scope with a deadline: the deadline's timer must get its turn. */
struct deadline {
  t_scope t; /* the child's */
  struct chain *c;
};
static struct deadline child;

static void deadline_child_body(ascope *s, t_scope *t) {
  chain_next(s, ((struct deadline *)t)->c);
}

static int deadline_row(ascope *s, int status, ascope_rows *rows, void *ud) {
  struct chain *c = ud;
  if (c->forever || rt_stat("loop_runs") == 0) return chain_row(s, status, rows, ud);
  cr_assert_eq(status, 0);
  c->answered++;
  c->forever = true;
  c->cb = chain_row;
  child = (struct deadline){.t.body = deadline_child_body, .c = c};
  ascope *k = ascope_child(s);
  cr_assert_not_null(k);
  ascope_set_timeout(k, 20);
  cr_assert_eq(ascope_start(k, t_body, t_done, &child), 0);
  return 0;
}

static void deadline_body(ascope *s, t_scope *t) {
  struct chain *c = (struct chain *)t;
  c->db = ascope_resource(s, 0);
  chain_next(s, c);
}

Test(sqlite_loop, a_deadline_ends_an_endless_chain) {
  make_kv(t_path("kv.db"), ROWS);
  struct chain c = {
      .t.body = deadline_body, .cb = deadline_row, .n = 1 << 30, .p = ascope_sql_params_new()};
  int rc = t_run_db(&c.t, t_path("kv.db"), "mode=ro");
  cr_assert_eq(rc, ASCOPE_ETIMEDOUT, "%d %s", rc, c.t.msg); /* the child's, failing fast */
  ascope_sql_params_free(c.p);
  cr_assert_eq(child.t.done_calls, 1);
  cr_assert_eq(child.t.status, ASCOPE_ETIMEDOUT);
  cr_assert_eq(c.wrong, 0);
}

struct cancel_listed {
  t_scope t;
  ascope_sql *db;
  int runs, statuses[64];
  int64_t loop_before;
};

static int listed_row(ascope *s, int status, ascope_rows *rows, void *ud);

static void listed_next(ascope *s, struct cancel_listed *x) {
  cr_assert_eq(ascope_sql_query(s, x->db, "SELECT v FROM kv WHERE k = 3", NULL, listed_row, x), 0);
}

/* Runs the SELECT until it ran on the loop thread; from that answer's
 * callback, queues it again (listed for the loop thread) and cancels the
 * scope before the loop thread gets to it. */
static int listed_row(ascope *s, int status, ascope_rows *rows, void *ud) {
  (void)rows;
  struct cancel_listed *x = ud;
  cr_assert_lt(x->runs, 64, "never ran on the loop thread");
  x->statuses[x->runs++] = status;
  if (status != 0) return status;
  bool on_loop = rt_stat("loop_runs") > x->loop_before;
  x->loop_before = rt_stat("loop_runs");
  listed_next(s, x);
  /* no hop started: it waits for the loop thread (a hop may have run it
   * already, on another thread, before the cancel comes) */
  if (on_loop && rt_stat("running") == 0) {
    x->loop_before = -1;
    ascope_cancel(s);
  }
  return 0;
}

static void listed_body(ascope *s, t_scope *t) {
  struct cancel_listed *x = (struct cancel_listed *)t;
  x->db = ascope_resource(s, 0);
  listed_next(s, x);
}

Test(sqlite_loop, a_statement_listed_for_the_loop_thread_is_cancelled_before_it_runs) {
  make_kv(t_path("kv.db"), ROWS);
  struct cancel_listed x = {.t.body = listed_body};
  cr_assert_eq(t_run_db(&x.t, t_path("kv.db"), "mode=ro"), ASCOPE_ECANCELED);
  cr_assert_geq(x.runs, 2);
  cr_assert_eq(x.statuses[x.runs - 1], ASCOPE_ECANCELED);
  int64_t loop_runs = rt_stat("loop_runs");
  cr_assert_eq(x.loop_before, -1);
  cr_assert_gt(loop_runs, 0);
}

/* ---- FIFO order, on the loop thread and on the pool in turn ------------------------------ */

struct fifo {
  t_scope t;
  ascope_sql *db;
  ascope_sql_params *p;
  int submitted, answered, inserted, last_i, wrong, order;
};

static int fifo_cb(ascope *s, int status, ascope_rows *rows, void *ud);

/* Step i: a count alone (the loop thread's, once its last run was short),
 * or every third step an INSERT and a count queued together (the pool's,
 * in one hop), the count seeing the INSERT before it. */
static void fifo_step(ascope *s, struct fifo *f) {
  if (f->submitted >= 600) return;
  if (f->submitted % 3 == 2) {
    ascope_sql_params_clear(f->p);
    ascope_sql_params_add_int64(f->p, f->submitted);
    cr_assert_eq(ascope_sql_exec(s, f->db, "INSERT INTO log VALUES ($1)", f->p, fifo_cb, f), 0);
    f->submitted++;
  }
  cr_assert_eq(ascope_sql_query(s, f->db, "SELECT count(*), max(i) FROM log", NULL, fifo_cb, f), 0);
  f->submitted++;
}

static int fifo_cb(ascope *s, int status, ascope_rows *rows, void *ud) {
  struct fifo *f = ud;
  cr_assert_eq(status, 0, "%s", ascope_sql_errmsg(f->db));
  int n = f->answered++;
  if (ascope_rows_columns(rows) == 0) { /* the INSERT */
    if (n % 3 != 2) f->order++;
    f->inserted++;
    f->last_i = n; /* the INSERT's value is its place in the order it was asked for */
    return 0;
  }
  if (ascope_rows_int64(rows, 0, 0) != f->inserted) f->wrong++;
  if (f->inserted > 0 && ascope_rows_int64(rows, 0, 1) != f->last_i) f->wrong++;
  fifo_step(s, f);
  return 0;
}

static void fifo_body(ascope *s, t_scope *t) {
  struct fifo *f = (struct fifo *)t;
  f->db = ascope_resource(s, 0);
  f->p = ascope_sql_params_new();
  cr_assert_eq(ascope_sql_exec(s, f->db, "CREATE TABLE log(i INTEGER)", NULL, NULL, NULL), 0);
  fifo_step(s, f);
}

Test(sqlite_loop, fifo_order_holds_between_the_loop_thread_and_the_pool) {
  struct fifo f = {.t.body = fifo_body};
  cr_assert_eq(t_run_db(&f.t, t_path("log.db"), "wal=1"), 0, "%s", f.t.msg);
  ascope_sql_params_free(f.p);
  cr_assert_eq(f.answered, f.submitted);
  cr_assert_eq(f.inserted, 200);
  cr_assert_eq(f.order, 0);
  cr_assert_eq(f.wrong, 0);
  cr_assert_gt(rt_stat("loop_runs"), 0);
}

/* ---- a full pool: short reads of other connections still run ------------------------------ */

#define LONG_QUERY                                                                                 \
  "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 2000000000) "          \
  "SELECT count(*) FROM c"
#define BURST 10

struct full {
  t_scope t;
  ascope *scope;
  ascope_sql *db;
  ascope *hogs[2];
  t_scope hog[2];
  int answered, wrong;
  bool pool_was_full; /* when the burst's last answer came */
};

static void hog_body(ascope *s, t_scope *t) {
  (void)t;
  ascope_sql_query(s, ascope_resource(s, 0), LONG_QUERY, NULL, NULL, NULL);
}

static int burst_row(ascope *s, int status, ascope_rows *rows, void *ud) {
  (void)s;
  struct full *f = ud;
  cr_assert_eq(status, 0);
  if (ascope_rows_int64(rows, 0, 0) != f->answered++ + 1) f->wrong++;
  if (f->answered == BURST) {
    f->pool_was_full = rt_stat("running") >= 2;
    for (int i = 0; i < 2; i++) ascope_cancel(f->hogs[i]);
  }
  return 0;
}

/* Queued at once, so not alone: a hop's, were the pool's threads not all
 * taken by the long queries. "SELECT $1 + 1" reads no page: short, always. */
static void burst(void *ud) {
  struct full *f = ud;
  ascope_sql_params *p = ascope_sql_params_new();
  for (int i = 0; i < BURST; i++) {
    ascope_sql_params_clear(p);
    ascope_sql_params_add_int64(p, i);
    cr_assert_eq(ascope_sql_query(f->scope, f->db, "SELECT $1 + 1", p, burst_row, f), 0);
  }
  ascope_sql_params_free(p);
}

static bool hogs_hold_pool(void *ud) {
  (void)ud;
  return rt_stat("running") >= 2 && rt_stat("hops") >= 6; /* our open and query, their opens */
}

static int first_row(ascope *s, int status, ascope_rows *rows, void *ud) {
  (void)rows;
  struct full *f = ud;
  cr_assert_eq(status, 0);
  for (int i = 0; i < 2; i++) { /* children: the scope waits for them, and the burst */
    f->hog[i] = (t_scope){.body = hog_body};
    f->hogs[i] = ascope_child(s);
    cr_assert_not_null(f->hogs[i]);
    ascope_use_sqlite(f->hogs[i], NULL, "mode=memory");
    cr_assert_eq(ascope_start(f->hogs[i], t_body, t_done, &f->hog[i]), 0);
  }
  t_when(hogs_hold_pool, burst, f);
  return 0;
}

static void full_body(ascope *s, t_scope *t) {
  struct full *f = (struct full *)t;
  f->scope = s;
  f->db = ascope_resource(s, 0);
  ascope_sql_params *p = ascope_sql_params_new();
  ascope_sql_params_add_int64(p, 0);
  cr_assert_eq(ascope_sql_query(s, f->db, "SELECT $1 + 1", p, first_row, f), 0);
  ascope_sql_params_free(p);
}

Test(sqlite_loop, short_reads_queued_together_run_while_long_queries_hold_the_pool) {
  struct full f = {.t.body = full_body};
  ascope *s = ascope_new(T_rt);
  ascope_use_sqlite(s, NULL, "mode=memory");
  ascope_set_mode(s, ASCOPE_COLLECT_ALL);
  cr_assert_eq(t_run(s, &f.t), 0, "%s", f.t.msg);
  cr_assert_eq(f.answered, BURST);
  cr_assert_eq(f.wrong, 0);
  cr_assert(f.pool_was_full, "answered while the long queries held both threads");
  for (int i = 0; i < 2; i++) cr_assert_eq(f.hog[i].status, ASCOPE_ECANCELED);
}

/* ---- a hop's end hands its thread on, whatever becomes of its connection ------------------- */

struct handoff {
  t_scope t;
  ascope_sql *a, *b;
  t_cb second, other;
};

static int handoff_first(ascope *s, int status, ascope_rows *rows, void *ud) {
  (void)rows;
  struct handoff *h = ud;
  cr_assert_eq(status, 0);
  /* prepared and short now: listed for the loop thread from inside the
   * hop's end, which must still give the freed thread to b */
  cr_assert_eq(ascope_sql_query(s, h->a, "SELECT 1 + 1", NULL, t_cb_fn, &h->second), 0);
  return 0;
}

static void handoff_body(ascope *s, t_scope *t) {
  struct handoff *h = (struct handoff *)t;
  h->a = ascope_resource(s, 0);
  h->b = ascope_resource(s, 1);
  /* a's hop takes the one thread; b's statement waits for it */
  cr_assert_eq(ascope_sql_query(s, h->a, "SELECT 1 + 1", NULL, handoff_first, h), 0);
  cr_assert_eq(ascope_sql_query(s, h->b, "SELECT 2 + 2", NULL, t_cb_fn, &h->other), 0);
}

Test(sqlite_loop, a_connection_listed_for_the_loop_thread_leaves_its_thread_to_the_next) {
  cr_assert_eq(ascope_sqlite_set_concurrency(1), 0);
  struct handoff h = {.t.body = handoff_body};
  ascope *s = ascope_new(T_rt);
  ascope_use_sqlite(s, NULL, "mode=memory");
  ascope_use_sqlite(s, NULL, "mode=memory");
  int rc = t_run(s, &h.t);
  ascope_sqlite_set_concurrency(2);
  cr_assert_eq(rc, 0, "%s", h.t.msg);
  cr_assert_eq(h.second.calls, 1);
  cr_assert_eq(h.other.calls, 1);
  cr_assert_eq(h.other.status, 0);
}
