/* The PostgreSQL driver behind PgBouncer in transaction pooling mode
 * (scripts/pgbouncer-start, in front of the test cluster; its DSN in
 * ASCOPE_PGBOUNCER_DSN — without it every test fails and says so), with
 * default options: many connections each running many distinct statements
 * without an error, the pooler found at connect (named statements off,
 * counted, noted through the trace hook), statements pipelined from many
 * scopes, transactions keeping their server session, a cancel, LISTEN
 * refused with a clear error, and the server restarted behind the pooler.
 * The fallback for a pooler the connect's probe cannot see — a name taken
 * on the session — is tested on a direct connection. */
#include <ascope/postgres.h>
#include <ascope/trace.h>
#include <criterion/criterion.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pg_support.h"

TestSuite(pgbouncer, .init = t_init, .fini = t_fini, .timeout = 300);

static const char *bouncer_dsn(void) {
  const char *d = getenv("ASCOPE_PGBOUNCER_DSN");
  cr_assert(d && *d, "ASCOPE_PGBOUNCER_DSN is not set: run scripts/pgbouncer-start (scripts/test "
                     "does)");
  return d;
}

/* ---- a connection running statements one after another -------------------------------- */

typedef struct runner {
  t_scope t;
  ascope *s;
  ascope_sql *db;
  ascope_sql_params *p;
  int left, done, errors, distinct;
  char first_error[256];
} runner;

static void run_next(runner *r);

static int on_row(ascope *s, int status, ascope_rows *rows, void *ud) {
  (void)s;
  runner *r = ud;
  if (status) {
    if (r->errors++ == 0)
      snprintf(r->first_error, sizeof r->first_error, "%s: %s", ascope_sql_errcode(r->db),
               ascope_sql_errmsg(r->db));
  } else if (ascope_rows_int64(rows, 0, 0) != r->left % 1000) {
    r->errors++;
  }
  r->done++;
  if (--r->left > 0) run_next(r);
  return 0;
}

static void run_next(runner *r) {
  /* distinct texts: each seen again and again, so a direct connection
   * would prepare them under names */
  char sql[96];
  snprintf(sql, sizeof sql, "SELECT $1::int + %d - %d", r->left % r->distinct,
           r->left % r->distinct);
  ascope_sql_params_clear(r->p);
  ascope_sql_params_add_int64(r->p, r->left % 1000);
  cr_assert_eq(ascope_sql_query(r->s, r->db, sql, r->p, on_row, r), 0);
}

static void runner_body(ascope *s, t_scope *t) {
  runner *r = (runner *)t;
  r->s = s;
  r->db = ascope_sql_resource(s, 0);
  run_next(r);
}

static int notes;
static char note_text[256];
static void on_trace(const ascope_trace_event *ev, void *ud) {
  (void)ud;
  if (ev->kind != ASCOPE_TRACE_NOTE) return;
  if (notes++ == 0) snprintf(note_text, sizeof note_text, "%s %s", ev->code, ev->message);
}

Test(pgbouncer, many_connections_and_distinct_statements_run_without_an_error) {
  cr_assert_eq(ascope_rt_set_trace(T_rt, on_trace, NULL), 0);
  notes = 0;
  static runner rs[8];
  for (int i = 0; i < 8; i++) {
    rs[i] = (runner){.t.body = runner_body, .left = 200, .distinct = 20};
    rs[i].p = ascope_sql_params_new();
    ascope *s = ascope_new(T_rt);
    cr_assert_eq(ascope_use_postgres(s, bouncer_dsn(), NULL), 0);
    cr_assert_eq(ascope_start(s, t_body, t_done, &rs[i].t), 0);
  }
  cr_assert_eq(ascope_rt_run(T_rt), 0);
  for (int i = 0; i < 8; i++) {
    cr_assert_eq(rs[i].t.status, 0, "%s", rs[i].t.msg);
    cr_assert_eq(rs[i].done, 200);
    cr_assert_eq(rs[i].errors, 0, "connection %d: %d errors, the first: %s", i, rs[i].errors,
                 rs[i].first_error);
    ascope_sql_params_free(rs[i].p);
  }
  cr_assert_eq(ascope_rt_stat(T_rt, "postgres.pooled"), 8, "each connection saw the pooler");
  cr_assert_eq(ascope_rt_stat(T_rt, "postgres.prepared"), 0, "no statement was named");
  cr_assert_eq(notes, 8, "one note per connection");
  cr_assert(strstr(note_text, "POOLER") && strstr(note_text, "transaction pooler"), "%s",
            note_text);
  ascope_rt_set_trace(T_rt, NULL, NULL);
}

