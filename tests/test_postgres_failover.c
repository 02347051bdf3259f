/* Failover on a real primary and standby: a pair of its own (scripts/
 * pg-start --standby: streaming replication, synchronous, so a committed
 * write is on both), reads with target_session_attrs=prefer-standby on the
 * standby, then writes from 8 scopes at a time through a pool whose DSN
 * names both hosts with target_session_attrs=read-write while the primary
 * is stopped hard and the standby promoted. Checked: every scope ends once,
 * those in flight with a clear error and none by its deadline; the pool
 * replaces its broken connections; writes resume within 5 s of the
 * promotion; no committed row is missing on the new primary. */
#include <ascope/postgres.h>
#include <criterion/criterion.h>
#include <libpq-fe.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pg_support.h"

static char pair_dir[1024], pair_dsn[1024], standby_dsn[1024], primary_dsn[1024];
static char bouncer_dir[1024], bouncer_dsn[1024];

static void pair_start(void) {
  FILE *f = popen(ASCOPE_SOURCE_DIR "/scripts/pg-start --standby", "r");
  cr_assert_not_null(f);
  char line[512]; /* no longer than what it is copied into */
  while (fgets(line, sizeof line, f)) {
    line[strcspn(line, "\n")] = '\0';
    if (!strncmp(line, "ASCOPE_PG_PAIR_DSN=", 19))
      snprintf(pair_dsn, sizeof pair_dsn, "%s", line + 19);
    if (!strncmp(line, "ASCOPE_PG_PRIMARY_DSN=", 22))
      snprintf(primary_dsn, sizeof primary_dsn, "%s", line + 22);
    if (!strncmp(line, "ASCOPE_PG_STANDBY_DSN=", 22))
      snprintf(standby_dsn, sizeof standby_dsn, "%s", line + 22);
    if (!strncmp(line, "ASCOPE_PG_PAIR_DIR=", 19))
      snprintf(pair_dir, sizeof pair_dir, "%s", line + 19);
  }
  cr_assert_eq(pclose(f), 0, "scripts/pg-start --standby failed");
  cr_assert(pair_dir[0] && pair_dsn[0] && standby_dsn[0]);
}

static atomic_int operator_failed;

static void failover(const char *step) { /* on the operator's thread: no cr_assert */
  char cmd[2560];
  snprintf(cmd, sizeof cmd, ASCOPE_SOURCE_DIR "/scripts/pg-failover %s %s", pair_dir, step);
  if (system(cmd) != 0) {
    fprintf(stderr, "failover: %s failed\n", cmd);
    atomic_store(&operator_failed, 1);
  }
}

static int64_t raw_int(const char *dsn, const char *sql) {
  PGconn *c = PQconnectdb(dsn);
  cr_assert_eq(PQstatus(c), CONNECTION_OK, "%s", PQerrorMessage(c));
  PGresult *r = PQexec(c, sql);
  cr_assert_eq(PQresultStatus(r), PGRES_TUPLES_OK, "%s", PQresultErrorMessage(r));
  int64_t v = atoll(PQgetvalue(r, 0, 0));
  PQclear(r);
  PQfinish(c);
  return v;
}

/* ---- reads go to the standby while it is one ----------------------------------- */

typedef struct read_scope {
  t_scope t;
  t_cb cb;
} read_scope;

static void read_body(ascope *s, t_scope *t) {
  read_scope *r = (read_scope *)t;
  ascope_sql *db = ascope_sql_resource(s, 0);
  r->cb.pass = true;
  r->cb.db = db;
  cr_assert_eq(ascope_sql_query(s, db, "SELECT pg_is_in_recovery()::int", NULL, t_cb_fn, &r->cb),
               0);
}

static int64_t in_recovery_via(const char *attrs) {
  char dsn[2048];
  snprintf(dsn, sizeof dsn, "%s target_session_attrs=%s", pair_dsn, attrs);
  read_scope r;
  memset(&r, 0, sizeof r);
  r.t.body = read_body;
  ascope *s = ascope_new(T_rt);
  cr_assert_eq(ascope_use_postgres(s, dsn, NULL), 0);
  cr_assert_eq(t_run(s, &r.t), 0, "%s: %s", attrs, r.t.msg);
  return r.cb.first;
}

/* ---- the write load --------------------------------------------------------------- */

#define LANES 8
#define MAX_IDS 200000

static ascope_pool *pool;
static unsigned char committed[MAX_IDS];
static atomic_long ncommitted;
static long next_id, started, ended, failed, timed_out, unclear, after_promote, delayed;
static atomic_bool promoted, stop_load, killed;
static atomic_ullong promoted_ns, promote_begin_ns, killed_ns;
static uint64_t first_write_after_ns;
static char unclear_msg[512];

