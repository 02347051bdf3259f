/* The PostgreSQL driver and the SQL interface: statements, types (text and
 * binary results), parameters, errors, the statement cache, transactions
 * and savepoints, connection strings (multi-host, target_session_attrs,
 * host names), and passwords kept out of messages. Against the real server
 * of scripts/pg-start. */
#include "pg_support.h"
#include "rt_pair.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

TestSuite(postgres, .init = t_init, .fini = t_fini);

/* ---- a connection, a table, a row, read back ---------------------------------------- */

struct basic {
  t_scope t;
  t_cb create, insert, update;
  int selected;
};

static int basic_rows(ascope *s, int status, ascope_rows *rows, void *ud) {
  (void)s;
  struct basic *b = ud;
  cr_assert_eq(status, 0);
  cr_assert_eq(ascope_rows_count(rows), 2);
  cr_assert_eq(ascope_rows_columns(rows), 2);
  cr_assert_str_eq(ascope_rows_column_name(rows, 0), "id");
  cr_assert_str_eq(ascope_rows_column_name(rows, 1), "name");
  cr_assert_str_eq(ascope_rows_column_decltype(rows, 0), "int4");
  cr_assert_str_eq(ascope_rows_column_decltype(rows, 1), "text");
  cr_assert_eq(ascope_rows_column_type(rows, 0), ASCOPE_SQL_INT64);
  cr_assert_eq(ascope_rows_column_type(rows, 1), ASCOPE_SQL_TEXT);
  cr_assert_eq(ascope_rows_int64(rows, 0, 0), 1);
  size_t len;
  cr_assert_str_eq(ascope_rows_text(rows, 0, 1, &len), "ada");
  cr_assert_eq(len, 3);
  cr_assert_str_eq(ascope_rows_text(rows, 1, 1, NULL), "grace");
  b->selected++;
  return 0;
}

static void basic_body(ascope *s, t_scope *t) {
  struct basic *b = (struct basic *)t;
  ascope_sql *db = ascope_resource(s, 0);
  cr_assert_not_null(db);
  cr_assert_str_eq(ascope_sql_driver_name(db), "postgres");
  cr_assert_gt(ascope_postgres_backend_pid(db), 0);
  const char *tab = t_name("basic");
  ascope_sql_exec(s, db, t_sql("CREATE TABLE %s(id serial PRIMARY KEY, name text)", tab), NULL,
                  t_cb_fn, &b->create);
  ascope_sql_params *p = ascope_sql_params_new();
  ascope_sql_params_add_text(p, "ada", ASCOPE_SQL_NTS);
  ascope_sql_params_add_text(p, "grace", ASCOPE_SQL_NTS);
  cr_assert_eq(ascope_sql_exec(s, db, t_sql("INSERT INTO %s(name) VALUES ($1), ($2)", tab), p,
                               t_cb_fn, &b->insert),
               0);
  ascope_sql_params_free(p); /* the statement holds its own copy */
  ascope_sql_exec(s, db, t_sql("UPDATE %s SET name = name WHERE id > 0", tab), NULL, t_cb_fn,
                  &b->update);
  cr_assert_eq(ascope_sql_query(s, db, t_sql("SELECT id, name FROM %s ORDER BY id", tab), NULL,
                                basic_rows, b),
               0);
}

Test(postgres, exec_and_query_in_order) {
  struct basic b = {.t.body = basic_body};
  cr_assert_eq(t_run_db(&b.t, NULL), 0, "%s", b.t.msg);
  cr_assert_eq(b.create.calls, 1);
  cr_assert_eq(b.insert.calls, 1);
  cr_assert_eq(b.insert.changes, 2);
  cr_assert_eq(b.update.changes, 2);
  cr_assert_eq(b.selected, 1);
  cr_assert_eq(t_raw_int(t_sql("SELECT count(*) FROM %s", t_name("basic"))), 2);
  cr_assert_eq(ascope_postgres_stat("opened"), 1);
}

/* ---- type round trips, text and binary ------------------------------------------------------ */

static const unsigned char blob[] = {0, 1, 2, 0, 255, 0, 'x', 0};
static const char utf8[] = "h\xc3\xa9llo w\xc3\xb6rld \xe2\x80\x94 \xf0\x9f\x8e\x89";

struct types {
  t_scope t;
  int checked[2];
  int text_results, binary_results;
};

