/* Pipelining: many scopes' statements on one connection, sent without
 * waiting and matched to their own operations; a failure that stays with
 * its own statement; cancel requests (a deadline, ascope_cancel) that stop
 * the server's work and never hit the next statement; the server's
 * statement_timeout; a backend terminated mid-query. */
#include "pg_support.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

TestSuite(postgres_pipeline, .init = t_init, .fini = t_fini);

#define N 64

/* A child scope on its parent's connection: one query, its own parameter. */
struct child {
  t_scope t;
  ascope_sql *db;
  int index, checked, queries, fail_every;
  int64_t got;
  t_cb cb;
  int tcp_seen, corked_seen; /* the process's TCP sockets when its answer came */
};

/* The process's TCP sockets, and how many of them are corked. */
static void count_tcp(int *tcp, int *corked) {
  *tcp = *corked = 0;
  for (int fd = 3; fd < 1024; fd++) {
    int type = 0, on = 0;
    socklen_t len = sizeof type;
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) != 0 || type != SOCK_STREAM) continue;
    len = sizeof on;
    if (getsockopt(fd, IPPROTO_TCP, TCP_CORK, &on, &len) != 0) continue; /* not TCP */
    ++*tcp;
    *corked += on != 0;
  }
}

static int check_own(ascope *s, int status, ascope_rows *rows, void *ud) {
  (void)s;
  struct child *c = ud;
  if (status) return status;
  c->got = ascope_rows_int64(rows, 0, 0);
  if (c->got == c->index * 1000 + c->checked) c->checked++;
  count_tcp(&c->tcp_seen, &c->corked_seen);
  return 0;
}

static void child_body(ascope *s, t_scope *t) {
  struct child *c = (struct child *)t;
  ascope_sql_params *p = ascope_sql_params_new();
  for (int q = 0; q < c->queries; q++) {
    ascope_sql_params_clear(p);
    ascope_sql_params_add_int64(p, c->index * 1000 + q);
    bool fail = c->fail_every && c->index % c->fail_every == 0 && q == c->queries / 2;
    ascope_sql_query(s, c->db, fail ? "SELECT $1::int / 0" : "SELECT $1::int", p, check_own, c);
  }
  ascope_sql_params_free(p);
}

struct fan {
  t_scope t;
  struct child kids[N];
  int queries, fail_every;
  int64_t flushes_before, corked_before;
};

static void fan_body(ascope *s, t_scope *t) {
  struct fan *f = (struct fan *)t;
  ascope_sql *db = ascope_resource(s, 0);
  f->flushes_before = ascope_postgres_stat("flushes");
  f->corked_before = ascope_postgres_stat("corked");
  for (int i = 0; i < N; i++) {
    struct child *c = &f->kids[i];
    c->t.body = child_body;
    c->db = db;
    c->index = i;
    c->queries = f->queries;
    c->fail_every = f->fail_every;
    ascope *k = ascope_child(s);
    cr_assert_not_null(k);
    cr_assert_eq(ascope_start(k, t_body, t_done, c), 0);
  }
}

static int run_fan_with(struct fan *f, int mode, const char *options) {
  f->t.body = fan_body;
  ascope *s = ascope_new(T_rt);
  ascope_set_mode(s, mode);
  ascope_use_postgres(s, t_dsn(), options);
  return t_run(s, &f->t);
}

static int run_fan(struct fan *f, int mode) {
  return run_fan_with(f, mode, NULL);
}

