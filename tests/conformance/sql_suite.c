/* The SQL conformance suite: sql_suite.h says what it is. The SQL here is
 * the same for every driver (portable to SQLite and PostgreSQL); what may
 * differ comes from the runner's ascope_sql_suite. State the suite checks
 * after the fact is read through the driver itself, on a connection of its
 * own, never through the database's native client: the suite knows only
 * sql.h.
 *
 * Only the Criterion subset the TSan stand-in supports is used: Test,
 * TestSuite(.init, .fini, .timeout) and the plain cr_assert* macros, each
 * message starting with a string literal. Checks made per row or per
 * statement count failures and assert once (ctest runs with --full-stats,
 * where every passing assertion is a message to the runner). */
#include "sql_suite.h"

#include <criterion/criterion.h>
#include <float.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "scope_record.h"

/* Each runner compiles the suite under a name of its own (sql_sqlite…), so
 * the reports say which driver a case ran on. */
#ifndef ASCOPE_SQL_SUITE_NAME
#define ASCOPE_SQL_SUITE_NAME sql
#endif
/* One level more, so the name is expanded before Test() pastes it. */
#define SQL_TEST_(suite, name) Test(suite, name)
#define SQL_TEST(name) SQL_TEST_(ASCOPE_SQL_SUITE_NAME, name)
#define SQL_SUITE_(suite, ...) TestSuite(suite, __VA_ARGS__)

ascope_rt *T_rt; /* scope_record.c's runtime */

static const ascope_sql_suite *D;
static const char *target;

/* ---- names, SQL text, options ---------------------------------------------------------------- */

/* Tables this test made, dropped at its end (a shared server keeps them). */
static char made[8][64];
static int nmade;

/* "base_<pid>": the test's table; remembered for the drop. */
static const char *tab(const char *base) {
  static char bufs[8][64];
  static int k;
  char *b = bufs[k++ & 7];
  snprintf(b, sizeof bufs[0], "%s_%d", base, (int)getpid());
  int known = 0;
  for (int i = 0; i < nmade; i++) known |= strcmp(made[i], b) == 0;
  if (!known && nmade < 8) snprintf(made[nmade++], sizeof made[0], "%s", b);
  return b;
}

static const char *sqlf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static const char *sqlf(const char *fmt, ...) {
  static char bufs[16][1024];
  static int k;
  char *b = bufs[k++ & 15];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(b, sizeof bufs[0], fmt, ap);
  va_end(ap);
  return b;
}

/* The driver's options for every connection, plus extra. */
static const char *opts(const char *extra) {
  if (!extra) return D->options;
  if (!D->options) return extra;
  return sqlf("%s %s", D->options, extra);
}

/* Rows 1..n in a column x, in order. */
#define SERIES "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < %d) "
static const char *series(int n) {
  return sqlf(SERIES "SELECT x FROM c", n);
}

#define PORTABLE_LONG_QUERY                                                                        \
  "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 2000000000) "          \
  "SELECT count(*) FROM c"
static const char *long_query(void) {
  return D->long_query ? D->long_query : PORTABLE_LONG_QUERY;
}

/* s, or "" for NULL: for messages and string comparisons. */
static const char *nz(const char *s) {
  return s ? s : "";
}

/* The code is the one the runner names, or any when it names none. */
static void assert_code(const char *got, const char *want, const char *what) {
  cr_assert_neq(got[0], '\0', "%s: no code", what);
  if (want) cr_assert_str_eq(got, want, "%s", what);
}

/* ---- a recording callback -------------------------------------------------------------------- */

typedef struct ss_cb {
  int calls, status, ret;
  bool pass; /* return the status: an error fails the scope */
  size_t rows;
  int64_t changes, last_id, first;
  char code[64], msg[512];
  bool code_after; /* ascope_sql_errcode() gave something in a call with status 0 */
  ascope_sql *db;
} ss_cb;

static int ss_cb_fn(ascope *s, int status, ascope_rows *rows, void *ud) {
  (void)s;
  ss_cb *c = ud;
  c->calls++;
  c->status = status;
  if (rows) {
    c->rows = ascope_rows_count(rows);
    c->changes = ascope_rows_changes(rows);
    c->last_id = ascope_rows_last_id(rows);
    c->first = ascope_rows_int64(rows, 0, 0);
  }
  if (c->db && status < 0) {
    t_copy(c->code, sizeof c->code, ascope_sql_errcode(c->db));
    t_copy(c->msg, sizeof c->msg, ascope_sql_errmsg(c->db));
  }
  if (c->db && status == 0) c->code_after = ascope_sql_errcode(c->db) != NULL;
  return c->pass ? status : c->ret;
}

/* ---- scopes ---------------------------------------------------------------------------------- */

/* A failed assertion inside a callback ends the test with its loop half
 * run: the end of the test must then not run the loop again. */
static bool in_loop;

static int run(ascope *s, t_scope *t) {
  in_loop = true;
  int status = t_run(s, t);
  in_loop = false;
  return status;
}

/* A scope on a connection of the test's target (use 0). */
static ascope *db_scope(const char *extra_options) {
  ascope *s = ascope_new(T_rt);
  cr_assert_not_null(s);
  cr_assert_eq(ascope_use_sql(s, D->driver, target, opts(extra_options)), 0);
  return s;
}

/* The same with a transaction on that connection (use 1). */
static ascope *tx_scope(void) {
  ascope *s = db_scope(NULL);
  cr_assert_eq(ascope_use_sql_tx_at(s, D->driver, 0, NULL), 0);
  return s;
}

struct one {
  t_scope t;
  const char *sql;
  bool query;
  ss_cb cb;
};

static void one_body(ascope *s, t_scope *t) {
  struct one *o = (struct one *)t;
  o->cb.db = ascope_sql_resource(s, 0);
  o->cb.pass = true;
  int rc = o->query ? ascope_sql_query(s, o->cb.db, o->sql, NULL, ss_cb_fn, &o->cb)
                    : ascope_sql_exec(s, o->cb.db, o->sql, NULL, ss_cb_fn, &o->cb);
  cr_assert_eq(rc, 0, "%s", o->sql);
}

/* One statement on a connection of its own; asserts it succeeded. */
static void run_exec(const char *sql) {
  struct one o = {.t.body = one_body, .sql = sql};
  cr_assert_eq(run(db_scope(NULL), &o.t), 0, "%s: %s", sql, o.t.msg);
}

/* The integer a query's first row starts with, read on a connection of its
 * own: what the database holds, as any other client would see it. */
static int64_t query_int(const char *sql) {
  struct one o = {.t.body = one_body, .sql = sql, .query = true};
  cr_assert_eq(run(db_scope(NULL), &o.t), 0, "%s: %s", sql, o.t.msg);
  cr_assert_eq(o.cb.rows, 1, "%s: %zu rows", sql, o.cb.rows);
  return o.cb.first;
}

static void insert_text(ascope *s, ascope_sql *db, const char *table, const char *v,
                        ascope_sql_cb cb, void *ud) {
  ascope_sql_params *p = ascope_sql_params_new();
  cr_assert_not_null(p);
  cr_assert_eq(ascope_sql_params_add_text(p, v, ASCOPE_SQL_NTS), 0);
  cr_assert_eq(ascope_sql_exec(s, db, sqlf("INSERT INTO %s VALUES ($1)", table), p, cb, ud), 0);
  ascope_sql_params_free(p);
}

/* ---- set-up and the leak check --------------------------------------------------------------- */

static void ss_init(void) {
  D = ascope_sql_suite_describe();
  cr_assert_not_null(D, "the runner describes no driver");
  cr_assert_not_null(D->driver);
  cr_assert_not_null(D->target);
  target = D->target(D->ud);
  cr_assert_not_null(target, "the runner gave no target");
  T_rt = ascope_rt_new(NULL);
  cr_assert_not_null(T_rt);
  nmade = 0;
}

static void ss_fini(void) {
  if (in_loop) { /* failed: leave the runtime as it is */
    if (D->cleanup) D->cleanup(D->ud);
    return;
  }
  for (int i = 0; i < nmade; i++) run_exec(sqlf("DROP TABLE IF EXISTS %s", made[i]));
  cr_assert_eq(ascope_rt_free(T_rt), 0);
  T_rt = NULL;
  cr_assert_eq(ascope_sql_stat("requests"), 0, "a request was left");
  cr_assert_eq(ascope_sql_stat("transactions"), 0, "a transaction was left open");
  cr_assert_eq(ascope_sql_stat("rows_live"), 0, "a result object was left");
  if (D->check_clean) D->check_clean(D->ud);
  if (D->cleanup) D->cleanup(D->ud);
}

SQL_SUITE_(ASCOPE_SQL_SUITE_NAME, .init = ss_init, .fini = ss_fini, .timeout = 120);

/* ==== types =================================================================================== */

static const char utf8[] = "h\xc3\xa9llo w\xc3\xb6rld \xe2\x80\x94 \xe2\x9c\x93 "
                           "\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e \xf0\x9f\x8e\x89";
static const unsigned char bin[] = {0, 1, 2, 0, 255, 0, 'x', 0};
#define BIG_LEN ((1u << 20) + 3) /* about 1 MiB, not a round size */

static unsigned char big_byte(size_t i) {
  return (unsigned char)(i * 7 + (i >> 13));
}

struct types {
  t_scope t;
  ascope_sql *db;
  unsigned char *big;
  ss_cb create, ins[4], nul, many, upd, none, del, select;
  int nul_rc;
  int read, echoed, named;
};

static int bool_type(void) {
  return (D->flags & ASCOPE_SQL_SUITE_BOOL_IS_INT) ? ASCOPE_SQL_INT64 : ASCOPE_SQL_BOOL;
}

/* Row r of the table (ids 1..4), columns id, b, i, d, t, bl. */
static void check_null_row(const ascope_rows *r, size_t row) {
  size_t len = 99;
  for (size_t c = 1; c < 6; c++) {
    cr_assert(ascope_rows_is_null(r, row, c), "column %zu", c);
    cr_assert_eq(ascope_rows_type(r, row, c), ASCOPE_SQL_NULL, "column %zu", c);
  }
  cr_assert_eq(ascope_rows_int64(r, row, 2), 0);
  cr_assert_eq(ascope_rows_double(r, row, 3), 0.0);
  cr_assert_null(ascope_rows_text(r, row, 4, &len));
  cr_assert_eq(len, 0);
  len = 99;
  cr_assert_null(ascope_rows_blob(r, row, 5, &len));
  cr_assert_eq(len, 0);
}

static int types_rows(ascope *s, int status, ascope_rows *r, void *ud) {
  (void)s;
  struct types *ty = ud;
  cr_assert_eq(status, 0, "%s", nz(ascope_sql_errmsg(ty->db)));
  cr_assert_eq(ascope_rows_count(r), 4);
  cr_assert_eq(ascope_rows_columns(r), 6);
  static const char *names[] = {"id", "b", "i", "d", "t", "bl"};
  static const int declared[] = {ASCOPE_SQL_INT64,  ASCOPE_SQL_BOOL, ASCOPE_SQL_INT64,
                                 ASCOPE_SQL_DOUBLE, ASCOPE_SQL_TEXT, ASCOPE_SQL_BLOB};
  for (size_t c = 0; c < 6; c++) {
    cr_assert_str_eq(nz(ascope_rows_column_name(r, c)), names[c]);
    cr_assert_eq(ascope_rows_column_type(r, c), declared[c], "column %s", names[c]);
    cr_assert_not_null(ascope_rows_column_decltype(r, c), "column %s", names[c]);
  }
  for (size_t row = 0; row < 4; row++) cr_assert_eq(ascope_rows_int64(r, row, 0), (int64_t)row + 1);
  size_t len;

  check_null_row(r, 0);

  /* row 2: true, INT64_MIN, -0.5, UTF-8, binary with zero bytes */
  cr_assert_eq(ascope_rows_type(r, 1, 1), bool_type());
  cr_assert_eq(ascope_rows_int64(r, 1, 1), 1);
  cr_assert_eq(ascope_rows_type(r, 1, 2), ASCOPE_SQL_INT64);
  cr_assert_eq(ascope_rows_int64(r, 1, 2), INT64_MIN);
  cr_assert_eq(ascope_rows_double(r, 1, 2), (double)INT64_MIN, "an int64 read as a double");
  cr_assert_eq(ascope_rows_type(r, 1, 3), ASCOPE_SQL_DOUBLE);
  cr_assert_eq(ascope_rows_double(r, 1, 3), -0.5);
  cr_assert_eq(ascope_rows_type(r, 1, 4), ASCOPE_SQL_TEXT);
  cr_assert_str_eq(nz(ascope_rows_text(r, 1, 4, &len)), utf8);
  cr_assert_eq(len, strlen(utf8));
  cr_assert_eq(ascope_rows_type(r, 1, 5), ASCOPE_SQL_BLOB);
  const void *b = ascope_rows_blob(r, 1, 5, &len);
  cr_assert_eq(len, sizeof bin);
  cr_assert_eq(memcmp(b, bin, sizeof bin), 0);

  /* row 3: false, INT64_MAX, DBL_MAX, empty text, empty blob */
  cr_assert_eq(ascope_rows_type(r, 2, 1), bool_type());
  cr_assert_eq(ascope_rows_int64(r, 2, 1), 0);
  cr_assert(!ascope_rows_is_null(r, 2, 1), "false is not NULL");
  cr_assert_eq(ascope_rows_int64(r, 2, 2), INT64_MAX);
  cr_assert_eq(ascope_rows_double(r, 2, 3), DBL_MAX);
  cr_assert_eq(ascope_rows_int64(r, 2, 3), INT64_MAX, "a double out of range saturates");
  cr_assert_eq(ascope_rows_type(r, 2, 4), ASCOPE_SQL_TEXT, "an empty text is not NULL");
  cr_assert(!ascope_rows_is_null(r, 2, 4));
  const char *e = ascope_rows_text(r, 2, 4, &len);
  cr_assert_not_null(e, "an empty text has bytes: \"\"");
  cr_assert_str_eq(e, "");
  cr_assert_eq(len, 0);
  cr_assert_eq(ascope_rows_type(r, 2, 5), ASCOPE_SQL_BLOB, "an empty blob is not NULL");
  len = 99;
  cr_assert_not_null(ascope_rows_blob(r, 2, 5, &len), "an empty blob has bytes");
  cr_assert_eq(len, 0);

  /* row 4: true, 0, the smallest double, a text with a NUL (where the
   * database has them), a blob of about 1 MiB */
  cr_assert_eq(ascope_rows_int64(r, 3, 1), 1);
  cr_assert_eq(ascope_rows_int64(r, 3, 2), 0);
  cr_assert(!ascope_rows_is_null(r, 3, 2), "0 is not NULL");
  cr_assert_eq(ascope_rows_double(r, 3, 3), 5e-324);
  const char *t = ascope_rows_text(r, 3, 4, &len);
  if (D->flags & ASCOPE_SQL_SUITE_TEXT_NUL) {
    cr_assert_eq(len, 3);
    cr_assert_eq(memcmp(t, "a\0b", 4), 0, "the bytes, and a NUL after them");
  } else {
    cr_assert_str_eq(nz(t), "ab");
  }
  const unsigned char *bb = ascope_rows_blob(r, 3, 5, &len);
  cr_assert_eq(len, BIG_LEN);
  size_t bad = 0;
  for (size_t i = 0; i < BIG_LEN; i++) bad += bb[i] != big_byte(i);
  cr_assert_eq(bad, 0, "%zu bytes of the big blob differ", bad);

  /* out of range: nothing, never a crash */
  cr_assert_eq(ascope_rows_int64(r, 4, 0), 0);
  cr_assert_null(ascope_rows_text(r, 0, 6, &len));
  cr_assert_eq(len, 0);
  ty->read++;
  return 0;
}

