/* Streams with back-pressure (single-row mode, batches, pause, resume,
 * stop, cancel), COPY in and out (a million rows each way), and LISTEN /
 * NOTIFY as a stream. */
#include "pg_support.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

TestSuite(postgres_stream, .init = t_init, .fini = t_fini);

/* ---- streams ------------------------------------------------------------------------- */

struct reader {
  t_scope t;
  ascope_sql *db;
  ascope_op *op;
  int batches, pauses, ends, end_status;
  int pause_every, stop_after;
  uint64_t pause_ms;
  int64_t rows, next, wanted;
  size_t max_memory, max_batch;
  bool order_ok;
  int pid;
  char wait_event[64];
  bool check_wait;
  t_cb behind;
};

static void resume_it(void *ud) {
  struct reader *r = ud;
  if (r->t.done_calls) return; /* the scope is over: the operation is gone */
  if (r->check_wait && r->wait_event[0] == '\0') {
    char *w = t_raw_text(
        t_sql("SELECT coalesce(wait_event, '') FROM pg_stat_activity WHERE pid = %d", r->pid));
    snprintf(r->wait_event, sizeof r->wait_event, "%s", w);
    free(w);
  }
  cr_assert_eq(ascope_op_resume(r->op), 0);
}

static int on_batch(ascope *s, int status, ascope_rows *rows, void *ud) {
  (void)s;
  struct reader *r = ud;
  if (rows == NULL) {
    r->ends++;
    r->end_status = status;
    return status == ASCOPE_ECANCELED ? 0 : status;
  }
  cr_assert_eq(status, 0);
  size_t n = ascope_rows_count(rows);
  cr_assert_gt(n, 0);
  if (ascope_rows_memory(rows) > r->max_memory) r->max_memory = ascope_rows_memory(rows);
  if (n > r->max_batch) r->max_batch = n;
  for (size_t i = 0; i < n; i++)
    if (ascope_rows_int64(rows, i, 0) != ++r->next) r->order_ok = false;
  r->rows += (int64_t)n;
  r->batches++;
  if (r->stop_after && r->batches == r->stop_after) return ASCOPE_STOP;
  if (r->pause_every && r->batches % r->pause_every == 0) {
    r->pauses++;
    t_after(r->pause_ms, resume_it, r);
    return ASCOPE_PAUSE;
  }
  return ASCOPE_CONTINUE;
}

static void stream_body(ascope *s, t_scope *t) {
  struct reader *r = (struct reader *)t;
  if (r->db == NULL) r->db = ascope_resource(s, 0); /* else a parent's connection */
  r->pid = ascope_postgres_backend_pid(r->db);
  r->order_ok = true;
  cr_assert_eq(ascope_sql_stream(s, r->db,
                                 t_sql("SELECT g, repeat('x', 100) FROM generate_series(1, %lld) g",
                                       (long long)r->wanted),
                                 NULL, on_batch, r, &r->op),
               0);
  cr_assert_not_null(r->op);
  /* behind the stream: it runs when the stream is over */
  r->behind.db = r->db;
  ascope_sql_query(s, r->db, "SELECT 5", NULL, t_cb_fn, &r->behind);
}

Test(postgres_stream, rows_come_in_bounded_batches_with_pauses) {
  struct reader r = {.t.body = stream_body, .wanted = 100000, .pause_every = 10, .pause_ms = 2};
  cr_assert_eq(t_run_db(&r.t, "batch=1000"), 0, "%s", r.t.msg);
  cr_assert_eq(r.rows, 100000);
  cr_assert(r.order_ok);
  cr_assert_eq(r.ends, 1);
  cr_assert_eq(r.end_status, 0);
  cr_assert_leq(r.max_batch, 1000);
  cr_assert_lt(r.max_memory, 2u << 20, "a batch held %zu bytes", r.max_memory);
  cr_assert_gt(r.pauses, 5);
  cr_assert_eq(r.behind.status, 0);
  cr_assert_eq(r.behind.first, 5);
}