Test(postgres_pipeline, sixty_four_scopes_share_one_connection) {
  struct fan f = {.queries = 1};
  cr_assert_eq(run_fan(&f, ASCOPE_FAIL_FAST), 0, "%s", f.t.msg);
  for (int i = 0; i < N; i++) {
    cr_assert_eq(f.kids[i].t.status, 0);
    cr_assert_eq(f.kids[i].checked, 1, "child %d got %lld", i, (long long)f.kids[i].got);
  }
  cr_assert_eq(ascope_postgres_stat("opened"), 1);
  cr_assert_eq(ascope_postgres_stat("statements"), N);
  /* 64 bodies ran in one loop iteration: their statements went in one round */
  cr_assert_eq(ascope_postgres_stat("flushes") - f.flushes_before, 1, "%lld rounds",
               (long long)(ascope_postgres_stat("flushes") - f.flushes_before));
  cr_assert_eq(ascope_postgres_stat("max_pipeline"), N, "all 64 in flight at once");
  /* over TCP the round went corked, and was uncorked before any answer */
  cr_assert_eq(ascope_postgres_stat("corked") - f.corked_before, 1);
  for (int i = 0; i < N; i++) {
    cr_assert_geq(f.kids[i].tcp_seen, 1, "the connection is a TCP socket of this process");
    cr_assert_eq(f.kids[i].corked_seen, 0, "child %d: a socket was left corked", i);
  }
}

Test(postgres_pipeline, many_statements_each_from_many_scopes) {
  struct fan f = {.queries = 20};
  cr_assert_eq(run_fan(&f, ASCOPE_FAIL_FAST), 0, "%s", f.t.msg);
  for (int i = 0; i < N; i++) cr_assert_eq(f.kids[i].checked, 20, "child %d", i);
  cr_assert_geq(ascope_postgres_stat("max_pipeline"), N);
  cr_assert_eq(ascope_postgres_stat("opened"), 1);
}

Test(postgres_pipeline, a_failing_statement_fails_only_its_own_scope) {
  struct fan f = {.queries = 5, .fail_every = 8};
  cr_assert_eq(run_fan(&f, ASCOPE_COLLECT_ALL), 0, "%s", f.t.msg);
  for (int i = 0; i < N; i++) {
    struct child *c = &f.kids[i];
    if (i % 8 == 0) {
      cr_assert_eq(c->t.status, ASCOPE_EDRIVER, "child %d", i);
      cr_assert_str_eq(c->t.code, "22012");
      cr_assert_eq(c->checked, 2, "its statements before the failure ran; child %d", i);
    } else {
      cr_assert_eq(c->t.status, 0, "child %d: %s", i, c->t.msg);
      cr_assert_eq(c->checked, 5, "child %d", i);
    }
  }
}

/* Many connections at once on one loop, each with its own pipeline. */
static int count_many(ascope *s, int status, ascope_rows *rows, void *ud) {
  (void)s;
  struct child *c = ud;
  if (status) return status;
  if (ascope_rows_int64(rows, 0, 0) == c->index) c->checked++;
  return 0;
}

static void conn_body(ascope *s, t_scope *t) {
  struct child *c = (struct child *)t;
  ascope_sql_params *p = ascope_sql_params_new();
  ascope_sql_params_add_int64(p, c->index);
  for (int q = 0; q < 50; q++)
    ascope_sql_query(s, ascope_resource(s, 0), "SELECT $1::int8", p, count_many, c);
  ascope_sql_params_free(p);
}

Test(postgres_pipeline, twenty_connections_at_once) {
  static struct child kids[20];
  for (int i = 0; i < 20; i++) {
    kids[i] = (struct child){.t.body = conn_body, .index = i};
    ascope *s = ascope_new(T_rt);
    ascope_use_postgres(s, t_dsn(), NULL);
    cr_assert_eq(ascope_start(s, t_body, t_done, &kids[i]), 0);
  }
  cr_assert_eq(ascope_rt_run(T_rt), 0);
  for (int i = 0; i < 20; i++) {
    cr_assert_eq(kids[i].t.done_calls, 1);
    cr_assert_eq(kids[i].t.status, 0, "%s", kids[i].t.msg);
    cr_assert_eq(kids[i].checked, 50);
  }
  cr_assert_eq(ascope_postgres_stat("opened"), 20);
}

/* ---- sync=batch: one sync point per round ----------------------------------------------- */

