/* sqlite_accounts [DB]: a transaction, bound parameters, a query.
 *
 *   async with aiosqlite.connect(db) as db, db.transaction():
 *       await db.executemany("INSERT ...", accounts)
 *       print(await db.fetchall("SELECT ..."))
 *
 * The transaction commits when the scope ends well and rolls back on any
 * error; the connection closes after it, whatever happened. */
#include <ascope/sqlite.h>

#include <stdio.h>

static int on_rows(ascope *s, int status, ascope_rows *rows, void *ud) {
  (void)s, (void)ud;
  if (status) return status;
  for (size_t i = 0; i < ascope_rows_count(rows); i++)
    printf("%-8s %6lld\n", ascope_rows_text(rows, i, 0, NULL),
           (long long)ascope_rows_int64(rows, i, 1));
  return 0;
}

static void body(ascope *s, void *ud) {
  ascope_sql *db = ascope_sql_resource(s, *(size_t *)ud);
  static const char *owners[] = {"ada", "grace", "linus"};
  ascope_sql_exec(s, db, "CREATE TABLE IF NOT EXISTS account (owner TEXT, balance INTEGER)", NULL,
                  NULL, NULL);
  ascope_sql_params *p = ascope_sql_params_new();
  for (int i = 0; i < 3; i++) { /* values are bound, never spliced into the SQL */
    ascope_sql_params_clear(p);
    ascope_sql_params_add_text(p, owners[i], ASCOPE_SQL_NTS);
    ascope_sql_params_add_int64(p, 100 * (i + 1));
    ascope_sql_exec(s, db, "INSERT INTO account VALUES (?, ?)", p, NULL, NULL);
  }
  ascope_sql_params_free(p);
  ascope_sql_query(s, db, "SELECT owner, sum(balance) FROM account GROUP BY owner", NULL, on_rows,
                   NULL);
}

static int result;

static void done(ascope *s, int status, void *ud) {
  (void)ud;
  result = status;
  char err[512];
  ascope_err_format(ascope_error(s), err, sizeof err);
  if (status) fprintf(stderr, "%s\n", err);
}

int main(int argc, char **argv) {
  ascope_rt *rt = ascope_rt_new(NULL);
  ascope *s = ascope_new(rt);
  size_t db = ascope_use_count(s);
  ascope_use_sqlite(s, argc > 1 ? argv[1] : ":memory:", NULL);
  ascope_use_sql_tx_at(s, ascope_sqlite(), db, NULL);
  ascope_set_timeout(s, 5000);
  int rc = ascope_start(s, body, done, &db);
  if (rc == 0) rc = ascope_rt_run(rt);
  ascope_rt_free(rt);
  return rc || result ? 1 : 0;
}
