/* The SQL drivers loaded as plugins: this program is linked with the core
 * and the SQL interface only, never with a driver's library, and finds
 * SQLite by name in ASCOPE_DRIVER_PATH (the build's plugins/ folder,
 * set by tests/CMakeLists.txt). */
#include <ascope/sql.h>
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "temp_dir.h"

#ifndef PLUGINS
#error "PLUGINS is defined by tests/CMakeLists.txt"
#endif

TestSuite(sql_plugins, .timeout = 60);

static int value;
static char driver[32];

static int value_cb(ascope *s, int status, ascope_rows *rows, void *ud) {
  (void)s, (void)ud;
  if (status == 0) value = (int)ascope_rows_int64(rows, 0, 0);
  return status;
}

static void body(ascope *s, void *ud) {
  (void)ud;
  ascope_sql *db = ascope_sql_resource(s, 0);
  cr_assert_not_null(db);
  snprintf(driver, sizeof driver, "%s", ascope_sql_driver_name(db));
  ascope_sql_query(s, db, "SELECT 6 * 7", NULL, value_cb, NULL);
}

Test(sql_plugins, sqlite_is_loaded_by_name_from_ASCOPE_DRIVER_PATH) {
  char err[512];
  /* not linked in: without the path, it is nowhere */
  setenv("ASCOPE_DRIVER_PATH", "/nonexistent-ascope", 1);
  cr_assert_null(ascope_sql_driver_find("sqlite", err, sizeof err));
  setenv("ASCOPE_DRIVER_PATH", PLUGINS, 1);
  const ascope_sql_driver *drv = ascope_sql_driver_find("sqlite", err, sizeof err);
  cr_assert_not_null(drv, "%s", err);

  char dir[256], url[300];
  cr_assert_not_null(t_temp_dir(dir, sizeof dir, "ascope-plugins-sql"));
  snprintf(url, sizeof url, "sqlite://%s/p.db", dir);
  ascope_rt *rt = ascope_rt_new(NULL);
  ascope *s = ascope_new(rt);
  cr_assert_eq(ascope_use_sql_url(s, url, NULL), 0);
  cr_assert_eq(ascope_start(s, body, NULL, NULL), 0);
  cr_assert_eq(ascope_rt_run(rt), 0);
  cr_assert_eq(ascope_rt_free(rt), 0);
  cr_assert_eq(value, 42);
  cr_assert_str_eq(driver, "sqlite");
  char p[300];
  snprintf(p, sizeof p, "%s/p.db", dir);
  unlink(p);
  rmdir(dir);
}