Test(pgbouncer, a_direct_connection_is_not_taken_for_a_pooled_one) {
  runner r = {.t.body = runner_body, .left = 50, .distinct = 5};
  r.p = ascope_sql_params_new();
  ascope *s = ascope_new(T_rt);
  cr_assert_eq(ascope_use_postgres(s, t_dsn(), NULL), 0);
  cr_assert_eq(t_run(s, &r.t), 0, "%s", r.t.msg);
  ascope_sql_params_free(r.p);
  cr_assert_eq(r.errors, 0, "%s", r.first_error);
  cr_assert_eq(ascope_rt_stat(T_rt, "postgres.pooled"), 0);
  cr_assert_eq(ascope_rt_stat(T_rt, "postgres.prepared"), 5, "the five texts were named");
}

/* A pooler the probe cannot see: on a direct connection, the name the
 * driver would take next is already taken on the session, as another
 * client's statement on a shared session would have it. */
typedef struct taken {
  t_scope t;
  t_cb cb[4];
  int next;
} taken;

/* One statement after another: a statement that ran again after another
 * behind it had run would run out of its order, and is failed instead
 * (docs/drivers/postgres.md); one at a time, nothing is behind it. */
static int taken_cb(ascope *s, int status, ascope_rows *rows, void *ud) {
  taken *k = ud;
  t_cb_fn(s, status, rows, &k->cb[k->next]);
  if (++k->next < 4)
    cr_assert_eq(ascope_sql_query(s, k->cb[0].db, "SELECT 41 + 1", NULL, taken_cb, k), 0);
  return status;
}

static void taken_body(ascope *s, t_scope *t) {
  taken *k = (taken *)t;
  ascope_sql *db = ascope_sql_resource(s, 0);
  for (int i = 0; i < 4; i++) {
    k->cb[i].db = db;
    k->cb[i].pass = true;
  }
  k->next = 0;
  /* the driver names the texts it sees in turn: this one is ascope_1 (seen
   * once, never prepared), the next one ascope_2 */
  cr_assert_eq(ascope_sql_exec(s, db, "PREPARE ascope_2 AS SELECT 0", NULL, taken_cb, k), 0);
  /* then "SELECT 41 + 1" three times: the second sight prepares ascope_2,
   * taken; it must run anyway */
}

Test(pgbouncer, a_name_taken_on_the_session_turns_naming_off_and_the_statement_runs) {
  taken k = {.t.body = taken_body};
  ascope *s = ascope_new(T_rt);
  cr_assert_eq(ascope_use_postgres(s, t_dsn(), NULL), 0);
  cr_assert_eq(t_run(s, &k.t), 0, "%s", k.t.msg);
  cr_assert_eq(k.next, 4);
  for (int i = 1; i < 4; i++) {
    cr_assert_eq(k.cb[i].status, 0, "statement %d: %s %s", i, k.cb[i].code, k.cb[i].msg);
    cr_assert_eq(k.cb[i].first, 42);
  }
  cr_assert_eq(ascope_rt_stat(T_rt, "postgres.pooled"), 1);
  cr_assert_geq(ascope_rt_stat(T_rt, "postgres.retried"), 1, "the statement ran again");
}