Test(postgres_stream, a_paused_stream_stops_reading_the_socket) {
  struct reader r = {.t.body = stream_body,
                     .wanted = 2000000,
                     .pause_every = 1,
                     .pause_ms = 400,
                     .stop_after = 2,
                     .check_wait = true};
  /* first batch: pause 400 ms, and look at what the server does meanwhile */
  cr_assert_eq(t_run_db(&r.t, "batch=100"), 0, "%s", r.t.msg);
  cr_assert_str_eq(r.wait_event, "ClientWrite", "the server waits for the client to read");
  cr_assert_eq(r.batches, 2);
  cr_assert_eq(r.ends, 0, "a stopped stream has no final call");
  cr_assert_eq(r.behind.status, 0, "the connection goes on after the stop");
  cr_assert_lt(r.t.t_done - r.t.t_start, 3000, "the rest was not read: the server stopped");
  cr_assert_geq(ascope_postgres_stat("cancels"), 1);
}

/* ---- COPY ------------------------------------------------------------------------------ */

#define MILLION 1000000

struct copier {
  t_scope t;
  ascope_sql *db;
  ascope_op *op;
  int64_t next, total, rows_out, sum_out;
  t_cb in, count;
  int fail_at, pause_every, fills;
  bool paused_once;
  const char *table;
};

static void resume_copy(void *ud) {
  struct copier *c = ud;
  cr_assert_eq(ascope_op_resume(c->op), 0);
}

static int fill(ascope *s, void *buf, size_t cap, size_t *len, void *ud) {
  (void)s;
  struct copier *c = ud;
  c->fills++;
  if (c->fail_at && c->next >= c->fail_at) return UV_EPROTO;
  if (c->pause_every && c->fills % c->pause_every == 0 && !c->paused_once) {
    c->paused_once = true;
    t_after(2, resume_copy, c);
    return ASCOPE_PAUSE;
  }
  c->paused_once = false;
  size_t n = 0;
  while (c->next < c->total && cap - n > 64) {
    c->next++;
    n += (size_t)snprintf((char *)buf + n, cap - n, "%lld\tname %lld\n", (long long)c->next,
                          (long long)c->next);
  }
  *len = n;
  return ASCOPE_CONTINUE;
}

static void copy_in_body(ascope *s, t_scope *t) {
  struct copier *c = (struct copier *)t;
  c->db = ascope_resource(s, 0);
  c->in.db = c->db;
  ascope_sql_exec(s, c->db, t_sql("CREATE TABLE %s(id int8, name text)", c->table), NULL, NULL,
                  NULL);
  cr_assert_eq(ascope_postgres_copy_in(s, c->db, t_sql("COPY %s FROM STDIN", c->table), fill, c,
                                       t_cb_fn, &c->in, &c->op),
               0);
  cr_assert_not_null(c->op);
  ascope_sql_query(s, c->db, t_sql("SELECT count(*) FROM %s", c->table), NULL, t_cb_fn, &c->count);
}

static int copied_rows(ascope *s, int status, ascope_rows *rows, void *ud) {
  (void)s;
  struct copier *c = ud;
  if (rows == NULL) return status;
  for (size_t i = 0; i < ascope_rows_count(rows); i++) {
    size_t len;
    const char *line = ascope_rows_text(rows, i, 0, &len);
    if (line[len - 1] != '\n') /* (an assert per row would cost more than the test) */
      cr_assert_fail("row %lld: no newline", (long long)c->rows_out);
    c->sum_out += strtoll(line, NULL, 10);
    c->rows_out++;
  }
  return 0;
}

static void copy_out_body(ascope *s, t_scope *t) {
  struct copier *c = (struct copier *)t;
  c->db = ascope_resource(s, 0);
  cr_assert_eq(ascope_postgres_copy_out(s, c->db, t_sql("COPY %s TO STDOUT", c->table), copied_rows,
                                        c, NULL),
               0);
}