struct lane {
  long id;
  t_cb cb;
  ascope_sql_params *p;
};
static struct lane lanes[LANES];

/* The pair goes whatever happened to the test; so does the pool of a
 * test that failed before its end, so that the runtime frees clean. */
static void fini(void) {
  if (pool) {
    atomic_store(&stop_load, true);
    ascope_pool_close(pool, NULL, NULL);
    pool = NULL;
    ascope_rt_run(T_rt);
    for (int i = 0; i < LANES; i++) ascope_sql_params_free(lanes[i].p);
  }
  if (bouncer_dir[0]) {
    char cmd[2560];
    snprintf(cmd, sizeof cmd, ASCOPE_SOURCE_DIR "/scripts/pgbouncer-stop %s", bouncer_dir);
    if (system(cmd) != 0) fprintf(stderr, "failover: %s failed\n", cmd);
    bouncer_dir[0] = '\0';
  }
  if (pair_dir[0]) {
    char cmd[2560];
    snprintf(cmd, sizeof cmd, ASCOPE_SOURCE_DIR "/scripts/pg-stop --standby %s", pair_dir);
    if (system(cmd) != 0) fprintf(stderr, "failover: %s failed\n", cmd);
    pair_dir[0] = '\0';
  }
  t_fini();
}

TestSuite(pg_failover, .init = t_init, .fini = fini, .timeout = 300);

static void lane_start(struct lane *l);

static void lane_body(ascope *s, void *ud) {
  struct lane *l = ud;
  ascope_sql *db = ascope_sql_resource(s, 0);
  ascope_sql_params_clear(l->p);
  ascope_sql_params_add_int64(l->p, l->id);
  memset(&l->cb, 0, sizeof l->cb);
  l->cb.pass = true;
  cr_assert_eq(
      ascope_sql_exec(s, db, "INSERT INTO failover_t (id) VALUES ($1)", l->p, t_cb_fn, &l->cb), 0);
}

static void lane_again(void *ud) {
  delayed--;
  if (!atomic_load(&stop_load)) lane_start(ud);
}

static void lane_done(ascope *s, int status, void *ud) {
  struct lane *l = ud;
  ended++;
  if (status == 0) {
    committed[l->id] = 1;
    atomic_fetch_add(&ncommitted, 1);
    /* the first write on the new primary: after the stop, a commit can
     * only have come from there */
    if (atomic_load(&killed) && uv_hrtime() > atomic_load(&killed_ns) + 100000000ull &&
        after_promote++ == 0)
      first_write_after_ns = uv_hrtime();
  } else {
    failed++;
    if (status == ASCOPE_ETIMEDOUT) timed_out++;
    const ascope_err *e = ascope_error(s);
    const char *msg = e ? ascope_err_message(e) : NULL;
    /* clear: a failure the driver or the pool names, with words */
    bool clear = e && msg && msg[0] &&
                 (status == ASCOPE_ECLOSED || status == ASCOPE_EDRIVER ||
                  status == UV_ECONNREFUSED || status == ASCOPE_ETIMEDOUT);
    if (!clear && unclear++ == 0)
      snprintf(unclear_msg, sizeof unclear_msg, "%s: %s", ascope_err_name(status),
               msg ? msg : "(none)");
  }
  if (atomic_load(&stop_load)) return;
  if (status == 0)
    lane_start(l);
  else {
    delayed++;
    t_after(20, lane_again, l); /* the server is away: do not spin */
  }
}

static void lane_start(struct lane *l) {
  if (next_id >= MAX_IDS) return;
  l->id = next_id++;
  ascope *s = ascope_new(T_rt);
  cr_assert_eq(ascope_use_sql_pool(s, pool), 0);
  cr_assert_eq(ascope_use_sql_tx_at(s, ascope_postgres(), 0, NULL), 0);
  cr_assert_eq(ascope_set_timeout(s, 15000), 0);
  started++;
  cr_assert_eq(ascope_start(s, lane_body, lane_done, l), 0);
}

/* The operator: waits for the load to run, stops the primary hard, then
 * promotes the standby; then lets the load run on a while. On a thread of
 * its own, so that the loop goes on while the commands run. */
