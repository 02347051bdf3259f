/* The SQLite driver and the SQL interface: statements, types, parameters,
 * errors, options, the statement cache. Real database files, in a fresh
 * mkdtemp directory per test. */
#include "rt_pair.h"
#include "sqlite_support.h"

#include <float.h>
#include <sqlite3.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

TestSuite(sqlite, .init = t_init, .fini = t_fini);

/* ---- a connection, a table, a row, read back ---------------------------------------- */

struct basic {
  t_scope t;
  t_cb create, insert;
  int selected;
};

static int basic_rows(ascope *s, int status, ascope_rows *rows, void *ud) {
  (void)s;
  struct basic *b = ud;
  cr_assert_eq(status, 0);
  cr_assert_eq(ascope_rows_count(rows), 1);
  cr_assert_eq(ascope_rows_columns(rows), 2);
  cr_assert_str_eq(ascope_rows_column_name(rows, 0), "id");
  cr_assert_str_eq(ascope_rows_column_name(rows, 1), "name");
  cr_assert_str_eq(ascope_rows_column_decltype(rows, 0), "INTEGER");
  cr_assert_eq(ascope_rows_column_type(rows, 0), ASCOPE_SQL_INT64);
  cr_assert_eq(ascope_rows_column_type(rows, 1), ASCOPE_SQL_TEXT);
  cr_assert_eq(ascope_rows_int64(rows, 0, 0), 1);
  size_t len;
  cr_assert_str_eq(ascope_rows_text(rows, 0, 1, &len), "ada");
  cr_assert_eq(len, 3);
  b->selected++;
  return 0;
}

static void basic_body(ascope *s, t_scope *t) {
  struct basic *b = (struct basic *)t;
  ascope_sql *db = ascope_resource(s, 0);
  cr_assert_not_null(db);
  cr_assert_str_eq(ascope_sql_driver_name(db), "sqlite");
  cr_assert_eq(ascope_sql_exec(s, db, "CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT)", NULL,
                               t_cb_fn, &b->create),
               0);
  ascope_sql_params *p = ascope_sql_params_new();
  cr_assert_eq(ascope_sql_params_add_text(p, "ada", ASCOPE_SQL_NTS), 0);
  cr_assert_eq(ascope_sql_exec(s, db, "INSERT INTO t(name) VALUES ($1)", p, t_cb_fn, &b->insert),
               0);
  ascope_sql_params_free(p); /* the statement holds its own copy */
  cr_assert_eq(ascope_sql_query(s, db, "SELECT id, name FROM t", NULL, basic_rows, b), 0);
}

Test(sqlite, exec_and_query_in_order) {
  struct basic b = {.t.body = basic_body};
  cr_assert_eq(t_run_db(&b.t, t_path("a.db"), NULL), 0);
  cr_assert_eq(b.create.calls, 1);
  cr_assert_eq(b.create.changes, 0);
  cr_assert_eq(b.insert.calls, 1);
  cr_assert_eq(b.insert.changes, 1);
  cr_assert_eq(b.insert.last_id, 1);
  cr_assert_eq(b.selected, 1);
  cr_assert_eq(t_raw_int(t_path("a.db"), "SELECT count(*) FROM t WHERE name = 'ada'"), 1);
  cr_assert_eq(ascope_sqlite_stat("opened"), 1);
}

/* ---- type round trips ----------------------------------------------------------------------- */

static const char utf8[] = "h\xc3\xa9llo w\xc3\xb6rld \xe2\x80\x94 \xe2\x9c\x93 "
                           "\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e \xf0\x9f\x8e\x89";
static const unsigned char blob[] = {0, 1, 2, 0, 255, 0, 'x', 0};

static void add_values(ascope_sql_params *p) {
  ascope_sql_params_add_null(p);                       /* 0 */
  ascope_sql_params_add_int64(p, INT64_MIN);           /* 1 */
  ascope_sql_params_add_int64(p, INT64_MAX);           /* 2 */
  ascope_sql_params_add_double(p, 3.141592653589793);  /* 3 */
  ascope_sql_params_add_double(p, DBL_MAX);            /* 4 */
  ascope_sql_params_add_double(p, 5e-324);             /* 5 */
  ascope_sql_params_add_text(p, utf8, ASCOPE_SQL_NTS); /* 6 */
  ascope_sql_params_add_text(p, "", 0);                /* 7 */
  ascope_sql_params_add_text(p, "a\0b", 3);            /* 8 */
  ascope_sql_params_add_blob(p, blob, sizeof blob);    /* 9 */
  ascope_sql_params_add_blob(p, NULL, 0);              /* 10 */
  ascope_sql_params_add_bool(p, 1);                    /* 11 */
  ascope_sql_params_add_int64(p, 0);                   /* 12 */
}