static int echo_rows(ascope *s, int status, ascope_rows *r, void *ud) {
  (void)s;
  struct types *ty = ud;
  cr_assert_eq(status, 0, "%s", nz(ascope_sql_errmsg(ty->db)));
  cr_assert_eq(ascope_rows_count(r), 1);
  cr_assert_eq(ascope_rows_columns(r), 4);
  cr_assert_str_eq(nz(ascope_rows_column_name(r, 0)), "i");
  cr_assert_str_eq(nz(ascope_rows_column_name(r, 3)), "bl");
  cr_assert_eq(ascope_rows_type(r, 0, 0), ASCOPE_SQL_INT64);
  cr_assert_eq(ascope_rows_int64(r, 0, 0), INT64_MAX);
  cr_assert_eq(ascope_rows_type(r, 0, 1), ASCOPE_SQL_DOUBLE);
  cr_assert_eq(ascope_rows_double(r, 0, 1), 3.141592653589793);
  cr_assert_eq(ascope_rows_type(r, 0, 2), bool_type());
  cr_assert_eq(ascope_rows_int64(r, 0, 2), 1);
  size_t len;
  const void *b = ascope_rows_blob(r, 0, 3, &len);
  cr_assert_eq(ascope_rows_type(r, 0, 3), ASCOPE_SQL_BLOB);
  cr_assert_eq(len, sizeof bin);
  cr_assert_eq(memcmp(b, bin, sizeof bin), 0);
  ty->echoed++;
  return 0;
}

static int named_rows(ascope *s, int status, ascope_rows *r, void *ud) {
  (void)s;
  struct types *ty = ud;
  cr_assert_eq(status, 0);
  cr_assert_eq(ascope_rows_columns(r), 2);
  cr_assert_str_eq(nz(ascope_rows_column_name(r, 0)), "one");
  cr_assert_str_eq(nz(ascope_rows_column_name(r, 1)), "Two Words");
  cr_assert_eq(ascope_rows_int64(r, 0, 0), 1);
  cr_assert_str_eq(nz(ascope_rows_text(r, 0, 1, NULL)), "two");
  cr_assert_eq(ascope_rows_changes(r), 0, "a query changes nothing");
  cr_assert_eq(ascope_rows_last_id(r), 0, "a query has no last id: %lld",
               (long long)ascope_rows_last_id(r));
  ty->named++;
  return 0;
}

static void types_body(ascope *s, t_scope *t) {
  struct types *ty = (struct types *)t;
  ascope_sql *db = ty->db = ascope_sql_resource(s, 0);
  cr_assert_not_null(db);
  cr_assert_str_eq(nz(ascope_sql_driver_name(db)), D->name);
  const char *vt = tab("types");
  ascope_sql_exec(s, db,
                  sqlf("CREATE TABLE %s(id INTEGER PRIMARY KEY, b BOOLEAN, i BIGINT, "
                       "d DOUBLE PRECISION, t TEXT, bl %s)",
                       vt, D->blob_type),
                  NULL, ss_cb_fn, &ty->create);
  ty->create.pass = true;
  const char *ins = sqlf("INSERT INTO %s(id, b, i, d, t, bl) VALUES ($1, $2, $3, $4, $5, $6)", vt);
  ascope_sql_params *p = ascope_sql_params_new();
  /* all NULL: a NULL text is SQL NULL too */
  ascope_sql_params_add_int64(p, 1);
  ascope_sql_params_add_null(p);
  ascope_sql_params_add_null(p);
  ascope_sql_params_add_null(p);
  ascope_sql_params_add_text(p, NULL, 0);
  ascope_sql_params_add_null(p);
  cr_assert_eq(ascope_sql_params_count(p), 6);
  cr_assert_eq(ascope_sql_exec(s, db, ins, p, ss_cb_fn, &ty->ins[0]), 0);
  ascope_sql_params_clear(p); /* the statement copied the set: it may be refilled at once */
  ascope_sql_params_add_int64(p, 2);
  ascope_sql_params_add_bool(p, 1);
  ascope_sql_params_add_int64(p, INT64_MIN);
  ascope_sql_params_add_double(p, -0.5);
  ascope_sql_params_add_text(p, utf8, ASCOPE_SQL_NTS);
  ascope_sql_params_add_blob(p, bin, sizeof bin);
  cr_assert_eq(ascope_sql_exec(s, db, ins, p, ss_cb_fn, &ty->ins[1]), 0);
  ascope_sql_params_clear(p);
  ascope_sql_params_add_int64(p, 3);
  ascope_sql_params_add_bool(p, 0);
  ascope_sql_params_add_int64(p, INT64_MAX);
  ascope_sql_params_add_double(p, DBL_MAX);
  ascope_sql_params_add_text(p, "", 0);
  ascope_sql_params_add_blob(p, NULL, 0);
  cr_assert_eq(ascope_sql_exec(s, db, ins, p, ss_cb_fn, &ty->ins[2]), 0);
  ascope_sql_params_clear(p);
  ascope_sql_params_add_int64(p, 4);
  ascope_sql_params_add_bool(p, 1);
  ascope_sql_params_add_int64(p, 0);
  ascope_sql_params_add_double(p, 5e-324);
  if (D->flags & ASCOPE_SQL_SUITE_TEXT_NUL) {
    ascope_sql_params_add_text(p, "a\0b", 3);
  } else {
    ascope_sql_params_add_text(p, "a\0b", 3);
    ty->nul_rc = ascope_sql_exec(s, db, ins, p, ss_cb_fn, &ty->nul); /* refused */
    ascope_sql_params_clear(p);
    ascope_sql_params_add_int64(p, 4);
    ascope_sql_params_add_bool(p, 1);
    ascope_sql_params_add_int64(p, 0);
    ascope_sql_params_add_double(p, 5e-324);
    ascope_sql_params_add_text(p, "ab", 2);
  }
  ascope_sql_params_add_blob(p, ty->big, BIG_LEN);
  cr_assert_eq(ascope_sql_exec(s, db, ins, p, ss_cb_fn, &ty->ins[3]), 0);
  ascope_sql_params_free(p);

  /* changes and last ids of several rows, an update, a delete */
  ascope_sql_exec(s, db, sqlf("INSERT INTO %s(id) VALUES (10), (11), (12)", vt), NULL, ss_cb_fn,
                  &ty->many);
  ascope_sql_exec(s, db, sqlf("UPDATE %s SET i = i WHERE id >= 3 AND id < 10", vt), NULL, ss_cb_fn,
                  &ty->upd);
  ascope_sql_exec(s, db, sqlf("UPDATE %s SET i = 1 WHERE id > 100", vt), NULL, ss_cb_fn, &ty->none);
  ascope_sql_exec(s, db, sqlf("DELETE FROM %s WHERE id >= 10", vt), NULL, ss_cb_fn, &ty->del);
  ascope_sql_exec(s, db, sqlf("SELECT id FROM %s", vt), NULL, ss_cb_fn, &ty->select);

  ascope_sql_query(s, db, sqlf("SELECT id, b, i, d, t, bl FROM %s ORDER BY id", vt), NULL,
                   types_rows, ty);

  /* values straight back, without a table */
  p = ascope_sql_params_new();
  ascope_sql_params_add_int64(p, INT64_MAX);
  ascope_sql_params_add_double(p, 3.141592653589793);
  ascope_sql_params_add_bool(p, 1);
  ascope_sql_params_add_blob(p, bin, sizeof bin);
  ascope_sql_query(s, db, "SELECT $1 AS i, $2 AS d, $3 AS b, $4 AS bl", p, echo_rows, ty);
  ascope_sql_params_free(p);
  ascope_sql_query(s, db, "SELECT 1 AS one, 'two' AS \"Two Words\"", NULL, named_rows, ty);
}

SQL_TEST(types_round_trip_through_parameters_and_results) {
  struct types ty = {.t.body = types_body};
  ty.big = malloc(BIG_LEN);
  cr_assert_not_null(ty.big);
  for (size_t i = 0; i < BIG_LEN; i++) ty.big[i] = big_byte(i);
  cr_assert_eq(run(db_scope(NULL), &ty.t), 0, "%s", ty.t.msg);
  free(ty.big);
  cr_assert_eq(ty.read, 1);
  cr_assert_eq(ty.echoed, 1);
  cr_assert_eq(ty.named, 1);
  cr_assert_eq(ty.create.changes, 0);
  bool last_id = D->flags & ASCOPE_SQL_SUITE_LAST_ID;
  for (int i = 0; i < 4; i++) {
    cr_assert_eq(ty.ins[i].calls, 1);
    cr_assert_eq(ty.ins[i].status, 0);
    cr_assert_eq(ty.ins[i].changes, 1, "insert %d", i);
    cr_assert_eq(ty.ins[i].rows, 0, "an exec has no rows");
    cr_assert_eq(ty.ins[i].last_id, last_id ? i + 1 : 0, "insert %d", i);
  }
  if (!(D->flags & ASCOPE_SQL_SUITE_TEXT_NUL)) {
    cr_assert_eq(ty.nul_rc, UV_EINVAL, "a text with a NUL is refused by the call");
    cr_assert_eq(ty.nul.calls, 0);
  }
  cr_assert_eq(ty.many.changes, 3);
  cr_assert_eq(ty.many.last_id, last_id ? 12 : 0);
  cr_assert_eq(ty.upd.changes, 2);
  cr_assert_eq(ty.none.changes, 0);
  cr_assert_eq(ty.del.changes, 3);
  cr_assert_eq(ty.select.status, 0);
  cr_assert_eq(ty.select.changes, 0, "a SELECT changes nothing, run as an exec too");
  cr_assert_eq(ty.select.rows, 0, "an exec has no rows");
  cr_assert_eq(query_int(sqlf("SELECT count(*) FROM %s", tab("types"))), 4);
}

/* ==== order =================================================================================== */

/* Many child scopes share their parent's connection; each starts its
 * statements without waiting for any. Every statement notes its place in
 * the order of starts; every answer must come in that order (one
 * connection runs its statements one after another, in the order they were
 * started, from whichever scope). Each child INSERTs its row and UPDATEs it
 * four times: the value left shows the order they ran in. Every eighth child
 * streams a series among its statements: nothing overtakes it. */
#define KIDS 32
#define STEPS 7

struct ord;
struct ord_op {
  struct ord *o;
  int seq, kid, step;
  int64_t next; /* a stream's next value */
};

struct ord {
  t_scope t;
  ascope *parent;
  ascope_sql *db;
  const char *table;
  int started, answered, kids_done, kid_status_bad;
  int out_of_order, failed, wrong_value, stream_rows, stream_bad;
  struct ord_op ops[KIDS * STEPS];
};

static void ord_answer(struct ord_op *op, bool last) {
  struct ord *o = op->o;
  if (o->answered != op->seq) o->out_of_order++;
  if (last) o->answered++;
}

static int ord_cb(ascope *s, int status, ascope_rows *rows, void *ud) {
  (void)s;
  struct ord_op *op = ud;
  ord_answer(op, true);
  if (status != 0) op->o->failed++;
  if (status == 0 && op->step == STEPS - 1 && ascope_rows_int64(rows, 0, 0) != 1234)
    op->o->wrong_value++;
  return 0;
}

static int ord_stream_cb(ascope *s, int status, ascope_rows *rows, void *ud) {
  (void)s;
  struct ord_op *op = ud;
  ord_answer(op, rows == NULL);
  if (rows == NULL) {
    if (status != 0 || op->next != 300) op->o->stream_bad++;
    return 0;
  }
  for (size_t i = 0; i < ascope_rows_count(rows); i++)
    if (ascope_rows_int64(rows, i, 0) != ++op->next) op->o->stream_bad++;
  op->o->stream_rows += (int)ascope_rows_count(rows);
  return ASCOPE_CONTINUE;
}

static struct ord_op *ord_op(struct ord *o, int kid, int step) {
  struct ord_op *op = &o->ops[kid * STEPS + step];
  *op = (struct ord_op){.o = o, .seq = o->started++, .kid = kid, .step = step};
  return op;
}

static void ord_kid_body(ascope *s, void *ud) {
  struct ord_op *first = ud; /* the kid's first slot, not yet started */
  struct ord *o = first->o;
  int kid = first->kid;
  ascope_sql_params *p = ascope_sql_params_new();
  ascope_sql_params_add_int64(p, kid);
  int rc = 0;
  rc |= ascope_sql_exec(s, o->db, sqlf("INSERT INTO %s(k, v) VALUES ($1, 0)", o->table), p, ord_cb,
                        ord_op(o, kid, 0));
  for (int j = 1; j <= 4; j++) {
    ascope_sql_params_clear(p);
    ascope_sql_params_add_int64(p, j);
    ascope_sql_params_add_int64(p, kid);
    rc |= ascope_sql_exec(s, o->db, sqlf("UPDATE %s SET v = v * 10 + $1 WHERE k = $2", o->table), p,
                          ord_cb, ord_op(o, kid, j));
  }
  if (kid % 8 == 0)
    rc |= ascope_sql_stream(s, o->db, series(300), NULL, ord_stream_cb, ord_op(o, kid, 5), NULL);
  else
    rc |= ascope_sql_query(s, o->db, "SELECT 1", NULL, ord_cb, ord_op(o, kid, 5));
  ascope_sql_params_clear(p);
  ascope_sql_params_add_int64(p, kid);
  rc |= ascope_sql_query(s, o->db, sqlf("SELECT v FROM %s WHERE k = $1", o->table), p, ord_cb,
                         ord_op(o, kid, 6));
  ascope_sql_params_free(p);
  if (rc) o->failed++;
}

static void ord_kid_done(ascope *s, int status, void *ud) {
  (void)s;
  struct ord_op *first = ud;
  first->o->kids_done++;
  if (status != 0) first->o->kid_status_bad++;
}

static void ord_body(ascope *s, t_scope *t) {
  struct ord *o = (struct ord *)t;
  o->parent = s;
  o->db = ascope_sql_resource(s, 0);
  o->table = tab("ord");
  /* the kids' first slots hold what their bodies need until they start */
  static struct ord_op firsts[KIDS];
  for (int k = 0; k < KIDS; k++) {
    firsts[k] = (struct ord_op){.o = o, .kid = k};
    ascope *kid = ascope_child(s);
    cr_assert_not_null(kid);
    cr_assert_eq(ascope_start(kid, ord_kid_body, ord_kid_done, &firsts[k]), 0);
  }
}