Test(pgbouncer, statement_cache_off_names_nothing_and_bad_values_are_refused) {
  runner r = {.t.body = runner_body, .left = 20, .distinct = 2};
  r.p = ascope_sql_params_new();
  ascope *s = ascope_new(T_rt);
  cr_assert_eq(ascope_use_postgres(s, t_dsn(), "statement_cache=off"), 0);
  cr_assert_eq(t_run(s, &r.t), 0, "%s", r.t.msg);
  cr_assert_eq(ascope_rt_stat(T_rt, "postgres.prepared"), 0);
  cr_assert_eq(ascope_rt_stat(T_rt, "postgres.pooled"), 0, "off is not a pooler seen");
  t_scope bad = {0};
  s = ascope_new(T_rt);
  cr_assert_eq(ascope_use_postgres(s, t_dsn(), "statement_cache=sometimes"), 0);
  cr_assert_eq(t_run(s, &bad), UV_EINVAL);
  cr_assert(strstr(bad.msg, "statement_cache"), "%s", bad.msg);
  ascope_sql_params_free(r.p);
}

/* ---- pipelined scopes, transactions, a cancel, LISTEN -------------------------------- */

typedef struct fan {
  t_scope t;
  int ok, bad;
} fan;

typedef struct kid {
  t_scope t;
  fan *f;
  ascope_sql *db;
  ascope_sql_params *p;
  int n, i;
} kid;

static void kid_next(kid *k, ascope *s);

static int kid_row(ascope *s, int status, ascope_rows *rows, void *ud) {
  kid *k = ud;
  if (status == 0 && ascope_rows_int64(rows, 0, 0) == k->i * 100 + k->n)
    k->f->ok++;
  else
    k->f->bad++;
  if (++k->n < 50) kid_next(k, s);
  return 0;
}

static void kid_next(kid *k, ascope *s) {
  ascope_sql_params_clear(k->p);
  ascope_sql_params_add_int64(k->p, k->i * 100 + k->n);
  cr_assert_eq(ascope_sql_query(s, k->db, "SELECT $1::int", k->p, kid_row, k), 0);
}

static void kid_body(ascope *s, t_scope *t) {
  kid *k = (kid *)t;
  kid_next(k, s);
}

static kid kids[64];

static void fan_body(ascope *s, t_scope *t) {
  fan *f = (fan *)t;
  ascope_sql *db = ascope_sql_resource(s, 0);
  for (int i = 0; i < 64; i++) {
    kids[i] = (kid){.t.body = kid_body, .f = f, .db = db, .i = i, .p = ascope_sql_params_new()};
    ascope *c = ascope_child(s);
    cr_assert_eq(ascope_start(c, t_body, t_done, &kids[i].t), 0);
  }
}

Test(pgbouncer, sixty_four_scopes_pipeline_on_one_connection_through_the_pooler) {
  fan f = {.t.body = fan_body};
  ascope *s = ascope_new(T_rt);
  cr_assert_eq(ascope_use_postgres(s, bouncer_dsn(), NULL), 0);
  cr_assert_eq(t_run(s, &f.t), 0, "%s", f.t.msg);
  for (int i = 0; i < 64; i++) ascope_sql_params_free(kids[i].p);
  cr_assert_eq(f.bad, 0);
  cr_assert_eq(f.ok, 64 * 50);
}

typedef struct txs {
  t_scope t;
  t_cb pid1, ins, pid2, fail;
  bool fail_it;
  const char *tbl;
} txs;

static void tx_body(ascope *s, t_scope *t) {
  txs *x = (txs *)t;
  ascope_sql *db = ascope_sql_resource(s, 0);
  x->pid1.db = x->ins.db = x->pid2.db = x->fail.db = db;
  x->pid1.pass = x->ins.pass = x->pid2.pass = x->fail.pass = true;
  cr_assert_eq(ascope_sql_query(s, db, "SELECT pg_backend_pid()", NULL, t_cb_fn, &x->pid1), 0);
  cr_assert_eq(
      ascope_sql_exec(s, db, t_sql("INSERT INTO %s VALUES (1)", x->tbl), NULL, t_cb_fn, &x->ins),
      0);
  cr_assert_eq(ascope_sql_query(s, db, "SELECT pg_backend_pid() FROM pg_sleep(0.05)", NULL, t_cb_fn,
                                &x->pid2),
               0);
  if (x->fail_it) cr_assert_eq(ascope_sql_query(s, db, "SELECT 1/0", NULL, t_cb_fn, &x->fail), 0);
}