static void check_values(ascope_rows *r, size_t row, size_t c0) {
  size_t len;
  cr_assert(ascope_rows_is_null(r, row, c0 + 0));
  cr_assert_eq(ascope_rows_type(r, row, c0 + 0), ASCOPE_SQL_NULL);
  cr_assert_null(ascope_rows_text(r, row, c0 + 0, &len));
  cr_assert_eq(ascope_rows_type(r, row, c0 + 1), ASCOPE_SQL_INT64);
  cr_assert_eq(ascope_rows_int64(r, row, c0 + 1), INT64_MIN);
  cr_assert_eq(ascope_rows_int64(r, row, c0 + 2), INT64_MAX);
  cr_assert_eq(ascope_rows_type(r, row, c0 + 3), ASCOPE_SQL_DOUBLE);
  cr_assert_eq(ascope_rows_double(r, row, c0 + 3), 3.141592653589793);
  cr_assert_eq(ascope_rows_double(r, row, c0 + 4), DBL_MAX);
  cr_assert_eq(ascope_rows_double(r, row, c0 + 5), 5e-324);
  cr_assert_eq(ascope_rows_int64(r, row, c0 + 4), INT64_MAX, "saturates");
  cr_assert_eq(ascope_rows_type(r, row, c0 + 6), ASCOPE_SQL_TEXT);
  cr_assert_str_eq(ascope_rows_text(r, row, c0 + 6, &len), utf8);
  cr_assert_eq(len, strlen(utf8));
  cr_assert_str_eq(ascope_rows_text(r, row, c0 + 7, &len), "");
  cr_assert_eq(len, 0);
  cr_assert_eq(ascope_rows_type(r, row, c0 + 7), ASCOPE_SQL_TEXT);
  const char *t = ascope_rows_text(r, row, c0 + 8, &len);
  cr_assert_eq(len, 3);
  cr_assert_eq(memcmp(t, "a\0b", 3), 0);
  cr_assert_eq(ascope_rows_type(r, row, c0 + 9), ASCOPE_SQL_BLOB);
  const void *b = ascope_rows_blob(r, row, c0 + 9, &len);
  cr_assert_eq(len, sizeof blob);
  cr_assert_eq(memcmp(b, blob, sizeof blob), 0);
  cr_assert_eq(ascope_rows_type(r, row, c0 + 10), ASCOPE_SQL_BLOB);
  cr_assert_not_null(ascope_rows_blob(r, row, c0 + 10, &len));
  cr_assert_eq(len, 0);
  cr_assert_eq(ascope_rows_int64(r, row, c0 + 11), 1);
  cr_assert_eq(ascope_rows_int64(r, row, c0 + 12), 0);
  cr_assert(!ascope_rows_is_null(r, row, c0 + 12));
}

struct types {
  t_scope t;
  int echoed, stored;
};

static int echo_rows(ascope *s, int status, ascope_rows *rows, void *ud) {
  (void)s;
  cr_assert_eq(status, 0);
  cr_assert_eq(ascope_rows_count(rows), 1);
  cr_assert_eq(ascope_rows_columns(rows), 13);
  check_values(rows, 0, 0);
  ((struct types *)ud)->echoed++;
  return 0;
}

static int stored_rows(ascope *s, int status, ascope_rows *rows, void *ud) {
  (void)s;
  cr_assert_eq(status, 0);
  cr_assert_eq(ascope_rows_count(rows), 2);
  cr_assert_eq(ascope_rows_columns(rows), 14);
  for (size_t i = 0; i < 2; i++) {
    cr_assert_eq(ascope_rows_int64(rows, i, 0), (int64_t)i + 1);
    check_values(rows, i, 1);
  }
  cr_assert_eq(ascope_rows_column_type(rows, 12), ASCOPE_SQL_BOOL, "declared BOOLEAN");
  cr_assert_eq(ascope_rows_column_type(rows, 4), ASCOPE_SQL_DOUBLE, "declared REAL");
  cr_assert_eq(ascope_rows_column_type(rows, 10), ASCOPE_SQL_BLOB, "declared BLOB");
  cr_assert_eq(ascope_rows_column_type(rows, 1), ASCOPE_SQL_NULL, "no type, all NULL");
  ((struct types *)ud)->stored++;
  return 0;
}

