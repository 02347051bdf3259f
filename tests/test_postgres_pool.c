/* SQL pools on the real PostgreSQL server: connections shared by scopes
 * one after another, the reset that costs nothing when nothing needs it and
 * rolls back or undoes what a scope left, transactions on a pooled
 * connection, a backend killed while idle in the pool and while in use, a
 * server that refuses connections, and closing with connections in use and
 * waiters queued. */
#include <ascope/postgres.h>
#include <criterion/criterion.h>
#include <string.h>

#include "pg_support.h"

TestSuite(pg_pool, .init = t_init, .fini = t_fini, .timeout = 120);

static ascope_pool *pool;

static ascope_pool *pool_open(const char *options) {
  pool = ascope_sql_pool_new(T_rt, ascope_postgres(), t_dsn(), options);
  cr_assert_not_null(pool, "pool options %s", options);
  return pool;
}

static int closed;
static bool pool_closing;
static void on_closed(void *ud) {
  (void)ud;
  closed++;
}

static void pool_close_all(void) {
  closed = 0;
  ascope_pool_close(pool, on_closed, NULL);
  cr_assert_eq(ascope_rt_run(T_rt), 0);
  cr_assert_eq(closed, 1);
  pool = NULL;
}

/* A scope with a connection from the pool, and a statement's result. */
typedef struct q_scope {
  t_scope t;
  const char *sql, *sql2;
  t_cb cb, cb2;
  bool tx;
} q_scope;

static void q_body(ascope *s, t_scope *t) {
  q_scope *q = (q_scope *)t;
  ascope_sql *db = ascope_sql_resource(s, 0);
  cr_assert_not_null(db);
  q->cb.db = q->cb2.db = db;
  if (q->sql) cr_assert_eq(ascope_sql_query(s, db, q->sql, NULL, t_cb_fn, &q->cb), 0);
  if (q->sql2) cr_assert_eq(ascope_sql_query(s, db, q->sql2, NULL, t_cb_fn, &q->cb2), 0);
}

static ascope *q_scope_new(q_scope *q, const char *sql) {
  memset(q, 0, sizeof *q);
  q->sql = sql;
  q->t.body = q_body;
  ascope *s = ascope_new(T_rt);
  cr_assert_eq(ascope_use_sql_pool(s, pool), 0);
  return s;
}

static int q_run(q_scope *q, const char *sql, const char *sql2, bool tx, bool pass) {
  ascope *s = q_scope_new(q, sql);
  q->sql2 = sql2;
  q->cb.pass = q->cb2.pass = pass;
  if (tx) cr_assert_eq(ascope_use_sql_tx_at(s, ascope_postgres(), 0, NULL), 0);
  return t_run(s, &q->t);
}

static void q_start(q_scope *q, const char *sql) {
  ascope *s = q_scope_new(q, sql);
  cr_assert_eq(ascope_start(s, t_body, t_done, &q->t), 0);
}

Test(pg_pool, scopes_one_after_another_share_one_connection) {
  pool_open("max=4");
  int64_t opened = ascope_postgres_stat("opened");
  int64_t pid = 0;
  for (int i = 0; i < 20; i++) {
    q_scope q;
    cr_assert_eq(q_run(&q, "SELECT pg_backend_pid()", NULL, false, true), 0, "%s", q.t.msg);
    if (i == 0) pid = q.cb.first;
    cr_assert_eq(q.cb.first, pid, "scope %d had another backend", i);
  }
  cr_assert_eq(ascope_postgres_stat("opened") - opened, 1);
  cr_assert_eq(ascope_rt_stat(T_rt, "postgres.resets"), 20);
  cr_assert_eq(ascope_rt_stat(T_rt, "postgres.reset_rollbacks"), 0, "nothing needed a reset");
  cr_assert_eq(ascope_rt_stat(T_rt, "postgres.reset_sessions"), 0);
  pool_close_all();
}

Test(pg_pool, sixty_four_scopes_on_a_pool_of_four_use_at_most_four_backends) {
  pool_open("max=4");
  static q_scope qs[64];
  for (int i = 0; i < 64; i++) q_start(&qs[i], "SELECT pg_backend_pid() FROM pg_sleep(0.01)");
  cr_assert_eq(ascope_rt_run(T_rt), 0);
  int64_t pids[64];
  int npids = 0;
  for (int i = 0; i < 64; i++) {
    cr_assert_eq(qs[i].t.done_calls, 1);
    cr_assert_eq(qs[i].t.status, 0, "%s", qs[i].t.msg);
    bool seen = false;
    for (int k = 0; k < npids; k++) seen |= pids[k] == qs[i].cb.first;
    if (!seen) pids[npids++] = qs[i].cb.first;
  }
  cr_assert_leq(npids, 4);
  cr_assert_eq(ascope_pool_stat(pool, "size"), npids);
  pool_close_all();
}