Test(postgres_pipeline, sync_batch_shares_one_sync_point_per_round) {
  struct fan f = {.queries = 1};
  cr_assert_eq(run_fan_with(&f, ASCOPE_FAIL_FAST, "sync=batch"), 0, "%s", f.t.msg);
  for (int i = 0; i < N; i++) cr_assert_eq(f.kids[i].checked, 1, "child %d", i);
  cr_assert_eq(ascope_postgres_stat("statements"), N);
  cr_assert_eq(ascope_postgres_stat("syncs"), 1, "%lld", (long long)ascope_postgres_stat("syncs"));
  struct fan g = {.queries = 20, .fail_every = 8};
  cr_assert_eq(run_fan_with(&g, ASCOPE_COLLECT_ALL, "sync=batch"), 0, "%s", g.t.msg);
  for (int i = 0; i < N; i++) {
    if (i % 8 == 0)
      cr_assert_eq(g.kids[i].t.status, ASCOPE_EDRIVER, "child %d", i);
    else
      cr_assert_eq(g.kids[i].checked, 20, "child %d: %s", i, g.kids[i].t.msg);
  }
  cr_assert_gt(ascope_postgres_stat("retried"), 0, "the rounds with a failure were sent again");
}

/* Statements of one round that a failure rolled back run again, so each
 * scope's INSERT is in the table exactly once, and only the duplicates
 * fail. */
struct ins {
  t_scope t;
  ascope_sql *db;
  int id;
};

static void ins_body(ascope *s, t_scope *t) {
  struct ins *x = (struct ins *)t;
  ascope_sql_params *p = ascope_sql_params_new();
  ascope_sql_params_add_int64(p, x->id);
  ascope_sql_exec(s, x->db, t_sql("INSERT INTO %s VALUES ($1)", t_name("once")), p, NULL, NULL);
  ascope_sql_params_free(p);
}

struct ins_fan {
  t_scope t;
  struct ins kids[N];
  t_cb vacuum;
};

static void ins_fan_body(ascope *s, t_scope *t) {
  struct ins_fan *f = (struct ins_fan *)t;
  for (int i = 0; i < N; i++) {
    struct ins *x = &f->kids[i];
    x->t.body = ins_body;
    x->db = ascope_resource(s, 0);
    x->id = i % 8 == 0 && i > 0 ? i - 1 : i; /* 7 duplicates */
    ascope *k = ascope_child(s);
    ascope_start(k, t_body, t_done, x);
  }
  /* cannot run in a transaction block: in a shared round it runs again alone */
  ascope_sql_exec(s, ascope_resource(s, 0), t_sql("VACUUM %s", t_name("once")), NULL, t_cb_fn,
                  &f->vacuum);
}

Test(postgres_pipeline, sync_batch_keeps_each_statement_its_own_outcome) {
  t_raw(t_sql("CREATE TABLE %s(id int PRIMARY KEY)", t_name("once")));
  struct ins_fan f = {.t.body = ins_fan_body};
  ascope *s = ascope_new(T_rt);
  ascope_set_mode(s, ASCOPE_COLLECT_ALL);
  ascope_use_postgres(s, t_dsn(), "sync=batch");
  cr_assert_eq(t_run(s, &f.t), 0, "%s", f.t.msg);
  int failed = 0;
  for (int i = 0; i < N; i++) {
    if (f.kids[i].t.status == 0) continue;
    failed++;
    cr_assert_str_eq(f.kids[i].t.code, "23505", "child %d: %s", i, f.kids[i].t.msg);
  }
  cr_assert_eq(failed, 7);
  cr_assert_eq(f.vacuum.status, 0);
  cr_assert_eq(t_raw_int(t_sql("SELECT count(*) FROM %s", t_name("once"))), N - 7);
}

/* ---- deadlines and cancellation --------------------------------------------------------- */

struct sleeper {
  t_scope t;
  t_cb q;
  const char *sql;
};

static void sleep_body(ascope *s, t_scope *t) {
  struct sleeper *z = (struct sleeper *)t;
  z->q.db = ascope_resource(s, 0);
  ascope_sql_query(s, ascope_resource(s, 0), z->sql ? z->sql : LONG_SLEEP, NULL, t_cb_fn, &z->q);
}

/* The deadline counts the connect too: on a machine so busy that it passes
 * before the body ran (no query to stop, which proves nothing), the scope
 * runs again with a longer one. */