static void types_body(ascope *s, t_scope *t) {
  ascope_sql *db = ascope_resource(s, 0);
  ascope_sql_params *p = ascope_sql_params_new();
  add_values(p);
  cr_assert_eq(ascope_sql_params_count(p), 13);
  ascope_sql_query(s, db, "SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13", p,
                   echo_rows, t);
  ascope_sql_exec(s, db,
                  "CREATE TABLE v(id INTEGER PRIMARY KEY, n, i1 INTEGER, i2 INT8, d1 REAL, "
                  "d2 DOUBLE, d3 FLOAT, t1 TEXT, t2 VARCHAR(9), t3 CLOB, b1 BLOB, b2 BLOB, "
                  "f BOOLEAN, z INTEGER)",
                  NULL, NULL, NULL);
  for (int i = 0; i < 2; i++)
    ascope_sql_exec(s, db, "INSERT INTO v VALUES (NULL, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", p,
                    NULL, NULL);
  ascope_sql_params_free(p);
  ascope_sql_query(s, db, "SELECT * FROM v ORDER BY id", NULL, stored_rows, t);
}

Test(sqlite, type_round_trips) {
  struct types ty = {.t.body = types_body};
  cr_assert_eq(t_run_db(&ty.t, t_path("types.db"), NULL), 0, "%s", ty.t.msg);
  cr_assert_eq(ty.echoed, 1);
  cr_assert_eq(ty.stored, 1);
  cr_assert_eq(t_raw_int(t_path("types.db"), "SELECT length(b1) FROM v WHERE id = 1"), 8);
  cr_assert_eq(t_raw_int(t_path("types.db"), "SELECT typeof(b2) = 'blob' FROM v WHERE id = 1"), 1);
}

/* ---- parameters: the FFI form and strictness ---------------------------------------------- */

Test(sqlite, params_array_form) {
  ascope_sql_params *p = ascope_sql_params_new();
  int types[] = {ASCOPE_SQL_INT64, ASCOPE_SQL_DOUBLE, ASCOPE_SQL_TEXT, ASCOPE_SQL_BLOB,
                 ASCOPE_SQL_BOOL,  ASCOPE_SQL_TEXT,   ASCOPE_SQL_INT64};
  const char *values[] = {"-9223372036854775808", "-1.5e3", "hello", "a\0b", "true", NULL, "42"};
  size_t lengths[] = {ASCOPE_SQL_NTS, ASCOPE_SQL_NTS, 3, 3, ASCOPE_SQL_NTS, 0, 2};
  cr_assert_eq(ascope_sql_params_add_array(p, 7, types, values, lengths), 0);
  cr_assert_eq(ascope_sql_params_count(p), 7);
  cr_assert_eq(ascope_sql_params_int64(p, 0), INT64_MIN);
  cr_assert_eq(ascope_sql_params_double(p, 1), -1500.0);
  size_t len;
  cr_assert_eq(memcmp(ascope_sql_params_bytes(p, 2, &len), "hel", 3), 0);
  cr_assert_eq(len, 3);
  cr_assert_eq(memcmp(ascope_sql_params_bytes(p, 3, &len), "a\0b", 3), 0);
  cr_assert_eq(ascope_sql_params_type(p, 3), ASCOPE_SQL_BLOB);
  cr_assert_eq(ascope_sql_params_int64(p, 4), 1);
  cr_assert_eq(ascope_sql_params_type(p, 5), ASCOPE_SQL_NULL);
  /* Strict: a bad number adds nothing, the whole call fails. */
  const char *bad[] = {"1", "12x"}, *over[] = {"99999999999999999999"}, *blank[] = {" 1"};
  int two[] = {ASCOPE_SQL_INT64, ASCOPE_SQL_INT64};
  cr_assert_eq(ascope_sql_params_add_array(p, 2, two, bad, NULL), UV_EINVAL);
  cr_assert_eq(ascope_sql_params_add_array(p, 1, two, over, NULL), UV_EINVAL);
  cr_assert_eq(ascope_sql_params_add_array(p, 1, two, blank, NULL), UV_EINVAL);
  int boolt[] = {ASCOPE_SQL_BOOL};
  const char *maybe[] = {"maybe"};
  cr_assert_eq(ascope_sql_params_add_array(p, 1, boolt, maybe, NULL), UV_EINVAL);
  cr_assert_eq(ascope_sql_params_count(p), 7);
  ascope_sql_params_clear(p);
  cr_assert_eq(ascope_sql_params_count(p), 0);
  ascope_sql_params_free(p);
}

