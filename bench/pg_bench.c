/* bench/pg_bench: the PostgreSQL driver beside raw libpq, in one binary,
 * against the same server in the same run.
 *
 *   (a) n "SELECT $1::int", each sent when the previous one answered, on
 *       one connection: raw PQexecParams beside ascope_sql_query from one
 *       scope (and the same with the statement cache off, cache=0, which
 *       sends what PQexecParams sends);
 *   (b) the same n from 64 scopes in flight on one connection: raw libpq
 *       pipeline mode in batches of 256 with one sync per batch (one
 *       failure aborts the rest of its batch), and with a sync per
 *       statement (each statement its own transaction and error scope, as
 *       ascope does it by default), beside ascope, by default and with
 *       sync=batch (a sync per round of sending, failed rounds sent again).
 *
 * Every result is checked against its own parameter. Each case runs
 * `rounds` times, raw and ascope in turn, and the best time of each side
 * is reported: on a shared machine the best run is the one least
 * disturbed by others. CPU per statement is this process's (user + system,
 * all threads); the server's is not in it.
 *
 *   (c) with ASCOPE_PGBOUNCER_DSN set (scripts/pgbouncer-start), (a) and
 *       (b) again through PgBouncer in transaction mode, raw libpq through
 *       the same pooler beside them; the driver finds the pooler at
 *       connect and names no statement there.
 *
 *   bench/pg_bench [n] [rounds] [dsn]    (default 20,000, 3, $ASCOPE_PG_DSN)
 */
#include <ascope/postgres.h>

#include <libpq-fe.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#define SCOPES 64
#define BATCH 256

static long N = 20000;
static int rounds = 3;
static const char *dsn;
static ascope_rt *rt;

static double now_s(void) {
  return (double)uv_hrtime() / 1e9;
}

