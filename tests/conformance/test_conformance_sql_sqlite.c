/* The SQL conformance suite on the SQLite driver: each test on a database
 * file of its own, in a fresh temporary directory. */
#include <ascope/sqlite.h>
#include <criterion/criterion.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "sql_suite.h"
#include "temp_dir.h"

static char dir[256], path[280];

static int rm_one(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
  (void)sb, (void)flag, (void)ftw;
  return remove(p);
}

/* Also at exit: a failed assertion ends the test's process before cleanup. */
static void rm_dir(void) {
  if (dir[0]) nftw(dir, rm_one, 8, FTW_DEPTH | FTW_PHYS);
  dir[0] = '\0';
}

static const char *fresh_file(void *ud) {
  (void)ud;
  cr_assert_not_null(t_temp_dir(dir, sizeof dir, "ascope-sqlsuite"));
  atexit(rm_dir);
  snprintf(path, sizeof path, "%s/suite.db", dir);
  return path;
}

static void cleanup(void *ud) {
  (void)ud;
  rm_dir();
}

/* A hop is on the pool: the statement started last (the long query, once
 * every other statement was answered) runs. */
static bool running(ascope_sql *db, void *ud) {
  (void)db, (void)ud;
  return ascope_sqlite_stat("running") > 0;
}

static void check_clean(void *ud) {
  (void)ud;
  cr_assert_eq(ascope_sqlite_stat("connections"), 0, "a connection was left open");
  cr_assert_eq(ascope_sqlite_stat("running"), 0, "a hop is still running");
  cr_assert_eq(ascope_sqlite_stat("statements"), 0, "a prepared statement was left");
  cr_assert_eq(ascope_sqlite_stat("opened"), ascope_sqlite_stat("closed"),
               "opened and closed connections differ");
}

const ascope_sql_suite *ascope_sql_suite_describe(void) {
  static ascope_sql_suite d;
  d = (ascope_sql_suite){
      .name = "sqlite",
      .driver = NULL,
      .target = fresh_file,
      .cleanup = cleanup,
      .batch_100 = "batch=100",
      .blob_type = "BLOB",
      .running = running,
      .check_clean = check_clean,
      .code = {.unique = "SQLITE_CONSTRAINT_UNIQUE",
               .syntax = "SQLITE_ERROR",
               .params = "SQLITE_RANGE",
               .overflow = "SQLITE_ERROR",
               .several = "SQLITE_MISUSE"},
      /* statements run on the pool thread one by one: one queued behind a
       * cancelled statement is dropped before it starts */
      .flags = ASCOPE_SQL_SUITE_TEXT_NUL | ASCOPE_SQL_SUITE_BOOL_IS_INT | ASCOPE_SQL_SUITE_LAST_ID,
  };
  d.driver = ascope_sqlite();
  return &d;
}