Test(postgres_pipeline, a_deadline_stops_a_long_query_on_the_server) {
  static const uint64_t deadlines[] = {200, 1000, 4000};
  struct sleeper z;
  uint64_t ms = 0;
  for (size_t i = 0; i < 3; i++) {
    ms = deadlines[i];
    z = (struct sleeper){.t.body = sleep_body};
    ascope *s = ascope_new(T_rt);
    ascope_use_postgres(s, t_dsn(), NULL);
    ascope_set_timeout(s, ms);
    cr_assert_eq(t_run(s, &z.t), ASCOPE_ETIMEDOUT);
    if (z.q.calls) break;
  }
  uint64_t took = z.t.t_done - z.t.t_start;
  cr_assert_geq(took, ms - 5);
  cr_assert_lt(took, ms + 1800, "took %llu ms", (unsigned long long)took);
  cr_assert_eq(z.q.calls, 1, "the body never ran before the deadline");
  cr_assert_eq(z.q.status, ASCOPE_ECANCELED, "the query saw the cancellation");
  cr_assert_str_eq(z.q.code, "57014", "the server stopped it");
  cr_assert_geq(ascope_postgres_stat("cancels"),
                1); /* again if the first landed between statements */
}

Test(postgres_pipeline, the_server_statement_timeout_is_the_server_error) {
  struct sleeper z = {.t.body = sleep_body};
  char dsn[1200];
  ascope *s = ascope_new(T_rt);
  snprintf(dsn, sizeof dsn, "%s options='-c statement_timeout=150'", t_dsn());
  ascope_use_postgres(s, dsn, NULL);
  z.q.pass = true; /* the error fails the scope */
  cr_assert_eq(t_run(s, &z.t), ASCOPE_EDRIVER);
  cr_assert_eq(z.q.status, ASCOPE_EDRIVER);
  cr_assert_str_eq(z.t.code, "57014");
  cr_assert(strstr(z.t.msg, "statement timeout"), "%s", z.t.msg);
  cr_assert_lt(z.t.t_done - z.t.t_start, 2000);
  cr_assert_eq(ascope_postgres_stat("cancels"), 0, "the server stopped it by itself");
}

/* A child with a deadline on its parent's connection: the child's
 * statement is the one the backend runs, so a cancel request stops it on
 * the server; the parent's statement asked for meanwhile waits for the
 * connection to be back to idle, then runs. */
struct shared {
  t_scope t, kid;
  t_cb after, kidq;
  ascope_sql *db;
  ascope *parent;
};

static void kid_body(ascope *s, t_scope *t) {
  struct shared *sh = (struct shared *)((char *)t - offsetof(struct shared, kid));
  ascope_sql_query(s, sh->db, LONG_SLEEP, NULL, t_cb_fn, &sh->kidq);
}

static void kid_done_then_query(ascope *s, int status, void *ud) {
  struct shared *sh = (struct shared *)((char *)ud - offsetof(struct shared, kid));
  t_done(s, status, ud);
  ascope_sql_query(sh->parent, sh->db, "SELECT 8", NULL, t_cb_fn, &sh->after);
}

static void shared_body(ascope *s, t_scope *t) {
  struct shared *sh = (struct shared *)t;
  sh->db = ascope_resource(s, 0);
  sh->parent = s;
  sh->kidq.db = sh->db;
  sh->kid.body = kid_body;
  ascope *k = ascope_child(s);
  ascope_set_timeout(k, 150);
  ascope_start(k, t_body, kid_done_then_query, &sh->kid);
}

Test(postgres_pipeline, a_child_times_out_and_the_parent_goes_on) {
  struct shared sh = {.t.body = shared_body};
  ascope *s = ascope_new(T_rt);
  ascope_set_mode(s, ASCOPE_COLLECT_ALL); /* the child's timeout is its own */
  ascope_use_postgres(s, t_dsn(), NULL);
  cr_assert_eq(t_run(s, &sh.t), 0, "%s", sh.t.msg);
  cr_assert_eq(sh.kid.status, ASCOPE_ETIMEDOUT);
  cr_assert_eq(sh.kidq.status, ASCOPE_ECANCELED);
  cr_assert_str_eq(sh.kidq.code, "57014", "the server stopped it");
  cr_assert_eq(sh.after.status, 0);
  cr_assert_eq(sh.after.first, 8);
  cr_assert_lt(sh.t.t_done - sh.t.t_start, 3000);
  cr_assert_geq(ascope_postgres_stat("cancels"), 1);
}