static void check_types(ascope_rows *r) {
  size_t len;
  cr_assert_eq(ascope_rows_columns(r), 17);
  cr_assert_eq(ascope_rows_type(r, 0, 0), ASCOPE_SQL_BOOL);
  cr_assert_eq(ascope_rows_int64(r, 0, 0), 1);
  cr_assert_eq(ascope_rows_type(r, 0, 1), ASCOPE_SQL_BOOL);
  cr_assert_eq(ascope_rows_int64(r, 0, 1), 0);
  cr_assert_eq(ascope_rows_int64(r, 0, 2), -32768, "int2");
  cr_assert_eq(ascope_rows_int64(r, 0, 3), INT32_MIN, "int4");
  cr_assert_eq(ascope_rows_int64(r, 0, 4), INT64_MAX, "int8");
  cr_assert_eq(ascope_rows_int64(r, 0, 5), INT64_MIN, "int8");
  cr_assert_eq(ascope_rows_type(r, 0, 6), ASCOPE_SQL_DOUBLE);
  cr_assert_eq(ascope_rows_double(r, 0, 6), 1.5f, "float4");
  cr_assert_eq(ascope_rows_double(r, 0, 7), 3.141592653589793, "float8");
  cr_assert(isinf(ascope_rows_double(r, 0, 8)) && ascope_rows_double(r, 0, 8) < 0, "-Infinity");
  cr_assert(isnan(ascope_rows_double(r, 0, 9)), "NaN");
  cr_assert_eq(ascope_rows_type(r, 0, 10), ASCOPE_SQL_TEXT, "numeric as text");
  cr_assert_str_eq(ascope_rows_text(r, 0, 10, NULL), "12345678901234567890.000000000001");
  cr_assert_str_eq(ascope_rows_column_decltype(r, 10), "numeric");
  cr_assert_eq(ascope_rows_type(r, 0, 11), ASCOPE_SQL_TEXT, "timestamptz as text");
  cr_assert_str_eq(ascope_rows_text(r, 0, 11, NULL), "2024-02-29 13:14:15.123456+00");
  cr_assert_str_eq(ascope_rows_text(r, 0, 12, NULL), "1999-12-31 23:59:59");
  cr_assert_str_eq(ascope_rows_text(r, 0, 13, &len), utf8);
  cr_assert_eq(len, strlen(utf8));
  cr_assert_eq(ascope_rows_type(r, 0, 14), ASCOPE_SQL_BLOB);
  const void *b = ascope_rows_blob(r, 0, 14, &len);
  cr_assert_eq(len, sizeof blob);
  cr_assert_eq(memcmp(b, blob, sizeof blob), 0);
  cr_assert(ascope_rows_is_null(r, 0, 15));
  cr_assert_eq(ascope_rows_column_type(r, 15), ASCOPE_SQL_INT64, "a NULL int4 column is INT64");
  cr_assert_eq(ascope_rows_int64(r, 0, 16), 4000000000, "oid");
}

static int types_rows(ascope *s, int status, ascope_rows *rows, void *ud) {
  (void)s;
  struct types *ty = ud;
  cr_assert_eq(status, 0, "%s", ascope_sql_errmsg(ascope_resource(s, 0)));
  check_types(rows);
  ty->checked[ty->checked[0] ? 1 : 0]++;
  return 0;
}

#define TYPES_SQL                                                                                  \
  "SELECT true, false, (-32768)::int2, $1::int4, $2::int8, $3::int8, 1.5::float4, $4::float8, "    \
  "'-Infinity'::float8, 'NaN'::float8, 12345678901234567890.000000000001::numeric, "               \
  "'2024-02-29 13:14:15.123456+00'::timestamptz, '1999-12-31 23:59:59'::timestamp, $5::text, "     \
  "$6::bytea, NULL::int4, 4000000000::oid"

static void types_body(ascope *s, t_scope *t) {
  ascope_sql *db = ascope_resource(s, 0);
  ascope_sql_params *p = ascope_sql_params_new();
  ascope_sql_params_add_int64(p, INT32_MIN);
  ascope_sql_params_add_int64(p, INT64_MAX);
  ascope_sql_params_add_int64(p, INT64_MIN);
  ascope_sql_params_add_double(p, 3.141592653589793);
  ascope_sql_params_add_text(p, utf8, ASCOPE_SQL_NTS);
  ascope_sql_params_add_blob(p, blob, sizeof blob);
  ascope_sql_exec(s, db, "SET TimeZone = 'UTC'", NULL, NULL, NULL);
  /* the first run is text; the second prepares it; from the third it has
   * the column types and runs binary where every column has a binary
   * form, which here is not (numeric, timestamps): text each time */
  for (int i = 0; i < 3; i++) ascope_sql_query(s, db, TYPES_SQL, p, types_rows, t);
  ascope_sql_params_free(p);
}

Test(postgres, type_round_trips) {
  struct types ty = {.t.body = types_body};
  cr_assert_eq(t_run_db(&ty.t, NULL), 0, "%s", ty.t.msg);
  cr_assert_eq(ty.checked[0] + ty.checked[1], 3);
  cr_assert_eq(ascope_postgres_stat("prepared"), 1);
}

/* Binary results: columns that all have a binary form, run often enough
 * to be prepared; and the same with results=text. Both decode alike. */
struct binres {
  t_scope t;
  int runs;
};

static int bin_rows(ascope *s, int status, ascope_rows *rows, void *ud) {
  (void)s;
  struct binres *b = ud;
  cr_assert_eq(status, 0);
  size_t len;
  cr_assert_eq(ascope_rows_int64(rows, 0, 0), 1);
  cr_assert_eq(ascope_rows_int64(rows, 0, 1), -7);
  cr_assert_eq(ascope_rows_int64(rows, 0, 2), 1234567890123);
  cr_assert_eq(ascope_rows_double(rows, 0, 3), 0.1);
  cr_assert_eq(ascope_rows_double(rows, 0, 4), -2.5);
  cr_assert_str_eq(ascope_rows_text(rows, 0, 5, &len), "varchar");
  const unsigned char *bb = ascope_rows_blob(rows, 0, 6, &len);
  cr_assert_eq(len, 3);
  cr_assert_eq(bb[0], 0);
  cr_assert_eq(bb[2], 0xff);
  cr_assert_eq(ascope_rows_type(rows, 0, 7), ASCOPE_SQL_BOOL);
  cr_assert_eq(ascope_rows_int64(rows, 0, 7), 1);
  cr_assert(ascope_rows_is_null(rows, 0, 8));
  cr_assert_str_eq(ascope_rows_text(rows, 0, 9, NULL), "{\"a\": 1}");
  cr_assert_eq(ascope_rows_int64(rows, 0, 10), 9);
  b->runs++;
  return 0;
}