static double cpu_s(void) {
  struct rusage u;
  getrusage(RUSAGE_SELF, &u);
  return (double)(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
         (double)(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

static void die(const char *what, const char *why) {
  fprintf(stderr, "pg_bench: %s: %s\n", what, why);
  exit(1);
}

struct best {
  double wall, cpu; /* seconds, best run */
};

static void note_run(struct best *b, double wall, double cpu) {
  if (b->wall == 0 || wall < b->wall) {
    b->wall = wall;
    b->cpu = cpu;
  }
}

static void row(const char *name, struct best raw, struct best as) {
  double r = (double)N / raw.wall, a = (double)N / as.wall;
  printf("| %-48s | %9.0f | %9.0f | %5.2fx | %6.1f | %5.1f |\n", name, r, a, a / r,
         raw.cpu / (double)N * 1e6, as.cpu / (double)N * 1e6);
}

/* ---- raw libpq --------------------------------------------------------------------- */

static PGconn *raw_connect(void) {
  PGconn *c = PQconnectdb(dsn);
  if (PQstatus(c) != CONNECTION_OK) die("connect", PQerrorMessage(c));
  return c;
}

static void raw_check(PGresult *r, long want) {
  if (PQresultStatus(r) != PGRES_TUPLES_OK) die("query", PQresultErrorMessage(r));
  if (strtol(PQgetvalue(r, 0, 0), NULL, 10) != want) die("query", "a wrong answer");
}

static void raw_sequential(PGconn *c, struct best *b) {
  char buf[24];
  const char *vals[1] = {buf};
  double t0 = now_s(), c0 = cpu_s();
  for (long i = 0; i < N; i++) {
    snprintf(buf, sizeof buf, "%ld", i);
    PGresult *r = PQexecParams(c, "SELECT $1::int", 1, NULL, vals, NULL, NULL, 0);
    raw_check(r, i);
    PQclear(r);
  }
  note_run(b, now_s() - t0, cpu_s() - c0);
}

/* Batches of BATCH statements; a sync after each, or one per batch. */
static void raw_pipeline(PGconn *c, bool sync_each, struct best *b) {
  char buf[24];
  const char *vals[1] = {buf};
  if (!PQenterPipelineMode(c)) die("pipeline", PQerrorMessage(c));
  double t0 = now_s(), c0 = cpu_s();
  for (long base = 0; base < N; base += BATCH) {
    long n = N - base < BATCH ? N - base : BATCH;
    for (long i = 0; i < n; i++) {
      snprintf(buf, sizeof buf, "%ld", base + i);
      if (!PQsendQueryParams(c, "SELECT $1::int", 1, NULL, vals, NULL, NULL, 0))
        die("send", PQerrorMessage(c));
      if (sync_each && !PQpipelineSync(c)) die("sync", PQerrorMessage(c));
    }
    if (!sync_each && !PQpipelineSync(c)) die("sync", PQerrorMessage(c));
    long got = 0, syncs = 0, want_syncs = sync_each ? n : 1;
    while (got < n || syncs < want_syncs) {
      PGresult *r = PQgetResult(c);
      if (r == NULL) continue; /* the end of one statement's results */
      if (PQresultStatus(r) == PGRES_PIPELINE_SYNC)
        syncs++;
      else
        raw_check(r, base + got++);
      PQclear(r);
    }
  }
  note_run(b, now_s() - t0, cpu_s() - c0);
  if (!PQexitPipelineMode(c)) die("pipeline", PQerrorMessage(c));
}

/* ---- ascope -------------------------------------------------------------------------- */

struct lane { /* one scope's run of statements, one after the other */
  ascope *s;
  ascope_sql *db;
  ascope_sql_params *p;
  long next, end, step;
};

struct run {
  double t0, c0;
  long left;
  struct best *b;
  int failures;
  struct lane lanes[SCOPES];
};
static struct run R;

static void lane_next(struct lane *l);

static int on_answer(ascope *s, int status, ascope_rows *rows, void *ud) {
  (void)s;
  struct lane *l = ud;
  if (status || ascope_rows_int64(rows, 0, 0) != l->next) {
    R.failures++;
    return status ? status : UV_EPROTO;
  }
  l->next += l->step;
  if (--R.left == 0) note_run(R.b, now_s() - R.t0, cpu_s() - R.c0);
  if (l->next < l->end) lane_next(l);
  return 0;
}

static void lane_next(struct lane *l) {
  ascope_sql_params_clear(l->p);
  ascope_sql_params_add_int64(l->p, l->next);
  if (ascope_sql_query(l->s, l->db, "SELECT $1::int", l->p, on_answer, l) != 0) R.failures++;
}

static void lane_body(ascope *s, void *ud) {
  struct lane *l = ud;
  l->s = s;
  lane_next(l);
}

static void lane_done(ascope *s, int status, void *ud) {
  (void)ud;
  if (status) fprintf(stderr, "pg_bench: %s\n", ascope_err_message(ascope_error(s)));
}

/* scopes lanes on the body's connection; lane k runs k, k + scopes, ... */
static int scopes;

static void run_body(ascope *s, void *ud) {
  (void)ud;
  ascope_sql *db = ascope_resource(s, 0);
  R.left = N;
  R.t0 = now_s();
  R.c0 = cpu_s();
  for (int k = 0; k < scopes; k++) {
    struct lane *l = &R.lanes[k];
    l->db = db;
    l->next = k;
    l->end = N;
    l->step = scopes;
    if (scopes == 1) {
      l->s = s;
      lane_next(l);
      continue;
    }
    ascope *c = ascope_child(s);
    ascope_start(c, lane_body, lane_done, l);
  }
}

static void run_done(ascope *s, int status, void *ud) {
  (void)ud;
  if (status) die("ascope", ascope_err_message(ascope_error(s)));
}

static void ascope_case(int nscopes, const char *options, struct best *b) {
  scopes = nscopes;
  R.b = b;
  R.failures = 0;
  for (int k = 0; k < SCOPES; k++) R.lanes[k].p = ascope_sql_params_new();
  ascope *s = ascope_new(rt);
  ascope_use_postgres(s, dsn, options);
  ascope_start(s, run_body, run_done, NULL);
  ascope_rt_run(rt);
  for (int k = 0; k < SCOPES; k++) ascope_sql_params_free(R.lanes[k].p);
  if (R.failures) die("ascope", "wrong answers");
}

int main(int argc, char **argv) {
  if (argc > 1) N = atol(argv[1]);
  if (argc > 2) rounds = atoi(argv[2]);
  dsn = argc > 3 ? argv[3] : getenv("ASCOPE_PG_DSN");
  if (dsn == NULL || N < 1 || rounds < 1) {
    fprintf(stderr,
            "usage: pg_bench [n] [rounds] [dsn]  (or set ASCOPE_PG_DSN; scripts/pg-start)\n");
    return 2;
  }
  rt = ascope_rt_new(NULL);
  PGconn *raw = raw_connect();
  printf("PostgreSQL server %d, libpq %d; %ld statements per case, best of %d rounds\n\n",
         PQserverVersion(raw), PQlibVersion(), N, rounds);
  printf("| %-48s | %9s | %9s | %6s | %6s | %5s |\n", "case: raw | ascope", "raw q/s", "ascope",
         "ratio", "raw us", "as us");
  printf("|--------------------------------------------------|-----------|-----------|--------|"
         "--------|-------|\n");
  struct best seq_raw = {0}, seq_as = {0}, seq_nc = {0};
  struct best pipe_raw = {0}, pipe_each = {0}, pipe_as = {0}, pipe_batch = {0};
  for (int r = 0; r < rounds; r++) {
    raw_sequential(raw, &seq_raw);
    ascope_case(1, NULL, &seq_as);
    ascope_case(1, "cache=0", &seq_nc);
    raw_pipeline(raw, false, &pipe_raw);
    raw_pipeline(raw, true, &pipe_each);
    ascope_case(SCOPES, NULL, &pipe_as);
    ascope_case(SCOPES, "sync=batch", &pipe_batch);
  }
  row("sequential: PQexecParams | 1 scope", seq_raw, seq_as);
  row("sequential: PQexecParams | 1 scope, cache=0", seq_raw, seq_nc);
  row("pipelined: raw 256/sync | 64 scopes", pipe_raw, pipe_as);
  row("pipelined: raw 256/sync | 64 scopes, sync=batch", pipe_raw, pipe_batch);
  row("pipelined: raw 256, a sync each | 64 scopes", pipe_each, pipe_as);
  const char *bouncer = getenv("ASCOPE_PGBOUNCER_DSN");
  if (bouncer && *bouncer) {
    const char *direct = dsn;
    dsn = bouncer;
    PGconn *braw = raw_connect();
    struct best bseq_raw = {0}, bseq_as = {0}, bpipe_raw = {0}, bpipe_as = {0};
    for (int r = 0; r < rounds; r++) {
      raw_sequential(braw, &bseq_raw);
      ascope_case(1, NULL, &bseq_as);
      raw_pipeline(braw, true, &bpipe_raw);
      ascope_case(SCOPES, NULL, &bpipe_as);
    }
    row("pgbouncer, sequential: PQexecParams | 1 scope", bseq_raw, bseq_as);
    row("pgbouncer, pipelined: raw, a sync each | 64 scopes", bpipe_raw, bpipe_as);
    PQfinish(braw);
    dsn = direct;
  }
  printf("\n(us: CPU microseconds per statement in this process; ascope pipelined: %lld statements"
         " at most in flight)\n",
         (long long)ascope_postgres_stat("max_pipeline"));
  PQfinish(raw);
  ascope_rt_free(rt);
  return 0;
}
