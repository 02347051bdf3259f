/* The SQLite driver under allocation failure: each allocation of a connect,
 * a transaction (BEGIN, COMMIT), an exec with parameters, a query and a
 * stream fails in turn — on the loop thread and on the threadpool, where
 * statements run — and every time the scope ends once, cleanly, with no
 * block left; the next run, with nothing failing, succeeds. */
#include <ascope/sqlite.h>

#include "alloc_fail.h"

static char dir[] = "/tmp/ascope-sqlite-alloc-XXXXXX";
static char path[96];

static void setup(void) {
  cr_assert(mkdtemp(dir));
  snprintf(path, sizeof path, "%s/t.db", dir);
}

static void teardown(void) {
  char side[112];
  unlink(path);
  snprintf(side, sizeof side, "%s-wal", path);
  unlink(side);
  snprintf(side, sizeof side, "%s-shm", path);
  unlink(side);
  snprintf(side, sizeof side, "%s-journal", path);
  unlink(side);
  rmdir(dir);
}

/* Suite-wide, so that the Criterion stand-in under TSan runs it too. */
TestSuite(sqlite_alloc, .init = setup, .fini = teardown, .timeout = 600);

static int on_batch(ascope *s, int status, ascope_rows *rows, void *ud) {
  if (rows != NULL) return 0;
  return af_sql_cb(s, status, rows, ud);
}

static int uses(ascope *s, af_run *r) {
  (void)r;
  int rc = ascope_use_sqlite(s, path, NULL);
  return rc ? rc : ascope_use_sql_tx_at(s, ascope_sqlite(), 0, NULL);
}

static void body(ascope *s, void *ud) {
  af_run *r = ud;
  ascope_sql *db = ascope_sql_resource(s, 0);
  ascope_sql_params *p = ascope_sql_params_new();
  if (p == NULL) {
    af_saw(r, UV_ENOMEM);
    ascope_cancel(s);
    return;
  }
  int rc = ascope_sql_params_add_int64(p, 42);
  if (rc == 0) rc = ascope_sql_params_add_text(p, "a text parameter", ASCOPE_SQL_NTS);
  if (rc == 0) {
    af_start_op(r, ascope_sql_exec(s, db, "CREATE TABLE IF NOT EXISTS t(a INTEGER, b TEXT)", NULL,
                                   af_sql_cb, r));
    af_start_op(r, ascope_sql_exec(s, db, "INSERT INTO t VALUES (?, ?)", p, af_sql_cb, r));
    af_start_op(
        r, ascope_sql_query(s, db, "SELECT a, b, length(b) FROM t LIMIT 3", NULL, af_sql_cb, r));
    af_start_op(r,
                ascope_sql_stream(s, db,
                                  "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c "
                                  "WHERE x < 3000) SELECT x, 'row ' || x FROM c",
                                  NULL, on_batch, r, NULL));
  } else {
    af_saw(r, rc);
    ascope_cancel(s);
  }
  ascope_sql_params_free(p);
}

static void scenario(af_run *r) {
  af_scope(r, uses, body);
}

static int table_uses(ascope *s, af_run *r) {
  (void)r;
  return ascope_use_sqlite(s, path, NULL);
}

static void table_body(ascope *s, void *ud) {
  af_start_op(ud, ascope_sql_exec(s, ascope_sql_resource(s, 0),
                                  "CREATE TABLE IF NOT EXISTS t(a INTEGER, b TEXT)", NULL,
                                  af_sql_cb, ud));
}

Test(sqlite_alloc, connect_query_stream_tx) {
  /* The table exists before the sweep: a run whose CREATE fails must not
   * leave the INSERT behind it to fail on a missing table. */
  af_run made = {0};
  af_scope(&made, table_uses, table_body);
  cr_assert_eq(made.status, 0, "%s", made.why);
  af_sweep("sqlite", scenario, NULL);
}

/* ascope_sql_exec_many: five rows of one INSERT in a transaction, between
 * two single statements. Each allocation of the batch fails in turn: the
 * call refuses with UV_ENOMEM and nothing queued (no callback), or the batch
 * answers once, its rows counted into the operation that ended. */
#define MANY_ROWS 5

static void many_body(ascope *s, void *ud) {
  af_run *r = ud;
  ascope_sql *db = ascope_sql_resource(s, 0);
  ascope_sql_params *p = ascope_sql_params_new();
  int rc = p ? 0 : UV_ENOMEM;
  for (int i = 0; i < MANY_ROWS && rc == 0; i++) {
    rc = ascope_sql_params_add_int64(p, 100 + i);
    if (rc == 0) rc = ascope_sql_params_add_text(p, "a row of a batch", ASCOPE_SQL_NTS);
  }
  if (rc == 0) {
    af_start_op(r, ascope_sql_exec(s, db, "DELETE FROM t WHERE a >= 100", NULL, af_sql_cb, r));
    ascope_op *op = NULL;
    rc =
        ascope_sql_exec_many(s, db, "INSERT INTO t VALUES (?, ?)", p, MANY_ROWS, af_sql_cb, r, &op);
    if (rc == 0 && op == NULL) af_saw(r, UV_EPROTO); /* a batch queued gives its operation */
    if (rc != 0 && op != NULL) af_saw(r, UV_EPROTO); /* a refusal gives none */
    af_start_op(r, rc);
    af_start_op(
        r, ascope_sql_query(s, db, "SELECT count(*) FROM t WHERE a >= 100", NULL, af_sql_cb, r));
  } else {
    af_saw(r, rc);
    ascope_cancel(s);
  }
  ascope_sql_params_free(p);
}

static void many_scenario(af_run *r) {
  af_scope(r, uses, many_body);
}

Test(sqlite_alloc, exec_many) {
  af_run made = {0};
  af_scope(&made, table_uses, table_body);
  cr_assert_eq(made.status, 0, "%s", made.why);
  af_sweep("sqlite exec_many", many_scenario, NULL);
}