static void bin_body(ascope *s, t_scope *t) {
  ascope_sql *db = ascope_resource(s, 0);
  ascope_sql_params *p = ascope_sql_params_new();
  ascope_sql_params_add_int64(p, 9);
  for (int i = 0; i < 5; i++)
    ascope_sql_query(s, db,
                     "SELECT true::int4 AS one, -7::int2, 1234567890123::int8, 0.1::float8, "
                     "-2.5::float4, 'varchar'::varchar, '\\x00abff'::bytea, true, NULL::text, "
                     "'{\"a\": 1}'::json, $1",
                     p, bin_rows, t);
  ascope_sql_params_free(p);
}

Test(postgres, binary_and_text_results_decode_alike) {
  struct binres b = {.t.body = bin_body};
  cr_assert_eq(t_run_db(&b.t, NULL), 0, "%s", b.t.msg);
  cr_assert_eq(b.runs, 5);
  struct binres c = {.t.body = bin_body};
  cr_assert_eq(t_run_db(&c.t, "results=text"), 0, "%s", c.t.msg);
  cr_assert_eq(c.runs, 5);
}

/* ---- parameters are data -------------------------------------------------------------------- */

struct params {
  t_scope t;
  t_cb count, echo;
  char echoed[128];
};

static int echo_rows(ascope *s, int status, ascope_rows *rows, void *ud) {
  (void)s;
  struct params *p = ud;
  cr_assert_eq(status, 0);
  snprintf(p->echoed, sizeof p->echoed, "%s", ascope_rows_text(rows, 0, 0, NULL));
  cr_assert_eq(ascope_rows_int64(rows, 0, 1), 3, "repeat() takes an int4");
  cr_assert_eq(ascope_rows_int64(rows, 0, 2), 4000000000LL, "int4 + int8");
  cr_assert_eq(ascope_rows_type(rows, 0, 3), ASCOPE_SQL_TEXT, "a date inferred from text");
  return 0;
}

static void params_body(ascope *s, t_scope *t) {
  struct params *p = (struct params *)t;
  ascope_sql *db = ascope_resource(s, 0);
  const char *tab = t_name("params");
  ascope_sql_exec(s, db, t_sql("CREATE TABLE %s(name text)", tab), NULL, NULL, NULL);
  ascope_sql_params *ps = ascope_sql_params_new();
  const char *evil = "x'); DROP TABLE params; --";
  ascope_sql_params_add_text(ps, evil, ASCOPE_SQL_NTS);
  ascope_sql_exec(s, db, t_sql("INSERT INTO %s VALUES ($1)", tab), ps, NULL, NULL);
  ascope_sql_query(s, db, t_sql("SELECT count(*) FROM %s WHERE name = $1", tab), ps, t_cb_fn,
                   &p->count);
  ascope_sql_params_clear(ps);
  ascope_sql_params_add_text(ps, "abc", ASCOPE_SQL_NTS);
  ascope_sql_params_add_int64(ps, 3);
  ascope_sql_params_add_int64(ps, 2000000000);
  ascope_sql_params_add_int64(ps, 2000000000LL);
  ascope_sql_params_add_text(ps, "2024-01-02", ASCOPE_SQL_NTS);
  ascope_sql_query(s, db, "SELECT repeat($1, 1), length(repeat('x', $2)), $3::int8 + $4, $5::date",
                   ps, echo_rows, p);
  ascope_sql_params_free(ps);
}

Test(postgres, parameters_are_bound_never_spliced) {
  struct params p = {.t.body = params_body};
  cr_assert_eq(t_run_db(&p.t, NULL), 0, "%s", p.t.msg);
  cr_assert_eq(p.count.first, 1);
  cr_assert_str_eq(p.echoed, "abc");
}

/* A parameter bigger than the socket's buffers: libpq writes it as the
 * socket drains (the watch waits for writable), and it arrives whole. */
struct big {
  t_scope t;
  t_cb len, md5;
};

static void big_body(ascope *s, t_scope *t) {
  struct big *b = (struct big *)t;
  size_t n = 24u << 20;
  unsigned char *data = malloc(n);
  for (size_t i = 0; i < n; i++) data[i] = (unsigned char)(i * 7 + (i >> 13));
  ascope_sql_params *p = ascope_sql_params_new();
  ascope_sql_params_add_blob(p, data, n);
  free(data);
  ascope_sql_query(s, ascope_resource(s, 0), "SELECT length($1)", p, t_cb_fn, &b->len);
  ascope_sql_query(s, ascope_resource(s, 0), "SELECT get_byte($1, 12345678)", p, t_cb_fn, &b->md5);
  ascope_sql_params_free(p);
}

Test(postgres, a_parameter_larger_than_the_socket_buffers) {
  struct big b = {.t.body = big_body};
  cr_assert_eq(t_run_db(&b.t, NULL), 0, "%s", b.t.msg);
  cr_assert_eq(b.len.first, 24 << 20);
  size_t i = 12345678;
  cr_assert_eq(b.md5.first, (unsigned char)(i * 7 + (i >> 13)));
}

struct nul {
  t_scope t;
  int rc;
};

