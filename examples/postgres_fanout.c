/* postgres_fanout [DSN]: 64 tasks share one connection, pipelined.
 *
 *   async with asyncpg.connect(dsn) as pg:
 *       await asyncio.gather(*(pg.fetchval("SELECT $1::int * 2", i) for i in range(64)))
 *
 * Each child scope is a task; their statements go out together in one
 * round and come back in order. DSN defaults to $ASCOPE_PG_DSN. */
#include <ascope/postgres.h>

#include <stdio.h>
#include <stdlib.h>

static int64_t sum;
static int result;

static int on_value(ascope *s, int status, ascope_rows *rows, void *ud) {
  (void)s, (void)ud;
  if (status) return status;
  sum += ascope_rows_int64(rows, 0, 0);
  return 0;
}

static void task(ascope *s, void *ud) {
  ascope_sql *pg = ud;
  ascope_sql_params *p = ascope_sql_params_new();
  ascope_sql_params_add_int64(p, (int64_t)(rand() % 1000));
  ascope_sql_query(s, pg, "SELECT $1::int * 2", p, on_value, NULL);
  ascope_sql_params_free(p); /* the statement copied the values */
}

static void body(ascope *s, void *ud) {
  ascope_sql *pg = ascope_sql_resource(s, *(size_t *)ud);
  for (int i = 0; i < 64; i++) ascope_start(ascope_child(s), task, NULL, pg);
}

static void done(ascope *s, int status, void *ud) {
  (void)ud;
  char err[512];
  result = status;
  ascope_err_format(ascope_error(s), err, sizeof err);
  if (status)
    fprintf(stderr, "%s\n", err);
  else
    printf("64 queries on one connection, sum %lld\n", (long long)sum);
}

int main(int argc, char **argv) {
  const char *dsn = argc > 1 ? argv[1] : getenv("ASCOPE_PG_DSN");
  if (dsn == NULL) {
    fprintf(stderr, "usage: postgres_fanout DSN (or set ASCOPE_PG_DSN)\n");
    return 2;
  }
  ascope_rt *rt = ascope_rt_new(NULL);
  ascope *s = ascope_new(rt);
  size_t pg = ascope_use_count(s);
  ascope_use_postgres(s, dsn, NULL);
  ascope_set_timeout(s, 5000);
  int rc = ascope_start(s, body, done, &pg);
  if (rc == 0) rc = ascope_rt_run(rt);
  ascope_rt_free(rt);
  return rc || result ? 1 : 0;
}