struct order {
  t_scope t;
  int checked;
};

static int order_rows(ascope *s, int status, ascope_rows *rows, void *ud) {
  (void)s;
  cr_assert_eq(status, 0);
  cr_assert_eq(ascope_rows_int64(rows, 0, 0), 20);
  cr_assert_eq(ascope_rows_int64(rows, 0, 1), 10);
  cr_assert_eq(ascope_rows_int64(rows, 0, 2), 20);
  ((struct order *)ud)->checked++;
  return 0;
}

static void order_body(ascope *s, t_scope *t) {
  ascope_sql *db = ascope_resource(s, 0);
  ascope_sql_params *p = ascope_sql_params_new();
  ascope_sql_params_add_int64(p, 10);
  ascope_sql_params_add_int64(p, 20);
  /* $N is value N wherever it stands, as in PostgreSQL */
  ascope_sql_query(s, db, "SELECT $2, $1, $2", p, order_rows, t);
  ascope_sql_params_free(p);
}

Test(sqlite, dollar_placeholders_take_their_number) {
  struct order o = {.t.body = order_body};
  cr_assert_eq(t_run_db(&o.t, t_path("o.db"), NULL), 0, "%s", o.t.msg);
  cr_assert_eq(o.checked, 1);
}

/* ---- SQL injection through parameters stays data --------------------------------------------- */

static const char *evil[] = {
    "'; DROP TABLE users; --",
    "x' OR '1'='1",
    "1 OR 1=1",
    "\"); DELETE FROM users; --",
    "Robert'); DROP TABLE students;--",
    "$1",
    "?",
    "\\'; ATTACH DATABASE '/tmp/pwn.db' AS pwn; --",
};
#define NEVIL (sizeof evil / sizeof evil[0])

struct inject {
  t_scope t;
  t_cb found[NEVIL];
  t_cb none, count;
};

static void inject_body(ascope *s, t_scope *t) {
  struct inject *in = (struct inject *)t;
  ascope_sql *db = ascope_resource(s, 0);
  ascope_sql_exec(s, db, "CREATE TABLE users(name TEXT)", NULL, NULL, NULL);
  ascope_sql_params *p = ascope_sql_params_new();
  for (size_t i = 0; i < NEVIL; i++) {
    ascope_sql_params_clear(p);
    ascope_sql_params_add_text(p, evil[i], ASCOPE_SQL_NTS);
    ascope_sql_exec(s, db, "INSERT INTO users(name) VALUES (?)", p, NULL, NULL);
    ascope_sql_query(s, db, "SELECT count(*) FROM users WHERE name = ?", p, t_cb_fn, &in->found[i]);
  }
  ascope_sql_params_clear(p);
  ascope_sql_params_add_text(p, "nobody' OR 'a'='a", ASCOPE_SQL_NTS);
  ascope_sql_query(s, db, "SELECT count(*) FROM users WHERE name = $1", p, t_cb_fn, &in->none);
  ascope_sql_query(s, db, "SELECT count(*) FROM users", NULL, t_cb_fn, &in->count);
  ascope_sql_params_free(p);
}