static void nul_body(ascope *s, t_scope *t) {
  struct nul *n = (struct nul *)t;
  ascope_sql_params *p = ascope_sql_params_new();
  ascope_sql_params_add_text(p, "a\0b", 3);
  n->rc = ascope_sql_query(s, ascope_resource(s, 0), "SELECT $1", p, NULL, NULL);
  ascope_sql_params_free(p);
}

Test(postgres, a_text_parameter_with_a_nul_is_refused) {
  struct nul n = {.t.body = nul_body};
  cr_assert_eq(t_run_db(&n.t, NULL), 0);
  cr_assert_eq(n.rc, UV_EINVAL);
}

/* ---- errors: SQLSTATE, message, detail, hint ---------------------------------------------------
 */

struct errs {
  t_scope t;
  t_cb dup, raised, syntax, after;
};

static void errs_body(ascope *s, t_scope *t) {
  struct errs *e = (struct errs *)t;
  ascope_sql *db = ascope_resource(s, 0);
  e->dup.db = e->raised.db = e->syntax.db = db;
  const char *tab = t_name("errs");
  ascope_sql_exec(s, db, t_sql("CREATE TABLE %s(id int PRIMARY KEY)", tab), NULL, NULL, NULL);
  ascope_sql_exec(s, db, t_sql("INSERT INTO %s VALUES (1)", tab), NULL, NULL, NULL);
  ascope_sql_exec(s, db, t_sql("INSERT INTO %s VALUES (1)", tab), NULL, t_cb_fn, &e->dup);
  ascope_sql_exec(s, db,
                  "DO $$ BEGIN RAISE EXCEPTION 'boom' USING DETAIL = 'the detail', "
                  "HINT = 'the hint', ERRCODE = 'P0042'; END $$",
                  NULL, t_cb_fn, &e->raised);
  ascope_sql_query(s, db, "SELEKT 1", NULL, t_cb_fn, &e->syntax);
  ascope_sql_query(s, db, t_sql("SELECT count(*) FROM %s", tab), NULL, t_cb_fn, &e->after);
}

Test(postgres, errors_carry_sqlstate_message_detail_and_hint) {
  struct errs e = {.t.body = errs_body};
  cr_assert_eq(t_run_db(&e.t, NULL), 0, "%s", e.t.msg);
  cr_assert_eq(e.dup.status, ASCOPE_EDRIVER);
  cr_assert_str_eq(e.dup.code, "23505");
  cr_assert(strstr(e.dup.msg, "duplicate key value violates unique constraint"), "%s", e.dup.msg);
  cr_assert(strstr(e.dup.msg, "DETAIL: Key (id)=(1) already exists."), "%s", e.dup.msg);
  cr_assert_str_eq(e.raised.code, "P0042");
  cr_assert(strstr(e.raised.msg, "boom; DETAIL: the detail; HINT: the hint"), "%s", e.raised.msg);
  cr_assert_str_eq(e.syntax.code, "42601");
  cr_assert_eq(e.after.status, 0, "the connection goes on after errors");
  cr_assert_eq(e.after.first, 1);
}

/* ---- scripts ------------------------------------------------------------------------------ */

struct script {
  t_scope t;
  t_cb run, bad, count;
};

static void script_body(ascope *s, t_scope *t) {
  struct script *sc = (struct script *)t;
  ascope_sql *db = ascope_resource(s, 0);
  const char *tab = t_name("script");
  sc->bad.db = db;
  ascope_sql_exec(s, db,
                  t_sql("CREATE TABLE %s(v text); -- a comment; with a semicolon\n"
                        "INSERT INTO %s VALUES ('a;b'), ($$c;d$$), (E'e\\';f');\n"
                        "/* a block; comment */ INSERT INTO %s VALUES ('g');",
                        tab, tab, tab),
                  NULL, t_cb_fn, &sc->run);
  /* a script runs as one transaction: the failure takes its first part along */
  ascope_sql_exec(s, db, t_sql("INSERT INTO %s VALUES ('h'); SELECT 1/0;", tab), NULL, t_cb_fn,
                  &sc->bad);
  ascope_sql_query(s, db, t_sql("SELECT count(*) FROM %s", tab), NULL, t_cb_fn, &sc->count);
}

Test(postgres, an_exec_without_parameters_runs_a_script) {
  struct script sc = {.t.body = script_body};
  cr_assert_eq(t_run_db(&sc.t, NULL), 0, "%s", sc.t.msg);
  cr_assert_eq(sc.run.status, 0);
  cr_assert_eq(sc.run.changes, 4);
  cr_assert_eq(sc.bad.status, ASCOPE_EDRIVER);
  cr_assert_str_eq(sc.bad.code, "22012");
  cr_assert_eq(sc.count.first, 4);
}

/* ---- the statement cache ------------------------------------------------------------------- */

struct cache {
  t_scope t;
  t_cb counts[3];
  int ran;
};

static int count_cb(ascope *s, int status, ascope_rows *rows, void *ud) {
  (void)s;
  struct cache *c = ud;
  cr_assert_eq(status, 0);
  cr_assert_eq(ascope_rows_int64(rows, 0, 0), c->ran % 7);
  c->ran++;
  return 0;
}