/* A cancelled statement with another scope's statement already pipelined
 * behind it: a cancel request could land on that one, so none is sent. The
 * cancelled scope ends at once with ASCOPE_ECANCELED; its statement runs
 * to its end on the server (its row is there), and the statement behind
 * it gets its own result, after it. */
struct behind {
  t_scope t, kid;
  t_cb kidq, next;
  ascope_sql *db;
  ascope *parent;
  bool kid_done_first;
};

static void behind_kid_body(ascope *s, t_scope *t) {
  struct behind *b = (struct behind *)((char *)t - offsetof(struct behind, kid));
  ascope_sql_exec(s, b->db,
                  t_sql("INSERT INTO %s SELECT 1 FROM pg_sleep(0.4)", t_name("ranthrough")), NULL,
                  t_cb_fn, &b->kidq);
  ascope_sql_query(b->parent, b->db, "SELECT 9", NULL, t_cb_fn, &b->next);
}

static void behind_kid_done(ascope *s, int status, void *ud) {
  struct behind *b = (struct behind *)((char *)ud - offsetof(struct behind, kid));
  t_done(s, status, ud);
  b->kid_done_first = b->next.calls == 0;
}

static void behind_body(ascope *s, t_scope *t) {
  struct behind *b = (struct behind *)t;
  b->db = ascope_resource(s, 0);
  b->parent = s;
  b->kid.body = behind_kid_body;
  ascope *k = ascope_child(s);
  ascope_set_timeout(k, 50);
  ascope_start(k, t_body, behind_kid_done, &b->kid);
}

Test(postgres_pipeline, a_cancelled_statement_with_work_behind_it_runs_to_its_end) {
  t_raw(t_sql("CREATE TABLE %s (x int)", t_name("ranthrough")));
  struct behind b = {.t.body = behind_body};
  ascope *s = ascope_new(T_rt);
  ascope_set_mode(s, ASCOPE_COLLECT_ALL);
  ascope_use_postgres(s, t_dsn(), NULL);
  cr_assert_eq(t_run(s, &b.t), 0, "%s", b.t.msg);
  cr_assert_eq(b.kid.status, ASCOPE_ETIMEDOUT);
  cr_assert_eq(b.kidq.calls, 1);
  cr_assert_eq(b.kidq.status, ASCOPE_ECANCELED);
  cr_assert(b.kid_done_first, "the cancelled scope did not wait for its statement");
  cr_assert_eq(b.next.status, 0);
  cr_assert_eq(b.next.first, 9);
  cr_assert_eq(ascope_postgres_stat("cancels"), 0, "no cancel request could be aimed safely");
  cr_assert_eq(t_raw_int(t_sql("SELECT count(*)::int FROM %s", t_name("ranthrough"))), 1,
               "the abandoned statement ran to its end");
  t_raw(t_sql("DROP TABLE %s", t_name("ranthrough")));
}

/* cancel_timeout bounds how long the cancelled statement takes to come
 * back, not the other scopes' work in flight behind it. */
struct longer {
  t_scope t, kid;
  t_cb kidq, slow, after;
  ascope_sql *db;
};

static void longer_kid(ascope *s, t_scope *t) {
  struct longer *l = (struct longer *)((char *)t - offsetof(struct longer, kid));
  ascope_sql_query(s, l->db, LONG_SLEEP, NULL, t_cb_fn, &l->kidq);
}

static void longer_body(ascope *s, t_scope *t) {
  struct longer *l = (struct longer *)t;
  l->db = ascope_resource(s, 0);
  l->kid.body = longer_kid;
  ascope *k = ascope_child(s);
  ascope_set_timeout(k, 100);
  ascope_start(k, t_body, t_done, &l->kid);
  /* behind the child's statement: 600 ms of the parent's own work */
  ascope_sql_query(s, l->db, "SELECT 6 FROM pg_sleep(0.6)", NULL, t_cb_fn, &l->slow);
}