SQL_TEST(results_arrive_in_the_order_started_on_a_shared_connection) {
  run_exec(sqlf("CREATE TABLE %s(k INTEGER PRIMARY KEY, v BIGINT)", tab("ord")));
  for (int round = 0; round < 3; round++) {
    if (round) run_exec(sqlf("DELETE FROM %s", tab("ord")));
    static struct ord o;
    o = (struct ord){.t.body = ord_body};
    cr_assert_eq(run(db_scope(D->batch_100), &o.t), 0, "round %d: %s", round, o.t.msg);
    cr_assert_eq(o.kids_done, KIDS);
    cr_assert_eq(o.kid_status_bad, 0);
    cr_assert_eq(o.started, KIDS * STEPS);
    cr_assert_eq(o.answered, KIDS * STEPS, "every statement answered once");
    cr_assert_eq(o.failed, 0, "round %d: %d statements failed", round, o.failed);
    cr_assert_eq(o.out_of_order, 0, "round %d: %d answers out of order", round, o.out_of_order);
    cr_assert_eq(o.wrong_value, 0, "round %d: %d rows updated out of order", round, o.wrong_value);
    cr_assert_eq(o.stream_bad, 0);
    cr_assert_eq(o.stream_rows, 300 * (KIDS / 8));
    cr_assert_eq(query_int(sqlf("SELECT count(*) FROM %s WHERE v = 1234", tab("ord"))), KIDS);
  }
}

/* ==== transactions ============================================================================ */

static const char *tx_table(void) {
  return tab("tx");
}

static void tx_setup(void) {
  run_exec(sqlf("CREATE TABLE %s(v TEXT)", tx_table()));
}

static int64_t rows_with(const char *v) {
  return query_int(sqlf("SELECT count(*) FROM %s WHERE v = '%s'", tx_table(), v));
}

/* ---- ok: COMMIT; and the uncommitted rows are invisible to another connection ---------------- */

struct commit {
  t_scope t, peek;
  ascope_sql *db;
  ss_cb peeked;
  unsigned depth;
  int64_t open_tx;
  bool same_db, tx_not_db;
};

static void peek_body(ascope *s, t_scope *t) {
  struct commit *c = (struct commit *)((char *)t - offsetof(struct commit, peek));
  c->peeked.db = ascope_sql_resource(s, 0);
  ascope_sql_query(s, c->peeked.db, sqlf("SELECT count(*) FROM %s", tx_table()), NULL, ss_cb_fn,
                   &c->peeked);
}

/* Both rows are in, uncommitted: a child with a connection of its own
 * looks; the parent commits once it is done. */
static int then_peek(ascope *s, int status, ascope_rows *rows, void *ud) {
  (void)rows;
  struct commit *c = ud;
  cr_assert_eq(status, 0);
  ascope *k = ascope_child(s);
  cr_assert_not_null(k);
  cr_assert_eq(ascope_use_sql(k, D->driver, target, D->options), 0);
  c->peek.body = peek_body;
  cr_assert_eq(ascope_start(k, t_body, t_done, &c->peek), 0);
  return 0;
}

static void commit_body(ascope *s, t_scope *t) {
  struct commit *c = (struct commit *)t;
  c->db = ascope_sql_resource(s, 0);
  ascope_sql_tx *tx = ascope_resource(s, 1);
  cr_assert_not_null(tx);
  c->same_db = ascope_sql_tx_db(tx) == c->db;
  c->tx_not_db = ascope_sql_resource(s, 1) == NULL; /* a transaction is no connection */
  c->depth = ascope_sql_tx_depth(tx);
  c->open_tx = ascope_sql_stat("transactions");
  insert_text(s, c->db, tx_table(), "a", NULL, NULL);
  insert_text(s, c->db, tx_table(), "b", then_peek, c);
}

SQL_TEST(a_transaction_commits_when_its_scope_succeeds) {
  tx_setup();
  struct commit c = {.t.body = commit_body};
  cr_assert_eq(run(tx_scope(), &c.t), 0, "%s", c.t.msg);
  cr_assert(c.same_db, "ascope_sql_tx_db is the connection");
  cr_assert(c.tx_not_db, "ascope_sql_resource of the transaction's use is NULL");
  cr_assert_eq(c.depth, 1);
  cr_assert_eq(c.open_tx, 1);
  cr_assert_eq(c.peek.status, 0, "%s", c.peek.msg);
  cr_assert_eq(c.peeked.calls, 1);
  cr_assert_eq(c.peeked.first, 0, "another connection saw uncommitted rows");
  cr_assert_eq(rows_with("a"), 1);
  cr_assert_eq(rows_with("b"), 1);
}

/* ---- ascope_fail: ROLLBACK ------------------------------------------------------------------- */

static int fail_after_insert(ascope *s, int status, ascope_rows *rows, void *ud) {
  (void)rows, (void)ud;
  cr_assert_eq(status, 0);
  ascope_fail(s, UV_EPROTO, "the body changed its mind");
  return 0;
}

static void fail_body(ascope *s, t_scope *t) {
  (void)t;
  insert_text(s, ascope_sql_resource(s, 0), tx_table(), "x", fail_after_insert, NULL);
}

SQL_TEST(a_transaction_rolls_back_when_its_scope_fails) {
  tx_setup();
  t_scope t = {.body = fail_body};
  cr_assert_eq(run(tx_scope(), &t), UV_EPROTO);
  cr_assert_str_eq(t.msg, "the body changed its mind");
  cr_assert_eq(t.nerr, 1, "the rollback itself went well");
  cr_assert_eq(rows_with("x"), 0);
}

/* ---- a statement's error: ROLLBACK ----------------------------------------------------------- */

static void stmt_error_body(ascope *s, t_scope *t) {
  (void)t;
  ascope_sql *db = ascope_sql_resource(s, 0);
  insert_text(s, db, tx_table(), "x", NULL, NULL);
  /* a NULL callback: the error fails the scope */
  ascope_sql_exec(s, db, sqlf("INSERT INTO %s VALUES (1)", tab("nowhere")), NULL, NULL, NULL);
}

SQL_TEST(a_statement_error_inside_a_transaction_rolls_it_back) {
  tx_setup();
  t_scope t = {.body = stmt_error_body};
  cr_assert_eq(run(tx_scope(), &t), ASCOPE_EDRIVER);
  cr_assert_str_eq(t.driver, D->name);
  cr_assert_neq(t.code[0], '\0', "the database's code");
  cr_assert_neq(t.msg[0], '\0');
  cr_assert_eq(rows_with("x"), 0);
}

/* ---- a deadline: ROLLBACK -------------------------------------------------------------------- */

/* The transaction belongs to a child of the scope holding the connection,
 * so the deadline counts from the child's start, the connection open. A
 * machine so busy that the deadline passes before the INSERT ran (which
 * would prove nothing) gets a longer one. */
struct deadline {
  t_scope t, kid;
  ascope *parent;
  ascope_sql *db;
  uint64_t ms;
  ss_cb ins, slow, after;
};

static void deadline_kid_body(ascope *s, t_scope *t) {
  struct deadline *d = (struct deadline *)((char *)t - offsetof(struct deadline, kid));
  ascope_sql_tx *tx = ascope_resource(s, 0);
  cr_assert_not_null(tx);
  cr_assert_eq(ascope_sql_tx_db(tx), d->db);
  insert_text(s, d->db, tx_table(), "x", ss_cb_fn, &d->ins);
  d->slow.db = d->db;
  ascope_sql_query(s, d->db, long_query(), NULL, ss_cb_fn, &d->slow);
}

static struct deadline *the_deadline;

/* Once the child rolled back, its parent's connection goes on. */
static void deadline_kid_done(ascope *s, int status, void *ud) {
  t_done(s, status, ud);
  struct deadline *d = the_deadline;
  d->after.db = d->db;
  ascope_sql_query(d->parent, d->db, sqlf("SELECT count(*) FROM %s", tx_table()), NULL, ss_cb_fn,
                   &d->after);
}

static void deadline_body(ascope *s, t_scope *t) {
  struct deadline *d = (struct deadline *)t;
  d->parent = s;
  d->db = ascope_sql_resource(s, 0);
  ascope *k = ascope_child(s);
  cr_assert_not_null(k);
  cr_assert_eq(ascope_use_sql_tx(k, d->db, NULL), 0);
  cr_assert_eq(ascope_set_timeout(k, d->ms), 0);
  d->kid.body = deadline_kid_body;
  d->kid.t_start = t_now_ms();
  cr_assert_eq(ascope_start(k, t_body, deadline_kid_done, &d->kid), 0);
}

SQL_TEST(a_transaction_rolls_back_on_its_deadline) {
  tx_setup();
  static const uint64_t deadlines[] = {250, 1000, 4000};
  struct deadline d;
  for (size_t i = 0; i < 3; i++) {
    d = (struct deadline){.t.body = deadline_body, .ms = deadlines[i]};
    the_deadline = &d;
    ascope *s = db_scope(NULL);
    ascope_set_mode(s, ASCOPE_COLLECT_ALL); /* the child's failure stays the child's */
    cr_assert_eq(run(s, &d.t), 0, "%s", d.t.msg);
    /* calls too: a deadline that passed while BEGIN was out ends the child
     * before its body, and leaves the INSERT's status at its 0 */
    if (d.ins.calls == 1 && d.ins.status == 0) break;
  }
  cr_assert(d.ins.calls == 1 && d.ins.status == 0, "the INSERT never ran before the deadline");
  cr_assert_eq(d.kid.status, ASCOPE_ETIMEDOUT);
  cr_assert_eq(d.kid.nerr, 1, "the rollback itself went well");
  cr_assert_eq(d.slow.calls, 1);
  cr_assert_eq(d.slow.status, ASCOPE_ECANCELED, "the long query was stopped");
  uint64_t took = d.kid.t_done - d.kid.t_start;
  cr_assert_lt(took, d.ms + 5000, "took %llu ms", (unsigned long long)took);
  cr_assert_eq(d.after.status, 0, "the connection goes on: %s", d.after.msg);
  cr_assert_eq(d.after.first, 0);
  cr_assert_eq(rows_with("x"), 0);
}

/* ---- cancel: ROLLBACK ------------------------------------------------------------------------ */

/* Calls then(ud) once the suite's long query is executing on db (at once
 * if the driver cannot tell), looking every 2 ms for up to 10 s; notes
 * whether it got there, and when it called. */
struct when_running {
  ascope_sql *db;
  void (*then)(void *ud);
  void *ud;
  int polls;
  bool reached;
  uint64_t at;
};

static void when_running(void *arg) {
  struct when_running *w = arg;
  w->reached = D->running == NULL || D->running(w->db, D->ud);
  if (!w->reached && ++w->polls < 5000) { /* 10 s: then fail, not hang */
    t_after(2, when_running, w);
    return;
  }
  w->at = t_now_ms();
  w->then(w->ud);
}

struct cancel {
  t_scope t;
  ascope *s;
  ascope_sql *db;
  ss_cb slow;
  struct when_running w;
};

static void cancel_scope(void *ud) {
  ascope_cancel(((struct cancel *)ud)->s);
}

static void cancel_when_running(struct cancel *c) {
  c->w = (struct when_running){.db = c->db, .then = cancel_scope, .ud = c};
  when_running(&c->w);
}

static int start_slow(ascope *s, int status, ascope_rows *rows, void *ud) {
  (void)rows;
  struct cancel *c = ud;
  cr_assert_eq(status, 0);
  c->slow.db = c->db;
  cr_assert_eq(ascope_sql_query(s, c->db, long_query(), NULL, ss_cb_fn, &c->slow), 0);
  cancel_when_running(c);
  return 0;
}

static void cancel_body(ascope *s, t_scope *t) {
  struct cancel *c = (struct cancel *)t;
  c->s = s;
  c->db = ascope_sql_resource(s, 0);
  insert_text(s, c->db, tx_table(), "x", start_slow, c); /* the INSERT ran in the transaction */
}

SQL_TEST(a_transaction_rolls_back_when_its_scope_is_cancelled) {
  tx_setup();
  struct cancel c = {.t.body = cancel_body};
  cr_assert_eq(run(tx_scope(), &c.t), ASCOPE_ECANCELED, "%s", c.t.msg);
  cr_assert(c.w.reached, "the long query never ran");
  cr_assert_eq(c.t.nerr, 1, "the rollback itself went well");
  cr_assert_eq(c.slow.calls, 1);
  cr_assert_eq(c.slow.status, ASCOPE_ECANCELED);
  cr_assert_lt(c.t.t_done - c.w.at, 5000, "the long query was stopped");
  cr_assert_eq(rows_with("x"), 0);
}

/* ---- one statement cancelled alone ------------------------------------------------------------
 */

/* ascope_op_cancel on a statement's operation (from ascope_sql_start) stops
 * that statement only: its callback hears ASCOPE_ECANCELED, handles it, and
 * the scope, its connection and the statement started next go on. One
 * queued statement is cancelled before the driver could send it. */
struct alone {
  t_scope t;
  ascope *s;
  ascope_sql *db;
  ascope_op *slow_op;
  ss_cb slow, unsent, after;
  int bad_kind;
  ascope_op *bad_op;
  struct when_running w;
};

static void cancel_alone(void *ud) {
  struct alone *a = ud;
  cr_assert_eq(ascope_op_cancel(a->slow_op), 0);
  /* Only now: a statement sent behind it would be one a cancel request
   * could hit instead, and PostgreSQL's driver would let the slow one run
   * to its end rather than risk that (docs/drivers/postgres.md). */
  cr_assert_eq(
      ascope_sql_start(a->s, a->db, ASCOPE_SQL_QUERY, "SELECT 42", NULL, ss_cb_fn, &a->after, NULL),
      0);
}

static void alone_body(ascope *s, t_scope *t) {
  struct alone *a = (struct alone *)t;
  a->s = s;
  a->db = ascope_sql_resource(s, 0);
  a->slow.db = a->after.db = a->db;
  cr_assert_eq(ascope_sql_start(s, a->db, ASCOPE_SQL_QUERY, long_query(), NULL, ss_cb_fn, &a->slow,
                                &a->slow_op),
               0);
  cr_assert_not_null(a->slow_op);
  ascope_op *unsent = NULL;
  cr_assert_eq(
      ascope_sql_start(s, a->db, ASCOPE_SQL_EXEC, "SELECT 7", NULL, ss_cb_fn, &a->unsent, &unsent),
      0);
  cr_assert_eq(ascope_op_cancel(unsent), 0);
  a->bad_op = (ascope_op *)a;
  a->bad_kind = ascope_sql_start(s, a->db, 99, "SELECT 1", NULL, ss_cb_fn, &a->after, &a->bad_op);
  a->w = (struct when_running){.db = a->db, .then = cancel_alone, .ud = a};
  when_running(&a->w);
}

SQL_TEST(a_statement_cancelled_alone_leaves_its_scope_going) {
  struct alone a = {.t.body = alone_body};
  cr_assert_eq(run(db_scope(NULL), &a.t), 0, "%s", a.t.msg);
  cr_assert(a.w.reached, "the long query never ran");
  cr_assert_eq(a.slow.calls, 1);
  cr_assert_eq(a.slow.status, ASCOPE_ECANCELED, "%s", a.slow.msg);
  cr_assert_lt(a.t.t_done - a.w.at, 5000, "the long query was stopped");
  cr_assert_eq(a.unsent.calls, 1);
  if (!(D->flags & ASCOPE_SQL_SUITE_CANCELLED_MAY_RUN))
    cr_assert_eq(a.unsent.status, ASCOPE_ECANCELED);
  else
    cr_assert(a.unsent.status == 0 || a.unsent.status == ASCOPE_ECANCELED);
  cr_assert_eq(a.after.calls, 1);
  cr_assert_eq(a.after.status, 0, "the connection goes on: %s", a.after.msg);
  cr_assert_eq(a.after.first, 42);
  cr_assert_eq(a.bad_kind, UV_EINVAL);
  cr_assert_null(a.bad_op);
}

/* ---- nested: savepoints ---------------------------------------------------------------------- */

