/* bench/pool_bench: the pool, in one run, beside what it replaces.
 *
 *   (a) a pool use of a no-op driver (acquire and release complete inside
 *       the call) beside a direct use of the same driver: nanoseconds per
 *       scope, the difference being the pool's acquire + release, and the
 *       allocations per scope (counted through ascope_set_allocator);
 *   (b) n "SELECT $1::int" from 64 scopes in flight, each scope one
 *       statement on a connection from a pool of 8 (exclusive: a
 *       connection serves one scope at a time), beside raw libpq on 8
 *       connections each running one statement at a time; then the same
 *       from a pool in mode=shared (a connection serves many scopes, their
 *       statements pipelined), with a sync point per statement and with
 *       the driver's sync=batch (one per round of sending);
 *   (c) the same with one transaction per scope (BEGIN; UPDATE; COMMIT),
 *       beside raw libpq doing the same three statements on 8 connections.
 *
 * Every answer is checked. Each case runs `rounds` times and the best is
 * reported.
 *
 *   bench/pool_bench [n] [rounds] [dsn]   (default 20,000, 3, $ASCOPE_PG_DSN;
 *                                          without a DSN only (a) runs)
 */
#include <ascope/driver.h>
#include <ascope/postgres.h>

#include <libpq-fe.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SCOPES 64
#define CONNS 8
#define ROWS 1000

static long N = 20000;
static int rounds = 3;
static const char *dsn;
static ascope_rt *rt;

static double now_s(void) {
  return (double)uv_hrtime() / 1e9;
}

static void die(const char *what, const char *why) {
  fprintf(stderr, "pool_bench: %s: %s\n", what, why);
  exit(1);
}

static void best(double *b, double t) {
  if (*b == 0 || t < *b) *b = t;
}

/* ---- (a) the pool's own cost ------------------------------------------------------------- */

static atomic_long mallocs;
static void *count_malloc(size_t n) {
  atomic_fetch_add(&mallocs, 1);
  return malloc(n);
}
static void *count_realloc(void *p, size_t n) {
  atomic_fetch_add(&mallocs, 1);
  return realloc(p, n);
}

static void noop_acquire(ascope_res *r, const void *arg, const char *options) {
  (void)arg;
  (void)options;
  ascope_res_done(r, 0, NULL, NULL);
}
static void noop_release(ascope_res *r, int outcome) {
  (void)outcome;
  ascope_res_done(r, 0, NULL, NULL);
}
static void noop_reset(ascope_res *r) {
  ascope_res_done(r, 0, NULL, NULL);
}
static int noop_check(ascope_res *r) {
  (void)r;
  return 0;
}
static const ascope_driver noop = {
    .abi = ASCOPE_DRIVER_ABI,
    .name = "noop",
    .state_size = 16,
    .acquire = noop_acquire,
    .release = noop_release,
    .check = noop_check,
    .reset = noop_reset,
};

static void noop_body(ascope *s, void *ud) {
  (void)s;
  (void)ud;
}

/* batches of SCOPES scopes at once, n scopes in all: seconds */
static double scopes_run(ascope_pool *p, long n) {
  double t0 = now_s();
  for (long done = 0; done < n; done += SCOPES) {
    for (int k = 0; k < SCOPES; k++) {
      ascope *s = ascope_new(rt);
      if (p)
        ascope_use_pool(s, p);
      else
        ascope_use(s, &noop, NULL, NULL);
      ascope_start(s, noop_body, NULL, NULL);
    }
    ascope_rt_run(rt);
  }
  return now_s() - t0;
}