Test(postgres_pipeline, cancel_timeout_bounds_only_the_cancelled_statement) {
  struct longer l = {.t.body = longer_body};
  ascope *s = ascope_new(T_rt);
  ascope_set_mode(s, ASCOPE_COLLECT_ALL);
  ascope_use_postgres(s, t_dsn(), "cancel_timeout=200");
  cr_assert_eq(t_run(s, &l.t), 0, "%s", l.t.msg);
  cr_assert_eq(l.kid.status, ASCOPE_ETIMEDOUT);
  cr_assert_eq(l.kidq.status, ASCOPE_ECANCELED);
  cr_assert_eq(l.slow.status, 0, "the parent's statement ran to its end");
  cr_assert_eq(l.slow.first, 6);
  cr_assert_eq(ascope_postgres_stat("broken"), 0);
}

/* The race a late cancel request makes: a short statement cancelled just
 * as it may finish, another scope's statement right behind it. Over many
 * rounds the cancel lands on every side of the boundary; the statement
 * behind must never be the one it kills. */
#define ROUNDS 60

struct race;
struct round {
  struct race *r;
  ascope *k;
  bool done;
};

struct race {
  t_scope t;
  ascope *parent;
  ascope_sql *db;
  int round, ok_behind, cancelled, completed;
  struct round rounds[ROUNDS];
};

static void race_round(ascope *s, struct race *r);

static int behind_cb(ascope *s, int status, ascope_rows *rows, void *ud) {
  struct race *r = ud;
  cr_assert_eq(status, 0, "round %d: the statement behind failed: %s", r->round,
               ascope_sql_errmsg(r->db));
  cr_assert_eq(ascope_rows_int64(rows, 0, 0), r->round);
  r->ok_behind++;
  if (++r->round < ROUNDS) race_round(s, r);
  return 0;
}

static int target_cb(ascope *s, int status, ascope_rows *rows, void *ud) {
  (void)rows;
  struct race *r = ud;
  if (status == ASCOPE_ECANCELED)
    r->cancelled++;
  else if (status == 0)
    r->completed++;
  else
    cr_assert_fail("round %d: the target failed with %d: %s", r->round, status,
                   ascope_sql_errmsg(r->db));
  (void)s;
  return 0;
}

static void target_body(ascope *s, void *ud) {
  struct round *rd = ud;
  static const char *sleeps[] = {"SELECT pg_sleep(0.0002)", "SELECT pg_sleep(0.0005)",
                                 "SELECT pg_sleep(0.001)", "SELECT pg_sleep(0.002)"};
  struct race *r = rd->r;
  ascope_sql_query(s, r->db, sleeps[(rd - r->rounds) / 4 % 4], NULL, target_cb, r);
  /* the parent's statement, right behind the target in the pipeline; it
   * lasts a while, so a cancel request landing after the target is done
   * does find it running */
  ascope_sql_params *p = ascope_sql_params_new();
  ascope_sql_params_add_int64(p, r->round);
  ascope_sql_query(r->parent, r->db, "SELECT $1::int FROM pg_sleep(0.004)", p, behind_cb, r);
  ascope_sql_params_free(p);
}

static void target_done(ascope *s, int status, void *ud) {
  (void)s, (void)status;
  ((struct round *)ud)->done = true;
}

static void cancel_round(void *ud) {
  struct round *rd = ud;
  if (!rd->done) ascope_cancel(rd->k);
}

static void race_round(ascope *s, struct race *r) {
  struct round *rd = &r->rounds[r->round];
  rd->r = r;
  rd->k = ascope_child(s);
  cr_assert_not_null(rd->k);
  ascope_start(rd->k, target_body, target_done, rd);
  /* cancelled after 0..3 ms, around the 0.2..2 ms the target takes; a
   * cancel request itself takes a millisecond or two to land */
  t_after((uint64_t)(r->round % 4), cancel_round, rd);
}

static void race_body(ascope *s, t_scope *t) {
  struct race *r = (struct race *)t;
  r->db = ascope_resource(s, 0);
  r->parent = s;
  race_round(s, r);
}

