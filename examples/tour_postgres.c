/* The tour's PostgreSQL part, on the server in ASCOPE_PG_DSN.
 *
 * The same generic SQL interface as the SQLite part (<ascope/sql.h>): only
 * the driver handed to ascope_use_sql() says "PostgreSQL". Five scenes: a
 * schema in a transaction; 64 scopes sharing one connection, their
 * statements pipelined; a transfer whose deadline sends a cancel request
 * and rolls it back; a result streamed with back-pressure; a notification
 * (LISTEN / NOTIFY) delivered as a stream. */
#include "tour.h"

#include <ascope/postgres.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const ascope_sql_driver *pg;
static const char *dsn;
static char table[64];
static int failures;

static void expect(int status, int want, const char *scene) {
  if (status == want) return;
  printf("!! %s: expected %s, got %s\n", scene, tour_outcome(want), tour_outcome(status));
  failures++;
}

/* The SQL of a scene, with the tour's table name in it. */
static const char *sql(const char *fmt) {
  static char buf[512];
  snprintf(buf, sizeof buf, fmt, table, table);
  return buf;
}

static void scene_done(ascope *s, int status, void *ud) {
  tour_say("done: %s", tour_outcome(status));
  tour_print_error(s);
  expect(status, ud ? ASCOPE_ETIMEDOUT : 0, "postgres");
}

static void plain_done(ascope *s, int status, void *ud) {
  (void)ud;
  scene_done(s, status, NULL);
}

/* ---- 1. a schema, in one transaction ---------------------------------------------------- */

static int on_schema(ascope *s, int status, ascope_rows *rows, void *ud) {
  (void)s, (void)ud;
  if (status) return status;
  tour_say("   %lld accounts written (not yet committed)", (long long)ascope_rows_changes(rows));
  return 0;
}

static void schema_body(ascope *s, void *ud) {
  (void)ud;
  ascope_sql *db = ascope_resource(s, 0);
  tour_say("body: connected to backend %d, BEGIN done; creating the schema",
           ascope_postgres_backend_pid(db));
  ascope_sql_exec(s, db, sql("CREATE TABLE %s(id int PRIMARY KEY, owner text, balance int)"), NULL,
                  NULL, NULL);
  ascope_sql_exec(s, db,
                  sql("INSERT INTO %s SELECT i, 'owner-' || i, i * 10 "
                      "FROM generate_series(1, 1000) i"),
                  NULL, on_schema, NULL);
}

static void scene_schema(ascope_rt *rt) {
  tour_say("async with connect(dsn) as c, c.transaction(): ... COMMIT when the body is done");
  ascope *s = ascope_new(rt);
  ascope_use_sql(s, pg, dsn, NULL);
  ascope_use_sql_tx_at(s, pg, 0, NULL);
  ascope_start(s, schema_body, scene_done, NULL);
  ascope_rt_run(rt);
}

/* ---- 2. 64 scopes, one connection ------------------------------------------------------------ */

struct teller {
  ascope_sql *db;
  int id;
  int64_t balance;
};
static struct teller tellers[64];

static int on_balance(ascope *s, int status, ascope_rows *rows, void *ud) {
  (void)s;
  struct teller *t = ud;
  if (status) return status;
  t->balance = ascope_rows_int64(rows, 0, 0);
  if (t->balance != t->id * 10) failures++;
  return 0;
}

static void teller_body(ascope *s, void *ud) {
  struct teller *t = ud;
  ascope_sql_params *p = ascope_sql_params_new();
  ascope_sql_params_add_int64(p, t->id);
  ascope_sql_query(s, t->db, sql("SELECT balance FROM %s WHERE id = $1"), p, on_balance, t);
  ascope_sql_params_free(p);
}

static void bank_body(ascope *s, void *ud) {
  (void)ud;
  ascope_sql *db = ascope_resource(s, 0);
  tour_say("body: 64 child scopes, each asks for one account on this one connection");
  for (int i = 0; i < 64; i++) {
    tellers[i] = (struct teller){.db = db, .id = i * 15 + 1};
    ascope *c = ascope_child(s);
    ascope_start(c, teller_body, NULL, &tellers[i]);
  }
}

static int64_t flushes0;

static void bank_done(ascope *s, int status, void *ud) {
  (void)ud;
  int64_t sum = 0;
  for (int i = 0; i < 64; i++) sum += tellers[i].balance;
  tour_say("   64 answers, each its own account's (balances sum to %lld); %lld statements in "
           "flight at once, sent in %lld round(s)",
           (long long)sum, (long long)ascope_postgres_stat("max_pipeline"),
           (long long)(ascope_postgres_stat("flushes") - flushes0));
  scene_done(s, status, NULL);
}