static void cache_body(ascope *s, t_scope *t) {
  struct cache *c = (struct cache *)t;
  ascope_sql *db = ascope_resource(s, 0);
  static const char *texts[] = {"SELECT $1::int + 0", "SELECT $1::int + 0 + 0",
                                "SELECT $1::int - 0"};
  ascope_sql_params *p = ascope_sql_params_new();
  for (int i = 0; i < 21; i++) { /* each text 7 times, then the next */
    ascope_sql_params_clear(p);
    ascope_sql_params_add_int64(p, i % 7);
    ascope_sql_query(s, db, texts[i / 7], p, count_cb, c);
  }
  ascope_sql_params_free(p);
  ascope_sql_query(s, db, "SELECT count(*) FROM pg_prepared_statements", NULL, t_cb_fn,
                   &c->counts[0]);
}

Test(postgres, the_cache_keeps_the_most_recent_statements) {
  struct cache c = {.t.body = cache_body};
  cr_assert_eq(t_run_db(&c.t, "cache=2"), 0, "%s", c.t.msg);
  cr_assert_eq(c.ran, 21);
  cr_assert_leq(c.counts[0].first, 2, "at most 2 prepared, %lld", (long long)c.counts[0].first);
  cr_assert_geq(ascope_postgres_stat("deallocated"), 1);
  struct cache d = {.t.body = cache_body};
  cr_assert_eq(t_run_db(&d.t, "cache=8"), 0, "%s", d.t.msg);
  cr_assert_eq(d.counts[0].first, 3, "three texts, each prepared once");
}

static t_cb discard_cbs[3];
static void set_db(ascope_sql *db) {
  for (int i = 0; i < 3; i++) discard_cbs[i].db = db;
}

static int then_again(ascope *s, int status, ascope_rows *rows, void *ud) {
  (void)rows;
  cr_assert_eq(status, 0);
  ascope_sql *db = ascope_resource(s, 0);
  for (int i = 0; i < 3; i++) ascope_sql_query(s, db, "SELECT 42", NULL, t_cb_fn, &discard_cbs[i]);
  (void)ud;
  return 0;
}

static int then_discard(ascope *s, int status, ascope_rows *rows, void *ud) {
  (void)rows, (void)ud;
  cr_assert_eq(status, 0);
  ascope_sql_exec(s, ascope_resource(s, 0), "DEALLOCATE ALL", NULL, then_again, NULL);
  return 0;
}

static int run_twice_more(ascope *s, int status, ascope_rows *rows, void *ud) {
  (void)rows, (void)ud;
  cr_assert_eq(status, 0);
  ascope_sql_query(s, ascope_resource(s, 0), "SELECT 42", NULL, then_discard, NULL);
  return 0;
}

static void discard_body(ascope *s, t_scope *t) {
  (void)t;
  set_db(ascope_resource(s, 0));
  /* seen, prepared, run prepared; then the server forgets it */
  ascope_sql_query(s, ascope_resource(s, 0), "SELECT 42", NULL, run_twice_more, NULL);
  ascope_sql_query(s, ascope_resource(s, 0), "SELECT 42", NULL, NULL, NULL);
}

Test(postgres, a_statement_deallocated_behind_the_cache_is_prepared_again) {
  t_scope t = {.body = discard_body};
  cr_assert_eq(t_run_db(&t, NULL), 0, "%s", t.msg);
  for (int i = 0; i < 3; i++) {
    cr_assert_eq(discard_cbs[i].status, 0, "query %d: %d %s %s", i, discard_cbs[i].status,
                 discard_cbs[i].code, discard_cbs[i].msg);
    cr_assert_eq(discard_cbs[i].first, 42);
  }
  cr_assert_geq(ascope_postgres_stat("retried"), 1);
}

/* ---- transactions and savepoints ---------------------------------------------------------- */

static void setup_accounts(void) {
  t_raw(t_sql("CREATE TABLE %s(id int PRIMARY KEY, balance int NOT NULL CHECK (balance >= 0))",
              t_name("acct")));
  t_raw(t_sql("INSERT INTO %s VALUES (1, 100), (2, 0)", t_name("acct")));
}

static int64_t balance(int id) {
  return t_raw_int(t_sql("SELECT balance FROM %s WHERE id = %d", t_name("acct"), id));
}

static void move_body(ascope *s, t_scope *t) {
  (void)t;
  ascope_sql *db = ascope_resource(s, 0);
  cr_assert_eq(ascope_sql_tx_depth(ascope_resource(s, 1)), 1);
  ascope_sql_exec(s, db, t_sql("UPDATE %s SET balance = balance - 30 WHERE id = 1", t_name("acct")),
                  NULL, NULL, NULL);
  ascope_sql_exec(s, db, t_sql("UPDATE %s SET balance = balance + 30 WHERE id = 2", t_name("acct")),
                  NULL, NULL, NULL);
}

static void fail_body(ascope *s, t_scope *t) {
  move_body(s, t);
  ascope_fail(s, UV_EPROTO, "the transfer is refused");
}

Test(postgres, a_transaction_commits_on_success_and_rolls_back_on_error) {
  setup_accounts();
  t_scope ok = {.body = move_body}, bad = {.body = fail_body};
  ascope *s = ascope_new(T_rt);
  ascope_use_postgres(s, t_dsn(), NULL);
  ascope_use_sql_tx_at(s, ascope_postgres(), 0, "isolation=serializable");
  cr_assert_eq(t_run(s, &ok), 0, "%s", ok.msg);
  cr_assert_eq(balance(1), 70);
  s = ascope_new(T_rt);
  ascope_use_postgres(s, t_dsn(), NULL);
  ascope_use_sql_tx_at(s, ascope_postgres(), 0, NULL);
  cr_assert_eq(t_run(s, &bad), UV_EPROTO);
  cr_assert_eq(balance(1), 70, "rolled back");
  cr_assert_eq(balance(2), 30);
}