Test(postgres_pipeline, a_late_cancel_request_never_kills_the_next_statement) {
  struct race r = {.t.body = race_body};
  ascope *s = ascope_new(T_rt);
  ascope_set_mode(s, ASCOPE_COLLECT_ALL);
  ascope_use_postgres(s, t_dsn(), NULL);
  cr_assert_eq(t_run(s, &r.t), 0, "%s", r.t.msg);
  cr_assert_eq(r.ok_behind, ROUNDS);
  cr_assert_eq(r.cancelled + r.completed, ROUNDS);
  cr_assert_eq(ascope_postgres_stat("broken"), 0);
  cr_log_info("race: %d cancelled, %d completed, %lld cancel requests, %lld retried", r.cancelled,
              r.completed, (long long)ascope_postgres_stat("cancels"),
              (long long)ascope_postgres_stat("retried"));
}

/* ---- a backend terminated mid-query ------------------------------------------------------------
 */

struct victim {
  t_scope t;
  t_cb q, behind[3];
  int pid;
};

static void terminate(void *ud) {
  struct victim *v = ud;
  cr_assert_eq(t_raw_int(t_sql("SELECT pg_terminate_backend(%d)::int", v->pid)), 1);
}

static void victim_body(ascope *s, t_scope *t) {
  struct victim *v = (struct victim *)t;
  ascope_sql *db = ascope_resource(s, 0);
  v->pid = ascope_postgres_backend_pid(db);
  v->q.db = db;
  ascope_sql_query(s, db, LONG_SLEEP, NULL, t_cb_fn, &v->q);
  for (int i = 0; i < 3; i++) {
    v->behind[i].db = db;
    ascope_sql_query(s, db, "SELECT 1", NULL, t_cb_fn, &v->behind[i]);
  }
  t_after(150, terminate, v);
}

static void after_body(ascope *s, t_scope *t) {
  (void)t;
  ascope_sql_query(s, ascope_resource(s, 0), "SELECT 1", NULL, NULL, NULL);
}

Test(postgres_pipeline, a_terminated_backend_is_a_clean_error_and_the_next_scope_reconnects) {
  struct victim v = {.t.body = victim_body};
  cr_assert_eq(t_run_db(&v.t, NULL), 0, "the callbacks handled the errors: %s", v.t.msg);
  cr_assert_lt(v.t.t_done - v.t.t_start, 3000, "no hang");
  cr_assert_eq(v.q.calls, 1);
  cr_assert_eq(v.q.status, ASCOPE_EDRIVER, "%d %s %s", v.q.status, v.q.code, v.q.msg);
  cr_assert_str_eq(v.q.code, "57P01");
  cr_assert(strstr(v.q.msg, "terminating connection"), "%s", v.q.msg);
  for (int i = 0; i < 3; i++) {
    cr_assert_eq(v.behind[i].calls, 1);
    cr_assert_eq(v.behind[i].status, ASCOPE_ECLOSED);
    cr_assert_str_eq(v.behind[i].code, "08006");
  }
  cr_assert_eq(ascope_postgres_stat("broken"), 1);
  t_scope next = {.body = after_body};
  cr_assert_eq(t_run_db(&next, NULL), 0, "%s", next.msg);
  cr_assert_eq(ascope_postgres_stat("opened"), 2);
}

static void unhandled_victim_body(ascope *s, t_scope *t) {
  struct victim *v = (struct victim *)t;
  v->pid = ascope_postgres_backend_pid(ascope_resource(s, 0));
  ascope_sql_query(s, ascope_resource(s, 0), LONG_SLEEP, NULL, NULL, NULL);
  t_after(100, terminate, v);
}

Test(postgres_pipeline, a_terminated_backend_fails_the_scope_with_57P01) {
  struct victim v = {.t.body = unhandled_victim_body};
  cr_assert_eq(t_run_db(&v.t, NULL), ASCOPE_EDRIVER);
  cr_assert_str_eq(v.t.code, "57P01");
  cr_assert_lt(v.t.t_done - v.t.t_start, 3000);
}
