/* Order on a shared connection: statements run on the server in the order
 * they were started, whatever fails or is cancelled around them, and each
 * statement's callback gets its own result or an error, never rows that
 * are not its own.
 *
 * 64 child scopes share their parent's connection; each starts 5
 * statements without waiting between them. In some children one statement
 * fails, or the child is cancelled at a random moment, or a statement is a
 * stream. The faults these cases guard against depended on timing (a
 * cancel request landing on a neighbour's statement), so every case runs
 * many rounds on one connection; ASCOPE_TEST_ROUNDS overrides the count. */
#include "pg_support.h"

#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

TestSuite(postgres_order, .init = t_init, .fini = t_fini, .timeout = 900);

/* Checks made hundreds of thousands of times report only when they fail:
 * under --full-stats (as ctest runs the tests) every passing cr_assert is a
 * message to Criterion's runner, and millions of them take minutes. */
#define CHECK(cond, ...)                                                                           \
  do {                                                                                             \
    if (!(cond)) cr_assert_fail(__VA_ARGS__);                                                      \
  } while (0)
#define CHECK_EQ(a, b, ...) CHECK((a) == (b), __VA_ARGS__)
#define CHECK_STR(a, b, ...) CHECK(strcmp((a), (b)) == 0, __VA_ARGS__)

#define KIDS 64
#define STMTS 5

/* The reported case runs 1,000 rounds; its variations 200 each. TSan runs
 * everything about ten times slower (a tenth of that), ASan three times (a
 * half), so the suite stays within its time on a busy machine too. */
#if defined(__SANITIZE_THREAD__)
#define SCALE 10
#elif defined(__SANITIZE_ADDRESS__)
#define SCALE 2
#else
#define SCALE 1
#endif

static int rounds(bool full) {
  const char *e = getenv("ASCOPE_TEST_ROUNDS");
  int n = e ? atoi(e) : 0;
  return n > 0 ? n : (full ? 1000 : 200) / SCALE;
}

enum shape { PLAIN, FAILS, STREAMS };

struct fan;
struct kid;

struct slot { /* one statement of a kid: what its callback saw */
  struct kid *k;
  int j, calls, status;
  int64_t value; /* the row's value; for a stream, its first row's */
  int streamed;  /* a stream's rows seen so far, each checked in order */
};

struct kid {
  t_scope t;
  struct fan *f;
  int index;
  enum shape shape;
  int64_t base;     /* its statements select base + j */
  bool cancel_me;   /* a timer cancels it */
  bool cancel_sent; /* ... and fired before the kid was done */
  ascope *scope;
  uv_timer_t timer;
  struct slot slots[STMTS];
};

struct fan {
  t_scope top; /* the scope that holds the connection */
  t_scope round;
  ascope *top_scope;
  ascope_sql *db;
  const char *table; /* write-order cases: the table, else NULL */
  int n, rounds, cancel_pct;
  bool fail, stream, full;
  unsigned seed;
  struct kid kids[KIDS];
  int cancelled, failed, healthy; /* totals, for the log */
};

/* ---- the kids' statements --------------------------------------------------------------- */

static int on_row(ascope *s, int status, ascope_rows *rows, void *ud) {
  (void)s;
  struct slot *sl = ud;
  sl->calls++;
  sl->status = status;
  if (status == 0 && rows && ascope_rows_count(rows) == 1)
    sl->value = ascope_rows_int64(rows, 0, 0);
  return status < 0 ? status : 0;
}

/* A stream's batches: every row must be the next of its own series. */
static int on_stream(ascope *s, int status, ascope_rows *rows, void *ud) {
  (void)s;
  struct slot *sl = ud;
  if (status == 0 && rows) {
    for (size_t i = 0; i < ascope_rows_count(rows); i++) {
      int64_t v = ascope_rows_int64(rows, i, 0);
      CHECK_EQ(v, sl->k->base * 100 + sl->streamed, "kid %d: a stream got another's row",
               sl->k->index);
      sl->streamed++;
    }
    return ASCOPE_CONTINUE;
  }
  sl->calls++;
  sl->status = status;
  if (status == 0) sl->value = sl->k->base * 100;
  return status < 0 ? status : 0;
}