static void operator(void *arg) {
  (void)arg;
  while (atomic_load(&ncommitted) < 300) uv_sleep(5);
  failover("stop-primary");
  atomic_store(&killed_ns, uv_hrtime());
  atomic_store(&killed, true);
  uv_sleep(300); /* writes fail meanwhile: nothing accepts them */
  atomic_store(&promote_begin_ns, uv_hrtime());
  failover("promote");
  atomic_store(&promoted_ns, uv_hrtime());
  atomic_store(&promoted, true);
  long at = atomic_load(&ncommitted);
  for (int i = 0; i < 3000 && atomic_load(&ncommitted) < at + 300; i++) uv_sleep(5);
  atomic_store(&stop_load, true);
}

/* Writes from LANES scopes at a time through a pool on dsn while op (on a
 * thread) does its damage; returns when op says stop and every scope
 * ended, with the common checks made. cut: op cuts the driver's own
 * connections, so the scopes in flight on them must fail. Behind PgBouncer
 * they need not: in transaction mode it holds a server connection only
 * while a transaction is open, and a restart that falls between
 * transactions is hidden from its clients (their next ones wait in its
 * queue until the server is back). */
static void run_load(const char *dsn, void (*op)(void *), bool cut) {
  PGconn *c = PQconnectdb(dsn);
  cr_assert_eq(PQstatus(c), CONNECTION_OK, "%s", PQerrorMessage(c));
  PQclear(PQexec(c, "CREATE TABLE failover_t (id bigint PRIMARY KEY)"));
  PQfinish(c);
  pool = ascope_sql_pool_new(T_rt, ascope_postgres(), dsn, "max=4 acquire_timeout_ms=5000");
  cr_assert_not_null(pool);
  for (int i = 0; i < LANES; i++) {
    lanes[i].p = ascope_sql_params_new();
    lane_start(&lanes[i]);
  }
  uv_thread_t th;
  cr_assert_eq(uv_thread_create(&th, op, NULL), 0);
  /* ascope_rt_run() would return while every lane waits out its pause */
  while (!(atomic_load(&stop_load) && started == ended && delayed == 0))
    uv_run(ascope_rt_loop(T_rt), UV_RUN_ONCE);
  uv_thread_join(&th);
  cr_assert_eq(atomic_load(&operator_failed), 0, "a scripts/pg-failover step failed");
  cr_assert_eq(started, ended, "%ld scopes started, %ld ended", started, ended);
  cr_assert_eq(timed_out, 0, "%ld scopes ran into their deadline", timed_out);
  cr_assert_eq(unclear, 0, "%ld unclear failures, the first: %s", unclear, unclear_msg);
  if (cut) cr_assert_gt(failed, 0, "the scopes in flight when the server went failed");
  cr_assert_gt(after_promote, 0, "writes resumed");
  /* behind PgBouncer a restart between transactions reaches neither the
   * pool's connections nor its connects: only a cut must show there */
  if (cut)
    cr_assert_gt(ascope_pool_stat(pool, "discarded") + ascope_pool_stat(pool, "connect_errors"), 0,
                 "the pool replaced the connections that were cut");
}

/* Every row whose scope succeeded is on the server dsn names. */
static void check_committed(const char *dsn) {
  PGconn *np = PQconnectdb(dsn);
  cr_assert_eq(PQstatus(np), CONNECTION_OK);
  PGresult *r = PQexec(np, "SELECT id FROM failover_t");
  cr_assert_eq(PQresultStatus(r), PGRES_TUPLES_OK);
  static unsigned char present[MAX_IDS];
  memset(present, 0, sizeof present);
  for (int i = 0; i < PQntuples(r); i++) {
    long id = atol(PQgetvalue(r, i, 0));
    if (id >= 0 && id < MAX_IDS) present[id] = 1;
  }
  PQclear(r);
  PQfinish(np);
  long missing = 0, first_missing = -1;
  for (long id = 0; id < next_id; id++)
    if (committed[id] && !present[id] && missing++ == 0) first_missing = id;
  cr_assert_eq(missing, 0, "%ld committed rows missing (the first: id %ld)", missing,
               first_missing);
}

static void load_end(void) {
  ascope_pool_close(pool, NULL, NULL);
  pool = NULL;
  cr_assert_eq(ascope_rt_run(T_rt), 0);
  for (int i = 0; i < LANES; i++) ascope_sql_params_free(lanes[i].p);
}