Test(postgres_stream, a_million_rows_copied_in_and_out) {
  struct copier in = {.t.body = copy_in_body, .total = MILLION, .table = t_name("copy")};
  cr_assert_eq(t_run_db(&in.t, NULL), 0, "%s", in.t.msg);
  cr_assert_eq(in.in.status, 0, "%s", in.in.msg);
  cr_assert_eq(in.in.changes, MILLION);
  cr_assert_eq(in.count.first, MILLION);
  struct copier out = {.t.body = copy_out_body, .table = t_name("copy")};
  cr_assert_eq(t_run_db(&out.t, NULL), 0, "%s", out.t.msg);
  cr_assert_eq(out.rows_out, MILLION);
  cr_assert_eq(out.sum_out, (int64_t)MILLION * (MILLION + 1) / 2);
}

Test(postgres_stream, a_copy_source_that_pauses_is_resumed) {
  struct copier c = {
      .t.body = copy_in_body, .total = 20000, .pause_every = 3, .table = t_name("copyp")};
  cr_assert_eq(t_run_db(&c.t, NULL), 0, "%s", c.t.msg);
  cr_assert_eq(c.in.changes, 20000);
  cr_assert_eq(c.count.first, 20000);
}

Test(postgres_stream, a_failing_copy_source_copies_nothing) {
  struct copier c = {
      .t.body = copy_in_body, .total = 100000, .fail_at = 50000, .table = t_name("copyf")};
  c.in.pass = true;
  cr_assert_eq(t_run_db(&c.t, NULL), UV_EPROTO);
  cr_assert_eq(c.in.status, UV_EPROTO);
  cr_assert_eq(t_raw_int(t_sql("SELECT count(*) FROM %s", t_name("copyf"))), 0);
}

struct bufcopy {
  t_scope t;
  t_cb ok, bad, count;
};

static void copy_buffer_body(ascope *s, t_scope *t) {
  struct bufcopy *b = (struct bufcopy *)t;
  ascope_sql *db = ascope_resource(s, 0);
  b->bad.db = db;
  const char *tab = t_name("copyb");
  static const char good[] = "1,one\n2,\"two, with a comma\"\n3,three\n";
  static const char bad[] = "4,four\nfive,5\n";
  ascope_sql_exec(s, db, t_sql("CREATE TABLE %s(id int, name text)", tab), NULL, NULL, NULL);
  ascope_postgres_copy_in_buffer(s, db, t_sql("COPY %s FROM STDIN (FORMAT csv)", tab), good,
                                 strlen(good), t_cb_fn, &b->ok);
  ascope_postgres_copy_in_buffer(s, db, t_sql("COPY %s FROM STDIN (FORMAT csv)", tab), bad,
                                 strlen(bad), t_cb_fn, &b->bad);
  ascope_sql_query(s, db, t_sql("SELECT count(*) FROM %s", tab), NULL, t_cb_fn, &b->count);
}

Test(postgres_stream, copy_from_a_buffer_and_bad_data) {
  struct bufcopy b = {.t.body = copy_buffer_body};
  cr_assert_eq(t_run_db(&b.t, NULL), 0, "%s", b.t.msg);
  cr_assert_eq(b.ok.status, 0);
  cr_assert_eq(b.ok.changes, 3);
  cr_assert_eq(b.bad.status, ASCOPE_EDRIVER);
  cr_assert_str_eq(b.bad.code, "22P02");
  cr_assert_eq(b.count.first, 3, "the bad COPY copied nothing");
}

/* A COPY whose source waits for ever, cancelled: the COPY is aborted, the
 * connection goes on for the parent. */
struct stuck {
  t_scope t, kid;
  t_cb in, after;
  ascope_sql *db;
};