static void start_stmt(ascope *s, struct kid *k, int j) {
  struct fan *f = k->f;
  struct slot *sl = &k->slots[j];
  ascope_sql_params *p = ascope_sql_params_new();
  bool fail = k->shape == FAILS && j == 2;
  int rc;
  if (f->table) { /* INSERT, then UPDATEs that each append their digit */
    ascope_sql_params_add_int64(p, k->base);
    ascope_sql_params_add_int64(p, j + 1);
    const char *sql = j == 0 ? t_sql("INSERT INTO %s (id, v) VALUES ($1, $2)", f->table)
                      : fail ? t_sql("UPDATE %s SET v = v * 10 + $2 / 0 WHERE id = $1", f->table)
                             : t_sql("UPDATE %s SET v = v * 10 + $2 WHERE id = $1", f->table);
    rc = ascope_sql_exec(s, f->db, sql, p, on_row, sl);
  } else if (k->shape == STREAMS && j == 1) {
    ascope_sql_params_add_int64(p, k->base * 100);
    rc = ascope_sql_stream(s, f->db, "SELECT $1::int8 + g FROM generate_series(0, 49) g", p,
                           on_stream, sl, NULL);
  } else {
    ascope_sql_params_add_int64(p, k->base + j);
    rc =
        ascope_sql_query(s, f->db, fail ? "SELECT $1::int8 / 0" : "SELECT $1::int8", p, on_row, sl);
  }
  ascope_sql_params_free(p);
  CHECK_EQ(rc, 0, "kid %d statement %d: %d", k->index, j, rc);
}

static void kid_body(ascope *s, t_scope *t) {
  struct kid *k = (struct kid *)t;
  for (int j = 0; j < STMTS; j++) start_stmt(s, k, j);
}

static void kid_cancel(uv_timer_t *h) {
  struct kid *k = h->data;
  k->cancel_sent = true;
  ascope_cancel(k->scope);
}

static void kid_done(ascope *s, int status, void *ud) {
  struct kid *k = ud;
  uv_timer_stop(&k->timer); /* a cancel after done would hit nothing (or another) */
  t_done(s, status, ud);
}

/* ---- checking a round ---------------------------------------------------------------------- */

static void check_kid(struct fan *f, struct kid *k, const int64_t *stored) {
  const char *who = t_sql("round %d kid %d", f->n, k->index);
  CHECK_EQ(k->t.done_calls, 1, "%s", who);
  bool failing = k->shape == FAILS;
  bool seen_cancel = false;
  for (int j = 0; j < STMTS; j++) {
    struct slot *sl = &k->slots[j];
    CHECK_EQ(sl->calls, 1, "%s statement %d: %d calls", who, j, sl->calls);
    if (sl->status == 0) {
      /* its own result, and only ahead of any statement that was cancelled */
      CHECK(!seen_cancel, "%s statement %d ran after a cancelled one", who, j);
      if (!f->table)
        CHECK_EQ(sl->value, k->shape == STREAMS && j == 1 ? k->base * 100 : k->base + j,
                 "%s statement %d got %lld", who, j, (long long)sl->value);
      if (k->shape == STREAMS && j == 1) CHECK_EQ(sl->streamed, 50, "%s", who);
    } else if (sl->status == ASCOPE_ECANCELED) {
      seen_cancel = true;
      CHECK(k->cancel_sent || (failing && j > 2), "%s statement %d cancelled", who, j);
    } else {
      CHECK(failing && j == 2, "%s statement %d failed with %d", who, j, sl->status);
      CHECK_EQ(sl->status, ASCOPE_EDRIVER, "%s statement %d", who, j);
      seen_cancel = true; /* what follows was cancelled by the failure */
    }
  }
  if (k->cancel_sent) {
    CHECK(k->t.status == ASCOPE_ECANCELED || (failing && k->t.status == ASCOPE_EDRIVER), "%s: %d",
          who, k->t.status);
    f->cancelled++;
  } else if (failing) {
    CHECK_EQ(k->t.status, ASCOPE_EDRIVER, "%s", who);
    CHECK_STR(k->t.code, "22012", "%s", who);
    for (int j = 0; j < 2; j++) CHECK_EQ(k->slots[j].status, 0, "%s statement %d", who, j);
    f->failed++;
  } else {
    CHECK_EQ(k->t.status, 0, "%s: %s", who, k->t.msg);
    f->healthy++;
  }
  if (stored == NULL) return;
  /* Write order: v holds the digits of the statements that ran, in the
   * order they ran. They must be increasing (no statement overtook an
   * earlier one), and every statement that reported success is there. */
  int64_t v = *stored;
  int last = 10;
  bool present[STMTS + 1] = {false};
  for (; v > 0; v /= 10) {
    int d = (int)(v % 10);
    CHECK(d >= 1 && d <= STMTS && d < last, "%s: v = %lld is out of order", who,
          (long long)*stored);
    present[d] = true;
    last = d;
  }
  for (int j = 0; j < STMTS; j++)
    if (k->slots[j].status == 0)
      CHECK(present[j + 1], "%s: statement %d reported success, v = %lld", who, j,
            (long long)*stored);
  if (!k->cancel_sent && !failing) CHECK_EQ(*stored, 12345, "%s", who);
}

