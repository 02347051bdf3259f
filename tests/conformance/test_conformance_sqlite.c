/* The conformance kit on the SQLite driver: a database file in a temporary
 * directory, SELECT 1 as the operation. */
#include <ascope/sql_driver.h>
#include <ascope/sqlite.h>
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "kit.h"
#include "temp_dir.h"

TestSuite(conformance_sqlite, .timeout = 300);

static int on_rows(ascope *s, int status, ascope_rows *rows, void *ud) {
  (void)s, (void)rows;
  return ascope_kit_op_done(ud, status);
}

static int select_op(ascope *s, void *res, ascope_kit_op *k) {
  return ascope_sql_query(s, res, "SELECT 1", NULL, on_rows, k);
}

Test(conformance_sqlite, select) {
  char dir[256], path[280], side[300];
  cr_assert(t_temp_dir(dir, sizeof dir, "ascope-kit"));
  snprintf(path, sizeof path, "%s/kit.db", dir);
  ascope_kit_driver d = {.name = "sqlite",
                         .driver = &ascope_sqlite()->base,
                         .target = path,
                         .bad_target = "/nonexistent-ascope-kit/kit.db",
                         .op = select_op,
                         .nops = 2,
                         /* a statement runs on the threadpool to its end */
                         .flags = ASCOPE_KIT_OPS_RUN_TO_END};
  int broken = ascope_kit_run(&d);
  unlink(path);
  snprintf(side, sizeof side, "%s-wal", path);
  unlink(side);
  snprintf(side, sizeof side, "%s-shm", path);
  unlink(side);
  rmdir(dir);
  cr_assert_eq(broken, 0, "the SQLite driver broke rules: see above");
}