Test(pg_pool, a_transaction_left_open_by_a_plain_begin_is_rolled_back) {
  const char *tbl = t_name("pool_tx");
  t_raw(t_sql("DROP TABLE IF EXISTS %s; CREATE TABLE %s (v int)", tbl, tbl));
  pool_open("max=1");
  q_scope a, b;
  cr_assert_eq(q_run(&a, "BEGIN", t_sql("INSERT INTO %s VALUES (1)", tbl), false, true), 0, "%s",
               a.t.msg);
  cr_assert_eq(q_run(&b, t_sql("SELECT count(*) FROM %s", tbl), NULL, false, true), 0, "%s",
               b.t.msg);
  cr_assert_eq(b.cb.first, 0, "the open transaction's insert was rolled back");
  cr_assert_eq(ascope_rt_stat(T_rt, "postgres.reset_rollbacks"), 1);
  cr_assert_eq(t_raw_int(t_sql("SELECT count(*) FROM %s", tbl)), 0);
  pool_close_all();
  t_raw(t_sql("DROP TABLE %s", tbl));
}

Test(pg_pool, session_settings_a_scope_made_are_undone) {
  pool_open("max=1");
  q_scope a, b;
  cr_assert_eq(
      q_run(&a, "SET application_name = 'dirty_scope'", "SELECT pg_backend_pid()", false, true), 0,
      "%s", a.t.msg);
  cr_assert_eq(q_run(&b, "SELECT (current_setting('application_name') = 'dirty_scope')::int",
                     "SELECT pg_backend_pid()", false, true),
               0, "%s", b.t.msg);
  cr_assert_eq(b.cb2.first, a.cb2.first, "the same connection");
  cr_assert_eq(b.cb.first, 0, "the setting was reset");
  cr_assert_eq(ascope_rt_stat(T_rt, "postgres.reset_sessions"), 1);
  pool_close_all();
}

Test(pg_pool, a_transaction_use_on_a_pooled_connection_commits_or_rolls_back_by_outcome) {
  const char *tbl = t_name("pool_txu");
  t_raw(t_sql("DROP TABLE IF EXISTS %s; CREATE TABLE %s (v int)", tbl, tbl));
  pool_open("max=2");
  q_scope ok, bad;
  cr_assert_eq(q_run(&ok, t_sql("INSERT INTO %s VALUES (1)", tbl), NULL, true, true), 0, "%s",
               ok.t.msg);
  int rc = q_run(&bad, t_sql("INSERT INTO %s VALUES (2)", tbl), "SELECT 1/0", true, true);
  cr_assert_eq(rc, ASCOPE_EDRIVER);
  cr_assert_str_eq(bad.t.code, "22012");
  cr_assert_eq(t_raw_int(t_sql("SELECT count(*) FROM %s", tbl)), 1);
  cr_assert_eq(t_raw_int(t_sql("SELECT sum(v) FROM %s", tbl)), 1);
  pool_close_all();
  t_raw(t_sql("DROP TABLE %s", tbl));
}

static bool broke(void *ud) {
  return ascope_postgres_stat("broken") > *(int64_t *)ud;
}

Test(pg_pool, a_backend_killed_while_idle_in_the_pool_is_replaced) {
  pool_open("max=1");
  q_scope a, b;
  cr_assert_eq(q_run(&a, "SELECT pg_backend_pid()", NULL, false, true), 0);
  int64_t broken = ascope_postgres_stat("broken");
  t_raw(t_sql("SELECT pg_terminate_backend(%lld)", (long long)a.cb.first));
  /* the idle connection's socket is watched: the driver sees it go */
  while (!broke(&broken)) uv_run(ascope_rt_loop(T_rt), UV_RUN_ONCE);
  cr_assert_eq(q_run(&b, "SELECT pg_backend_pid()", NULL, false, true), 0, "%s", b.t.msg);
  cr_assert_neq(b.cb.first, a.cb.first, "a new backend");
  cr_assert_eq(ascope_pool_stat(pool, "discarded"), 1);
  cr_assert_eq(ascope_pool_stat(pool, "size"), 1);
  pool_close_all();
}

typedef struct kill_ctx {
  int64_t pid;
  bool done;
} kill_ctx;