Test(pgbouncer, a_transaction_keeps_its_server_session_and_follows_the_outcome) {
  const char *tbl = t_name("bouncer_tx");
  t_raw(t_sql("DROP TABLE IF EXISTS %s; CREATE TABLE %s (v int)", tbl, tbl));
  for (int fail = 0; fail < 2; fail++) {
    txs x = {.t.body = tx_body, .fail_it = fail, .tbl = tbl};
    ascope *s = ascope_new(T_rt);
    cr_assert_eq(ascope_use_postgres(s, bouncer_dsn(), NULL), 0);
    cr_assert_eq(ascope_use_sql_tx_at(s, ascope_postgres(), 0, NULL), 0);
    int rc = t_run(s, &x.t);
    cr_assert_eq(rc, fail ? ASCOPE_EDRIVER : 0, "%s", x.t.msg);
    cr_assert_eq(x.pid1.first, x.pid2.first, "one server session for the whole transaction");
  }
  cr_assert_eq(t_raw_int(t_sql("SELECT count(*) FROM %s", tbl)), 1, "committed once");
  t_raw(t_sql("DROP TABLE %s", tbl));
}

typedef struct slow {
  t_scope t;
  t_cb sleep, after;
} slow;

/* The deadline is a child's, whose body sends the sleep on the parent's
 * connection: it covers the statement only, not a connect that a busy
 * machine may make slow. */
static slow *slow_parent;
static ascope_sql *slow_db;

static void child_body(ascope *s, void *ud) {
  (void)ud;
  slow_parent->sleep.db = slow_db;
  slow_parent->sleep.pass = true;
  cr_assert_eq(ascope_sql_query(s, slow_db, LONG_SLEEP, NULL, t_cb_fn, &slow_parent->sleep), 0);
}

static void parent_body(ascope *s, t_scope *t) {
  slow_parent = (slow *)t;
  slow_db = ascope_sql_resource(s, 0);
  ascope *c = ascope_child(s);
  cr_assert_eq(ascope_set_timeout(c, 300), 0);
  cr_assert_eq(ascope_start(c, child_body, NULL, NULL), 0);
}

static void after_body(ascope *s, t_scope *t) {
  slow *w = (slow *)t;
  ascope_sql *db = ascope_sql_resource(s, 0);
  w->after.db = db;
  w->after.pass = true;
  cr_assert_eq(ascope_sql_query(s, db, "SELECT 7", NULL, t_cb_fn, &w->after), 0);
}

Test(pgbouncer, a_statement_is_cancelled_through_the_pooler) {
  slow w = {.t.body = parent_body};
  ascope *s = ascope_new(T_rt);
  cr_assert_eq(ascope_use_postgres(s, bouncer_dsn(), NULL), 0);
  uint64_t t0 = t_now_ms();
  cr_assert_eq(t_run(s, &w.t), ASCOPE_ETIMEDOUT, "%s", w.t.msg);
  cr_assert_lt(t_now_ms() - t0, 25000, "the server stopped the sleep");
  cr_assert_eq(ascope_rt_stat(T_rt, "postgres.cancels"), 1);
  /* the pooler's session is free again: a statement after it runs */
  slow a = {.t.body = after_body};
  s = ascope_new(T_rt);
  cr_assert_eq(ascope_use_postgres(s, bouncer_dsn(), NULL), 0);
  cr_assert_eq(t_run(s, &a.t), 0, "%s", a.t.msg);
  cr_assert_eq(a.after.first, 7);
}

static void listen_body(ascope *s, t_scope *t) {
  slow *w = (slow *)t;
  ascope_sql *db = ascope_sql_resource(s, 0);
  w->sleep.db = db;
  w->sleep.pass = true;
  cr_assert_eq(ascope_postgres_listen(s, db, "bouncer_chan", t_cb_fn, &w->sleep, NULL), 0);
}