/* The parent inserts "p" in its transaction; child 1's savepoint inserts
 * "c1" and fails: only "c1" goes. Child 2, started when child 1 is done
 * (savepoints nest, they do not interleave), inserts "c2", and a grandchild
 * inside it "g": both stay. The parent commits all that is left. */
struct nest {
  t_scope t, kid[2], grandkid;
  ascope *parent;
  ascope_sql *db;
  unsigned depth[2], gdepth;
};

static struct nest *the_nest;

static void grandkid_body(ascope *s, t_scope *t) {
  (void)t;
  struct nest *n = the_nest;
  n->gdepth = ascope_sql_tx_depth(ascope_resource(s, 0));
  insert_text(s, n->db, tx_table(), "g", NULL, NULL);
}

static void kid_body(ascope *s, t_scope *t) {
  struct nest *n = the_nest;
  int i = t == &n->kid[0] ? 0 : 1;
  ascope_sql_tx *tx = ascope_resource(s, 0);
  cr_assert_not_null(tx);
  cr_assert_eq(ascope_sql_tx_db(tx), n->db);
  n->depth[i] = ascope_sql_tx_depth(tx);
  if (i == 0) {
    insert_text(s, n->db, tx_table(), "c1", fail_after_insert, NULL);
  } else {
    insert_text(s, n->db, tx_table(), "c2", NULL, NULL);
    ascope *g = ascope_child(s);
    cr_assert_eq(ascope_use_sql_tx(g, n->db, NULL), 0);
    n->grandkid.body = grandkid_body;
    cr_assert_eq(ascope_start(g, t_body, t_done, &n->grandkid), 0);
  }
}

static void start_kid(struct nest *n, int i, ascope_done_fn done) {
  ascope *k = ascope_child(n->parent);
  cr_assert_not_null(k);
  cr_assert_eq(ascope_use_sql_tx(k, n->db, NULL), 0);
  n->kid[i].body = kid_body;
  cr_assert_eq(ascope_start(k, t_body, done, &n->kid[i]), 0);
}

static void first_kid_done(ascope *s, int status, void *ud) {
  t_done(s, status, ud);
  start_kid(the_nest, 1, t_done);
}

static void nest_body(ascope *s, t_scope *t) {
  struct nest *n = (struct nest *)t;
  n->parent = s;
  n->db = ascope_sql_resource(s, 0);
  insert_text(s, n->db, tx_table(), "p", NULL, NULL);
  start_kid(n, 0, first_kid_done);
}

SQL_TEST(a_nested_transaction_is_a_savepoint_rolled_back_alone) {
  tx_setup();
  struct nest n = {.t.body = nest_body};
  the_nest = &n;
  ascope *s = tx_scope();
  ascope_set_mode(s, ASCOPE_COLLECT_ALL); /* a failing child does not fail the parent */
  cr_assert_eq(run(s, &n.t), 0, "%s", n.t.msg);
  cr_assert_eq(n.kid[0].status, UV_EPROTO);
  cr_assert_eq(n.kid[0].nerr, 1, "the rollback to the savepoint went well");
  cr_assert_eq(n.kid[1].status, 0, "%s", n.kid[1].msg);
  cr_assert_eq(n.grandkid.status, 0, "%s", n.grandkid.msg);
  cr_assert_eq(n.depth[0], 2);
  cr_assert_eq(n.depth[1], 2);
  cr_assert_eq(n.gdepth, 3, "the grandchild's savepoint is inside its parent's");
  cr_assert_eq(rows_with("p"), 1);
  cr_assert_eq(rows_with("c1"), 0, "rolled back to its savepoint");
  cr_assert_eq(rows_with("c2"), 1);
  cr_assert_eq(rows_with("g"), 1);
}

/* ---- a transaction is its scope's: siblings are refused while it is open ---------------- */

/* A database transaction is the connection's: a sibling's BEGIN would join
 * it (PostgreSQL only warns), and a statement from outside it would commit
 * or roll back with it. Both are refused with ASCOPE_EBUSY while it is
 * open; the connection is everyone's again once it ends. Inside, a second
 * level must come from within the innermost one: two sibling savepoints
 * would interleave. */
struct owned {
  t_scope t, holder, sibling, inner[2];
  ascope *parent, *holder_scope;
  ascope_sql *db;
  int outside_rc, outside_many_rc, inside_rc, after_rc;
  ascope_op *outside_many_op;
  bool nested; /* the holder's children try the savepoint case */
};

static struct owned *the_owned;

static void sibling_body(ascope *s, t_scope *t) {
  (void)t;
  insert_text(s, the_owned->db, tx_table(), "sibling", NULL, NULL);
}

static void inner_body(ascope *s, t_scope *t) {
  struct owned *o = the_owned;
  insert_text(s, o->db, tx_table(), t == &o->inner[0] ? "inner" : "inner2", NULL, NULL);
  if (t != &o->inner[0]) return;
  /* inner[0]'s savepoint is open: its sibling's is refused; the holder's
   * own statements, within the outermost level, still go */
  ascope *k = ascope_child(o->holder_scope);
  cr_assert_eq(ascope_use_sql_tx(k, o->db, NULL), 0);
  o->inner[1].body = inner_body;
  cr_assert_eq(ascope_start(k, t_body, t_done, &o->inner[1]), 0);
  ascope_sql_params *p = ascope_sql_params_new();
  ascope_sql_params_add_text(p, "holder", ASCOPE_SQL_NTS);
  o->inside_rc = ascope_sql_exec(o->holder_scope, o->db,
                                 sqlf("INSERT INTO %s VALUES ($1)", tx_table()), p, NULL, NULL);
  ascope_sql_params_free(p);
}

static void holder_body(ascope *s, t_scope *t) {
  (void)t;
  struct owned *o = the_owned;
  o->holder_scope = s;
  insert_text(s, o->db, tx_table(), "held", NULL, NULL);
  ascope *k = ascope_child(o->parent);
  cr_assert_eq(ascope_use_sql_tx(k, o->db, NULL), 0);
  o->sibling.body = sibling_body;
  cr_assert_eq(ascope_start(k, t_body, t_done, &o->sibling), 0);
  o->outside_rc = ascope_sql_exec(
      o->parent, o->db, sqlf("INSERT INTO %s VALUES ('outside')", tx_table()), NULL, NULL, NULL);
  /* a batch is refused the same way, nothing queued */
  ascope_sql_params *p = ascope_sql_params_new();
  ascope_sql_params_add_text(p, "outside", ASCOPE_SQL_NTS);
  ascope_sql_params_add_text(p, "outside", ASCOPE_SQL_NTS);
  o->outside_many_op = (ascope_op *)o;
  o->outside_many_rc =
      ascope_sql_exec_many(o->parent, o->db, sqlf("INSERT INTO %s VALUES ($1)", tx_table()), p, 2,
                           NULL, NULL, &o->outside_many_op);
  ascope_sql_params_free(p);
  if (!o->nested) return;
  k = ascope_child(s);
  cr_assert_eq(ascope_use_sql_tx(k, o->db, NULL), 0);
  o->inner[0].body = inner_body;
  cr_assert_eq(ascope_start(k, t_body, t_done, &o->inner[0]), 0);
}

static void holder_done(ascope *s, int status, void *ud) {
  t_done(s, status, ud);
  struct owned *o = the_owned;
  o->after_rc = ascope_sql_exec(
      o->parent, o->db, sqlf("INSERT INTO %s VALUES ('after')", tx_table()), NULL, NULL, NULL);
}

static void owned_body(ascope *s, t_scope *t) {
  struct owned *o = (struct owned *)t;
  o->parent = s;
  o->db = ascope_sql_resource(s, 0);
  ascope *k = ascope_child(s);
  cr_assert_eq(ascope_use_sql_tx(k, o->db, NULL), 0);
  ascope_set_mode(k, ASCOPE_COLLECT_ALL); /* nor its refused child the holder */
  o->holder.body = holder_body;
  cr_assert_eq(ascope_start(k, t_body, holder_done, &o->holder), 0);
}

static void run_owned(struct owned *o) {
  tx_setup();
  the_owned = o;
  o->t.body = owned_body;
  ascope *s = db_scope(NULL);
  ascope_set_mode(s, ASCOPE_COLLECT_ALL); /* the refused sibling does not fail the parent */
  cr_assert_eq(run(s, &o->t), 0, "%s", o->t.msg);
  cr_assert_eq(o->holder.status, 0, "%s", o->holder.msg);
  cr_assert_eq(o->sibling.status, ASCOPE_EBUSY);
  cr_assert_eq(o->sibling.body_calls, 0);
  cr_assert(strstr(o->sibling.msg, "inside another scope's transaction"), "%s", o->sibling.msg);
  cr_assert_eq(o->outside_rc, ASCOPE_EBUSY, "a statement from outside the transaction");
  cr_assert_eq(o->outside_many_rc, ASCOPE_EBUSY, "a batch from outside the transaction");
  cr_assert_null(o->outside_many_op);
  cr_assert_eq(o->after_rc, 0, "the connection is free once the transaction ended");
  cr_assert_eq(rows_with("held"), 1);
  cr_assert_eq(rows_with("sibling") + rows_with("outside"), 0);
  cr_assert_eq(rows_with("after"), 1);
  cr_assert_eq(ascope_sql_stat("transactions"), 0);
}

SQL_TEST(a_transaction_refuses_other_scopes_while_it_is_open) {
  struct owned o = {0};
  run_owned(&o);
}

/* A savepoint cannot honour a transaction's options (an isolation level, a
 * BEGIN mode): refused with the reason, not dropped unread. */
static void optioned_kid_body(ascope *s, t_scope *t) {
  (void)s, (void)t;
  cr_assert_fail("a savepoint with options began");
}

static void optioned_body(ascope *s, t_scope *t) {
  ascope *k = ascope_child(s);
  cr_assert_eq(ascope_use_sql_tx(k, ascope_sql_resource(s, 0), "read_only=1"), 0);
  t[1].body = optioned_kid_body;
  cr_assert_eq(ascope_start(k, t_body, t_done, &t[1]), 0);
}

SQL_TEST(a_savepoint_with_options_is_refused) {
  tx_setup();
  t_scope t[2] = {{.body = optioned_body}};
  ascope *s = tx_scope();
  ascope_set_mode(s, ASCOPE_COLLECT_ALL);
  cr_assert_eq(run(s, &t[0]), 0, "%s", t[0].msg);
  cr_assert_eq(t[1].status, UV_EINVAL);
  cr_assert_eq(t[1].body_calls, 0);
  cr_assert(strstr(t[1].msg, "a savepoint takes no options"), "%s", t[1].msg);
}

SQL_TEST(a_savepoint_refuses_its_siblings_not_its_transaction) {
  struct owned o = {.nested = true};
  run_owned(&o);
  cr_assert_eq(o.inner[0].status, 0, "%s", o.inner[0].msg);
  cr_assert_eq(o.inner[1].status, ASCOPE_EBUSY);
  cr_assert_eq(o.inner[1].body_calls, 0);
  cr_assert_eq(o.inside_rc, 0, "the holder's own statement, inside its savepoint's child");
  cr_assert_eq(rows_with("inner"), 1);
  cr_assert_eq(rows_with("inner2"), 0);
  cr_assert_eq(rows_with("holder"), 1);
}

/* ==== constraint errors ======================================================================= */

struct uniq {
  t_scope t;
  ss_cb first, dup, after, count;
  const char *errcode_in_body;
};

static void uniq_body(ascope *s, t_scope *t) {
  struct uniq *u = (struct uniq *)t;
  ascope_sql *db = ascope_sql_resource(s, 0);
  u->first.db = u->dup.db = u->after.db = u->count.db = db;
  u->errcode_in_body = ascope_sql_errcode(db);
  const char *ut = tab("uniq");
  insert_text(s, db, ut, "a", ss_cb_fn, &u->first);
  insert_text(s, db, ut, "a", ss_cb_fn, &u->dup); /* returns 0: handled, the scope goes on */
  insert_text(s, db, ut, "b", ss_cb_fn, &u->after);
  ascope_sql_query(s, db, sqlf("SELECT count(*) FROM %s", ut), NULL, ss_cb_fn, &u->count);
}

static void unhandled_body(ascope *s, t_scope *t) {
  (void)t;
  insert_text(s, ascope_sql_resource(s, 0), tab("uniq"), "a", NULL, NULL);
}

SQL_TEST(a_unique_violation_is_the_drivers_code_and_the_connection_goes_on) {
  run_exec(sqlf("CREATE TABLE %s(k TEXT UNIQUE)", tab("uniq")));
  struct uniq u = {.t.body = uniq_body};
  cr_assert_eq(run(db_scope(NULL), &u.t), 0, "%s", u.t.msg);
  cr_assert_null(u.errcode_in_body, "no code outside a failing callback");
  cr_assert_eq(u.first.status, 0);
  cr_assert_eq(u.dup.calls, 1);
  cr_assert_eq(u.dup.status, ASCOPE_EDRIVER);
  assert_code(u.dup.code, D->code.unique, "the unique violation");
  cr_assert_neq(u.dup.msg[0], '\0', "a message");
  cr_assert_eq(u.after.status, 0, "the connection goes on: %s", u.after.msg);
  cr_assert(!u.after.code_after, "no code in a callback with status 0");
  cr_assert_eq(u.count.first, 2);

  /* unhandled (a NULL callback): the scope's error, with the same code */
  t_scope t = {.body = unhandled_body};
  cr_assert_eq(run(db_scope(NULL), &t), ASCOPE_EDRIVER);
  cr_assert_str_eq(t.driver, D->name);
  assert_code(t.code, D->code.unique, "the scope's error");
  cr_assert_neq(t.msg[0], '\0');
  cr_assert_eq(query_int(sqlf("SELECT count(*) FROM %s", tab("uniq"))), 2);
}

/* ==== streams ================================================================================= */

struct st {
  t_scope t;
  ascope *s;
  ascope_sql *db;
  ascope_op *op;
  const char *sql;
  int batches, finals, final_status, during_pause, resumes;
  int64_t rows, next, disorder, max_batch;
  size_t max_memory;
  bool paused_now;
  /* what to do */
  int stop_at, fail_at, cancel_at, pause_every;
  bool resume_inside, cancel_paused, pause_forever;
  char code[64], msg[256];
  ss_cb behind;
  int finals_before_behind;
};

static void resume_later(void *ud) {
  struct st *x = ud;
  if (x->t.done_calls) return;
  x->paused_now = false;
  x->resumes++;
  cr_assert_eq(ascope_op_resume(x->op), 0);
}