static void scene_pipeline(ascope_rt *rt) {
  flushes0 = ascope_postgres_stat("flushes");
  ascope *s = ascope_new(rt);
  ascope_use_sql(s, pg, dsn, NULL);
  ascope_start(s, bank_body, bank_done, NULL);
  ascope_rt_run(rt);
}

/* ---- 3. a deadline: a cancel request, a rollback ------------------------------------------------
 */

static int on_moved(ascope *s, int status, ascope_rows *rows, void *ud) {
  (void)s;
  if (status) return status;
  tour_say("   %s: %lld row changed", (const char *)ud, (long long)ascope_rows_changes(rows));
  return 0;
}

static int on_audit(ascope *s, int status, ascope_rows *rows, void *ud) {
  (void)s, (void)rows, (void)ud;
  tour_say("   the audit ends: %s (%s)", tour_outcome(status),
           status ? ascope_sql_errmsg(ascope_resource(s, 0)) : "");
  return status;
}

static void transfer_body(ascope *s, void *ud) {
  (void)ud;
  ascope_sql *db = ascope_resource(s, 0);
  tour_say("body: move 500 from account 1 to 2, then a 10 s audit, under a 150 ms deadline");
  ascope_sql_exec(s, db, sql("UPDATE %s SET balance = balance - 500 WHERE id = 1"), NULL, on_moved,
                  "debit");
  ascope_sql_exec(s, db, sql("UPDATE %s SET balance = balance + 500 WHERE id = 2"), NULL, on_moved,
                  "credit");
  ascope_sql_query(s, db, "SELECT pg_sleep(10)", NULL, on_audit, NULL);
}

static int on_check(ascope *s, int status, ascope_rows *rows, void *ud) {
  (void)s, (void)ud;
  if (status) return status;
  int64_t b = ascope_rows_int64(rows, 0, 0);
  tour_say("   account 1 holds %lld: the transfer was rolled back%s", (long long)b,
           b == 10 ? "" : " -- NOT");
  if (b != 10) failures++;
  return 0;
}

static void check_body(ascope *s, void *ud) {
  (void)ud;
  ascope_sql_query(s, ascope_resource(s, 0), sql("SELECT balance FROM %s WHERE id = 1"), NULL,
                   on_check, NULL);
}

static void scene_rollback(ascope_rt *rt) {
  int64_t cancels = ascope_postgres_stat("cancels");
  ascope *s = ascope_new(rt);
  ascope_use_sql(s, pg, dsn, NULL);
  ascope_use_sql_tx_at(s, pg, 0, "isolation=repeatable_read");
  ascope_set_timeout(s, 150);
  ascope_start(s, transfer_body, scene_done, "timeout");
  ascope_rt_run(rt);
  tour_say("   (%lld cancel request sent to the server: the audit did not run on for 10 s)",
           (long long)(ascope_postgres_stat("cancels") - cancels));
  ascope *c = ascope_new(rt);
  ascope_use_sql(c, pg, dsn, NULL);
  ascope_start(c, check_body, scene_done, NULL);
  ascope_rt_run(rt);
}

/* ---- 4. a streamed result -----------------------------------------------------------------------
 */

typedef struct reader {
  ascope_op *op;
  uv_timer_t timer;
  int batches, pauses;
  int64_t rows, sum;
} reader;

static void on_resume(uv_timer_t *t) {
  reader *r = t->data;
  ascope_op_resume(r->op);
}

static int on_batch(ascope *s, int status, ascope_rows *rows, void *ud) {
  (void)s;
  reader *r = ud;
  if (rows == NULL) { /* the end of the `async for` */
    tour_say("   stream ended: %s, %lld rows in %d batches, %d pauses, balances sum to %lld",
             tour_outcome(status), (long long)r->rows, r->batches, r->pauses, (long long)r->sum);
    uv_close((uv_handle_t *)&r->timer, NULL);
    return status;
  }
  size_t n = ascope_rows_count(rows);
  for (size_t i = 0; i < n; i++) r->sum += ascope_rows_int64(rows, i, 1);
  r->rows += (int64_t)n;
  if (++r->batches % 4 == 1) {
    tour_say("   batch %d: %zu rows, %s .. %s; a slow consumer pauses 10 ms (the socket is not "
             "read meanwhile)",
             r->batches, n, ascope_rows_text(rows, 0, 0, NULL),
             ascope_rows_text(rows, n - 1, 0, NULL));
    r->pauses++;
    uv_timer_start(&r->timer, on_resume, 10, 0);
    return ASCOPE_PAUSE;
  }
  return ASCOPE_CONTINUE;
}