Test(pgbouncer, listen_through_the_pooler_fails_with_a_clear_error) {
  slow w = {.t.body = listen_body};
  ascope *s = ascope_new(T_rt);
  cr_assert_eq(ascope_use_postgres(s, bouncer_dsn(), NULL), 0);
  int rc = t_run(s, &w.t);
  cr_assert_eq(rc, ASCOPE_EDRIVER, "%s", w.t.msg);
  cr_assert_str_eq(w.t.code, "0A000");
  cr_assert(strstr(w.t.msg, "pooler"), "%s", w.t.msg);
  cr_assert_eq(w.sleep.calls, 1, "the stream ended once, with the error");
}

/* A request refused before it is sent (LISTEN through the pooler) is
 * answered after the statements started before it, still in the pipeline
 * then, not ahead of them: results come in the order started. */
typedef struct in_order {
  t_scope t;
  t_cb first, listen;
  int first_done_before_listen;
} in_order;

static int listen_after_first(ascope *s, int status, ascope_rows *rows, void *ud) {
  in_order *o = ud;
  if (o->listen.calls == 0) o->first_done_before_listen = o->first.calls;
  return t_cb_fn(s, status, rows, &o->listen);
}

static void in_order_body(ascope *s, t_scope *t) {
  in_order *o = (in_order *)t;
  ascope_sql *db = ascope_sql_resource(s, 0);
  o->first.db = o->listen.db = db;
  o->first.pass = true; /* the refusal is handled: listen.ret 0 */
  /* in flight when the LISTEN is refused: both go in one flush */
  cr_assert_eq(ascope_sql_query(s, db, "SELECT 1", NULL, t_cb_fn, &o->first), 0);
  cr_assert_eq(ascope_postgres_listen(s, db, "bouncer_chan", listen_after_first, o, NULL), 0);
}

Test(pgbouncer, a_listen_refused_before_it_is_sent_is_answered_after_what_went_before_it) {
  in_order o = {.t.body = in_order_body};
  ascope *s = ascope_new(T_rt);
  cr_assert_eq(ascope_use_postgres(s, bouncer_dsn(), NULL), 0);
  cr_assert_eq(t_run(s, &o.t), 0, "%s", o.t.msg);
  cr_assert_eq(o.first.calls, 1);
  cr_assert_eq(o.first.status, 0, "%s", o.first.msg);
  cr_assert_eq(o.listen.calls, 1);
  cr_assert_eq(o.listen.status, ASCOPE_EDRIVER);
  cr_assert_str_eq(o.listen.code, "0A000");
  cr_assert_eq(o.first_done_before_listen, 1, "the refusal overtook the query started before it");
}

/* Waiting for its turn behind a long statement, a refused LISTEN is
 * cancelled with its scope (a deadline) like any other: answered once, and
 * the scope does not wait for the long statement to finish on its own. */
static void waiting_body(ascope *s, t_scope *t) {
  in_order *o = (in_order *)t;
  ascope_sql *db = ascope_sql_resource(s, 0);
  o->first.db = o->listen.db = db;
  cr_assert_eq(ascope_sql_query(s, db, LONG_SLEEP, NULL, t_cb_fn, &o->first), 0);
  cr_assert_eq(ascope_postgres_listen(s, db, "bouncer_chan", listen_after_first, o, NULL), 0);
}

Test(pgbouncer, a_refused_listen_waiting_for_its_turn_is_cancelled_with_its_scope) {
  in_order o = {.t.body = waiting_body};
  ascope *s = ascope_new(T_rt);
  cr_assert_eq(ascope_use_postgres(s, bouncer_dsn(), NULL), 0);
  cr_assert_eq(ascope_set_timeout(s, 300), 0);
  uint64_t t0 = t_now_ms();
  cr_assert_eq(t_run(s, &o.t), ASCOPE_ETIMEDOUT, "%s", o.t.msg);
  cr_assert_lt(t_now_ms() - t0, 25000, "the scope waited for the sleep");
  cr_assert_eq(o.first.calls, 1);
  cr_assert_eq(o.listen.calls, 1);
  cr_assert_neq(o.listen.status, 0);
}