Test(sqlite, injection_through_parameters_stays_data) {
  struct inject in = {.t.body = inject_body};
  cr_assert_eq(t_run_db(&in.t, t_path("inj.db"), NULL), 0, "%s", in.t.msg);
  for (size_t i = 0; i < NEVIL; i++) cr_assert_eq(in.found[i].first, 1, "%s", evil[i]);
  cr_assert_eq(in.none.first, 0);
  cr_assert_eq(in.count.first, (int64_t)NEVIL);
  cr_assert_eq(t_raw_int(t_path("inj.db"), "SELECT count(*) FROM sqlite_master"), 1,
               "no table dropped, none made, nothing attached");
  char *name = t_raw_text(t_path("inj.db"), "SELECT name FROM users LIMIT 1 OFFSET 0");
  cr_assert_str_eq(name, evil[0]);
  free(name);
}

/* ---- errors ------------------------------------------------------------------------------------
 */

struct errs {
  t_scope t;
  t_cb unique, notnull, syntax, range, script, ok_after;
};

static void errs_body(ascope *s, t_scope *t) {
  struct errs *e = (struct errs *)t;
  ascope_sql *db = ascope_resource(s, 0);
  e->unique.db = e->notnull.db = e->syntax.db = e->range.db = e->script.db = db;
  ascope_sql_exec(s, db, "CREATE TABLE u(k TEXT UNIQUE NOT NULL)", NULL, NULL, NULL);
  ascope_sql_exec(s, db, "INSERT INTO u VALUES ('a')", NULL, NULL, NULL);
  /* Each callback returns 0: the error is handled, the scope carries on. */
  ascope_sql_exec(s, db, "INSERT INTO u VALUES ('a')", NULL, t_cb_fn, &e->unique);
  ascope_sql_exec(s, db, "INSERT INTO u VALUES (NULL)", NULL, t_cb_fn, &e->notnull);
  ascope_sql_exec(s, db, "INSERT INTO u VALUSE ('b')", NULL, t_cb_fn, &e->syntax);
  ascope_sql_params *p = ascope_sql_params_new();
  ascope_sql_params_add_int64(p, 1);
  ascope_sql_exec(s, db, "INSERT INTO u VALUES (?), (?)", p, t_cb_fn, &e->range);
  ascope_sql_query(s, db, "SELECT 1; SELECT 2", NULL, t_cb_fn, &e->script);
  ascope_sql_params_free(p);
  ascope_sql_query(s, db, "SELECT count(*) FROM u", NULL, t_cb_fn, &e->ok_after);
}

Test(sqlite, errors_reach_the_callback_with_names) {
  struct errs e = {.t.body = errs_body};
  cr_assert_eq(t_run_db(&e.t, t_path("e.db"), NULL), 0, "%s", e.t.msg);
  cr_assert_eq(e.unique.status, ASCOPE_EDRIVER);
  cr_assert_str_eq(e.unique.code, "SQLITE_CONSTRAINT_UNIQUE");
  cr_assert(strstr(e.unique.msg, "UNIQUE constraint failed: u.k"), "%s", e.unique.msg);
  cr_assert_str_eq(e.notnull.code, "SQLITE_CONSTRAINT_NOTNULL");
  cr_assert_str_eq(e.syntax.code, "SQLITE_ERROR");
  cr_assert(strstr(e.syntax.msg, "syntax error"), "%s", e.syntax.msg);
  cr_assert_str_eq(e.range.code, "SQLITE_RANGE");
  cr_assert_str_eq(e.script.code, "SQLITE_MISUSE");
  cr_assert_eq(e.ok_after.status, 0);
  cr_assert_eq(e.ok_after.first, 1);
}

Test(sqlite, code_names) {
  cr_assert_str_eq(ascope_sqlite_code_name(SQLITE_BUSY_SNAPSHOT), "SQLITE_BUSY_SNAPSHOT");
  cr_assert_str_eq(ascope_sqlite_code_name(SQLITE_IOERR_SHORT_READ), "SQLITE_IOERR_SHORT_READ");
  cr_assert_str_eq(ascope_sqlite_code_name(SQLITE_CONSTRAINT_FOREIGNKEY),
                   "SQLITE_CONSTRAINT_FOREIGNKEY");
  cr_assert_str_eq(ascope_sqlite_code_name(SQLITE_OK), "SQLITE_OK");
  cr_assert_null(ascope_sqlite_code_name(12345));
}

/* ---- scripts, changes, last ids ------------------------------------------------------------- */

struct script {
  t_scope t;
  t_cb script, update, select, ddl;
};