static void stream_body(ascope *s, void *ud) {
  reader *r = ud;
  tour_say("body: async for row in c.stream(\"SELECT owner, balance ...\"), 100 rows a batch");
  uv_timer_init(ascope_rt_loop(ascope_scope_rt(s)), &r->timer);
  r->timer.data = r;
  ascope_sql_stream(s, ascope_resource(s, 0), sql("SELECT owner, balance FROM %s ORDER BY id"),
                    NULL, on_batch, r, &r->op);
}

static void scene_stream(ascope_rt *rt) {
  static reader r;
  ascope *s = ascope_new(rt);
  ascope_use_sql(s, pg, dsn, "batch=100");
  ascope_start(s, stream_body, plain_done, &r);
  ascope_rt_run(rt);
  if (r.rows != 1000) failures++;
}

/* ---- 5. LISTEN / NOTIFY
 * -------------------------------------------------------------------------- */

static void notifier_body(ascope *s, void *ud) {
  ascope_sql_params *p = ascope_sql_params_new();
  ascope_sql_params_add_text(p, ud, ASCOPE_SQL_NTS);
  ascope_sql_params_add_text(p, "account 2 was credited", ASCOPE_SQL_NTS);
  ascope_sql_query(s, ascope_resource(s, 0), "SELECT pg_notify($1, $2)", p, NULL, NULL);
  ascope_sql_params_free(p);
}

static int on_notification(ascope *s, int status, ascope_rows *rows, void *ud) {
  (void)s, (void)ud;
  if (rows == NULL) return status;
  tour_say("   notification on \"%s\" from backend %lld: \"%s\"",
           ascope_rows_text(rows, 0, 0, NULL), (long long)ascope_rows_int64(rows, 0, 2),
           ascope_rows_text(rows, 0, 1, NULL));
  return ASCOPE_STOP; /* one is enough: UNLISTEN, and the scope can end */
}

static int on_listening(ascope *s, int status, ascope_rows *rows, void *ud) {
  (void)rows;
  if (status) return status;
  tour_say("   listening; another scope, on its own connection, notifies");
  ascope *n = ascope_child(s);
  ascope_use_sql(n, pg, dsn, NULL);
  ascope_start(n, notifier_body, NULL, ud);
  return 0;
}

static void listen_body(ascope *s, void *ud) {
  ascope_sql *db = ascope_resource(s, 0);
  tour_say("body: async for n in c.notifies(\"%s\")", (const char *)ud);
  ascope_postgres_listen(s, db, ud, on_notification, NULL, NULL);
  /* answered after the LISTEN (same connection, in order): it is in effect */
  ascope_sql_query(s, db, "SELECT 1", NULL, on_listening, ud);
}

static void scene_notify(ascope_rt *rt) {
  static char channel[80];
  snprintf(channel, sizeof channel, "%s_events", table);
  ascope *s = ascope_new(rt);
  ascope_use_sql(s, pg, dsn, NULL);
  ascope_set_timeout(s, 5000);
  ascope_start(s, listen_body, plain_done, channel);
  ascope_rt_run(rt);
}

/* ---- cleaning up
 * ------------------------------------------------------------------------------------ */

static void drop_body(ascope *s, void *ud) {
  (void)ud;
  ascope_sql_exec(s, ascope_resource(s, 0), sql("DROP TABLE %s"), NULL, NULL, NULL);
}

static void cleanup(ascope_rt *rt) {
  ascope *s = ascope_new(rt);
  ascope_use_sql(s, pg, dsn, NULL);
  ascope_start(s, drop_body, NULL, NULL);
  ascope_rt_run(rt);
}

int tour_postgres(ascope_rt *rt) {
  dsn = getenv("ASCOPE_PG_DSN");
  if (dsn == NULL) return 0;
  pg = ascope_postgres();
  snprintf(table, sizeof table, "tour_account_%d", (int)getpid());
  failures = 0;
  scene_schema(rt);
  scene_pipeline(rt);
  scene_rollback(rt);
  scene_stream(rt);
  scene_notify(rt);
  cleanup(rt);
  return failures;
}