static int on_batch(ascope *s, int status, ascope_rows *rows, void *ud) {
  (void)s;
  struct st *x = ud;
  if (rows == NULL) { /* the final call */
    x->finals++;
    x->final_status = status;
    if (status < 0) {
      t_copy(x->code, sizeof x->code, ascope_sql_errcode(x->db));
      t_copy(x->msg, sizeof x->msg, ascope_sql_errmsg(x->db));
    }
    return 0; /* handled */
  }
  cr_assert_eq(status, 0);
  if (x->paused_now) x->during_pause++;
  x->batches++;
  int64_t n = (int64_t)ascope_rows_count(rows);
  if (n > x->max_batch) x->max_batch = n;
  if (ascope_rows_memory(rows) > x->max_memory) x->max_memory = ascope_rows_memory(rows);
  for (int64_t i = 0; i < n; i++)
    if (ascope_rows_int64(rows, (size_t)i, 0) != ++x->next) x->disorder++;
  x->rows += n;
  if (x->batches == 1 && strcmp(nz(ascope_rows_column_name(rows, 0)), "x") != 0) x->disorder++;
  if (x->stop_at && x->batches == x->stop_at) return ASCOPE_STOP;
  if (x->fail_at && x->batches == x->fail_at) return UV_EPROTO;
  if (x->cancel_at && x->batches == x->cancel_at) {
    ascope_cancel(s);
    return ASCOPE_CONTINUE;
  }
  if (x->pause_forever) {
    x->paused_now = true;
    return ASCOPE_PAUSE;
  }
  if (x->cancel_paused) {
    x->paused_now = true;
    t_after(1, t_cancel_cb, s); /* from outside, while paused */
    return ASCOPE_PAUSE;
  }
  if (x->resume_inside) {
    cr_assert_eq(ascope_op_resume(x->op), 0); /* before the PAUSE: the PAUSE is void */
    return ASCOPE_PAUSE;
  }
  if (x->pause_every && x->batches % x->pause_every == 0) {
    x->paused_now = true;
    t_after(1, resume_later, x);
    return ASCOPE_PAUSE;
  }
  return ASCOPE_CONTINUE;
}

static int behind_cb(ascope *s, int status, ascope_rows *rows, void *ud) {
  struct st *x = (struct st *)((char *)ud - offsetof(struct st, behind));
  x->finals_before_behind = x->finals;
  return ss_cb_fn(s, status, rows, ud);
}

static void stream_body(ascope *s, t_scope *t) {
  struct st *x = (struct st *)t;
  x->s = s;
  if (x->db == NULL) x->db = ascope_sql_resource(s, 0); /* else its parent's */
  x->behind.db = x->db;
  cr_assert_eq(ascope_sql_stream(s, x->db, x->sql, NULL, on_batch, x, &x->op), 0);
  cr_assert_not_null(x->op);
  /* behind the stream: it runs when the stream is over */
  ascope_sql_query(s, x->db, "SELECT 7", NULL, behind_cb, &x->behind);
}

static int run_stream(struct st *x, const char *sql) {
  x->sql = sql;
  x->t.body = stream_body;
  int status = run(db_scope(D->batch_100), &x->t);
  cr_assert_eq(x->disorder, 0, "rows arrive in order, %lld out of it", (long long)x->disorder);
  cr_assert_leq(x->max_batch, 100, "a batch of %lld rows", (long long)x->max_batch);
  return status;
}

SQL_TEST(a_stream_delivers_every_row_in_bounded_batches) {
  struct st x = {0};
  cr_assert_eq(run_stream(&x, series(1000)), 0, "%s", x.t.msg);
  cr_assert_eq(x.rows, 1000);
  cr_assert_geq(x.batches, 10);
  cr_assert_eq(x.finals, 1);
  cr_assert_eq(x.final_status, 0);
  cr_assert_gt(x.max_memory, 0);
  cr_assert_lt(x.max_memory, 1u << 20, "a batch of 100 small rows held %zu bytes", x.max_memory);
  cr_assert_eq(x.behind.status, 0);
  cr_assert_eq(x.behind.first, 7);
  cr_assert_eq(x.finals_before_behind, 1, "the statement behind ran after the stream");

  struct st e = {0};
  cr_assert_eq(run_stream(&e, "SELECT 1 AS x WHERE 1 = 0"), 0, "%s", e.t.msg);
  cr_assert_eq(e.batches, 0, "an empty result has only the end");
  cr_assert_eq(e.finals, 1);
  cr_assert_eq(e.final_status, 0);
}

SQL_TEST(a_paused_stream_waits_for_its_resume) {
  struct st x = {.pause_every = 1};
  cr_assert_eq(run_stream(&x, series(1000)), 0, "%s", x.t.msg);
  cr_assert_eq(x.rows, 1000);
  cr_assert_eq(x.during_pause, 0, "a batch arrived while paused");
  cr_assert_eq(x.resumes, x.batches, "each batch waited for its resume");
  cr_assert_eq(x.finals, 1);
  cr_assert_eq(x.final_status, 0);
  cr_assert_eq(x.behind.first, 7);

  struct st y = {.resume_inside = true};
  cr_assert_eq(run_stream(&y, series(1000)), 0, "%s", y.t.msg);
  cr_assert_eq(y.rows, 1000, "a resume inside the callback voids its PAUSE");
  cr_assert_eq(y.finals, 1);
}

SQL_TEST(stop_ends_a_stream_early_and_the_connection_goes_on) {
  struct st x = {.stop_at = 3};
  cr_assert_eq(run_stream(&x, series(100000)), 0, "%s", x.t.msg);
  cr_assert_eq(x.batches, 3);
  cr_assert_leq(x.rows, 300);
  cr_assert_eq(x.finals, 0, "no call after STOP");
  cr_assert_eq(x.behind.status, 0, "the connection goes on: %s", x.behind.msg);
  cr_assert_eq(x.behind.first, 7);
}

SQL_TEST(a_negative_return_fails_the_scope_and_ends_the_stream) {
  struct st x = {.fail_at = 2};
  cr_assert_eq(run_stream(&x, series(100000)), UV_EPROTO);
  cr_assert_eq(x.batches, 2);
  cr_assert_eq(x.finals, 0, "no final call after a negative return");
}

SQL_TEST(a_cancelled_stream_ends_with_ecanceled) {
  struct st x = {.cancel_at = 2}; /* from inside a batch's callback */
  cr_assert_eq(run_stream(&x, series(100000)), ASCOPE_ECANCELED);
  cr_assert_geq(x.batches, 2);
  cr_assert_lt(x.rows, 100000);
  cr_assert_eq(x.finals, 1);
  cr_assert_eq(x.final_status, ASCOPE_ECANCELED);
  cr_assert_eq(x.behind.status, ASCOPE_ECANCELED, "the statement behind was dropped: %d, %d calls",
               x.behind.status, x.behind.calls);

  struct st y = {.cancel_paused = true}; /* from outside, while it is paused */
  cr_assert_eq(run_stream(&y, series(100000)), ASCOPE_ECANCELED);
  cr_assert_eq(y.batches, 1);
  cr_assert_eq(y.during_pause, 0);
  cr_assert_eq(y.finals, 1);
  cr_assert_eq(y.final_status, ASCOPE_ECANCELED);
}

/* A paused stream holds no scope past its deadline: its final call comes
 * with ASCOPE_ECANCELED, paused mid-way or on its last batch. The deadline
 * is a child's, started on its parent's open connection, so it counts from
 * the stream's start however long the connect took. */
struct paused {
  t_scope t;
  struct st x;
};

static void paused_parent_body(ascope *s, t_scope *t) {
  struct paused *p = (struct paused *)t;
  p->x.db = ascope_sql_resource(s, 0);
  p->x.t.body = stream_body;
  ascope *k = ascope_child(s);
  cr_assert_not_null(k);
  cr_assert_eq(ascope_set_timeout(k, 200), 0);
  p->x.t.t_start = t_now_ms();
  cr_assert_eq(ascope_start(k, t_body, t_done, &p->x.t), 0);
}

SQL_TEST(a_deadline_ends_a_paused_stream) {
  for (int i = 0; i < 2; i++) { /* paused mid-way, then paused on the last batch */
    static struct paused p;
    p = (struct paused){.t.body = paused_parent_body, .x.pause_forever = true};
    p.x.sql = i == 0 ? series(100000) : series(5);
    ascope *s = db_scope(D->batch_100);
    ascope_set_mode(s, ASCOPE_COLLECT_ALL); /* the child's deadline stays the child's */
    cr_assert_eq(run(s, &p.t), 0, "%s", p.t.msg);
    struct st *x = &p.x;
    cr_assert_eq(x->t.status, ASCOPE_ETIMEDOUT, "case %d", i);
    cr_assert_eq(x->batches, 1, "case %d", i);
    cr_assert_eq(x->finals, 1, "case %d", i);
    cr_assert_eq(x->final_status, ASCOPE_ECANCELED, "case %d", i);
    /* Paused mid-way, the stream holds its connection: the statement behind
     * never ran. Paused on its last batch, the database is done with it,
     * and the statement behind may run (in its order) before the deadline
     * ends the pause. */
    cr_assert_eq(x->behind.calls, 1, "case %d", i);
    if (i == 0)
      cr_assert_eq(x->behind.status, ASCOPE_ECANCELED, "the statement behind: %d",
                   x->behind.status);
    else
      cr_assert(x->behind.status == 0 || x->behind.status == ASCOPE_ECANCELED,
                "the statement behind: %d", x->behind.status);
    cr_assert_lt(x->t.t_done - x->t.t_start, 5000, "case %d", i);
  }
}

/* A NULL callback: the stream is drained, and its error fails the scope. */
static void null_cb_body(ascope *s, t_scope *t) {
  (void)t;
  ascope_sql *db = ascope_sql_resource(s, 0);
  cr_assert_eq(ascope_sql_stream(s, db, series(5000), NULL, NULL, NULL, NULL), 0);
  ascope_sql_stream(s, db, sqlf("SELECT * FROM %s", tab("nowhere")), NULL, NULL, NULL, NULL);
}

SQL_TEST(a_stream_without_a_callback_is_drained_and_its_error_fails_the_scope) {
  t_scope t = {.body = null_cb_body};
  cr_assert_eq(run(db_scope(D->batch_100), &t), ASCOPE_EDRIVER, "%s", t.msg);
  cr_assert_str_eq(t.driver, D->name);
  cr_assert_neq(t.code[0], '\0');
}

/* abs() of the smallest int64 overflows, in SQLite as in PostgreSQL: row
 * 700 fails, after the batches before it went out. */
SQL_TEST(a_stream_failing_midway_ends_with_the_error) {
  struct st x = {0};
  cr_assert_eq(
      run_stream(&x, sqlf(SERIES "SELECT x, abs((-9223372036854775807 - 1) + (700 - x)) AS boom "
                                 "FROM c",
                          1000)),
      0, "the final callback handled it: %s", x.t.msg);
  cr_assert_geq(x.batches, 1, "the rows before the failure came");
  cr_assert_lt(x.rows, 700);
  cr_assert_eq(x.finals, 1);
  cr_assert_eq(x.final_status, ASCOPE_EDRIVER);
  assert_code(x.code, D->code.overflow, "the overflow");
  cr_assert_neq(x.msg[0], '\0');
  cr_assert_eq(x.behind.status, 0, "the connection goes on: %s", x.behind.msg);
  cr_assert_eq(x.behind.first, 7);
}

/* ==== cancelled statements ==================================================================== */

/* A scope cancelled while its long query runs, with INSERTs queued behind
 * it: every statement's callback runs once. One the driver had not started
 * never runs; a driver that sends statements ahead
 * (ASCOPE_SQL_SUITE_CANCELLED_MAY_RUN) may have run them, and then each
 * row is there if and only if its callback heard 0. */
struct queued {
  struct cancel c;
  ss_cb ins[3];
};

static void queued_body(ascope *s, t_scope *t) {
  struct queued *q = (struct queued *)t;
  q->c.s = s;
  q->c.db = q->c.slow.db = ascope_sql_resource(s, 0);
  cr_assert_eq(ascope_sql_query(s, q->c.db, long_query(), NULL, ss_cb_fn, &q->c.slow), 0);
  const char *vs[] = {"q0", "q1", "q2"};
  for (int i = 0; i < 3; i++) insert_text(s, q->c.db, tx_table(), vs[i], ss_cb_fn, &q->ins[i]);
  cancel_when_running(&q->c);
}

SQL_TEST(statements_queued_behind_a_cancelled_one_complete_once) {
  tx_setup();
  struct queued q = {.c.t.body = queued_body};
  cr_assert_eq(run(db_scope(NULL), &q.c.t), ASCOPE_ECANCELED, "%s", q.c.t.msg);
  cr_assert(q.c.w.reached, "the long query never ran");
  cr_assert_eq(q.c.slow.calls, 1);
  cr_assert_eq(q.c.slow.status, ASCOPE_ECANCELED);
  cr_assert_lt(q.c.t.t_done - q.c.w.at, 5000, "the long query was stopped");
  bool may_run = D->flags & ASCOPE_SQL_SUITE_CANCELLED_MAY_RUN;
  const char *vs[] = {"q0", "q1", "q2"};
  for (int i = 0; i < 3; i++) {
    cr_assert_eq(q.ins[i].calls, 1, "insert %d", i);
    if (!may_run) cr_assert_eq(q.ins[i].status, ASCOPE_ECANCELED, "insert %d", i);
    cr_assert(q.ins[i].status == 0 || q.ins[i].status == ASCOPE_ECANCELED, "insert %d: %d", i,
              q.ins[i].status);
    if (q.ins[i].status == 0) cr_assert_eq(rows_with(vs[i]), 1, "insert %d said it ran", i);
    if (!may_run) cr_assert_eq(rows_with(vs[i]), 0, "insert %d ran", i);
  }
}

/* ==== scripts ================================================================================= */

/* An exec without parameters runs a script, each statement prepared after
 * the previous ran (so it may create what it then fills); its changes are
 * all of the script's. With parameters, or in a query, two statements are
 * refused. */
struct script {
  t_scope t;
  ss_cb run, with_params, count;
};

static void script_body(ascope *s, t_scope *t) {
  struct script *x = (struct script *)t;
  ascope_sql *db = ascope_sql_resource(s, 0);
  x->with_params.db = db;
  const char *st = tab("script");
  ascope_sql_exec(s, db,
                  sqlf("CREATE TABLE %s(v BIGINT); -- a comment; with a semicolon\n"
                       "INSERT INTO %s VALUES (1), (2), (3);\n"
                       "/* a block; comment */ INSERT INTO %s VALUES (4);",
                       st, st, st),
                  NULL, ss_cb_fn, &x->run);
  ascope_sql_params *p = ascope_sql_params_new();
  ascope_sql_params_add_int64(p, 5);
  ascope_sql_exec(s, db, sqlf("INSERT INTO %s VALUES ($1); INSERT INTO %s VALUES (6)", st, st), p,
                  ss_cb_fn, &x->with_params);
  ascope_sql_params_free(p);
  ascope_sql_query(s, db, sqlf("SELECT count(*) FROM %s", st), NULL, ss_cb_fn, &x->count);
}

SQL_TEST(an_exec_without_parameters_runs_a_script) {
  struct script x = {.t.body = script_body};
  cr_assert_eq(run(db_scope(NULL), &x.t), 0, "%s", x.t.msg);
  cr_assert_eq(x.run.status, 0, "%s", x.run.msg);
  cr_assert_eq(x.run.changes, 4, "a script's changes are all of its statements'");
  cr_assert_eq(x.with_params.status, ASCOPE_EDRIVER, "two statements with parameters");
  assert_code(x.with_params.code, D->code.several, "two statements with parameters");
  cr_assert_eq(x.count.first, 4, "nothing of the refused text ran");
}

/* ==== bad input =============================================================================== */

struct bad {
  t_scope t;
  int null_exec, null_query, null_stream, null_db, null_scope, few_rc, many_rc;
  ascope_op *op;
  ss_cb syntax, syntax_exec, ok1, few, many, ok2, several, ok3;
};