static void script_body(ascope *s, t_scope *t) {
  struct script *x = (struct script *)t;
  ascope_sql *db = ascope_resource(s, 0);
  ascope_sql_exec(s, db,
                  "CREATE TABLE a(id INTEGER PRIMARY KEY, v); -- a comment\n"
                  "INSERT INTO a(v) VALUES (1), (2), (3);\n"
                  "INSERT INTO a(v) SELECT v FROM a;  ",
                  NULL, t_cb_fn, &x->script);
  ascope_sql_exec(s, db, "UPDATE a SET v = v + 1 WHERE v > 1", NULL, t_cb_fn, &x->update);
  ascope_sql_exec(s, db, "SELECT * FROM a", NULL, t_cb_fn, &x->select);
  ascope_sql_exec(s, db, "CREATE INDEX a_v ON a(v);", NULL, t_cb_fn, &x->ddl);
}

Test(sqlite, scripts_changes_and_last_ids) {
  struct script x = {.t.body = script_body};
  cr_assert_eq(t_run_db(&x.t, t_path("s.db"), NULL), 0, "%s", x.t.msg);
  cr_assert_eq(x.script.status, 0);
  cr_assert_eq(x.script.changes, 6);
  cr_assert_eq(x.script.last_id, 6);
  cr_assert_eq(x.update.changes, 4);
  cr_assert_eq(x.select.changes, 0, "a SELECT changes nothing");
  cr_assert_eq(x.select.rows, 0, "exec returns no rows");
  cr_assert_eq(x.ddl.changes, 0);
}

/* ---- options --------------------------------------------------------------------------------- */

Test(sqlite, bad_options_fail_the_acquire) {
  const char *bad[] = {"mode=rwx", "wal=maybe", "busy_timeout=-1", "nope=1", "cache", "batch=0"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    t_scope t = {0};
    cr_assert_eq(t_run_db(&t, t_path("o.db"), bad[i]), UV_EINVAL, "%s", bad[i]);
    cr_assert_str_eq(t.driver, "sqlite");
    cr_assert(strstr(t.msg, "bad sqlite option"), "%s", t.msg);
    cr_assert_eq(t.body_calls, 0);
  }
  t_scope t = {0};
  cr_assert_eq(t_run_db(&t, NULL, NULL), UV_EINVAL, "no path");
  cr_assert_eq(ascope_sqlite_stat("opened"), 0);
}

static void write_body(ascope *s, t_scope *t) {
  (void)t;
  ascope_sql_exec(s, ascope_resource(s, 0), "CREATE TABLE w(x)", NULL, NULL, NULL);
}

Test(sqlite, modes) {
  t_scope t = {0};
  cr_assert_eq(t_run_db(&t, t_path("missing.db"), "mode=ro"), ASCOPE_EDRIVER);
  cr_assert_str_eq(t.code, "SQLITE_CANTOPEN");
  t = (t_scope){0};
  cr_assert_eq(t_run_db(&t, t_path("missing.db"), "mode=rw"), ASCOPE_EDRIVER);
  cr_assert_str_eq(t.code, "SQLITE_CANTOPEN");
  t_raw(t_path("ro.db"), "CREATE TABLE r(x)");
  t = (t_scope){.body = write_body};
  cr_assert_eq(t_run_db(&t, t_path("ro.db"), "mode=ro"), ASCOPE_EDRIVER);
  cr_assert_str_eq(t.code, "SQLITE_READONLY");
  t = (t_scope){.body = write_body};
  cr_assert_eq(t_run_db(&t, NULL, "mode=memory"), 0, "%s", t.msg);
  t = (t_scope){.body = write_body};
  cr_assert_eq(t_run_db(&t, t_path("wal.db"), "wal=1, synchronous=normal foreign_keys=1 cache=0"),
               0, "%s", t.msg);
  char *mode = t_raw_text(t_path("wal.db"), "PRAGMA journal_mode");
  cr_assert_str_eq(mode, "wal");
  free(mode);
}

/* A target beginning with "file:" is an SQLite URI: the file is the
 * path's, and the query's parameters are SQLite's (mode=ro here). */