/* The sleep's text names this process, so that no other test's backend is
 * killed; polled until the statement runs, whatever the machine's pace. */
static char kill_sql[128];

static void kill_when_running(void *ud) {
  kill_ctx *k = ud;
  int64_t killed = t_raw_int(t_sql("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                                   "WHERE query = '%s'",
                                   kill_sql));
  if (killed == 0) {
    t_after(5, kill_when_running, k);
    return;
  }
  k->done = true;
}

Test(pg_pool, a_backend_killed_while_in_use_fails_its_scope_and_is_discarded) {
  pool_open("max=1");
  q_scope a, b;
  snprintf(kill_sql, sizeof kill_sql, "SELECT pg_sleep(30) /* %s */", t_name("pool_kill"));
  ascope *s = q_scope_new(&a, kill_sql);
  a.cb.pass = true;
  static kill_ctx k;
  k.done = false;
  t_after(5, kill_when_running, &k);
  int rc = t_run(s, &a.t);
  cr_assert(k.done);
  /* the server's own words for it (57P01), or the lost connection's */
  cr_assert(rc == ASCOPE_EDRIVER || rc == ASCOPE_ECLOSED, "%s %s", ascope_err_name(rc), a.t.msg);
  cr_assert(!strcmp(a.t.code, "57P01") || !strcmp(a.t.code, "08006"), "code %s", a.t.code);
  cr_assert_eq(q_run(&b, "SELECT 7", NULL, false, true), 0, "%s", b.t.msg);
  cr_assert_eq(b.cb.first, 7);
  cr_assert_eq(ascope_pool_stat(pool, "discarded"), 1);
  pool_close_all();
}

Test(pg_pool, a_server_that_refuses_fails_the_waiter_with_the_connect_error) {
  pool = ascope_sql_pool_new(T_rt, ascope_postgres(), "host=127.0.0.1 port=1 connect_timeout=5",
                             "max=2");
  cr_assert_not_null(pool);
  q_scope a;
  int rc = q_run(&a, "SELECT 1", NULL, false, true);
  cr_assert_eq(rc, ASCOPE_EDRIVER, "%s", ascope_err_name(rc));
  cr_assert_str_eq(a.t.driver, "postgres");
  cr_assert_str_eq(a.t.code, "08001");
  cr_assert_eq(ascope_pool_stat(pool, "connect_errors"), 1);
  cr_assert_eq(ascope_pool_stat(pool, "size"), 0);
  pool_close_all();
}

/* The scope whose body finds both connections in use closes the pool:
 * right then, two scopes hold connections and four wait, whatever the
 * machine's pace (a timer polling for that state could come late, after
 * the first two were done and two waiters served). */
static void body_then_close(ascope *s, t_scope *t) {
  q_body(s, t);
  if (ascope_pool_stat(pool, "in_use") == 2 && closed == 0 && !pool_closing) {
    pool_closing = true;
    ascope_pool_close(pool, on_closed, NULL);
  }
}

Test(pg_pool, closing_with_connections_in_use_and_waiters_queued) {
  pool_open("max=2");
  closed = 0;
  static q_scope qs[6];
  pool_closing = false;
  for (int i = 0; i < 6; i++) {
    ascope *s = q_scope_new(&qs[i], "SELECT 1 FROM pg_sleep(0.2)");
    qs[i].t.body = body_then_close;
    cr_assert_eq(ascope_start(s, t_body, t_done, &qs[i].t), 0);
  }
  cr_assert_eq(ascope_rt_run(T_rt), 0);
  cr_assert_eq(closed, 1);
  int ok = 0, refused = 0;
  for (int i = 0; i < 6; i++) {
    cr_assert_eq(qs[i].t.done_calls, 1);
    if (qs[i].t.status == 0) ok++;
    if (qs[i].t.status == ASCOPE_ECLOSED) {
      refused++;
      cr_assert_str_eq(qs[i].t.code, "POOL_CLOSED");
    }
  }
  cr_assert_eq(ok, 2, "the two in use finished their work");
  cr_assert_eq(refused, 4, "the waiters were refused");
  pool = NULL;
}

Test(pg_pool, a_pool_by_url) {
  char why[256];
  cr_assert_null(ascope_sql_pool_new_url(T_rt, "nosuchdriver://x", NULL, why, sizeof why));
  cr_assert_neq(why[0], '\0');
  cr_assert_null(ascope_sql_pool_new_url(T_rt, "no scheme here", NULL, why, sizeof why));
  pool = ascope_sql_pool_new_url(T_rt, "postgresql://127.0.0.1:1/x", "max=1", why, sizeof why);
  cr_assert_not_null(pool, "%s", why);
  cr_assert_eq((const void *)ascope_pool_driver(pool), (const void *)ascope_postgres());
  pool_close_all();
}

