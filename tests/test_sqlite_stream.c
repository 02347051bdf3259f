/* Streams, the `async for`, where SQLite has more to show than the SQL
 * conformance suite (tests/conformance/sql_suite.c, which runs batches,
 * pause and resume, stop, errors, deadlines and cancellation on every SQL
 * driver): a million rows in bounded memory, big values ending a batch
 * early. */
#include "sqlite_support.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

TestSuite(sqlite_stream, .init = t_init, .fini = t_fini);

#define SERIES(n)                                                                                  \
  "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < " #n ") "

struct st {
  t_scope t;
  ascope_op *op;
  ascope_sql *db;
  int batches, finals, final_status, paused_now, during_pause, resumes;
  int64_t rows, next, max_batch_rows, disorder;
  size_t max_memory;
  int pause_every;
};

static void resume_later(void *ud) {
  struct st *x = ud;
  x->paused_now = 0;
  x->resumes++;
  cr_assert_eq(ascope_op_resume(x->op), 0);
}

static int on_rows(ascope *s, int status, ascope_rows *rows, void *ud) {
  (void)s;
  struct st *x = ud;
  if (rows == NULL) { /* the final call */
    x->finals++;
    x->final_status = status;
    return 0;
  }
  cr_assert_eq(status, 0);
  if (x->paused_now) x->during_pause++;
  x->batches++;
  size_t n = ascope_rows_count(rows);
  cr_assert_gt(n, 0);
  cr_assert_str_eq(ascope_rows_column_name(rows, 0), "x");
  if ((int64_t)n > x->max_batch_rows) x->max_batch_rows = (int64_t)n;
  if (ascope_rows_memory(rows) > x->max_memory) x->max_memory = ascope_rows_memory(rows);
  for (size_t i = 0; i < n; i++) { /* no assertion per row: --full-stats records each */
    int64_t v = ascope_rows_int64(rows, i, 0);
    if (v != x->next + 1) x->disorder++;
    x->next = v;
  }
  x->rows += (int64_t)n;
  if (x->pause_every && x->batches % x->pause_every == 0) {
    x->paused_now = 1;
    t_after(1, resume_later, x);
    return ASCOPE_PAUSE;
  }
  return ASCOPE_CONTINUE;
}

static const char *stream_sql;

static void stream_body(ascope *s, t_scope *t) {
  struct st *x = (struct st *)t;
  x->db = ascope_resource(s, 0);
  cr_assert_eq(ascope_sql_stream(s, x->db, stream_sql, NULL, on_rows, x, &x->op), 0);
  cr_assert_not_null(x->op);
}

static int run_stream(struct st *x, const char *sql, const char *options) {
  stream_sql = sql;
  x->t.body = stream_body;
  int status = t_run_db(&x->t, t_path("s.db"), options);
  cr_assert_eq(x->disorder, 0, "rows arrive in order");
  return status;
}

static long rss_kb(void) {
  FILE *f = fopen("/proc/self/status", "r");
  char line[256];
  long kb = -1;
  while (f && fgets(line, sizeof line, f))
    if (strncmp(line, "VmRSS:", 6) == 0) kb = atol(line + 6);
  if (f) fclose(f);
  return kb;
}

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define SANITIZED 1
#else
#define SANITIZED 0
#endif

/* A million rows of ~110 bytes (over 100 MB if it were all held) with a
 * pause every 50 batches: memory stays that of one batch, and nothing
 * arrives while paused. */
Test(sqlite_stream, a_million_rows_with_pause_and_resume_in_bounded_memory) {
  struct st x = {.pause_every = 50};
  long rss0 = rss_kb();
  cr_assert_eq(
      run_stream(&x, SERIES(1000000) "SELECT x, printf('%0100d', x) AS pad FROM c", "batch=512"), 0,
      "%s", x.t.msg);
  long grown_mb = (rss_kb() - rss0) / 1024;
  cr_assert_eq(x.rows, 1000000);
  cr_assert_eq(x.next, 1000000);
  cr_assert_eq(x.finals, 1);
  cr_assert_eq(x.max_batch_rows, 512);
  cr_assert_gt(x.resumes, 30);
  cr_assert_eq(x.during_pause, 0, "a batch arrived while paused");
  cr_assert_lt(x.max_memory, 256 * 1024, "a batch held %zu bytes", x.max_memory);
  if (!SANITIZED) cr_assert_lt(grown_mb, 48, "RSS grew %ld MB", grown_mb);
}

Test(sqlite_stream, big_values_end_a_batch_early) {
  struct st x = {0};
  cr_assert_eq(run_stream(&x, SERIES(64) "SELECT x, zeroblob(300000) FROM c", "batch=1000"), 0);
  cr_assert_eq(x.rows, 64);
  cr_assert_gt(x.batches, 8, "1 MB of data ends a batch");
  cr_assert_lt(x.max_memory, 2 * 1024 * 1024);
}