static void bad_body(ascope *s, t_scope *t) {
  struct bad *b = (struct bad *)t;
  ascope_sql *db = ascope_sql_resource(s, 0);
  b->syntax.db = b->syntax_exec.db = b->few.db = b->many.db = b->several.db = db;
  b->null_exec = ascope_sql_exec(s, db, NULL, NULL, ss_cb_fn, &b->ok1);
  b->null_query = ascope_sql_query(s, db, NULL, NULL, ss_cb_fn, &b->ok1);
  b->op = (ascope_op *)b; /* anything but NULL */
  b->null_stream = ascope_sql_stream(s, db, NULL, NULL, ss_cb_fn, &b->ok1, &b->op);
  b->null_db = ascope_sql_query(s, NULL, "SELECT 1", NULL, ss_cb_fn, &b->ok1);
  b->null_scope = ascope_sql_query(NULL, db, "SELECT 1", NULL, ss_cb_fn, &b->ok1);

  ascope_sql_query(s, db, "SELEC 1", NULL, ss_cb_fn, &b->syntax);
  ascope_sql_exec(s, db, "CREATE TABL nothing(x)", NULL, ss_cb_fn, &b->syntax_exec);
  ascope_sql_query(s, db, "SELECT 41 + 1", NULL, ss_cb_fn, &b->ok1);

  ascope_sql_params *p = ascope_sql_params_new();
  ascope_sql_params_add_int64(p, 1);
  const char *two = "SELECT CAST($1 AS BIGINT) + CAST($2 AS BIGINT)";
  b->few_rc = ascope_sql_query(s, db, two, p, ss_cb_fn, &b->few);
  ascope_sql_params_add_int64(p, 2);
  ascope_sql_params_add_int64(p, 3);
  b->many_rc = ascope_sql_query(s, db, two, p, ss_cb_fn, &b->many);
  ascope_sql_params_free(p);
  ascope_sql_query(s, db, "SELECT 43", NULL, ss_cb_fn, &b->ok2);

  ascope_sql_query(s, db, "SELECT 1; SELECT 2", NULL, ss_cb_fn, &b->several);
  ascope_sql_query(s, db, "SELECT 44", NULL, ss_cb_fn, &b->ok3);
}

SQL_TEST(bad_input_is_a_clear_error_and_the_connection_goes_on) {
  struct bad b = {.t.body = bad_body};
  cr_assert_eq(run(db_scope(NULL), &b.t), 0, "%s", b.t.msg);
  cr_assert_eq(b.null_exec, UV_EINVAL, "NULL sql");
  cr_assert_eq(b.null_query, UV_EINVAL);
  cr_assert_eq(b.null_stream, UV_EINVAL);
  cr_assert_null(b.op, "a stream that did not start gives no operation");
  cr_assert_eq(b.null_db, UV_EINVAL);
  cr_assert_eq(b.null_scope, UV_EINVAL);

  cr_assert_eq(b.syntax.calls, 1);
  cr_assert_eq(b.syntax.status, ASCOPE_EDRIVER);
  assert_code(b.syntax.code, D->code.syntax, "a syntax error");
  cr_assert_neq(b.syntax.msg[0], '\0');
  cr_assert_eq(b.syntax_exec.status, ASCOPE_EDRIVER);
  assert_code(b.syntax_exec.code, D->code.syntax, "a syntax error in an exec");
  cr_assert_eq(b.ok1.calls, 1, "only the statement that started answers");
  cr_assert_eq(b.ok1.status, 0, "the connection goes on after a syntax error");
  cr_assert_eq(b.ok1.first, 42);

  if (D->flags & ASCOPE_SQL_SUITE_PARAMS_AT_CALL) {
    cr_assert_eq(b.few_rc, UV_EINVAL, "too few parameters, refused at the call");
    cr_assert_eq(b.many_rc, UV_EINVAL, "too many parameters, refused at the call");
    cr_assert_eq(b.few.calls + b.many.calls, 0, "a refused statement has no callback");
  } else {
    cr_assert_eq(b.few_rc, 0);
    cr_assert_eq(b.few.status, ASCOPE_EDRIVER, "too few parameters");
    assert_code(b.few.code, D->code.params, "too few parameters");
    cr_assert_neq(b.few.msg[0], '\0');
    if (D->flags & ASCOPE_SQL_SUITE_EXTRA_PARAMS_RUN) {
      cr_assert_eq(b.many.status, 0, "too many parameters: %s", b.many.msg);
      cr_assert_eq(b.many.first, 3);
    } else {
      cr_assert_eq(b.many.status, ASCOPE_EDRIVER, "too many parameters");
      assert_code(b.many.code, D->code.params, "too many parameters");
    }
  }
  cr_assert_eq(b.ok2.status, 0);
  cr_assert_eq(b.ok2.first, 43);

  cr_assert_eq(b.several.status, ASCOPE_EDRIVER, "a query of two statements");
  assert_code(b.several.code, D->code.several, "a query of two statements");
  cr_assert_eq(b.ok3.status, 0);
  cr_assert_eq(b.ok3.first, 44);
}

/* ==== many rows of one statement ============================================================== */

/* ascope_sql_exec_many: one statement run once per row of values, as one
 * operation. Its callback runs once, when every row is answered: 0 with
 * the rows' summed changes and the last row's id, or the first failing
 * row's error (in row order). Each row is a statement of its own, queued
 * in order as a burst of single statements would be. */

/* A callback noting its place among the answers of a test. */
struct seq_cb {
  ss_cb cb; /* first: ss_cb_fn reads it */
  int *next, at;
};

static int seq_cb_fn(ascope *s, int status, ascope_rows *rows, void *ud) {
  struct seq_cb *q = ud;
  q->at = (*q->next)++;
  return ss_cb_fn(s, status, rows, &q->cb);
}

/* n rows of (k, v): k = first + i, v = "<prefix><k>". */
static ascope_sql_params *kv_rows(int n, int64_t first, const char *prefix) {
  ascope_sql_params *p = ascope_sql_params_new();
  cr_assert_not_null(p);
  int bad = 0;
  for (int i = 0; i < n; i++) {
    char v[48];
    snprintf(v, sizeof v, "%s%lld", prefix, (long long)(first + i));
    bad += ascope_sql_params_add_int64(p, first + i) != 0;
    bad += ascope_sql_params_add_text(p, v, ASCOPE_SQL_NTS) != 0;
  }
  cr_assert_eq(bad, 0, "building %d rows", n);
  cr_assert_eq(ascope_sql_params_count(p), (size_t)n * 2);
  return p;
}

/* ---- every row, one answer ------------------------------------------------------------------- */

#define MANY 1000

struct many_all {
  t_scope t;
  ascope_op *op;
  int ins_rc, upd_rc, next;
  struct seq_cb ins, upd, count;
};

static void many_all_body(ascope *s, t_scope *t) {
  struct many_all *a = (struct many_all *)t;
  ascope_sql *db = ascope_sql_resource(s, 0);
  const char *mt = tab("many");
  a->ins = a->upd = a->count = (struct seq_cb){.cb.db = db, .next = &a->next};
  ascope_sql_params *p = kv_rows(MANY, 1, "v");
  a->ins_rc = ascope_sql_exec_many(s, db, sqlf("INSERT INTO %s(id, v) VALUES ($1, $2)", mt), p,
                                   MANY, seq_cb_fn, &a->ins, &a->op);
  ascope_sql_params_free(p); /* the call copied every row */
  /* rows that change nothing count nothing: 2 of the 3 rows match */
  p = ascope_sql_params_new();
  ascope_sql_params_add_int64(p, 1);
  ascope_sql_params_add_int64(p, 2);
  ascope_sql_params_add_int64(p, 5000);
  a->upd_rc = ascope_sql_exec_many(s, db, sqlf("UPDATE %s SET v = v || '+' WHERE id = $1", mt), p,
                                   3, seq_cb_fn, &a->upd, NULL);
  ascope_sql_params_free(p);
  ascope_sql_query(s, db, sqlf("SELECT count(*) FROM %s", mt), NULL, seq_cb_fn, &a->count);
}

SQL_TEST(exec_many_runs_every_row_and_answers_once) {
  run_exec(sqlf("CREATE TABLE %s(id INTEGER PRIMARY KEY, v TEXT)", tab("many")));
  struct many_all a = {.t.body = many_all_body};
  cr_assert_eq(run(db_scope(NULL), &a.t), 0, "%s", a.t.msg);
  cr_assert_eq(a.ins_rc, 0);
  cr_assert_not_null(a.op, "the batch's operation");
  cr_assert_eq(a.ins.cb.calls, 1, "one answer for %d rows", MANY);
  cr_assert_eq(a.ins.cb.status, 0, "%s", a.ins.cb.msg);
  cr_assert_eq(a.ins.cb.changes, MANY, "the rows' changes, summed");
  cr_assert_eq(a.ins.cb.rows, 0, "an exec has no rows");
  cr_assert_eq(a.ins.cb.last_id, (D->flags & ASCOPE_SQL_SUITE_LAST_ID) ? MANY : 0,
               "the last row's id: %lld", (long long)a.ins.cb.last_id);
  cr_assert(!a.ins.cb.code_after, "no code in a callback with status 0");
  cr_assert_eq(a.upd_rc, 0);
  cr_assert_eq(a.upd.cb.calls, 1);
  cr_assert_eq(a.upd.cb.status, 0, "%s", a.upd.cb.msg);
  cr_assert_eq(a.upd.cb.changes, 2, "a row matching nothing changes nothing");
  cr_assert_eq(a.count.cb.calls, 1);
  cr_assert_eq(a.count.cb.first, MANY, "the statement behind saw every row");
  cr_assert(a.ins.at == 0 && a.upd.at == 1 && a.count.at == 2,
            "answers in the order started: %d %d %d", a.ins.at, a.upd.at, a.count.at);
  const char *mt = tab("many");
  cr_assert_eq(query_int(sqlf("SELECT count(*) FROM %s", mt)), MANY);
  cr_assert_eq(query_int(sqlf("SELECT sum(id) FROM %s", mt)), (int64_t)MANY * (MANY + 1) / 2);
  cr_assert_eq(query_int(sqlf("SELECT count(*) FROM %s WHERE v = 'v' || CAST(id AS TEXT)", mt)),
               MANY - 2, "every row's own values");
  cr_assert_eq(query_int(sqlf("SELECT count(*) FROM %s WHERE v = 'v' || CAST(id AS TEXT) || '+' "
                              "AND id <= 2",
                              mt)),
               2);
}

/* ---- failing rows ---------------------------------------------------------------------------- */

/* MANY rows of (kk_first, vv_second), both unique: row 500 repeats row
 * 10's kk_first, row 700 row 20's vv_second. The first failure in row order
 * is row 500's, and its message names kk_first. */
static const char *uniq_table(void) {
  return tab("many_uniq");
}

static void uniq_setup(void) {
  run_exec(sqlf("CREATE TABLE %s(kk_first BIGINT UNIQUE, vv_second TEXT UNIQUE)", uniq_table()));
}

static ascope_sql_params *dup_rows(void) {
  ascope_sql_params *p = ascope_sql_params_new();
  cr_assert_not_null(p);
  for (int i = 0; i < MANY; i++) {
    char v[32];
    snprintf(v, sizeof v, "r%d", i == 700 ? 20 : i);
    ascope_sql_params_add_int64(p, i == 500 ? 10 : i);
    ascope_sql_params_add_text(p, v, ASCOPE_SQL_NTS);
  }
  cr_assert_eq(ascope_sql_params_count(p), 2 * MANY);
  return p;
}

static int start_dup_rows(ascope *s, ascope_sql *db, ascope_sql_cb cb, void *ud) {
  ascope_sql_params *p = dup_rows();
  int rc = ascope_sql_exec_many(
      s, db, sqlf("INSERT INTO %s(kk_first, vv_second) VALUES ($1, $2)", uniq_table()), p, MANY, cb,
      ud, NULL);
  ascope_sql_params_free(p);
  return rc;
}

/* The message of row 500's failure, not row 700's. */
static void assert_row_500(const char *code, const char *msg, const char *what) {
  assert_code(code, D->code.unique, what);
  cr_assert(strstr(msg, "kk_first") != NULL, "%s: the message names the column: %s", what, msg);
  cr_assert(strstr(msg, "vv_second") == NULL, "%s: the first failing row's message: %s", what, msg);
}

struct many_fail {
  t_scope t;
  int rc;
  ss_cb batch, after;
};

static void many_fail_body(ascope *s, t_scope *t) {
  struct many_fail *f = (struct many_fail *)t;
  ascope_sql *db = ascope_sql_resource(s, 0);
  f->batch.db = f->after.db = db;
  f->rc = start_dup_rows(s, db, ss_cb_fn, &f->batch); /* handled: returns 0 */
  ascope_sql_query(s, db, "SELECT 42", NULL, ss_cb_fn, &f->after);
}

static void many_unhandled_body(ascope *s, t_scope *t) {
  (void)t;
  ascope_sql *db = ascope_sql_resource(s, 0);
  /* three rows, the middle one repeating a key of the first batch */
  ascope_sql_params *p = ascope_sql_params_new();
  ascope_sql_params_add_int64(p, 5000);
  ascope_sql_params_add_text(p, "x5000", ASCOPE_SQL_NTS);
  ascope_sql_params_add_int64(p, 1);
  ascope_sql_params_add_text(p, "x1", ASCOPE_SQL_NTS);
  ascope_sql_params_add_int64(p, 5002);
  ascope_sql_params_add_text(p, "x5002", ASCOPE_SQL_NTS);
  /* a NULL callback: the failure fails the scope */
  cr_assert_eq(ascope_sql_exec_many(
                   s, db, sqlf("INSERT INTO %s(kk_first, vv_second) VALUES ($1, $2)", uniq_table()),
                   p, 3, NULL, NULL, NULL),
               0);
  ascope_sql_params_free(p);
}

SQL_TEST(exec_many_a_failing_row_fails_the_batch_and_the_other_rows_stay) {
  uniq_setup();
  struct many_fail f = {.t.body = many_fail_body};
  cr_assert_eq(run(db_scope(NULL), &f.t), 0, "the callback handled it: %s", f.t.msg);
  cr_assert_eq(f.rc, 0);
  cr_assert_eq(f.batch.calls, 1, "one answer");
  cr_assert_eq(f.batch.status, ASCOPE_EDRIVER, "as a single statement's: %d", f.batch.status);
  assert_row_500(f.batch.code, f.batch.msg, "the batch");
  cr_assert_eq(f.after.status, 0, "the connection goes on: %s", f.after.msg);
  cr_assert_eq(f.after.first, 42);
  /* outside a transaction each row stands alone: all but the two stay */
  const char *ut = uniq_table();
  cr_assert_eq(query_int(sqlf("SELECT count(*) FROM %s", ut)), MANY - 2);
  cr_assert_eq(query_int(sqlf("SELECT count(*) FROM %s WHERE vv_second IN ('r500', 'r700')", ut)),
               0);
  cr_assert_eq(query_int(sqlf("SELECT count(*) FROM %s WHERE kk_first = 700", ut)), 0);
  cr_assert_eq(
      query_int(sqlf("SELECT count(*) FROM %s WHERE kk_first = 10 AND vv_second = 'r10'", ut)), 1);
  cr_assert_eq(query_int(sqlf("SELECT max(kk_first) FROM %s", ut)), MANY - 1,
               "the rows after the failures ran");

  /* unhandled: the scope's error, with the failing row's code */
  t_scope t = {.body = many_unhandled_body};
  cr_assert_eq(run(db_scope(NULL), &t), ASCOPE_EDRIVER);
  cr_assert_str_eq(t.driver, D->name);
  assert_code(t.code, D->code.unique, "the scope's error");
  cr_assert_eq(t.nerr, 1);
  cr_assert_eq(query_int(sqlf("SELECT count(*) FROM %s WHERE kk_first >= 5000", ut)), 2);
}