/* mode=shared: 64 scopes on 2 connections, statements pipelined; one scope
 * with a transaction has its connection to itself while the transaction
 * is open: no other scope's statement runs inside it (a statement inside
 * would see the transaction's id, assigned by its INSERT). */
static q_scope shared_q[64];

static void tx_body(ascope *s, t_scope *t) {
  q_scope *q = (q_scope *)t;
  ascope_sql *db = ascope_sql_resource(s, 0);
  q->cb.db = q->cb2.db = db;
  q->cb.pass = q->cb2.pass = true;
  cr_assert_eq(ascope_sql_exec(s, db, q->sql, NULL, t_cb_fn, &q->cb), 0);
  cr_assert_eq(ascope_sql_query(s, db, "SELECT 1 FROM pg_sleep(0.3)", NULL, t_cb_fn, &q->cb2), 0);
}

Test(pg_pool, shared_mode_pipelines_many_scopes_and_isolates_a_transaction) {
  const char *tbl = t_name("pool_shared");
  t_raw(t_sql("DROP TABLE IF EXISTS %s; CREATE TABLE %s (v int)", tbl, tbl));
  pool_open("mode=shared max=2");
  q_scope txq;
  memset(&txq, 0, sizeof txq);
  txq.sql = t_sql("INSERT INTO %s VALUES (1)", tbl);
  txq.t.body = tx_body;
  ascope *ts = ascope_new(T_rt);
  cr_assert_eq(ascope_use_sql_pool(ts, pool), 0);
  cr_assert_eq(ascope_use_sql_tx_at(ts, ascope_postgres(), 0, NULL), 0);
  cr_assert_eq(ascope_start(ts, t_body, t_done, &txq.t), 0);
  for (int i = 0; i < 64; i++) {
    q_start(&shared_q[i], "SELECT coalesce(txid_current_if_assigned(), 0) FROM pg_sleep(0.005)");
    shared_q[i].cb.pass = true;
  }
  cr_assert_eq(ascope_rt_run(T_rt), 0);
  cr_assert_eq(txq.t.status, 0, "%s", txq.t.msg);
  for (int i = 0; i < 64; i++) {
    cr_assert_eq(shared_q[i].t.status, 0, "%s", shared_q[i].t.msg);
    cr_assert_eq(shared_q[i].cb.first, 0, "scope %d ran inside the transaction", i);
  }
  cr_assert_leq(ascope_pool_stat(pool, "created"), 2);
  cr_assert_eq(t_raw_int(t_sql("SELECT count(*) FROM %s", tbl)), 1, "the transaction committed");
  pool_close_all();
  t_raw(t_sql("DROP TABLE %s", tbl));
}

/* mode=shared: a scope's deadline is its own. Its statements wait in the
 * pipeline behind another scope's long one; at the deadline they are
 * answered at once (their results dropped when they come), not when the
 * other scope's statement ends: the last one used to wait for its turn on
 * the server, to be cancelled there, and its scope ended 0.9 s late. */
Test(pg_pool, a_deadline_is_not_held_by_another_scopes_statement_ahead) {
  pool_open("mode=shared max=1");
  q_scope warm, slow, quick;
  cr_assert_eq(q_run(&warm, "SELECT 1", NULL, false, true), 0, "%s", warm.t.msg);
  q_start(&slow, "SELECT 1 FROM pg_sleep(1)");
  slow.cb.pass = true;
  ascope *s = q_scope_new(&quick, "SELECT 1");
  quick.sql2 = "SELECT 2";
  cr_assert_eq(ascope_set_timeout(s, 100), 0);
  uint64_t t0 = t_now_ms();
  cr_assert_eq(ascope_start(s, t_body, t_done, &quick.t), 0);
  cr_assert_eq(ascope_rt_run(T_rt), 0);
  cr_assert_eq(quick.t.status, ASCOPE_ETIMEDOUT);
  cr_assert_eq(quick.cb.status, ASCOPE_ECANCELED);
  cr_assert_eq(quick.cb2.status, ASCOPE_ECANCELED);
  cr_assert_lt(quick.t.t_done - t0, 900, "ended %llu ms after its start, behind the other scope",
               (unsigned long long)(quick.t.t_done - t0));
  cr_assert_eq(slow.t.status, 0, "%s", slow.t.msg);
  cr_assert_eq(slow.cb.first, 1);
  pool_close_all();
}
