/* The tour's SQLite part: `async with db.connect() as c, c.transaction():`.
 *
 * Four scenes on a database in a temporary directory: a schema made in one
 * transaction; three queries at once over two connections; a transfer whose
 * transaction a deadline rolls back (the database shows nothing of it); and
 * a result streamed in batches with back-pressure (`async for row in ...`).
 * The user code is the generic SQL interface of <ascope/sql.h>: only the
 * driver handed to ascope_use_sql() says "SQLite". */
#include "tour.h"

#ifdef TOUR_PLUGINS
#include <ascope/sql.h>
#else
#include <ascope/sqlite.h>
#endif

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char dir[256], db_path[280];
static const ascope_sql_driver *sqlite;
static int failures;

static void expect(int status, int want, const char *scene) {
  if (status == want) return;
  printf("!! %s: expected %s, got %s\n", scene, tour_outcome(want), tour_outcome(status));
  failures++;
}

static void scene_done(ascope *s, int status, void *ud) {
  tour_say("done: %s", tour_outcome(status));
  tour_print_error(s);
  expect(status, ud ? ASCOPE_ETIMEDOUT : 0, "sqlite");
}

/* ---- 1. a schema, in one transaction ------------------------------------------------ */

static int on_schema(ascope *s, int status, ascope_rows *rows, void *ud) {
  (void)s;
  (void)ud;
  if (status) return status;
  tour_say("   schema and %lld accounts written (not yet committed)",
           (long long)ascope_rows_changes(rows));
  return 0;
}

static void schema_body(ascope *s, void *ud) {
  (void)ud;
  ascope_sql *db = ascope_resource(s, 0);
  tour_say("body: connection open, BEGIN done (transaction depth %u); creating the schema",
           ascope_sql_tx_depth(ascope_resource(s, 1)));
  ascope_sql_exec(s, db,
                  "CREATE TABLE account(id INTEGER PRIMARY KEY, owner TEXT NOT NULL, "
                  "balance INTEGER NOT NULL);"
                  "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1000)"
                  "INSERT INTO account(owner, balance) SELECT 'owner-' || i, i * 10 FROM n;",
                  NULL, on_schema, NULL);
}

static void scene_schema(ascope_rt *rt) {
  tour_say("async with connect(\"%s\") as c, c.transaction(): ... COMMIT when the body is done",
           strrchr(db_path, '/') + 1);
  ascope *s = ascope_new(rt);
  ascope_set_name(s, "7. schema");
  ascope_use_sql(s, sqlite, db_path, "wal=1");
  ascope_use_sql_tx_at(s, sqlite, 0, NULL); /* on use 0, this very scope's connection */
  ascope_start(s, schema_body, scene_done, NULL);
  ascope_rt_run(rt);
}

/* ---- 2. queries at once ---------------------------------------------------------------- */

static int on_answer(ascope *s, int status, ascope_rows *rows, void *ud) {
  (void)s;
  if (status) return status;
  if (ascope_rows_columns(rows) == 2)
    tour_say("   %s: %s = %lld", (const char *)ud, ascope_rows_text(rows, 0, 0, NULL),
             (long long)ascope_rows_int64(rows, 0, 1));
  else
    tour_say("   %s: %lld", (const char *)ud, (long long)ascope_rows_int64(rows, 0, 0));
  return 0;
}

static void queries_body(ascope *s, void *ud) {
  (void)ud;
  ascope_sql *a = ascope_resource(s, 0), *b = ascope_resource(s, 1);
  tour_say("body: three queries at once, over two connections");
  ascope_sql_params *p = ascope_sql_params_new();
  ascope_sql_params_add_text(p, "owner-42", ASCOPE_SQL_NTS); /* bound, never spliced */
  ascope_sql_query(s, a, "SELECT owner, balance FROM account WHERE owner = $1", p, on_answer,
                   "lookup");
  ascope_sql_params_free(p);
  ascope_sql_query(s, b, "SELECT sum(balance) FROM account", NULL, on_answer, "total");
  ascope_sql_query(s, a, "SELECT owner, balance FROM account ORDER BY balance DESC LIMIT 1", NULL,
                   on_answer, "richest");
}

static void scene_queries(ascope_rt *rt) {
  ascope *s = ascope_new(rt);
  ascope_set_name(s, "7. queries");
  ascope_use_sql(s, sqlite, db_path, "wal=1");
  ascope_use_sql(s, sqlite, db_path, "wal=1 mode=ro");
  ascope_start(s, queries_body, scene_done, NULL);
  ascope_rt_run(rt);
}

/* ---- 3. a transaction rolled back by a deadline -------------------------------------------- */

static int on_moved(ascope *s, int status, ascope_rows *rows, void *ud) {
  (void)s;
  if (status) return status;
  tour_say("   %s: %lld row changed", (const char *)ud, (long long)ascope_rows_changes(rows));
  return 0;
}