Test(postgres, bad_transaction_options_fail_the_acquire) {
  t_scope t = {0};
  ascope *s = ascope_new(T_rt);
  ascope_use_postgres(s, t_dsn(), NULL);
  ascope_use_sql_tx_at(s, ascope_postgres(), 0, "isolation=chaotic");
  cr_assert_eq(t_run(s, &t), UV_EINVAL);
  cr_assert_eq(t.body_calls, 0);
}

/* A COMMIT after a statement failed inside (its error handled by its
 * callback) does not commit: the release reports it. */
static int ignore(ascope *s, int status, ascope_rows *rows, void *ud) {
  (void)s, (void)rows, (void)ud;
  cr_assert_eq(status, ASCOPE_EDRIVER);
  return 0;
}

static void aborted_body(ascope *s, t_scope *t) {
  (void)t;
  ascope_sql *db = ascope_resource(s, 0);
  ascope_sql_exec(s, db, t_sql("UPDATE %s SET balance = 1 WHERE id = 1", t_name("acct")), NULL,
                  NULL, NULL);
  ascope_sql_exec(s, db, t_sql("UPDATE %s SET balance = -1 WHERE id = 2", t_name("acct")), NULL,
                  ignore, NULL);
}

Test(postgres, commit_of_an_aborted_transaction_is_an_error) {
  setup_accounts();
  t_scope t = {.body = aborted_body};
  ascope *s = ascope_new(T_rt);
  ascope_use_postgres(s, t_dsn(), NULL);
  ascope_use_sql_tx_at(s, ascope_postgres(), 0, NULL);
  cr_assert_eq(t_run(s, &t), ASCOPE_EDRIVER);
  cr_assert_str_eq(t.code, "25P02");
  cr_assert_eq(balance(1), 100);
}

/* Savepoints: a child scope's transaction on its parent's connection. */
struct nested {
  t_scope t;
  t_scope ok, bad;
  ascope *parent;
};

static void child_ok(ascope *s, t_scope *t) {
  (void)t;
  cr_assert_eq(ascope_sql_tx_depth(ascope_resource(s, 0)), 2);
  ascope_sql_exec(s, ascope_sql_tx_db(ascope_resource(s, 0)),
                  t_sql("UPDATE %s SET balance = balance - 10 WHERE id = 1", t_name("acct")), NULL,
                  NULL, NULL);
}

static void child_bad(ascope *s, t_scope *t) {
  (void)t;
  ascope_sql *db = ascope_sql_tx_db(ascope_resource(s, 0));
  ascope_sql_exec(s, db, t_sql("UPDATE %s SET balance = balance - 20 WHERE id = 1", t_name("acct")),
                  NULL, NULL, NULL);
  /* violates the CHECK: the savepoint rolls back, the outer work stays */
  ascope_sql_exec(s, db, t_sql("UPDATE %s SET balance = -5 WHERE id = 2", t_name("acct")), NULL,
                  NULL, NULL);
}

static struct nested *the_nested;

/* Savepoints nest: the second child starts when the first is done. */
static void first_done(ascope *s, int status, void *ud) {
  t_done(s, status, ud);
  struct nested *n = the_nested;
  ascope *b = ascope_child(n->parent);
  ascope_use_sql_tx(b, ascope_resource(n->parent, 0), NULL);
  ascope_start(b, t_body, t_done, &n->bad);
}

static void parent_body(ascope *s, t_scope *t) {
  struct nested *n = (struct nested *)t;
  the_nested = n;
  n->parent = s;
  n->ok.body = child_ok;
  n->bad.body = child_bad;
  ascope *a = ascope_child(s);
  ascope_use_sql_tx(a, ascope_resource(s, 0), NULL);
  ascope_start(a, t_body, first_done, &n->ok);
}

Test(postgres, savepoints_roll_back_a_child_and_keep_the_parent) {
  setup_accounts();
  struct nested n = {.t.body = parent_body};
  ascope *s = ascope_new(T_rt);
  ascope_set_mode(s, ASCOPE_COLLECT_ALL);
  ascope_use_postgres(s, t_dsn(), NULL);
  ascope_use_sql_tx_at(s, ascope_postgres(), 0, NULL);
  cr_assert_eq(t_run(s, &n.t), 0, "%s", n.t.msg);
  cr_assert_eq(n.ok.status, 0);
  cr_assert_eq(n.bad.status, ASCOPE_EDRIVER);
  cr_assert_str_eq(n.bad.code, "23514");
  cr_assert_eq(balance(1), 90, "the good child's savepoint was released, the bad one's undone");
  cr_assert_eq(balance(2), 0);
}

/* A savepoint whose work had an error its callback handled: the child's
 * outcome is ok, so its RELEASE runs, fails (the block is aborted), and is
 * followed by ROLLBACK TO: the child hears 25P02, the parent goes on. */
struct relfail {
  t_scope t, kid;
  t_cb after;
};

static int handled(ascope *s, int status, ascope_rows *rows, void *ud) {
  (void)s, (void)rows, (void)ud;
  cr_assert_eq(status, ASCOPE_EDRIVER);
  return 0;
}