static void check_round(struct fan *f) {
  int64_t stored[KIDS];
  if (f->table) {
    PGconn *pc = PQconnectdb(t_dsn());
    CHECK_EQ(PQstatus(pc), CONNECTION_OK, "oracle: %s", PQerrorMessage(pc));
    for (int i = 0; i < KIDS; i++) stored[i] = 0;
    PGresult *r = PQexec(pc, t_sql("SELECT id, v FROM %s WHERE id >= %d AND id < %d", f->table,
                                   f->n * KIDS, (f->n + 1) * KIDS));
    CHECK_EQ(PQresultStatus(r), PGRES_TUPLES_OK, "oracle: %s", PQresultErrorMessage(r));
    for (int i = 0; i < PQntuples(r); i++)
      stored[atoi(PQgetvalue(r, i, 0)) - f->n * KIDS] = atoll(PQgetvalue(r, i, 1));
    PQclear(r);
    PQfinish(pc);
  }
  for (int i = 0; i < KIDS; i++) check_kid(f, &f->kids[i], f->table ? &stored[i] : NULL);
}

/* ---- rounds -----------------------------------------------------------------------------------
 */

static void start_round(struct fan *f);

static void round_body(ascope *s, t_scope *t) {
  struct fan *f = (struct fan *)((char *)t - offsetof(struct fan, round));
  for (int i = 0; i < KIDS; i++) {
    struct kid *k = &f->kids[i];
    memset(&k->t, 0, sizeof k->t);
    memset(k->slots, 0, sizeof k->slots);
    k->t.body = kid_body;
    k->f = f;
    k->index = i;
    k->base = f->table ? f->n * KIDS + i : (int64_t)f->n * 100000 + i * 1000;
    k->shape = f->fail && i % 8 == 0 ? FAILS : f->stream && i % 4 == 1 ? STREAMS : PLAIN;
    for (int j = 0; j < STMTS; j++) k->slots[j] = (struct slot){.k = k, .j = j};
    k->cancel_sent = false;
    k->cancel_me = f->cancel_pct && (int)(rand_r(&f->seed) % 100) < f->cancel_pct;
    k->scope = ascope_child(s);
    cr_assert_not_null(k->scope);
    cr_assert_eq(ascope_start(k->scope, t_body, kid_done, k), 0);
    /* cancelled 0..4 ms from now: before, while and after its statements run */
    if (k->cancel_me) uv_timer_start(&k->timer, kid_cancel, rand_r(&f->seed) % 5, 0);
  }
}