/* Inside a transaction the failure's scope rolls back every row: the
 * callback passes the failure on, or it fails its scope itself (from
 * inside the callback: the batch still answers once). On PostgreSQL the
 * rows after the failure fail too (the transaction is aborted): the batch
 * still reports row 500's. */
struct many_tx {
  t_scope t;
  int rc;
  bool fail_inside;
  ss_cb batch;
};

static int many_tx_cb(ascope *s, int status, ascope_rows *rows, void *ud) {
  struct many_tx *m = ud;
  ss_cb_fn(s, status, rows, &m->batch);
  if (!m->fail_inside) return status;
  ascope_fail(s, UV_EPROTO, "the body gave up after the batch");
  return 0;
}

static void many_tx_body(ascope *s, t_scope *t) {
  struct many_tx *m = (struct many_tx *)t;
  m->batch.db = ascope_sql_resource(s, 0);
  m->rc = start_dup_rows(s, m->batch.db, many_tx_cb, m);
}

SQL_TEST(exec_many_inside_a_failed_transaction_leaves_nothing) {
  uniq_setup();
  for (int i = 0; i < 2; i++) {
    struct many_tx m = {.t.body = many_tx_body, .fail_inside = i == 1};
    int status = run(tx_scope(), &m.t);
    cr_assert_eq(m.rc, 0);
    cr_assert_eq(m.batch.calls, 1, "case %d: one answer, %d calls", i, m.batch.calls);
    cr_assert_eq(m.batch.status, ASCOPE_EDRIVER, "case %d", i);
    assert_row_500(m.batch.code, m.batch.msg, "the batch in a transaction");
    if (i == 0) {
      cr_assert_eq(status, ASCOPE_EDRIVER, "the failure passed on: %s", m.t.msg);
      assert_code(m.t.code, D->code.unique, "the scope's error");
    } else {
      cr_assert_eq(status, UV_EPROTO, "%s", m.t.msg);
      cr_assert_str_eq(m.t.msg, "the body gave up after the batch");
    }
    cr_assert_eq(m.t.nerr, 1, "case %d: the rollback itself went well", i);
    cr_assert_eq(query_int(sqlf("SELECT count(*) FROM %s", uniq_table())), 0, "case %d", i);
  }
}

/* ---- the callback ending its own operation's scope ------------------------------------------- */

/* A callback may cancel the batch's operation or its scope: the batch is
 * answered, and answers once. */
struct many_self {
  t_scope t;
  ascope_op *op;
  int how, op_cancel_rc; /* 0: ascope_op_cancel of the batch's op; 1: ascope_cancel */
  ss_cb batch;
};

static int many_self_cb(ascope *s, int status, ascope_rows *rows, void *ud) {
  struct many_self *m = ud;
  ss_cb_fn(s, status, rows, &m->batch);
  if (m->how == 0)
    m->op_cancel_rc = ascope_op_cancel(m->op);
  else
    ascope_cancel(s);
  return 0;
}

static void many_self_body(ascope *s, t_scope *t) {
  struct many_self *m = (struct many_self *)t;
  ascope_sql *db = ascope_sql_resource(s, 0);
  ascope_sql_params *p = kv_rows(5, 1, "s");
  cr_assert_eq(ascope_sql_exec_many(s, db,
                                    sqlf("INSERT INTO %s(id, v) VALUES ($1, $2)", tab("many")), p,
                                    5, many_self_cb, m, &m->op),
               0);
  ascope_sql_params_free(p);
}

SQL_TEST(exec_many_a_callback_cancelling_its_batch_or_scope_is_called_once) {
  run_exec(sqlf("CREATE TABLE %s(id INTEGER PRIMARY KEY, v TEXT)", tab("many")));
  for (int how = 0; how < 2; how++) {
    run_exec(sqlf("DELETE FROM %s", tab("many")));
    struct many_self m = {.t.body = many_self_body, .how = how};
    int status = run(db_scope(NULL), &m.t);
    cr_assert_eq(m.batch.calls, 1, "case %d: called %d times", how, m.batch.calls);
    cr_assert_eq(m.batch.status, 0, "case %d", how);
    cr_assert_eq(m.batch.changes, 5, "case %d", how);
    if (how == 0) {
      cr_assert_eq(status, 0, "cancelling an operation being answered: %s", m.t.msg);
    } else {
      cr_assert_eq(status, ASCOPE_ECANCELED, "%s", m.t.msg);
    }
    cr_assert_eq(query_int(sqlf("SELECT count(*) FROM %s", tab("many"))), 5, "case %d", how);
  }
}

/* ---- bad input ------------------------------------------------------------------------------- */

struct many_bad {
  t_scope t;
  int zero, odd, null_sql, null_db, null_scope, few_rc, ok_rc;
  ascope_op *op[5];
  ss_cb refused, few, ok;
};

static void many_bad_body(ascope *s, t_scope *t) {
  struct many_bad *b = (struct many_bad *)t;
  ascope_sql *db = ascope_sql_resource(s, 0);
  b->few.db = b->ok.db = db;
  const char *ins = sqlf("INSERT INTO %s(id, v) VALUES ($1, $2)", tab("many"));
  ascope_sql_params *p = kv_rows(3, 1, "b");             /* 6 values */
  for (int i = 0; i < 5; i++) b->op[i] = (ascope_op *)b; /* anything but NULL */
  b->zero = ascope_sql_exec_many(s, db, ins, p, 0, ss_cb_fn, &b->refused, &b->op[0]);
  b->odd = ascope_sql_exec_many(s, db, ins, p, 4, ss_cb_fn, &b->refused, &b->op[1]);
  b->null_sql = ascope_sql_exec_many(s, db, NULL, p, 3, ss_cb_fn, &b->refused, &b->op[2]);
  b->null_db = ascope_sql_exec_many(s, NULL, ins, p, 3, ss_cb_fn, &b->refused, &b->op[3]);
  b->null_scope = ascope_sql_exec_many(NULL, db, ins, p, 3, ss_cb_fn, &b->refused, &b->op[4]);
  /* 6 values as 6 rows of one: each row has fewer values than the
   * statement's parameters */
  b->few_rc = ascope_sql_exec_many(s, db, ins, p, 6, ss_cb_fn, &b->few, NULL);
  b->ok_rc = ascope_sql_exec_many(s, db, ins, p, 3, ss_cb_fn, &b->ok, NULL);
  ascope_sql_params_free(p);
}

SQL_TEST(exec_many_bad_input_is_refused_with_nothing_queued) {
  run_exec(sqlf("CREATE TABLE %s(id INTEGER PRIMARY KEY, v TEXT)", tab("many")));
  struct many_bad b = {.t.body = many_bad_body};
  cr_assert_eq(run(db_scope(NULL), &b.t), 0, "%s", b.t.msg);
  cr_assert_eq(b.zero, UV_EINVAL, "no rows");
  cr_assert_eq(b.odd, UV_EINVAL, "6 values in 4 rows");
  cr_assert_eq(b.null_sql, UV_EINVAL, "NULL sql");
  cr_assert_eq(b.null_db, UV_EINVAL, "NULL connection");
  cr_assert_eq(b.null_scope, UV_EINVAL, "NULL scope");
  for (int i = 0; i < 5; i++) cr_assert_null(b.op[i], "refusal %d gives no operation", i);
  cr_assert_eq(b.refused.calls, 0, "a refused batch has no callback");
  if (D->flags & ASCOPE_SQL_SUITE_PARAMS_AT_CALL) {
    cr_assert_eq(b.few_rc, UV_EINVAL, "too few values per row, refused at the call");
    cr_assert_eq(b.few.calls, 0);
  } else {
    cr_assert_eq(b.few_rc, 0);
    cr_assert_eq(b.few.calls, 1);
    cr_assert_eq(b.few.status, ASCOPE_EDRIVER, "too few values per row");
    assert_code(b.few.code, D->code.params, "too few values per row");
  }
  cr_assert_eq(b.ok_rc, 0);
  cr_assert_eq(b.ok.calls, 1);
  cr_assert_eq(b.ok.status, 0, "the connection goes on: %s", b.ok.msg);
  cr_assert_eq(b.ok.changes, 3);
  cr_assert_eq(query_int(sqlf("SELECT count(*) FROM %s", tab("many"))), 3,
               "only the good batch's rows");
}

/* ---- a row the driver refuses ---------------------------------------------------------------- */

/* Ten rows (id, v), row `nul` with a text holding a NUL. A driver whose
 * text cannot hold one refuses that row at the call: refused first, the
 * whole call is (UV_EINVAL, nothing runs); refused later, the rows before
 * it run, the rows after it never, and the callback hears the refusal. */
struct many_nul {
  t_scope t;
  int nul, rc;
  ascope_op *op;
  ss_cb batch;
};

static void many_nul_body(ascope *s, t_scope *t) {
  struct many_nul *m = (struct many_nul *)t;
  ascope_sql *db = ascope_sql_resource(s, 0);
  m->batch.db = db;
  ascope_sql_params *p = ascope_sql_params_new();
  for (int i = 0; i < 10; i++) {
    ascope_sql_params_add_int64(p, i + 1);
    if (i == m->nul)
      ascope_sql_params_add_text(p, "a\0b", 3);
    else
      ascope_sql_params_add_text(p, "ok", ASCOPE_SQL_NTS);
  }
  m->op = (ascope_op *)m;
  m->rc = ascope_sql_exec_many(s, db, sqlf("INSERT INTO %s(id, v) VALUES ($1, $2)", tab("many")), p,
                               10, ss_cb_fn, &m->batch, &m->op);
  ascope_sql_params_free(p);
}

SQL_TEST(exec_many_a_row_refused_at_the_call_ends_the_batch_there) {
  run_exec(sqlf("CREATE TABLE %s(id INTEGER PRIMARY KEY, v TEXT)", tab("many")));
  bool nul_ok = D->flags & ASCOPE_SQL_SUITE_TEXT_NUL;
  const int at[] = {0, 3};
  for (int i = 0; i < 2; i++) {
    run_exec(sqlf("DELETE FROM %s", tab("many")));
    struct many_nul m = {.t.body = many_nul_body, .nul = at[i]};
    cr_assert_eq(run(db_scope(NULL), &m.t), 0, "%s", m.t.msg);
    int64_t n = query_int(sqlf("SELECT count(*) FROM %s", tab("many")));
    if (nul_ok) { /* nothing to refuse */
      cr_assert_eq(m.rc, 0);
      cr_assert_eq(m.batch.calls, 1);
      cr_assert_eq(m.batch.status, 0, "%s", m.batch.msg);
      cr_assert_eq(m.batch.changes, 10);
      cr_assert_eq(n, 10);
    } else if (at[i] == 0) {
      cr_assert_eq(m.rc, UV_EINVAL, "the first row refused: the call is");
      cr_assert_null(m.op);
      cr_assert_eq(m.batch.calls, 0);
      cr_assert_eq(n, 0, "nothing ran");
    } else {
      cr_assert_eq(m.rc, 0, "row 3 refused: the rows before it were queued");
      cr_assert_not_null(m.op);
      cr_assert_eq(m.batch.calls, 1);
      cr_assert_eq(m.batch.status, UV_EINVAL, "the callback hears the refusal: %d", m.batch.status);
      cr_assert_neq(m.batch.msg[0], '\0');
      cr_assert_eq(n, 3, "rows 0..2 ran, none after the refused one");
      cr_assert_eq(query_int(sqlf("SELECT max(id) FROM %s", tab("many"))), 3);
    }
  }
}

/* ---- cancelled ------------------------------------------------------------------------------- */

/* Five rows, each the suite's long query (a value per row, unused but
 * bound). Stopped by cancelling the batch's operation (the scope and its
 * connection go on), by cancelling the scope, or by a child's deadline
 * (its parent's connection goes on): the callback is called once, with
 * ASCOPE_ECANCELED, soon after. */
#define SLOW_ROWS 5

static const char *slow_row(void) {
  return sqlf("SELECT count(*) FROM (%s) AS q WHERE CAST($1 AS BIGINT) >= 0", long_query());
}

struct many_cancel {
  t_scope t, kid;
  ascope *s, *parent;
  ascope_sql *db;
  ascope_op *op;
  int how; /* 0: the operation, 1: the scope, 2: a child's deadline */
  int op_cancel_rc;
  ss_cb batch, after;
  struct when_running w;
  uint64_t ms;
};

static void many_cancel_now(void *ud) {
  struct many_cancel *m = ud;
  if (m->how == 0) {
    m->op_cancel_rc = ascope_op_cancel(m->op);
    m->after.db = m->db;
    cr_assert_eq(ascope_sql_query(m->s, m->db, "SELECT 42", NULL, ss_cb_fn, &m->after), 0);
  } else {
    ascope_cancel(m->s);
  }
}

static void start_slow_rows(struct many_cancel *m, ascope *s) {
  ascope_sql_params *p = ascope_sql_params_new();
  for (int i = 0; i < SLOW_ROWS; i++) ascope_sql_params_add_int64(p, i);
  m->batch.db = m->db;
  cr_assert_eq(
      ascope_sql_exec_many(s, m->db, slow_row(), p, SLOW_ROWS, ss_cb_fn, &m->batch, &m->op), 0);
  ascope_sql_params_free(p);
  cr_assert_not_null(m->op);
}

static void many_cancel_body(ascope *s, t_scope *t) {
  struct many_cancel *m = (struct many_cancel *)t;
  m->s = s;
  m->db = ascope_sql_resource(s, 0);
  start_slow_rows(m, s);
  m->w = (struct when_running){.db = m->db, .then = many_cancel_now, .ud = m};
  when_running(&m->w);
}

static struct many_cancel *the_many_cancel;

static void many_deadline_kid_body(ascope *s, t_scope *t) {
  (void)t;
  start_slow_rows(the_many_cancel, s);
}

static void many_deadline_kid_done(ascope *s, int status, void *ud) {
  t_done(s, status, ud);
  struct many_cancel *m = the_many_cancel;
  m->after.db = m->db;
  ascope_sql_query(m->parent, m->db, "SELECT 42", NULL, ss_cb_fn, &m->after);
}

static void many_deadline_body(ascope *s, t_scope *t) {
  struct many_cancel *m = (struct many_cancel *)t;
  m->parent = s;
  m->db = ascope_sql_resource(s, 0);
  ascope *k = ascope_child(s);
  cr_assert_not_null(k);
  cr_assert_eq(ascope_set_timeout(k, m->ms), 0);
  m->kid.body = many_deadline_kid_body;
  m->kid.t_start = t_now_ms();
  cr_assert_eq(ascope_start(k, t_body, many_deadline_kid_done, &m->kid), 0);
}