static void relfail_kid(ascope *s, t_scope *t) {
  (void)t;
  ascope_sql *db = ascope_sql_tx_db(ascope_resource(s, 0));
  ascope_sql_exec(s, db, t_sql("UPDATE %s SET balance = 0 WHERE id = 1", t_name("acct")), NULL,
                  NULL, NULL);
  ascope_sql_exec(s, db, t_sql("UPDATE %s SET balance = -1 WHERE id = 2", t_name("acct")), NULL,
                  handled, NULL);
}

static struct relfail *the_relfail;

static void relfail_kid_done(ascope *s, int status, void *ud) {
  t_done(s, status, ud);
}

static void relfail_body(ascope *s, t_scope *t) {
  struct relfail *r = (struct relfail *)t;
  the_relfail = r;
  ascope_sql *db = ascope_resource(s, 0);
  ascope_sql_exec(s, db, t_sql("UPDATE %s SET balance = 55 WHERE id = 1", t_name("acct")), NULL,
                  NULL, NULL);
  r->kid.body = relfail_kid;
  ascope *k = ascope_child(s);
  ascope_use_sql_tx(k, db, NULL);
  ascope_start(k, t_body, relfail_kid_done, &r->kid);
}

Test(postgres, a_savepoint_whose_release_fails_is_rolled_back) {
  setup_accounts();
  struct relfail r = {.t.body = relfail_body};
  ascope *s = ascope_new(T_rt);
  ascope_set_mode(s, ASCOPE_COLLECT_ALL);
  ascope_use_postgres(s, t_dsn(), NULL);
  ascope_use_sql_tx_at(s, ascope_postgres(), 0, NULL);
  cr_assert_eq(t_run(s, &r.t), 0, "%s", r.t.msg);
  cr_assert_eq(r.kid.status, ASCOPE_EDRIVER);
  cr_assert_str_eq(r.kid.code, "25P02", "%s", r.kid.msg);
  cr_assert_eq(balance(1), 55, "the parent's work committed, the child's undone");
}

/* COPY through the plain statement calls is refused with a pointer to the
 * COPY functions, and the connection goes on. */
struct plaincopy {
  t_scope t;
  t_cb in, out, after;
};

static void plaincopy_body(ascope *s, t_scope *t) {
  struct plaincopy *p = (struct plaincopy *)t;
  ascope_sql *db = ascope_resource(s, 0);
  p->in.db = p->out.db = db;
  ascope_sql_exec(s, db, t_sql("CREATE TABLE %s(id int)", t_name("pcopy")), NULL, NULL, NULL);
  ascope_sql_exec(s, db, t_sql("COPY %s FROM STDIN", t_name("pcopy")), NULL, t_cb_fn, &p->in);
  ascope_sql_query(s, db, t_sql("COPY %s TO STDOUT", t_name("pcopy")), NULL, t_cb_fn, &p->out);
  ascope_sql_query(s, db, "SELECT 3", NULL, t_cb_fn, &p->after);
}

Test(postgres, copy_through_exec_is_refused) {
  struct plaincopy p = {.t.body = plaincopy_body};
  cr_assert_eq(t_run_db(&p.t, NULL), 0, "%s", p.t.msg);
  cr_assert_neq(p.in.status, 0);
  cr_assert(strstr(p.in.msg, "ascope_postgres_copy_in"), "%s", p.in.msg);
  cr_assert_neq(p.out.status, 0);
  cr_assert(strstr(p.out.msg, "ascope_postgres_copy_out"), "%s", p.out.msg);
  cr_assert_eq(p.after.status, 0);
  cr_assert_eq(p.after.first, 3);
}

/* ---- connection strings -------------------------------------------------------------------------
 */

/* The test DSN with its host and port swapped for others. */
static const char *dsn_with(const char *host, const char *port, const char *extra) {
  static char buf[1024];
  char *d = strdup(t_dsn()), *out = buf;
  size_t cap = sizeof buf;
  for (char *tok = strtok(d, " "); tok; tok = strtok(NULL, " ")) {
    if ((host && !strncmp(tok, "host=", 5)) || (port && !strncmp(tok, "port=", 5))) continue;
    int k = snprintf(out, cap, "%s ", tok);
    out += k;
    cap -= (size_t)k;
  }
  snprintf(out, cap, "%s%s %s%s %s", host ? "host=" : "", host ? host : "", port ? "port=" : "",
           port ? port : "", extra ? extra : "");
  free(d);
  return buf;
}

static const char *test_port(void) {
  static char port[16];
  const char *p = strstr(t_dsn(), "port=");
  cr_assert_not_null(p);
  snprintf(port, sizeof port, "%.*s", (int)strcspn(p + 5, " "), p + 5);
  return port;
}

static void pid_body(ascope *s, t_scope *t) {
  (void)t;
  cr_assert_gt(ascope_postgres_backend_pid(ascope_resource(s, 0)), 0);
}

static int run_dsn(t_scope *t, const char *dsn, const char *options) {
  ascope *s = ascope_new(T_rt);
  cr_assert_eq(ascope_use_postgres(s, dsn, options), 0);
  return t_run(s, t);
}

Test(postgres, a_host_name_is_resolved_off_the_loop) {
  t_scope t = {.body = pid_body};
  cr_assert_eq(run_dsn(&t, dsn_with("localhost", NULL, NULL), NULL), 0, "%s", t.msg);
}

