/* SQL pools on SQLite: one connection reused by scope after scope with a
 * reset that needs no job when nothing is left open, a transaction a plain
 * "BEGIN" left open rolled back by a reset job before the next scope, a
 * transaction use on a pooled connection, and a pool closed while its
 * connection is in use. Run under TSan too: the reset job runs on the
 * threadpool. */
#include <ascope/sqlite.h>
#include <criterion/criterion.h>
#include <string.h>

#include "sqlite_support.h"

TestSuite(sqlite_pool, .init = t_init, .fini = t_fini, .timeout = 120);

static ascope_pool *pool;
static int closed;

static void on_closed(void *ud) {
  (void)ud;
  closed++;
}

static void pool_open(const char *path, const char *options) {
  pool = ascope_sql_pool_new(T_rt, ascope_sqlite(), path, options);
  cr_assert_not_null(pool);
}

static void pool_close_all(void) {
  closed = 0;
  ascope_pool_close(pool, on_closed, NULL);
  cr_assert_eq(ascope_rt_run(T_rt), 0);
  cr_assert_eq(closed, 1);
}

typedef struct q_scope {
  t_scope t;
  const char *sql[3];
  t_cb cb[3];
} q_scope;

static void q_body(ascope *s, t_scope *t) {
  q_scope *q = (q_scope *)t;
  ascope_sql *db = ascope_sql_resource(s, 0);
  cr_assert_not_null(db);
  for (int i = 0; i < 3 && q->sql[i]; i++) {
    q->cb[i].db = db;
    q->cb[i].pass = true;
    cr_assert_eq(ascope_sql_query(s, db, q->sql[i], NULL, t_cb_fn, &q->cb[i]), 0);
  }
}

static int q_run(q_scope *q, bool tx, const char *a, const char *b, const char *c) {
  memset(q, 0, sizeof *q);
  q->sql[0] = a;
  q->sql[1] = b;
  q->sql[2] = c;
  q->t.body = q_body;
  ascope *s = ascope_new(T_rt);
  cr_assert_eq(ascope_use_sql_pool(s, pool), 0);
  if (tx) cr_assert_eq(ascope_use_sql_tx_at(s, ascope_sqlite(), 0, NULL), 0);
  return t_run(s, &q->t);
}

Test(sqlite_pool, scope_after_scope_reuses_one_connection) {
  const char *db = t_path("reuse.db");
  t_raw(db, "CREATE TABLE t (v INTEGER)");
  pool_open(db, "max=2");
  int64_t opened = ascope_sqlite_stat("opened");
  for (int i = 0; i < 10; i++) {
    q_scope q;
    cr_assert_eq(q_run(&q, false, "INSERT INTO t VALUES (1)", "SELECT count(*) FROM t", NULL), 0,
                 "%s", q.t.msg);
    cr_assert_eq(q.cb[1].first, i + 1);
  }
  cr_assert_eq(ascope_sqlite_stat("opened") - opened, 1);
  cr_assert_eq(ascope_rt_stat(T_rt, "sqlite.resets"), 10);
  /* Nothing was left open: a reset is a job only when the hop that ran the
   * last statement has not quite finished (how often depends on the
   * machine, never on the scope) */
  cr_assert_leq(ascope_rt_stat(T_rt, "sqlite.reset_jobs"), 10);
  pool_close_all();
}

Test(sqlite_pool, a_transaction_a_plain_begin_left_open_is_rolled_back) {
  const char *db = t_path("begin.db");
  t_raw(db, "CREATE TABLE t (v INTEGER)");
  pool_open(db, "max=1");
  q_scope a, b;
  cr_assert_eq(q_run(&a, false, "BEGIN", "INSERT INTO t VALUES (1)", NULL), 0, "%s", a.t.msg);
  cr_assert_eq(q_run(&b, false, "SELECT count(*) FROM t", NULL, NULL), 0, "%s", b.t.msg);
  cr_assert_eq(b.cb[0].first, 0, "rolled back before the next scope");
  cr_assert_geq(ascope_rt_stat(T_rt, "sqlite.reset_jobs"), 1, "the open transaction took a job");
  pool_close_all();
  cr_assert_eq(t_raw_int(db, "SELECT count(*) FROM t"), 0);
}

Test(sqlite_pool, a_transaction_use_on_a_pooled_connection_follows_the_outcome) {
  const char *db = t_path("tx.db");
  t_raw(db, "CREATE TABLE t (v INTEGER)");
  pool_open(db, "max=1");
  q_scope ok, bad;
  cr_assert_eq(q_run(&ok, true, "INSERT INTO t VALUES (1)", NULL, NULL), 0, "%s", ok.t.msg);
  int rc = q_run(&bad, true, "INSERT INTO t VALUES (2)", "SELECT no_such_function()", NULL);
  cr_assert_eq(rc, ASCOPE_EDRIVER);
  pool_close_all();
  cr_assert_eq(t_raw_int(db, "SELECT count(*) FROM t"), 1);
  cr_assert_eq(t_raw_int(db, "SELECT sum(v) FROM t"), 1);
}

/* The body starts its statement and closes the pool while it holds the
 * connection. */
static void body_then_close(ascope *s, t_scope *t) {
  q_body(s, t);
  ascope_pool_close(pool, on_closed, NULL);
}

Test(sqlite_pool, closing_while_in_use_closes_after_the_scope) {
  const char *db = t_path("close.db");
  pool_open(db, "max=1");
  closed = 0;
  q_scope q;
  memset(&q, 0, sizeof q);
  q.sql[0] = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 300000) "
             "SELECT count(*) FROM c";
  q.t.body = body_then_close;
  ascope *s = ascope_new(T_rt);
  cr_assert_eq(ascope_use_sql_pool(s, pool), 0);
  cr_assert_eq(t_run(s, &q.t), 0, "%s", q.t.msg);
  cr_assert_eq(q.cb[0].first, 300000);
  cr_assert_eq(ascope_rt_run(T_rt), 0);
  cr_assert_eq(closed, 1);
}