Test(sqlite, file_uri_targets) {
  char uri[400];
  t_raw(t_path("u.db"), "CREATE TABLE r(x)");
  snprintf(uri, sizeof uri, "file:%s?mode=ro", t_path("u.db"));
  t_scope t = {.body = write_body};
  cr_assert_eq(t_run_db(&t, uri, NULL), ASCOPE_EDRIVER);
  cr_assert_str_eq(t.code, "SQLITE_READONLY", "%s", t.msg);
  snprintf(uri, sizeof uri, "file:%s", t_path("u.db"));
  t = (t_scope){.body = write_body};
  cr_assert_eq(t_run_db(&t, uri, NULL), 0, "%s", t.msg);
  cr_assert_eq(t_raw_int(t_path("u.db"), "SELECT count(*) FROM sqlite_master WHERE name = 'w'"), 1,
               "the table is in the file the URI names");
}

/* ---- the statement cache and hops ---------------------------------------------------------------
 */

struct cache {
  t_scope t;
  int64_t max_statements;
  t_cb last;
};

static int note_statements(ascope *s, int status, ascope_rows *rows, void *ud) {
  (void)s;
  (void)rows;
  struct cache *c = ud;
  int64_t n = ascope_sqlite_stat("statements");
  if (n > c->max_statements) c->max_statements = n;
  return status;
}

static void cache_body(ascope *s, t_scope *t) {
  ascope_sql *db = ascope_resource(s, 0);
  char sql[64];
  for (int round = 0; round < 3; round++) {
    for (int i = 0; i < 40; i++) {
      snprintf(sql, sizeof sql, "SELECT %d", i);
      ascope_sql_query(s, db, sql, NULL, note_statements, t);
    }
  }
  ascope_sql_query(s, db, "SELECT 1", NULL, t_cb_fn, &((struct cache *)t)->last);
}

Test(sqlite, statement_cache_is_bounded) {
  struct cache c = {.t.body = cache_body};
  cr_assert_eq(t_run_db(&c.t, t_path("c.db"), "cache=8"), 0, "%s", c.t.msg);
  cr_assert_leq(c.max_statements, 9, "8 kept, and the one being prepared");
  cr_assert_gt(c.max_statements, 0);
  cr_assert_eq(c.last.first, 1);
}

struct burst {
  t_scope t;
  int done;
};

static int count_done(ascope *s, int status, ascope_rows *rows, void *ud) {
  (void)s;
  (void)rows;
  cr_assert_eq(status, 0);
  ((struct burst *)ud)->done++;
  return 0;
}

static void burst_body(ascope *s, t_scope *t) {
  ascope_sql *db = ascope_resource(s, 0);
  ascope_sql_exec(s, db, "CREATE TABLE b(x)", NULL, NULL, NULL);
  ascope_sql_params *p = ascope_sql_params_new();
  for (int i = 0; i < 5000; i++) {
    ascope_sql_params_clear(p);
    ascope_sql_params_add_int64(p, i);
    cr_assert_eq(ascope_sql_exec(s, db, "INSERT INTO b VALUES (?)", p, count_done, t), 0);
  }
  ascope_sql_params_free(p);
}

Test(sqlite, queued_statements_drain_in_few_hops) {
  struct burst b = {.t.body = burst_body};
  cr_assert_eq(t_run_db(&b.t, t_path("b.db"), "synchronous=off"), 0, "%s", b.t.msg);
  cr_assert_eq(b.done, 5000);
  int64_t hops = ascope_sqlite_stat("hops");
  cr_assert_lt(hops, 500, "%lld hops for 5,000 statements", (long long)hops);
  cr_assert_eq(t_raw_int(t_path("b.db"), "SELECT count(*) FROM b"), 5000);
}

/* ---- misuse ------------------------------------------------------------------------------------
 */

static void misuse_body(ascope *s, t_scope *t) {
  (void)t;
  ascope_sql *db = ascope_resource(s, 0);
  int junk[16] = {0};
  cr_assert_eq(ascope_sql_exec(s, (ascope_sql *)junk, "SELECT 1", NULL, NULL, NULL), UV_EINVAL);
  cr_assert_eq(ascope_sql_exec(s, db, NULL, NULL, NULL, NULL), UV_EINVAL);
  cr_assert_eq(ascope_sql_exec(NULL, db, "SELECT 1", NULL, NULL, NULL), UV_EINVAL);
  ascope_op *op = (ascope_op *)junk;
  cr_assert_eq(ascope_sql_stream(s, NULL, "SELECT 1", NULL, NULL, NULL, &op), UV_EINVAL);
  cr_assert_null(op);
  cr_assert_eq(ascope_use_sql_tx(s, (ascope_sql *)junk, NULL), UV_EINVAL);
  cr_assert_null(ascope_sql_errcode(db), "outside a failing callback");
}