static void pool_cost(void) {
  long n = 2000000;
  ascope_pool *p = ascope_pool_new(rt, &noop, NULL, "min=64 max=64");
  scopes_run(p, 64 * 1000); /* warm: every cache filled */
  scopes_run(NULL, 64 * 1000);
  double direct = 0, pooled = 0;
  long m_direct = 0, m_pooled = 0;
  for (int r = 0; r < rounds; r++) {
    long m0 = atomic_load(&mallocs);
    best(&direct, scopes_run(NULL, n));
    long m1 = atomic_load(&mallocs);
    best(&pooled, scopes_run(p, n));
    long m2 = atomic_load(&mallocs);
    m_direct += m1 - m0;
    m_pooled += m2 - m1;
  }
  ascope_pool_close(p, NULL, NULL);
  ascope_rt_run(rt);
  double ns_d = direct / (double)n * 1e9, ns_p = pooled / (double)n * 1e9;
  printf("(a) a no-op driver, %ld scopes in batches of %d, best of %d\n", n, SCOPES, rounds);
  printf("| %-40s | %10s | %14s |\n", "case", "ns/scope", "allocs/scope");
  printf("|------------------------------------------|------------|----------------|\n");
  printf("| %-40s | %10.1f | %14.4f |\n", "direct use (connect + close each time)", ns_d,
         (double)m_direct / (double)(n * rounds));
  printf("| %-40s | %10.1f | %14.4f |\n", "pool use (acquire + release, reset)", ns_p,
         (double)m_pooled / (double)(n * rounds));
  printf("pool acquire + release: %.1f ns more than the driver's own no-op acquire + release\n\n",
         ns_p - ns_d);
}

/* ---- raw libpq: CONNS connections, one statement (or transaction) at a time each ------ */

struct raw_conn {
  PGconn *c;
  int step; /* transactions: 0 BEGIN, 1 UPDATE, 2 COMMIT */
  long val;
};

static PGconn *raw_connect(void) {
  PGconn *c = PQconnectdb(dsn);
  if (PQstatus(c) != CONNECTION_OK) die("connect", PQerrorMessage(c));
  if (PQsetnonblocking(c, 1) != 0) die("nonblocking", PQerrorMessage(c));
  return c;
}

static long raw_next;

static bool raw_send(struct raw_conn *rc, bool tx) {
  char v[32], id[32];
  const char *vals[2] = {v, id};
  if (!tx) {
    if (raw_next >= N) return false;
    rc->val = raw_next++;
    snprintf(v, sizeof v, "%ld", rc->val);
    return PQsendQueryParams(rc->c, "SELECT $1::int", 1, NULL, vals, NULL, NULL, 0) ||
           (die("send", PQerrorMessage(rc->c)), false);
  }
  if (rc->step == 0) {
    if (raw_next >= N) return false;
    rc->val = raw_next++;
    return PQsendQueryParams(rc->c, "BEGIN", 0, NULL, NULL, NULL, NULL, 0);
  }
  if (rc->step == 1) {
    snprintf(v, sizeof v, "%ld", rc->val);
    snprintf(id, sizeof id, "%ld", rc->val % ROWS);
    return PQsendQueryParams(rc->c, "UPDATE pool_bench_acct SET v = v + $1 WHERE id = $2", 2, NULL,
                             vals, NULL, NULL, 0);
  }
  return PQsendQueryParams(rc->c, "COMMIT", 0, NULL, NULL, NULL, NULL, 0);
}

/* true when the connection's statement is answered and a next one sent */
static bool raw_read(struct raw_conn *rc, bool tx, long *answered) {
  if (!PQconsumeInput(rc->c)) die("read", PQerrorMessage(rc->c));
  if (PQisBusy(rc->c)) return true;
  PGresult *r;
  while ((r = PQgetResult(rc->c)) != NULL) {
    ExecStatusType st = PQresultStatus(r);
    if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK) die("raw", PQresultErrorMessage(r));
    if (!tx && atol(PQgetvalue(r, 0, 0)) != rc->val) die("raw", "wrong answer");
    PQclear(r);
  }
  if (!tx || rc->step == 2) (*answered)++;
  if (tx) rc->step = (rc->step + 1) % 3;
  return raw_send(rc, tx);
}

static double raw_case(bool tx) {
  struct raw_conn rc[CONNS];
  for (int i = 0; i < CONNS; i++) rc[i] = (struct raw_conn){.c = raw_connect()};
  raw_next = 0;
  long answered = 0;
  double t0 = now_s();
  bool live[CONNS];
  for (int i = 0; i < CONNS; i++) live[i] = raw_send(&rc[i], tx);
  while (answered < N) {
    struct pollfd fds[CONNS];
    int map[CONNS], n = 0;
    for (int i = 0; i < CONNS; i++) {
      if (!live[i]) continue;
      PQflush(rc[i].c);
      fds[n] = (struct pollfd){.fd = PQsocket(rc[i].c), .events = POLLIN};
      map[n++] = i;
    }
    if (poll(fds, (nfds_t)n, 10000) <= 0) die("poll", "no answer in 10 s");
    for (int k = 0; k < n; k++)
      if (fds[k].revents) live[map[k]] = raw_read(&rc[map[k]], tx, &answered);
  }
  double t = now_s() - t0;
  for (int i = 0; i < CONNS; i++) PQfinish(rc[i].c);
  return t;
}

