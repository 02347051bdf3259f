/* The SQL conformance suite on the PostgreSQL driver, against the server
 * scripts/pg-start runs (ASCOPE_PG_DSN). A libpq connection of the
 * runner's own asks the server whether a statement runs. */
#include <ascope/postgres.h>
#include <criterion/criterion.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sql_suite.h"

static PGconn *watcher;

static const char *dsn(void *ud) {
  (void)ud;
  const char *d = getenv("ASCOPE_PG_DSN");
  cr_assert(d && *d, "ASCOPE_PG_DSN is not set: start the server with scripts/pg-start "
                     "and export the line it prints (scripts/test does both)");
  return d;
}

/* The connection's backend is executing a statement (not idle, nor idle
 * in its transaction between two statements): the long query, the only
 * one left. Asked of the server, since nothing on the client's side says
 * a statement sent has started. */
static bool running(ascope_sql *db, void *ud) {
  if (watcher == NULL) {
    watcher = PQconnectdb(dsn(ud));
    cr_assert_eq(PQstatus(watcher), CONNECTION_OK, "%s", PQerrorMessage(watcher));
  }
  char sql[160];
  snprintf(sql, sizeof sql,
           "SELECT count(*) FROM pg_stat_activity WHERE pid = %d AND state = 'active'",
           ascope_postgres_backend_pid(db));
  PGresult *r = PQexec(watcher, sql);
  cr_assert_eq(PQresultStatus(r), PGRES_TUPLES_OK, "%s", PQresultErrorMessage(r));
  bool active = strcmp(PQgetvalue(r, 0, 0), "1") == 0;
  PQclear(r);
  return active;
}

static void cleanup(void *ud) {
  (void)ud;
  if (watcher) PQfinish(watcher);
  watcher = NULL;
}

static void check_clean(void *ud) {
  (void)ud;
  cr_assert_eq(ascope_postgres_stat("connections"), 0, "a connection was left open");
  cr_assert_eq(ascope_postgres_stat("opened"), ascope_postgres_stat("closed"),
               "opened and closed connections differ");
}

const ascope_sql_suite *ascope_sql_suite_describe(void) {
  static ascope_sql_suite d;
  d = (ascope_sql_suite){
      .name = "postgres",
      .target = dsn,
      .cleanup = cleanup,
      .batch_100 = "batch=100",
      .blob_type = "bytea",
      .long_query = "SELECT pg_sleep(30)",
      .running = running,
      .check_clean = check_clean,
      .code = {.unique = "23505",
               .syntax = "42601",
               .params = NULL, /* refused at the call: PARAMS_AT_CALL */
               .overflow = "22003",
               .several = "42601"},
      /* a statement sent down the pipeline runs on the server even when
       * its scope is cancelled meanwhile (docs/drivers/postgres.md); the
       * values are counted against the parameters at the call */
      .flags = ASCOPE_SQL_SUITE_CANCELLED_MAY_RUN | ASCOPE_SQL_SUITE_PARAMS_AT_CALL,
  };
  d.driver = ascope_postgres();
  return &d;
}