Test(sqlite, misuse_is_refused) {
  t_scope t = {.body = misuse_body};
  cr_assert_eq(t_run_db(&t, t_path("m.db"), NULL), 0, "%s", t.msg);
  cr_assert_eq(ascope_sql_stat("nonsense"), UV_EINVAL);
  cr_assert_eq(ascope_sqlite_stat("nonsense"), UV_EINVAL);
  cr_assert_eq(ascope_sqlite_set_concurrency(0), UV_EINVAL);
}

/* The target is copied (a buffer the caller reuses at once is fine), and
 * the connection is found by its use's index, checked: a use that is not a
 * SQL connection gives NULL, never another driver's state. */
struct typed {
  t_scope t;
  size_t lock_at, db_at;
  ascope_sql *db, *not_db;
  t_cb q;
};

static void typed_body(ascope *s, t_scope *t) {
  struct typed *x = (struct typed *)t;
  x->db = ascope_sql_resource(s, x->db_at);
  x->not_db = ascope_sql_resource(s, x->lock_at);
  cr_assert_null(ascope_sql_resource(s, 7));
  ascope_sql_query(s, x->db, "SELECT count(*) FROM t", NULL, t_cb_fn, &x->q);
}

Test(sqlite, a_target_is_copied_and_found_by_its_checked_index) {
  t_raw(t_path("typed.db"), "CREATE TABLE t (x); INSERT INTO t VALUES (1), (2)");
  ascope_lock *lock = ascope_lock_new(T_rt);
  struct typed x = {.t.body = typed_body};
  char target[512];
  snprintf(target, sizeof target, "%s", t_path("typed.db"));
  ascope *s = ascope_new(T_rt);
  x.lock_at = ascope_use_count(s);
  cr_assert_eq(ascope_use_lock(s, lock), 0);
  x.db_at = ascope_use_count(s);
  cr_assert_eq(ascope_use_sqlite(s, target, NULL), 0);
  memset(target, 'x', sizeof target - 1); /* the caller's buffer, reused at once */
  cr_assert_eq(t_run(s, &x.t), 0, "%s", x.t.msg);
  cr_assert_not_null(x.db);
  cr_assert_null(x.not_db, "the lock is not a SQL connection");
  cr_assert_eq(x.q.status, 0);
  cr_assert_eq(x.q.first, 2);
  ascope_lock_free(lock);
}

/* ---- counters per runtime ----------------------------------------------------------------------
 */

static int use_memory_db(ascope *s, void *ud) {
  (void)ud;
  return ascope_use_sqlite(s, NULL, "mode=memory cache=64");
}

/* Two runtimes at once, on two threads: each sees its own statements,
 * connection and requests under "sqlite.<name>", the process the sum. */
Test(sqlite, each_runtime_counts_its_own) {
  static const char *const names[] = {"sqlite.statements", "sqlite.connections", "sqlite.opened",
                                      "sqlite.closed",     "sql.requests",       NULL};
  struct rt_pair_side a = {.n = 12, .use = use_memory_db}, b = {.n = 20, .use = use_memory_db};
  cr_assert_eq(rt_pair_run(&a, &b, names, ascope_sqlite_stat), 0);
  rt_pair_check_sql(&a, &b);
  cr_assert_eq(a.held[0], a.n, "its prepared statements, not the other's");
  cr_assert_eq(b.held[0], b.n);
  cr_assert_eq(a.after[0], 0, "finalized with the connection");
  cr_assert_eq(a.process[0], a.n + b.n, "ascope_sqlite_stat: the process's, both runtimes");
  cr_assert_eq(ascope_sqlite_stat("opened"), 2);
  cr_assert_eq(ascope_rt_stat(T_rt, "sqlite.opened"), 0, "the test's own runtime ran nothing");
  cr_assert_eq(ascope_rt_stat(T_rt, "sqlite.nonsense"), UV_EINVAL);
}