/* ---- ascope: SCOPES scopes in flight, each one statement or transaction ------------- */

static ascope_pool *pool;
static long next_val, answered_as, started;
static bool tx_mode;
static int failures;

static int on_row(ascope *s, int status, ascope_rows *rows, void *ud) {
  (void)s;
  long want = (long)(intptr_t)ud;
  if (status || (!tx_mode && ascope_rows_int64(rows, 0, 0) != want)) {
    failures++;
    return status ? status : UV_EPROTO;
  }
  return 0;
}

struct job {
  long val;
  ascope_sql_params *p;
};
static struct job jobs[SCOPES];

static void one_body(ascope *s, void *ud) {
  struct job *j = ud;
  ascope_sql *db = ascope_sql_resource(s, 0);
  ascope_sql_params_clear(j->p);
  ascope_sql_params_add_int64(j->p, j->val);
  if (tx_mode) {
    ascope_sql_params_add_int64(j->p, j->val % ROWS);
    ascope_sql_exec(s, db, "UPDATE pool_bench_acct SET v = v + $1 WHERE id = $2", j->p, on_row,
                    (void *)(intptr_t)j->val);
  } else {
    ascope_sql_query(s, db, "SELECT $1::int", j->p, on_row, (void *)(intptr_t)j->val);
  }
}

static void one_done(ascope *s, int status, void *ud) {
  if (status) die("ascope", ascope_err_message(ascope_error(s)));
  answered_as++;
  struct job *j = ud;
  if (next_val < N) {
    j->val = next_val++;
    ascope *n = ascope_new(rt);
    ascope_use_sql_pool(n, pool);
    if (tx_mode) ascope_use_sql_tx_at(n, ascope_postgres(), 0, NULL);
    ascope_start(n, one_body, one_done, j);
  }
}

static double ascope_case(bool tx) {
  tx_mode = tx;
  next_val = answered_as = started = 0;
  failures = 0;
  double t0 = now_s();
  for (int k = 0; k < SCOPES && next_val < N; k++) {
    jobs[k].val = next_val++;
    ascope *s = ascope_new(rt);
    ascope_use_sql_pool(s, pool);
    if (tx) ascope_use_sql_tx_at(s, ascope_postgres(), 0, NULL);
    ascope_start(s, one_body, one_done, &jobs[k]);
  }
  ascope_rt_run(rt);
  double t = now_s() - t0;
  if (failures || answered_as != N) die("ascope", "wrong answers");
  return t;
}

static void row(const char *name, double raw, double as) {
  printf("| %-48s | %9.0f | %9.0f | %6.2f |\n", name, (double)N / raw, (double)N / as, raw / as);
}