Test(postgres, a_multi_host_dsn_fails_over) {
  char ports[64];
  snprintf(ports, sizeof ports, "1,%s", test_port());
  t_scope t = {.body = pid_body};
  cr_assert_eq(run_dsn(&t, dsn_with("127.0.0.1,localhost", ports, NULL), NULL), 0, "%s", t.msg);
  t_scope rw = {.body = pid_body};
  cr_assert_eq(
      run_dsn(&rw, dsn_with("127.0.0.1,127.0.0.1", ports, "target_session_attrs=read-write"), NULL),
      0, "%s", rw.msg);
  t_scope ro = {0};
  cr_assert_eq(run_dsn(&ro, dsn_with(NULL, NULL, "target_session_attrs=standby"), NULL),
               ASCOPE_EDRIVER);
  cr_assert_str_eq(ro.code, "08001");
  cr_assert(strstr(ro.msg, "standby") || strstr(ro.msg, "hot standby"), "%s", ro.msg);
}

Test(postgres, an_unknown_host_fails_cleanly) {
  t_scope t = {0};
  cr_assert_eq(run_dsn(&t, dsn_with("no-such-host.invalid", NULL, NULL), NULL), ASCOPE_EDRIVER);
  cr_assert_str_eq(t.code, "08001");
  cr_assert(strstr(t.msg, "no-such-host.invalid"), "%s", t.msg);
  cr_assert_eq(ascope_postgres_stat("opened"), 0);
}

Test(postgres, a_refused_connection_fails_cleanly) {
  t_scope t = {0};
  cr_assert_eq(run_dsn(&t, dsn_with("127.0.0.1", "1", NULL), NULL), ASCOPE_EDRIVER);
  cr_assert_str_eq(t.code, "08001");
  cr_assert(strstr(t.msg, "refused"), "%s", t.msg);
  cr_assert_eq(t.body_calls, 0);
}

Test(postgres, bad_options_fail_the_acquire) {
  t_scope t = {0};
  cr_assert_eq(t_run_db(&t, "cache=lots"), UV_EINVAL);
  cr_assert(strstr(t.msg, "cache=lots"), "%s", t.msg);
}

/* ---- passwords
 * ------------------------------------------------------------------------------------ */

static const char *test_password(void) {
  static char pw[128];
  const char *p = strstr(t_dsn(), "password=");
  cr_assert_not_null(p, "the test DSN has a password");
  snprintf(pw, sizeof pw, "%.*s", (int)strcspn(p + 9, " "), p + 9);
  return pw;
}

Test(postgres, a_wrong_password_fails_without_showing_it) {
  const char *wrong = "Wr0ng-Secret-4711";
  char extra[160];
  snprintf(extra, sizeof extra, "password=%s", wrong);
  char *d = strdup(dsn_with(NULL, NULL, NULL));
  char *pw = strstr(d, "password=");
  memset(pw, ' ', strcspn(pw, " ")); /* drop the right one */
  char dsn[1024];
  snprintf(dsn, sizeof dsn, "%s %s", d, extra);
  free(d);
  t_scope t = {0};
  cr_assert_eq(run_dsn(&t, dsn, NULL), ASCOPE_EDRIVER);
  cr_assert_str_eq(t.code, "08001");
  cr_assert(strstr(t.msg, "password authentication failed"), "%s", t.msg);
  cr_assert_null(strstr(t.msg, wrong), "the password shows: %s", t.msg);
  cr_assert_null(strstr(t.msg, test_password()));
}

Test(postgres, a_malformed_dsn_does_not_show_its_password) {
  const char *cases[] = {
      "postgresql://ascope:S3cretPass@127.0.0.1:notaport/db",
      "host=127.0.0.1 password=S3cretPass port=notaport",
      "host=127.0.0.1 password='S3cret Pass' bogus_option=1",
      "postgresql://ascope:S3cret%zzPass@127.0.0.1/db",
      "postgresql://ascope:S3cretPass@[::1/db",
  };
  for (int i = 0; i < 5; i++) {
    t_scope t = {0};
    int st = run_dsn(&t, cases[i], NULL);
    cr_assert_neq(st, 0);
    cr_assert_null(strstr(t.msg, "S3cret"), "case %d shows the password: %s", i, t.msg);
    cr_assert_neq(t.msg[0], '\0');
  }
}

/* ---- counters per runtime ----------------------------------------------------------------------
 */

static int use_test_db(ascope *s, void *ud) {
  (void)ud;
  return ascope_use_postgres(s, t_dsn(), NULL);
}

/* Two runtimes at once, on two threads: each sees its own statements and
 * connection under "postgres.<name>", the process the sum. */
Test(postgres, each_runtime_counts_its_own) {
  static const char *const names[] = {"postgres.statements", "postgres.connections",
                                      "postgres.opened",     "postgres.closed",
                                      "sql.requests",        NULL};
  struct rt_pair_side a = {.n = 12, .use = use_test_db}, b = {.n = 20, .use = use_test_db};
  cr_assert_eq(rt_pair_run(&a, &b, names, ascope_postgres_stat), 0);
  rt_pair_check_sql(&a, &b);
  cr_assert_eq(a.held[0], a.n, "its statements sent, not the other's");
  cr_assert_eq(b.held[0], b.n);
  cr_assert_eq(b.after[0], b.n, "a count of what was sent: it stays");
  cr_assert_eq(a.process[0], a.n + b.n, "ascope_postgres_stat: the process's, both runtimes");
  cr_assert_eq(ascope_rt_stat(T_rt, "postgres.statements"), 0, "the test's runtime ran nothing");
  cr_assert_eq(ascope_rt_stat(T_rt, "postgres.nonsense"), UV_EINVAL);
}