Test(pg_failover, writes_survive_the_primary_stopping_hard_and_the_standby_taking_over) {
  pair_start();
  /* the pair: the standby follows the primary */
  cr_assert_eq(raw_int(standby_dsn, "SELECT pg_is_in_recovery()::int"), 1);
  cr_assert_eq(in_recovery_via("prefer-standby"), 1, "prefer-standby reads from the standby");
  cr_assert_eq(in_recovery_via("read-write"), 0, "read-write finds the primary");

  char dsn[2048];
  snprintf(dsn, sizeof dsn, "%s target_session_attrs=read-write", pair_dsn);
  run_load(dsn, operator, true);
  /* measured from the promotion's start, which may be after its writes */
  double resumed_s = (double)(int64_t)(first_write_after_ns - atomic_load(&promote_begin_ns)) / 1e9;
  double down_s = (double)(first_write_after_ns - atomic_load(&killed_ns)) / 1e9;
  cr_assert_lt(resumed_s, 5.0, "writes resumed %.2f s after the promotion began", resumed_s);
  cr_assert_eq(raw_int(standby_dsn, "SELECT pg_is_in_recovery()::int"), 0, "promoted");
  check_committed(standby_dsn);
  printf("failover: %ld committed, %ld failed; no writes for %.2f s after the stop, resumed "
         "%.2f s after the promotion began; pool discarded %lld, connect errors %lld\n",
         (long)atomic_load(&ncommitted), failed, down_s, resumed_s,
         (long long)ascope_pool_stat(pool, "discarded"),
         (long long)ascope_pool_stat(pool, "connect_errors"));
  load_end();
}

/* A server restarted under load (pg_ctl restart -m fast: connections cut,
 * the server back on the same port): the pool on it recovers by itself. */
static void restarter(void *arg) {
  (void)arg;
  while (atomic_load(&ncommitted) < 300) uv_sleep(5);
  atomic_store(&killed_ns, uv_hrtime());
  atomic_store(&killed, true);
  failover("restart-primary");
  atomic_store(&promote_begin_ns, uv_hrtime()); /* here: when the restart returned */
  long at = atomic_load(&ncommitted);
  for (int i = 0; i < 3000 && atomic_load(&ncommitted) < at + 300; i++) uv_sleep(5);
  atomic_store(&stop_load, true);
}

Test(pg_failover, a_server_restarted_under_load_is_reconnected_to) {
  pair_start();
  char dsn[2048];
  snprintf(dsn, sizeof dsn, "%s target_session_attrs=read-write", pair_dsn);
  run_load(dsn, restarter, true);
  double down_s = (double)(first_write_after_ns - atomic_load(&killed_ns)) / 1e9;
  cr_assert_lt(down_s, 5.0, "writes resumed %.2f s after the restart began", down_s);
  check_committed(dsn);
  printf("restart: %ld committed, %ld failed; writes resumed %.2f s after the restart began "
         "(pg_ctl restart took %.2f s)\n",
         (long)atomic_load(&ncommitted), failed, down_s,
         (double)(atomic_load(&promote_begin_ns) - atomic_load(&killed_ns)) / 1e9);
  load_end();
}

/* The same restart behind PgBouncer in transaction mode (a pooler of its
 * own, in front of this pair's primary): the pooler's server connections
 * break and come back, the driver's connections to the pooler may not, and
 * writes resume either way. */
static void bouncer_start(void) {
  setenv("ASCOPE_PG_DSN", primary_dsn, 1); /* what the pooler stands in front of */
  FILE *f = popen(ASCOPE_SOURCE_DIR "/scripts/pgbouncer-start --private", "r");
  cr_assert_not_null(f);
  char line[1024];
  while (fgets(line, sizeof line, f)) {
    line[strcspn(line, "\n")] = '\0';
    if (!strncmp(line, "ASCOPE_PGBOUNCER_DSN=", 21))
      snprintf(bouncer_dsn, sizeof bouncer_dsn, "%s", line + 21);
    if (!strncmp(line, "ASCOPE_PGBOUNCER_DIR=", 21))
      snprintf(bouncer_dir, sizeof bouncer_dir, "%s", line + 21);
  }
  cr_assert_eq(pclose(f), 0, "scripts/pgbouncer-start --private failed");
  cr_assert(bouncer_dsn[0] && bouncer_dir[0]);
}

Test(pg_failover, a_server_restarted_behind_pgbouncer_is_reconnected_to) {
  pair_start();
  bouncer_start();
  run_load(bouncer_dsn, restarter, false);
  double down_s = (double)(first_write_after_ns - atomic_load(&killed_ns)) / 1e9;
  cr_assert_lt(down_s, 5.0, "writes resumed %.2f s after the restart began", down_s);
  check_committed(primary_dsn);
  printf("restart behind pgbouncer: %ld committed, %ld failed; writes resumed %.2f s after the "
         "restart began; pool discarded %lld, connect errors %lld\n",
         (long)atomic_load(&ncommitted), failed, down_s,
         (long long)ascope_pool_stat(pool, "discarded"),
         (long long)ascope_pool_stat(pool, "connect_errors"));
  load_end();
}
