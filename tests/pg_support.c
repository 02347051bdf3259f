#include "pg_support.h"

#include <libpq-fe.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

ascope_rt *T_rt;

const char *t_dsn(void) {
  const char *dsn = getenv("ASCOPE_PG_DSN");
  if (dsn == NULL || *dsn == '\0')
    cr_assert_fail("ASCOPE_PG_DSN is not set: these tests need a PostgreSQL server. Start one "
                   "with `out=$(scripts/pg-start) && export \"$out\"` (scripts/test does it).");
  return dsn;
}

void t_init(void) {
  t_dsn();
  T_rt = ascope_rt_new(NULL);
  cr_assert_not_null(T_rt);
}

void t_fini(void) {
  if (T_rt) cr_assert_eq(ascope_rt_free(T_rt), 0);
  T_rt = NULL;
  t_check_clean();
}

const char *t_name(const char *base) {
  static char bufs[8][96];
  static int k;
  char *b = bufs[k++ & 7];
  snprintf(b, sizeof bufs[0], "%s_%d", base, (int)getpid());
  return b;
}

const char *t_sql(const char *fmt, ...) {
  static char bufs[8][1024];
  static int k;
  char *b = bufs[k++ & 7];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(b, sizeof bufs[0], fmt, ap);
  va_end(ap);
  return b;
}

void t_check_clean(void) {
  cr_assert_eq(ascope_postgres_stat("connections"), 0, "a connection was leaked");
  cr_assert_eq(ascope_postgres_stat("opened"), ascope_postgres_stat("closed"),
               "opened %lld and closed %lld connections differ",
               (long long)ascope_postgres_stat("opened"),
               (long long)ascope_postgres_stat("closed"));
  cr_assert_eq(ascope_sql_stat("requests"), 0, "a request was leaked");
  cr_assert_eq(ascope_sql_stat("transactions"), 0, "a transaction was left open");
}

/* ---- scopes -------------------------------------------------------------------------- */

int t_run_db(t_scope *t, const char *options) {
  ascope *s = ascope_new(T_rt);
  cr_assert_eq(ascope_use_postgres(s, t_dsn(), options), 0);
  return t_run(s, t);
}

/* ---- the raw oracle ---------------------------------------------------------------------- */

static PGconn *raw_open(void) {
  PGconn *c = PQconnectdb(t_dsn());
  cr_assert_eq(PQstatus(c), CONNECTION_OK, "oracle: %s", PQerrorMessage(c));
  return c;
}

void t_raw(const char *sql) {
  PGconn *c = raw_open();
  PGresult *r = PQexec(c, sql);
  ExecStatusType st = PQresultStatus(r);
  cr_assert(st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK, "oracle: %s: %s", sql,
            PQresultErrorMessage(r));
  PQclear(r);
  PQfinish(c);
}

char *t_raw_text(const char *sql) {
  PGconn *c = raw_open();
  PGresult *r = PQexec(c, sql);
  cr_assert_eq(PQresultStatus(r), PGRES_TUPLES_OK, "oracle: %s: %s", sql, PQresultErrorMessage(r));
  cr_assert_gt(PQntuples(r), 0, "oracle: %s: no row", sql);
  char *v = strdup(PQgetvalue(r, 0, 0));
  PQclear(r);
  PQfinish(c);
  return v;
}

int64_t t_raw_int(const char *sql) {
  char *t = t_raw_text(sql);
  int64_t v = strtoll(t, NULL, 10);
  free(t);
  return v;
}

/* ---- timers ---------------------------------------------------------------------------------- */

/* t_after and t_cancel_cb: tests/support/scope_record.c */

/* ---- a recording callback ----------------------------------------------------------------- */

int t_cb_fn(ascope *s, int status, ascope_rows *rows, void *ud) {
  (void)s;
  t_cb *c = ud;
  c->calls++;
  c->status = status;
  if (rows) {
    c->rows = ascope_rows_count(rows);
    c->changes = ascope_rows_changes(rows);
    c->first = ascope_rows_int64(rows, 0, 0);
  }
  if (status < 0 && c->db) {
    t_copy(c->code, sizeof c->code, ascope_sql_errcode(c->db));
    t_copy(c->msg, sizeof c->msg, ascope_sql_errmsg(c->db));
  }
  return c->pass ? status : c->ret;
}
