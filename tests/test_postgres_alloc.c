/* The PostgreSQL driver under allocation failure, against the real server
 * (ASCOPE_PG_DSN): each allocation of a connect (the DSN's parse, the host
 * lookups), a query with parameters and its result fails in turn, and
 * every time the scope ends once, cleanly, with no block left; the next
 * run, with nothing failing, succeeds. Run again with the query behind
 * another, the two must also answer in the order started. */
#include <ascope/postgres.h>

#include "alloc_fail.h"

TestSuite(postgres_alloc, .timeout = 900);

static const char *options; /* the connection's: NULL, or "sync=batch" */

static int uses(ascope *s, af_run *r) {
  return ascope_use_postgres(s, r->arg, options);
}

/* A statement that fails before it is sent (its parameters cannot be
 * encoded for want of memory) is answered after the one started before it,
 * still in the pipeline then: results keep the order started. A refusal
 * overtaking it is reported as UV_EPROTO. */
static int first_answered;

static int first_cb(ascope *s, int status, ascope_rows *rows, void *ud) {
  first_answered = 1;
  return af_sql_cb(s, status, rows, ud);
}

static int second_cb(ascope *s, int status, ascope_rows *rows, void *ud) {
  if (!first_answered && status != ASCOPE_ECANCELED) af_saw(ud, UV_EPROTO);
  return af_sql_cb(s, status, rows, ud);
}

static bool behind; /* the statement with parameters goes second, behind "SELECT 1" */

static void body(ascope *s, void *ud) {
  af_run *r = ud;
  ascope_sql *db = ascope_sql_resource(s, 0);
  ascope_sql_params *p = ascope_sql_params_new();
  int rc = p ? ascope_sql_params_add_int64(p, 7) : UV_ENOMEM;
  if (rc == 0) rc = ascope_sql_params_add_text(p, "seven", ASCOPE_SQL_NTS);
  if (rc == 0) {
    first_answered = 0;
    if (behind) af_start_op(r, ascope_sql_query(s, db, "SELECT 1", NULL, first_cb, r));
    af_start_op(
        r, ascope_sql_query(s, db,
                            "SELECT $1::int8 AS n, $2::text AS t, g FROM generate_series(1, 50) g",
                            p, behind ? second_cb : af_sql_cb, r));
    if (!behind) af_start_op(r, ascope_sql_query(s, db, "SELECT 1", NULL, af_sql_cb, r));
  } else {
    af_saw(r, rc);
    ascope_cancel(s);
  }
  ascope_sql_params_free(p);
}

static void scenario(af_run *r) {
  af_scope(r, uses, body);
}

static void *the_dsn(void) {
  const char *dsn = getenv("ASCOPE_PG_DSN");
  cr_assert(dsn && *dsn, "ASCOPE_PG_DSN is not set: start the server with scripts/pg-start "
                         "and export the line it prints (scripts/test does both)");
  return (void *)dsn;
}

Test(postgres_alloc, connect_query) {
  behind = false;
  af_sweep("postgres", scenario, the_dsn());
}

Test(postgres_alloc, a_statement_failing_before_it_is_sent_keeps_its_place) {
  behind = true;
  af_sweep("postgres order", scenario, the_dsn());
  /* with one sync point per round: the open round ends before it waits */
  options = "sync=batch";
  af_sweep("postgres order, sync=batch", scenario, the_dsn());
}
