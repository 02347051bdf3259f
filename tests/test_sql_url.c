/* Connections named by URL: the scheme picks the SQL driver, the rest is
 * its target; a driver that is nowhere fails the acquire with where it was
 * looked for; bad URLs are refused at once. */
#include <ascope/file.h>
#include <ascope/postgres.h>
#include <ascope/sqlite.h>
#include <criterion/criterion.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "temp_dir.h"

TestSuite(sql_url, .timeout = 60);

struct run {
  int status, value, calls;
  char msg[512], driver[32];
  const char *sql;
};

static int value_cb(ascope *s, int status, ascope_rows *rows, void *ud) {
  (void)s;
  struct run *r = ud;
  r->calls++;
  if (status == 0) r->value = (int)ascope_rows_int64(rows, 0, 0);
  return status;
}

static void body(ascope *s, void *ud) {
  struct run *r = ud;
  ascope_sql *db = ascope_sql_resource(s, 0);
  cr_assert_not_null(db);
  snprintf(r->driver, sizeof r->driver, "%s", ascope_sql_driver_name(db));
  cr_assert_eq(ascope_sql_query(s, db, r->sql ? r->sql : "SELECT 40 + 2", NULL, value_cb, r), 0);
}

static void done(ascope *s, int status, void *ud) {
  struct run *r = ud;
  r->status = status;
  const ascope_err *e = ascope_error(s);
  snprintf(r->msg, sizeof r->msg, "%s", e ? ascope_err_message(e) : "");
}

/* Runs one scope on the connection `url` names; its status. */
static int run_url(const char *url, struct run *r) {
  ascope_rt *rt = ascope_rt_new(NULL);
  ascope *s = ascope_new(rt);
  int rc = ascope_use_sql_url(s, url, NULL);
  if (rc != 0) {
    ascope_discard(s);
    cr_assert_eq(ascope_rt_free(rt), 0);
    return rc;
  }
  cr_assert_eq(ascope_start(s, body, done, r), 0);
  cr_assert_eq(ascope_rt_run(rt), 0);
  cr_assert_eq(ascope_rt_free(rt), 0);
  return r->status;
}

static char dir[256];

static void in_dir(void) {
  cr_assert_not_null(t_temp_dir(dir, sizeof dir, "ascope-url"));
  cr_assert_eq(chdir(dir), 0);
}

static void rm_dir(void) {
  unlink("rel.db");
  char p[300];
  snprintf(p, sizeof p, "%s/abs.db", dir);
  unlink(p);
  cr_assert_eq(chdir("/"), 0);
  rmdir(dir);
}

Test(sql_url, sqlite_urls_name_a_path) {
  in_dir();
  char abs[300];
  snprintf(abs, sizeof abs, "sqlite://%s/abs.db", dir);
  const char *urls[] = {"sqlite:rel.db",  "sqlite://rel.db", abs,
                        "sqlite3:rel.db", "SQLite:rel.db",   "sqlite::memory:"};
  for (size_t i = 0; i < sizeof urls / sizeof urls[0]; i++) {
    struct run r = {0};
    cr_assert_eq(run_url(urls[i], &r), 0, "%s: %s", urls[i], r.msg);
    cr_assert_eq(r.value, 42);
    cr_assert_str_eq(r.driver, "sqlite");
  }
  cr_assert_eq(access("rel.db", F_OK), 0, "sqlite:rel.db is relative to the working folder");
  char p[300];
  snprintf(p, sizeof p, "%s/abs.db", dir);
  cr_assert_eq(access(p, F_OK), 0, "sqlite:///abs is an absolute path");
  rm_dir();
}

/* postgresql://user:password@host:port/dbname from the test cluster's
 * keyword DSN (its password is hex: nothing to escape). */
static void pg_url(char *out, size_t cap, const char *scheme) {
  const char *dsn = getenv("ASCOPE_PG_DSN");
  cr_assert_not_null(dsn, "ASCOPE_PG_DSN is set by scripts/pg-start");
  PQconninfoOption *o = PQconninfoParse(dsn, NULL);
  cr_assert_not_null(o);
  const char *host = "", *port = "", *db = "", *user = "", *pw = "";
  for (PQconninfoOption *i = o; i->keyword; i++) {
    if (i->val == NULL) continue;
    if (!strcmp(i->keyword, "host")) host = i->val;
    if (!strcmp(i->keyword, "port")) port = i->val;
    if (!strcmp(i->keyword, "dbname")) db = i->val;
    if (!strcmp(i->keyword, "user")) user = i->val;
    if (!strcmp(i->keyword, "password")) pw = i->val;
  }
  snprintf(out, cap, "%s://%s%s%s@%s:%s/%s", scheme, user, *pw ? ":" : "", pw, host, port, db);
  PQconninfoFree(o);
}

Test(sql_url, postgres_urls_go_to_libpq_whole) {
  const char *schemes[] = {"postgresql", "postgres"};
  for (int i = 0; i < 2; i++) {
    char url[1024];
    pg_url(url, sizeof url, schemes[i]);
    struct run r = {0};
    cr_assert_eq(run_url(url, &r), 0, "%s: %s", schemes[i], r.msg);
    cr_assert_eq(r.value, 42);
    cr_assert_str_eq(r.driver, "postgres");
  }
}

Test(sql_url, an_unknown_driver_fails_the_acquire_saying_where_it_looked) {
  setenv("ASCOPE_DRIVER_PATH", "/nonexistent-ascope", 1);
  struct run r = {0};
  cr_assert_eq(run_url("mysql://localhost/db", &r), UV_ENOENT);
  cr_assert_eq(r.calls, 0, "no statement ran");
  cr_assert(strstr(r.msg, "no driver named \"mysql\""), "%s", r.msg);
  cr_assert(strstr(r.msg, "/nonexistent-ascope"), "%s", r.msg);
}

Test(sql_url, a_driver_that_is_not_sql_is_refused) {
  (void)ascope_file_driver(); /* linked: registered as "file" */
  char err[256];
  cr_assert_null(ascope_sql_driver_find("file", err, sizeof err));
  cr_assert(strstr(err, "not a SQL driver"), "%s", err);
  struct run r = {0};
  cr_assert_eq(run_url("file:/etc/hostname", &r), UV_ENOENT);
  cr_assert(strstr(r.msg, "not a SQL driver"), "%s", r.msg);
  cr_assert_eq(ascope_sql_driver_find("sqlite", err, sizeof err), ascope_sqlite());
  cr_assert_eq(ascope_sql_driver_find("postgres", err, sizeof err), ascope_postgres());
}

Test(sql_url, urls_without_a_scheme_or_target_are_refused_at_once) {
  const char *bad[] = {"", "rel.db", ":x", "sqlite:", "sqlite://", "a b:c", "/abs/path.db"};
  ascope_rt *rt = ascope_rt_new(NULL);
  ascope *s = ascope_new(rt);
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
    cr_assert_eq(ascope_use_sql_url(s, bad[i], NULL), UV_EINVAL, "'%s'", bad[i]);
  cr_assert_eq(ascope_use_sql_url(s, NULL, NULL), UV_EINVAL);
  cr_assert_eq(ascope_use_sql_url(NULL, "sqlite:x", NULL), UV_EINVAL);
  cr_assert_eq(ascope_use_count(s), 0, "nothing was added");
  ascope_discard(s);
  cr_assert_eq(ascope_rt_free(rt), 0);
}
