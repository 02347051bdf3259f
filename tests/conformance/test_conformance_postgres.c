/* The conformance kit on the PostgreSQL driver, against the server
 * scripts/pg-start runs (ASCOPE_PG_DSN). */
#include <ascope/postgres.h>
#include <ascope/sql_driver.h>
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>

#include "kit.h"

TestSuite(conformance_postgres, .timeout = 600);

static int on_rows(ascope *s, int status, ascope_rows *rows, void *ud) {
  (void)s, (void)rows;
  return ascope_kit_op_done(ud, status);
}

static int select_op(ascope *s, void *res, ascope_kit_op *k) {
  return ascope_sql_query(s, res, "SELECT 1", NULL, on_rows, k);
}

Test(conformance_postgres, select) {
  const char *dsn = getenv("ASCOPE_PG_DSN");
  cr_assert(dsn && *dsn, "ASCOPE_PG_DSN is not set: start the server with scripts/pg-start "
                         "and export the line it prints (scripts/test does both)");
  char bad[512];
  /* a later key wins: the same server, a database that does not exist */
  snprintf(bad, sizeof bad, "%s dbname=ascope_kit_no_such_db", dsn);
  ascope_kit_driver d = {.name = "postgres",
                         .driver = &ascope_postgres()->base,
                         .target = dsn,
                         .bad_target = bad,
                         .op = select_op,
                         .nops = 2,
                         /* a statement sent may have run: docs/drivers/postgres.md */
                         .flags = ASCOPE_KIT_OPS_RUN_TO_END};
  cr_assert_eq(ascope_kit_run(&d), 0, "the PostgreSQL driver broke rules: see above");
}