static int never(ascope *s, void *buf, size_t cap, size_t *len, void *ud) {
  (void)s, (void)buf, (void)cap, (void)ud;
  *len = 0;
  return ASCOPE_PAUSE;
}

static void stuck_kid(ascope *s, t_scope *t) {
  struct stuck *k = (struct stuck *)((char *)t - offsetof(struct stuck, kid));
  ascope_postgres_copy_in(s, k->db, t_sql("COPY %s FROM STDIN", t_name("copys")), never, NULL,
                          t_cb_fn, &k->in, NULL);
}

static void stuck_body(ascope *s, t_scope *t) {
  struct stuck *k = (struct stuck *)t;
  k->db = ascope_resource(s, 0);
  ascope_sql_exec(s, k->db, t_sql("CREATE TABLE %s(id int)", t_name("copys")), NULL, NULL, NULL);
  k->kid.body = stuck_kid;
  ascope *c = ascope_child(s);
  ascope_set_timeout(c, 150);
  ascope_start(c, t_body, t_done, &k->kid);
  ascope_sql_query(s, k->db, "SELECT 11", NULL, t_cb_fn, &k->after);
}

Test(postgres_stream, a_stuck_copy_is_cancelled_and_the_connection_goes_on) {
  struct stuck k = {.t.body = stuck_body};
  ascope *s = ascope_new(T_rt);
  ascope_set_mode(s, ASCOPE_COLLECT_ALL);
  ascope_use_postgres(s, t_dsn(), NULL);
  cr_assert_eq(t_run(s, &k.t), 0, "%s", k.t.msg);
  cr_assert_eq(k.kid.status, ASCOPE_ETIMEDOUT);
  cr_assert_eq(k.in.status, ASCOPE_ECANCELED);
  cr_assert_eq(k.after.status, 0);
  cr_assert_eq(k.after.first, 11);
}

/* ---- LISTEN / NOTIFY ----------------------------------------------------------------------- */

struct listener {
  t_scope t;
  ascope_sql *db;
  ascope *scope;
  int got, ends, end_status, own_pid;
  int64_t pids[8];
  char payloads[8][64];
  bool other_sent;
};

static void other_body(ascope *s, void *ud) {
  (void)ud;
  ascope_sql_params *p = ascope_sql_params_new();
  ascope_sql_params_add_text(p, t_name("Chan"), ASCOPE_SQL_NTS);
  ascope_sql_params_add_text(p, "from elsewhere", ASCOPE_SQL_NTS);
  ascope_sql_query(s, ascope_resource(s, 0), "SELECT pg_notify($1, $2)", p, NULL, NULL);
  ascope_sql_params_free(p);
}

static int on_notify(ascope *s, int status, ascope_rows *rows, void *ud) {
  struct listener *l = ud;
  if (rows == NULL) {
    l->ends++;
    l->end_status = status;
    return status == ASCOPE_ECANCELED ? 0 : status;
  }
  for (size_t i = 0; i < ascope_rows_count(rows) && l->got < 8; i++, l->got++) {
    cr_assert_str_eq(ascope_rows_text(rows, i, 0, NULL), t_name("Chan"));
    snprintf(l->payloads[l->got], 64, "%s", ascope_rows_text(rows, i, 1, NULL));
    l->pids[l->got] = ascope_rows_int64(rows, i, 2);
  }
  if (!l->other_sent) { /* we listen for sure: notify from another connection */
    l->other_sent = true;
    ascope *o = ascope_child(s);
    ascope_use_postgres(o, t_dsn(), NULL);
    ascope_start(o, other_body, NULL, NULL);
  }
  return l->got >= 3 ? ASCOPE_STOP : ASCOPE_CONTINUE;
}