static int on_audit(ascope *s, int status, ascope_rows *rows, void *ud) {
  (void)s;
  (void)rows;
  (void)ud;
  tour_say("   the audit query ends: %s", tour_outcome(status));
  return status;
}

static void transfer_body(ascope *s, void *ud) {
  (void)ud;
  ascope_sql *db = ascope_resource(s, 0);
  tour_say("body: move 500 from account 1 to 2, then a slow audit, under a 80 ms deadline");
  ascope_sql_exec(s, db, "UPDATE account SET balance = balance - 500 WHERE id = 1", NULL, on_moved,
                  "debit");
  ascope_sql_exec(s, db, "UPDATE account SET balance = balance + 500 WHERE id = 2", NULL, on_moved,
                  "credit");
  ascope_sql_query(s, db,
                   "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n "
                   "WHERE i < 1000000000) SELECT count(*) FROM n",
                   NULL, on_audit, NULL);
}

static int on_balance(ascope *s, int status, ascope_rows *rows, void *ud) {
  (void)s;
  (void)ud;
  if (status) return status;
  int64_t b = ascope_rows_int64(rows, 0, 0);
  tour_say("   account 1 holds %lld: the transfer was rolled back%s", (long long)b,
           b == 10 ? "" : " -- NOT");
  if (b != 10) failures++;
  return 0;
}

static void check_body(ascope *s, void *ud) {
  (void)ud;
  ascope_sql_query(s, ascope_resource(s, 0), "SELECT balance FROM account WHERE id = 1", NULL,
                   on_balance, NULL);
}

static void scene_rollback(ascope_rt *rt) {
  ascope *s = ascope_new(rt);
  ascope_set_name(s, "7. transfer under a deadline");
  ascope_use_sql(s, sqlite, db_path, "wal=1");
  ascope_use_sql_tx_at(s, sqlite, 0, "begin=immediate");
  ascope_set_timeout(s, 80);
  ascope_start(s, transfer_body, scene_done, "timeout");
  ascope_rt_run(rt);
  ascope *c = ascope_new(rt);
  ascope_set_name(c, "7. check balances");
  ascope_use_sql(c, sqlite, db_path, "mode=ro");
  ascope_start(c, check_body, scene_done, NULL);
  ascope_rt_run(rt);
}

/* ---- 4. a streamed result ------------------------------------------------------------------- */

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
    tour_say("   batch %d: %zu rows, %s .. %s; a slow consumer pauses 10 ms", r->batches, n,
             ascope_rows_text(rows, 0, 0, NULL), ascope_rows_text(rows, n - 1, 0, NULL));
    r->pauses++;
    uv_timer_start(&r->timer, on_resume, 10, 0);
    return ASCOPE_PAUSE; /* SQLite produces nothing more until the resume */
  }
  return ASCOPE_CONTINUE;
}

static void stream_body(ascope *s, void *ud) {
  reader *r = ud;
  tour_say("body: async for row in c.stream(\"SELECT owner, balance ... \"), 100 rows a batch");
  uv_timer_init(ascope_rt_loop(ascope_scope_rt(s)), &r->timer);
  r->timer.data = r;
  ascope_sql_stream(s, ascope_resource(s, 0), "SELECT owner, balance FROM account ORDER BY id",
                    NULL, on_batch, r, &r->op);
}

static void stream_done(ascope *s, int status, void *ud) {
  (void)ud;
  tour_say("done: %s", tour_outcome(status));
  tour_print_error(s);
  expect(status, 0, "sqlite stream");
}

static void scene_stream(ascope_rt *rt) {
  static reader r;
  ascope *s = ascope_new(rt);
  ascope_set_name(s, "7. stream 1000 rows");
  ascope_use_sql(s, sqlite, db_path, "mode=ro batch=100");
  ascope_start(s, stream_body, stream_done, &r);
  ascope_rt_run(rt);
  if (r.rows != 1000) failures++;
}

static void cleanup(void) {
  static const char *suffixes[] = {"", "-wal", "-shm"};
  char p[300];
  for (int i = 0; i < 3; i++) {
    snprintf(p, sizeof p, "%s%s", db_path, suffixes[i]);
    unlink(p);
  }
  rmdir(dir);
}

int tour_sqlite(ascope_rt *rt) {
  if (tour_temp_dir(dir, sizeof dir) == NULL) return 1;
  snprintf(db_path, sizeof db_path, "%s/bank.db", dir);
#ifdef TOUR_PLUGINS
  /* Linked with no driver: found by name, loaded from ASCOPE_DRIVER_PATH. */
  char why[512];
  sqlite = ascope_sql_driver_find("sqlite", why, sizeof why);
  if (sqlite == NULL) {
    fprintf(stderr, "tour: %s\n", why);
    return 1;
  }
#else
  sqlite = ascope_sqlite();
#endif
  failures = 0;
  scene_schema(rt);
  scene_queries(rt);
  scene_rollback(rt);
  scene_stream(rt);
  cleanup();
  return failures;
}