static void round_done(ascope *s, int status, void *ud) {
  struct fan *f = (struct fan *)((char *)ud - offsetof(struct fan, round));
  t_done(s, status, ud);
  cr_assert_eq(status, 0, "a round collects its kids' outcomes: %s", f->round.msg);
  check_round(f);
  if (++f->n < f->rounds) start_round(f);
}

static void start_round(struct fan *f) {
  memset(&f->round, 0, sizeof f->round);
  f->round.body = round_body;
  ascope *r = ascope_child(f->top_scope);
  cr_assert_not_null(r);
  ascope_set_mode(r, ASCOPE_COLLECT_ALL);
  cr_assert_eq(ascope_start(r, t_body, round_done, &f->round), 0);
}

static void top_body(ascope *s, t_scope *t) {
  struct fan *f = (struct fan *)t;
  f->top_scope = s;
  f->db = ascope_resource(s, 0);
  start_round(f);
}

static void timer_closed(uv_handle_t *h) {
  (void)h;
}

static void run(struct fan *f, const char *options) {
  f->rounds = rounds(f->full);
  f->seed = 12345;
  f->top.body = top_body;
  for (int i = 0; i < KIDS; i++) {
    uv_timer_init(ascope_rt_loop(T_rt), &f->kids[i].timer);
    f->kids[i].timer.data = &f->kids[i];
  }
  if (f->table) {
    t_raw(t_sql("CREATE TABLE %s (id int PRIMARY KEY, v int8 NOT NULL)", f->table));
  }
  ascope *s = ascope_new(T_rt);
  ascope_set_mode(s, ASCOPE_COLLECT_ALL);
  cr_assert_eq(ascope_use_postgres(s, t_dsn(), options), 0);
  cr_assert_eq(t_run(s, &f->top), 0, "%s", f->top.msg);
  cr_assert_eq(f->n, f->rounds, "every round ran");
  for (int i = 0; i < KIDS; i++) uv_close((uv_handle_t *)&f->kids[i].timer, timer_closed);
  uv_run(ascope_rt_loop(T_rt), UV_RUN_DEFAULT);
  if (f->table) t_raw(t_sql("DROP TABLE %s", f->table));
  cr_assert_eq(ascope_postgres_stat("opened"), 1, "one connection for every round");
  cr_assert_eq(ascope_postgres_stat("broken"), 0);
  cr_log_info("%d rounds: %d healthy, %d failing, %d cancelled kids; %lld cancel requests, "
              "%lld statements sent again",
              f->rounds, f->healthy, f->failed, f->cancelled,
              (long long)ascope_postgres_stat("cancels"),
              (long long)ascope_postgres_stat("retried"));
}

static struct fan F; /* large: not on the stack */

/* The reported case: every 8th child's 3rd statement divides by zero. */
Test(postgres_order, a_failing_child_leaves_its_neighbours_in_order) {
  F = (struct fan){.fail = true, .full = true};
  run(&F, NULL);
}

Test(postgres_order, a_failing_child_leaves_its_neighbours_in_order_with_sync_batch) {
  F = (struct fan){.fail = true};
  run(&F, "sync=batch");
}

/* Children cancelled at random moments, some with a stream among their
 * statements: every child not cancelled sees all its values in order;
 * every cancelled one ends with ASCOPE_ECANCELED. */
Test(postgres_order, children_cancelled_at_random_leave_the_others_in_order) {
  F = (struct fan){.cancel_pct = 40, .stream = true};
  run(&F, NULL);
}

Test(postgres_order, children_cancelled_at_random_with_sync_batch) {
  F = (struct fan){.cancel_pct = 40, .fail = true};
  run(&F, "sync=batch");
}

/* Each child INSERTs its row, then UPDATEs it four times: the row's final
 * value shows the order the statements ran in. */
Test(postgres_order, writes_land_in_the_order_they_were_started) {
  F = (struct fan){.cancel_pct = 30, .fail = true, .table = t_name("ord")};
  run(&F, NULL);
}

Test(postgres_order, writes_land_in_the_order_they_were_started_with_sync_batch) {
  F = (struct fan){.cancel_pct = 30, .fail = true, .table = t_name("ordb")};
  run(&F, "sync=batch");
}