static void listen_body(ascope *s, t_scope *t) {
  struct listener *l = (struct listener *)t;
  l->db = ascope_resource(s, 0);
  l->own_pid = ascope_postgres_backend_pid(l->db);
  cr_assert_eq(ascope_postgres_listen(s, l->db, t_name("Chan"), on_notify, l, NULL), 0);
  /* behind the LISTEN on the same connection: our own notifications reach us too */
  ascope_sql_params *p = ascope_sql_params_new();
  ascope_sql_params_add_text(p, t_name("Chan"), ASCOPE_SQL_NTS);
  ascope_sql_params_add_text(p, "first", ASCOPE_SQL_NTS);
  ascope_sql_query(s, l->db, "SELECT pg_notify($1, $2)", p, NULL, NULL);
  ascope_sql_params_clear(p);
  ascope_sql_params_add_text(p, t_name("chan"), ASCOPE_SQL_NTS); /* another channel */
  ascope_sql_params_add_text(p, "not for us", ASCOPE_SQL_NTS);
  ascope_sql_query(s, l->db, "SELECT pg_notify($1, $2)", p, NULL, NULL);
  ascope_sql_params_clear(p);
  ascope_sql_params_add_text(p, t_name("Chan"), ASCOPE_SQL_NTS);
  ascope_sql_params_add_text(p, "second", ASCOPE_SQL_NTS);
  ascope_sql_query(s, l->db, "SELECT pg_notify($1, $2)", p, NULL, NULL);
  ascope_sql_params_free(p);
}

Test(postgres_stream, notifications_arrive_as_a_stream) {
  struct listener l = {.t.body = listen_body};
  cr_assert_eq(t_run_db(&l.t, NULL), 0, "%s", l.t.msg);
  cr_assert_eq(l.got, 3);
  cr_assert_str_eq(l.payloads[0], "first");
  cr_assert_str_eq(l.payloads[1], "second");
  cr_assert_str_eq(l.payloads[2], "from elsewhere");
  cr_assert_eq(l.pids[0], l.own_pid);
  cr_assert_neq(l.pids[2], l.own_pid);
  cr_assert_eq(l.ends, 0, "a stopped stream has no final call");
}

/* The deadline is that of a child scope started once the connection is
 * open, not the connecting scope's: counted from before the connect, a
 * slow one (a loaded machine, a sanitizer build) could use it all up
 * before the LISTEN was sent, and no listener would be there to end. */
struct deadline_listener {
  struct listener l;
  t_scope kid;
};

static void idle_listen_kid(ascope *s, t_scope *t) {
  struct deadline_listener *d =
      (struct deadline_listener *)((char *)t - offsetof(struct deadline_listener, kid));
  ascope_postgres_listen(s, d->l.db, t_name("Chan"), on_notify, &d->l, NULL);
}

static void idle_listen_body(ascope *s, t_scope *t) {
  struct deadline_listener *d = (struct deadline_listener *)t;
  d->l.db = ascope_resource(s, 0);
  d->l.other_sent = true;
  d->kid.body = idle_listen_kid;
  ascope *c = ascope_child(s);
  ascope_set_timeout(c, 150);
  d->kid.t_start = t_now_ms();
  ascope_start(c, t_body, t_done, &d->kid);
}

Test(postgres_stream, a_deadline_ends_a_listener) {
  struct deadline_listener d = {.l.t.body = idle_listen_body};
  ascope *s = ascope_new(T_rt);
  ascope_set_mode(s, ASCOPE_COLLECT_ALL);
  ascope_use_postgres(s, t_dsn(), NULL);
  cr_assert_eq(t_run(s, &d.l.t), 0, "%s", d.l.t.msg);
  cr_assert_eq(d.kid.status, ASCOPE_ETIMEDOUT);
  cr_assert_eq(d.kid.done_calls, 1);
  cr_assert_eq(d.l.ends, 1);
  cr_assert_eq(d.l.end_status, ASCOPE_ECANCELED);
  cr_assert_geq(d.kid.t_done - d.kid.t_start, 140); /* libuv's clock is read per turn */
  cr_assert_lt(d.kid.t_done - d.kid.t_start, 2000);
}