SQL_TEST(exec_many_cancelled_mid_batch_answers_once_with_ecanceled) {
  for (int how = 0; how < 3; how++) {
    static struct many_cancel m;
    m = (struct many_cancel){.how = how, .ms = 300};
    the_many_cancel = &m;
    ascope *s = db_scope(NULL);
    int status;
    if (how < 2) {
      m.t.body = many_cancel_body;
      status = run(s, &m.t);
      cr_assert(m.w.reached, "case %d: the long query never ran", how);
    } else {
      m.t.body = many_deadline_body;
      ascope_set_mode(s, ASCOPE_COLLECT_ALL); /* the child's deadline stays the child's */
      status = run(s, &m.t);
    }
    cr_assert_eq(m.batch.calls, 1, "case %d: called %d times", how, m.batch.calls);
    cr_assert_eq(m.batch.status, ASCOPE_ECANCELED, "case %d: %d %s", how, m.batch.status,
                 m.batch.msg);
    cr_assert(strstr(m.batch.msg, "the batch was cancelled"), "case %d: %s", how, m.batch.msg);
    if (how == 0) {
      cr_assert_eq(m.op_cancel_rc, 0);
      cr_assert_eq(status, 0, "the batch cancelled alone: %s", m.t.msg);
      cr_assert_lt(m.t.t_done - m.w.at, 5000, "the rows were stopped");
    } else if (how == 1) {
      cr_assert_eq(status, ASCOPE_ECANCELED, "%s", m.t.msg);
      cr_assert_lt(m.t.t_done - m.w.at, 5000, "the rows were stopped");
    } else {
      cr_assert_eq(status, 0, "%s", m.t.msg);
      cr_assert_eq(m.kid.status, ASCOPE_ETIMEDOUT, "%s", m.kid.msg);
      uint64_t took = m.kid.t_done - m.kid.t_start;
      cr_assert_lt(took, m.ms + 5000, "took %llu ms", (unsigned long long)took);
    }
    if (how != 1) {
      cr_assert_eq(m.after.calls, 1, "case %d", how);
      cr_assert_eq(m.after.status, 0, "case %d: the connection goes on: %s", how, m.after.msg);
      cr_assert_eq(m.after.first, 42);
    }
  }
}

/* Seven INSERT rows, row 3 a long one (a recursive count to two billion
 * before it inserts), the others quick; the batch's operation is cancelled
 * once rows 0..2 are in, as another connection sees (a child scope of its
 * own looks, every millisecond). The batch hears ASCOPE_ECANCELED though
 * rows before it succeeded; those stay; the long row never inserts; a
 * driver that does not send statements ahead never runs the rows after it. */
#define PART_ROWS 7
#define PART_SLOW 3

/* Inserts $1 into the transactions' table after counting to $2. */
static const char *part_insert(void) {
  return sqlf("INSERT INTO %s(v) SELECT CAST($1 AS TEXT) FROM (WITH RECURSIVE c(x) AS (SELECT 1 "
              "UNION ALL SELECT x + 1 FROM c WHERE x < CAST($2 AS BIGINT)) SELECT count(*) AS n "
              "FROM c) AS q",
              tx_table());
}

/* Its rows: ("m<i>", the count), the count long for row PART_SLOW only. */
static ascope_sql_params *part_rows(void) {
  ascope_sql_params *p = ascope_sql_params_new();
  cr_assert_not_null(p);
  for (int i = 0; i < PART_ROWS; i++) {
    char v[8];
    snprintf(v, sizeof v, "m%d", i);
    ascope_sql_params_add_text(p, v, ASCOPE_SQL_NTS);
    ascope_sql_params_add_int64(p, i == PART_SLOW ? 2000000000 : 1);
  }
  cr_assert_eq(ascope_sql_params_count(p), 2 * PART_ROWS);
  return p;
}

struct many_part {
  t_scope t, poll;
  ascope *s;
  ascope_sql *db;
  ascope_op *op;
  int op_cancel_rc, polls;
  bool seen; /* rows 0..2 were in */
  uint64_t at;
  ss_cb batch, after, count;
};

static struct many_part *the_many_part;

static void many_part_poll(void *ud);

static void many_part_poll_body(ascope *s, t_scope *t) {
  (void)t;
  struct many_part *m = the_many_part;
  m->count = (ss_cb){.db = ascope_sql_resource(s, 0), .pass = true};
  ascope_sql_query(s, m->count.db,
                   sqlf("SELECT count(*) FROM %s WHERE v IN ('m0', 'm1', 'm2')", tx_table()), NULL,
                   ss_cb_fn, &m->count);
}

static void many_part_poll_done(ascope *s, int status, void *ud) {
  t_done(s, status, ud);
  struct many_part *m = the_many_part;
  m->seen = status == 0 && m->count.first == PART_SLOW;
  if (!m->seen && status == 0 && ++m->polls < 10000) { /* 10 s at least: then fail, not hang */
    t_after(1, many_part_poll, m);
    return;
  }
  m->at = t_now_ms();
  m->op_cancel_rc = ascope_op_cancel(m->op);
  cr_assert_eq(ascope_sql_query(m->s, m->db, "SELECT 42", NULL, ss_cb_fn, &m->after), 0);
}

static void many_part_poll(void *ud) {
  struct many_part *m = ud;
  ascope *k = ascope_child(m->s);
  cr_assert_not_null(k);
  cr_assert_eq(ascope_use_sql(k, D->driver, target, D->options), 0);
  m->poll = (t_scope){.body = many_part_poll_body};
  cr_assert_eq(ascope_start(k, t_body, many_part_poll_done, &m->poll), 0);
}

static void many_part_body(ascope *s, t_scope *t) {
  struct many_part *m = (struct many_part *)t;
  m->s = s;
  m->db = m->batch.db = m->after.db = ascope_sql_resource(s, 0);
  ascope_sql_params *p = part_rows();
  cr_assert_eq(
      ascope_sql_exec_many(s, m->db, part_insert(), p, PART_ROWS, ss_cb_fn, &m->batch, &m->op), 0);
  ascope_sql_params_free(p);
  many_part_poll(m);
}

SQL_TEST(exec_many_cancelled_keeps_the_rows_that_ran) {
  tx_setup();
  static struct many_part m;
  m = (struct many_part){.t.body = many_part_body};
  the_many_part = &m;
  cr_assert_eq(run(db_scope(NULL), &m.t), 0, "%s", m.t.msg);
  cr_assert(m.seen, "rows 0..2 never showed after %d looks: %s", m.polls, m.poll.msg);
  cr_assert_eq(m.op_cancel_rc, 0);
  cr_assert_eq(m.batch.calls, 1, "called %d times", m.batch.calls);
  cr_assert_eq(m.batch.status, ASCOPE_ECANCELED, "%d: %s", m.batch.status, m.batch.msg);
  cr_assert_lt(m.t.t_done - m.at, 5000, "the long row was stopped");
  cr_assert_eq(m.after.calls, 1);
  cr_assert_eq(m.after.status, 0, "the connection goes on: %s", m.after.msg);
  cr_assert_eq(m.after.first, 42);
  int64_t present[PART_ROWS];
  for (int i = 0; i < PART_ROWS; i++) present[i] = rows_with(sqlf("m%d", i));
  for (int i = 0; i < PART_SLOW; i++) cr_assert_eq(present[i], 1, "row %d, answered, stays", i);
  cr_assert_eq(present[PART_SLOW], 0, "the long row inserted");
  for (int i = PART_SLOW + 1; i < PART_ROWS; i++) {
    if (D->flags & ASCOPE_SQL_SUITE_CANCELLED_MAY_RUN)
      cr_assert_leq(present[i], 1, "row %d", i);
    else
      cr_assert_eq(present[i], 0, "row %d, after the cancelled one, ran", i);
  }
}

/* The same batch inside a transaction whose scope is cancelled while a row
 * runs: the batch answers once, and the ROLLBACK takes every row with it. */
struct many_txc {
  struct cancel c;
  ss_cb batch;
};

static void many_txc_body(ascope *s, t_scope *t) {
  struct many_txc *m = (struct many_txc *)t;
  m->c.s = s;
  m->c.db = m->batch.db = ascope_sql_resource(s, 0);
  ascope_sql_params *p = part_rows();
  cr_assert_eq(
      ascope_sql_exec_many(s, m->c.db, part_insert(), p, PART_ROWS, ss_cb_fn, &m->batch, NULL), 0);
  ascope_sql_params_free(p);
  cancel_when_running(&m->c);
}

SQL_TEST(exec_many_in_a_cancelled_transaction_leaves_nothing) {
  tx_setup();
  struct many_txc m = {.c.t.body = many_txc_body};
  cr_assert_eq(run(tx_scope(), &m.c.t), ASCOPE_ECANCELED, "%s", m.c.t.msg);
  cr_assert(m.c.w.reached, "no row ever ran");
  cr_assert_eq(m.c.t.nerr, 1, "the rollback itself went well");
  cr_assert_eq(m.batch.calls, 1, "called %d times", m.batch.calls);
  cr_assert_eq(m.batch.status, ASCOPE_ECANCELED, "%d: %s", m.batch.status, m.batch.msg);
  cr_assert_lt(m.c.t.t_done - m.c.w.at, 5000, "the long row was stopped");
  cr_assert_eq(query_int(sqlf("SELECT count(*) FROM %s", tx_table())), 0, "rolled back");
}

/* A scope cancelled while its long query runs, with a batch of INSERTs
 * queued behind it: the batch answers once. A driver that does not send
 * statements ahead never ran a row; one that does
 * (ASCOPE_SQL_SUITE_CANCELLED_MAY_RUN) may have run some, and all of them
 * when the batch heard 0. */
#define QUEUED_ROWS 50

struct many_queued {
  struct cancel c;
  ss_cb batch;
};

static void many_queued_body(ascope *s, t_scope *t) {
  struct many_queued *q = (struct many_queued *)t;
  q->c.s = s;
  q->c.db = q->c.slow.db = q->batch.db = ascope_sql_resource(s, 0);
  cr_assert_eq(ascope_sql_query(s, q->c.db, long_query(), NULL, ss_cb_fn, &q->c.slow), 0);
  ascope_sql_params *p = ascope_sql_params_new();
  for (int i = 0; i < QUEUED_ROWS; i++) ascope_sql_params_add_text(p, "mq", ASCOPE_SQL_NTS);
  cr_assert_eq(ascope_sql_exec_many(s, q->c.db, sqlf("INSERT INTO %s VALUES ($1)", tx_table()), p,
                                    QUEUED_ROWS, ss_cb_fn, &q->batch, NULL),
               0);
  ascope_sql_params_free(p);
  cancel_when_running(&q->c);
}

SQL_TEST(exec_many_queued_behind_a_cancelled_statement_answers_once) {
  tx_setup();
  struct many_queued q = {.c.t.body = many_queued_body};
  cr_assert_eq(run(db_scope(NULL), &q.c.t), ASCOPE_ECANCELED, "%s", q.c.t.msg);
  cr_assert(q.c.w.reached, "the long query never ran");
  cr_assert_eq(q.c.slow.calls, 1);
  cr_assert_eq(q.c.slow.status, ASCOPE_ECANCELED);
  cr_assert_lt(q.c.t.t_done - q.c.w.at, 5000, "the long query was stopped");
  cr_assert_eq(q.batch.calls, 1, "the batch answered %d times", q.batch.calls);
  int64_t n = rows_with("mq");
  if (D->flags & ASCOPE_SQL_SUITE_CANCELLED_MAY_RUN) {
    cr_assert(q.batch.status == 0 || q.batch.status == ASCOPE_ECANCELED, "the batch: %d",
              q.batch.status);
    if (q.batch.status == 0) cr_assert_eq(n, QUEUED_ROWS, "the batch said every row ran");
    cr_assert_leq(n, QUEUED_ROWS);
  } else {
    cr_assert_eq(q.batch.status, ASCOPE_ECANCELED);
    cr_assert_eq(n, 0, "%lld rows of a cancelled batch ran", (long long)n);
  }
}

/* ---- order ----------------------------------------------------------------------------------- */

/* Inside a transaction, single statements started around batches from the
 * same scope: every answer in the order started, every row in its place.
 * The second batch updates one row four times, its rows in row order: 1234. */
struct many_order {
  t_scope t;
  int next, rc[2];
  struct seq_cb before, batch, digits, update, count;
};

static void many_order_body(ascope *s, t_scope *t) {
  struct many_order *o = (struct many_order *)t;
  ascope_sql *db = ascope_sql_resource(s, 0);
  const char *ot = tab("many_ord");
  struct seq_cb *all[] = {&o->before, &o->batch, &o->digits, &o->update, &o->count};
  for (int i = 0; i < 5; i++) *all[i] = (struct seq_cb){.cb.db = db, .next = &o->next};
  ascope_sql_exec(s, db, sqlf("INSERT INTO %s(k, n, v) VALUES (-1, 0, 'first')", ot), NULL,
                  seq_cb_fn, &o->before);
  ascope_sql_params *p = ascope_sql_params_new();
  for (int i = 0; i < 200; i++) {
    ascope_sql_params_add_int64(p, i);
    ascope_sql_params_add_int64(p, 0);
  }
  o->rc[0] = ascope_sql_exec_many(s, db, sqlf("INSERT INTO %s(k, n, v) VALUES ($1, $2, 'b')", ot),
                                  p, 200, seq_cb_fn, &o->batch, NULL);
  ascope_sql_params_clear(p);
  for (int d = 1; d <= 4; d++) {
    ascope_sql_params_add_int64(p, d);
    ascope_sql_params_add_int64(p, 0);
  }
  o->rc[1] = ascope_sql_exec_many(s, db, sqlf("UPDATE %s SET n = n * 10 + $1 WHERE k = $2", ot), p,
                                  4, seq_cb_fn, &o->digits, NULL);
  ascope_sql_params_free(p);
  ascope_sql_exec(s, db, sqlf("UPDATE %s SET v = v || '!' WHERE k >= -1", ot), NULL, seq_cb_fn,
                  &o->update);
  ascope_sql_query(s, db, sqlf("SELECT n FROM %s WHERE k = 0", ot), NULL, seq_cb_fn, &o->count);
}

SQL_TEST(exec_many_keeps_its_place_among_single_statements_in_a_transaction) {
  const char *ot = tab("many_ord");
  run_exec(sqlf("CREATE TABLE %s(k BIGINT, n BIGINT, v TEXT)", ot));
  struct many_order o = {.t.body = many_order_body};
  cr_assert_eq(run(tx_scope(), &o.t), 0, "%s", o.t.msg);
  cr_assert_eq(o.rc[0], 0);
  cr_assert_eq(o.rc[1], 0);
  struct seq_cb *all[] = {&o.before, &o.batch, &o.digits, &o.update, &o.count};
  for (int i = 0; i < 5; i++) {
    cr_assert_eq(all[i]->cb.calls, 1, "statement %d", i);
    cr_assert_eq(all[i]->cb.status, 0, "statement %d: %s", i, all[i]->cb.msg);
    cr_assert_eq(all[i]->at, i, "statement %d answered as %d", i, all[i]->at);
  }
  cr_assert_eq(o.batch.cb.changes, 200);
  cr_assert_eq(o.digits.cb.changes, 4);
  cr_assert_eq(o.update.cb.changes, 201, "the UPDATE ran after every row");
  cr_assert_eq(o.count.cb.first, 1234, "the rows ran in row order: %lld",
               (long long)o.count.cb.first);
  cr_assert_eq(query_int(sqlf("SELECT count(*) FROM %s", ot)), 201, "committed");
  cr_assert_eq(query_int(sqlf("SELECT count(*) FROM %s WHERE v = 'b!'", ot)), 200);
  cr_assert_eq(query_int(sqlf("SELECT n FROM %s WHERE k = 0", ot)), 1234);
}