static void pg_cases(void) {
  PGconn *setup = PQconnectdb(dsn);
  if (PQstatus(setup) != CONNECTION_OK) die("connect", PQerrorMessage(setup));
  PQclear(PQexec(setup, "DROP TABLE IF EXISTS pool_bench_acct"));
  PQclear(PQexec(setup, "CREATE TABLE pool_bench_acct (id int PRIMARY KEY, v bigint)"));
  PQclear(PQexec(setup, "INSERT INTO pool_bench_acct SELECT g, 0 FROM generate_series(0, 999) g"));
  char opts[64];
  snprintf(opts, sizeof opts, "min=%d max=%d", CONNS, CONNS);
  pool = ascope_sql_pool_new(rt, ascope_postgres(), dsn, opts);
  if (pool == NULL) die("pool", "cannot make the pool");
  for (int k = 0; k < SCOPES; k++) jobs[k].p = ascope_sql_params_new();
  /* shared: statements of many scopes pipelined on each connection; with
   * the driver's sync=batch, one sync point per round of them as well */
  char opts2[96];
  snprintf(opts, sizeof opts, "mode=shared min=%d max=%d", CONNS, CONNS);
  snprintf(opts2, sizeof opts2, "mode=shared min=%d max=%d sync=batch", CONNS, CONNS);
  ascope_pool *exclusive = pool, *shared = ascope_sql_pool_new(rt, ascope_postgres(), dsn, opts),
              *batched = ascope_sql_pool_new(rt, ascope_postgres(), dsn, opts2);
  if (shared == NULL || batched == NULL) die("pool", "cannot make the shared pools");
  double q_raw = 0, q_as = 0, t_raw = 0, t_as = 0, q_sh = 0, t_sh = 0, q_sb = 0, t_sb = 0;
  for (int r = 0; r < rounds; r++) {
    best(&q_raw, raw_case(false));
    pool = exclusive;
    best(&q_as, ascope_case(false));
    pool = shared;
    best(&q_sh, ascope_case(false));
    pool = batched;
    best(&q_sb, ascope_case(false));
    best(&t_raw, raw_case(true));
    pool = exclusive;
    best(&t_as, ascope_case(true));
    pool = shared;
    best(&t_sh, ascope_case(true));
    pool = batched;
    best(&t_sb, ascope_case(true));
  }
  pool = exclusive;
  printf("(b, c) PostgreSQL %d: %ld per case from %d scopes in flight on %d connections, best of "
         "%d\n",
         PQserverVersion(setup), N, SCOPES, CONNS, rounds);
  printf("| %-48s | %9s | %9s | %6s |\n", "case: raw libpq | ascope pool", "raw /s", "ascope",
         "ratio");
  printf("|--------------------------------------------------|-----------|-----------|--------|\n");
  row("SELECT $1::int, exclusive pool of 8", q_raw, q_as);
  row("SELECT $1::int, shared pool of 8", q_raw, q_sh);
  row("SELECT $1::int, shared pool of 8, sync=batch", q_raw, q_sb);
  row("BEGIN; UPDATE; COMMIT, exclusive pool of 8", t_raw, t_as);
  row("BEGIN; UPDATE; COMMIT, shared pool of 8", t_raw, t_sh);
  row("BEGIN; UPDATE; COMMIT, shared pool of 8, sync=batch", t_raw, t_sb);
  printf("shared / exclusive: SELECT %.2fx (sync=batch %.2fx), transactions %.2fx (%.2fx)\n",
         q_as / q_sh, q_as / q_sb, t_as / t_sh, t_as / t_sb);
  printf("(pool: %lld acquired, %lld waits, %.1f us mean wait; postgres resets %lld, of them "
         "rollbacks %lld)\n",
         (long long)ascope_pool_stat(pool, "acquired"), (long long)ascope_pool_stat(pool, "waits"),
         (double)ascope_pool_stat(pool, "wait_ns") / 1e3 /
             (double)(ascope_pool_stat(pool, "waits") ? ascope_pool_stat(pool, "waits") : 1),
         (long long)ascope_rt_stat(rt, "postgres.resets"),
         (long long)ascope_rt_stat(rt, "postgres.reset_rollbacks"));
  for (int k = 0; k < SCOPES; k++) ascope_sql_params_free(jobs[k].p);
  ascope_pool_close(exclusive, NULL, NULL);
  ascope_pool_close(shared, NULL, NULL);
  ascope_pool_close(batched, NULL, NULL);
  ascope_rt_run(rt);
  PQclear(PQexec(setup, "DROP TABLE pool_bench_acct"));
  PQfinish(setup);
}

int main(int argc, char **argv) {
  if (argc > 1) N = atol(argv[1]);
  if (argc > 2) rounds = atoi(argv[2]);
  dsn = argc > 3 ? argv[3] : getenv("ASCOPE_PG_DSN");
  if (N < 1 || rounds < 1) {
    fprintf(stderr, "usage: pool_bench [n] [rounds] [dsn]  (or set ASCOPE_PG_DSN)\n");
    return 2;
  }
  ascope_set_allocator(count_malloc, count_realloc, free);
  rt = ascope_rt_new(NULL);
  pool_cost();
  if (dsn)
    pg_cases();
  else
    printf("(b, c) skipped: no ASCOPE_PG_DSN (scripts/pg-start)\n");
  ascope_rt_free(rt);
  return 0;
}
