/* Many at once: concurrent writers on one WAL database, 200 scopes with a
 * connection each, scopes sharing connections, and the threadpool left to
 * file I/O while SQLite's queries run long. */
#include "sqlite_support.h"

#include <fcntl.h>
#include <stdio.h>
#include <string.h>

TestSuite(sqlite_load, .init = t_init, .fini = t_fini);

#define LONG_QUERY                                                                                 \
  "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 2000000000) "          \
  "SELECT count(*) FROM c"

/* ---- two writers, one WAL database ---------------------------------------------------------- */

#define TXS 150

struct writer {
  t_scope t;
  ascope *scope;
  ascope_sql *db;
  int id, done, failed;
};

static void writer_next(struct writer *w);

static void tx_done(ascope *s, int status, void *ud) {
  (void)s;
  struct writer *w = ud;
  if (status) w->failed++;
  w->done++;
  writer_next(w);
}

static void tx_body(ascope *s, void *ud) {
  struct writer *w = ud;
  ascope_sql_params *p = ascope_sql_params_new();
  ascope_sql_params_add_int64(p, w->id);
  ascope_sql_params_add_int64(p, w->done);
  ascope_sql_exec(s, w->db, "INSERT INTO t(writer, n) VALUES ($1, $2)", p, NULL, NULL);
  ascope_sql_exec(s, w->db, "UPDATE total SET n = n + 1", NULL, NULL, NULL);
  ascope_sql_params_free(p);
}

static void writer_next(struct writer *w) {
  if (w->done == TXS) return;
  ascope *c = ascope_child(w->scope);
  cr_assert_not_null(c);
  ascope_use_sql_tx(c, w->db, "begin=immediate");
  ascope_start(c, tx_body, tx_done, w);
}

static void writer_body(ascope *s, t_scope *t) {
  struct writer *w = (struct writer *)t;
  w->scope = s;
  w->db = ascope_resource(s, 0);
  writer_next(w);
}

static void run_writers(void) {
  const char *path = t_path("wal.db");
  t_raw(path, "PRAGMA journal_mode=WAL; CREATE TABLE t(writer, n);"
              "CREATE TABLE total(n); INSERT INTO total VALUES (0)");
  struct writer w[2] = {{.t.body = writer_body, .id = 0}, {.t.body = writer_body, .id = 1}};
  for (int i = 0; i < 2; i++) {
    ascope *s = ascope_new(T_rt);
    ascope_use_sqlite(s, path, "wal=1 busy_timeout=10000 synchronous=normal");
    cr_assert_eq(ascope_start(s, t_body, t_done, &w[i]), 0);
  }
  uint64_t t0 = t_now_ms();
  cr_assert_eq(ascope_rt_run(T_rt), 0);
  for (int i = 0; i < 2; i++) {
    cr_assert_eq(w[i].t.done_calls, 1);
    cr_assert_eq(w[i].t.status, 0, "%s", w[i].t.msg);
    cr_assert_eq(w[i].done, TXS);
    cr_assert_eq(w[i].failed, 0);
  }
  cr_assert_lt(t_now_ms() - t0, 8000, "no busy wait ran to its timeout");
  cr_assert_eq(t_raw_int(path, "SELECT count(*) FROM t"), 2 * TXS);
  cr_assert_eq(t_raw_int(path, "SELECT n FROM total"), 2 * TXS, "no lost update");
  cr_assert_eq(t_raw_int(path, "SELECT count(DISTINCT writer || '.' || n) FROM t"), 2 * TXS);
  cr_assert_gt(ascope_sqlite_stat("busy"), 0, "the writers met on the lock");
}

Test(sqlite_load, two_connections_write_one_wal_database) {
  run_writers();
}

/* One thread for SQLite: a writer waiting for the lock must give the thread
 * up, or the lock's holder, waiting for the thread to COMMIT, never could. */
Test(sqlite_load, a_writer_waiting_for_the_lock_yields_to_its_holder) {
  cr_assert_eq(ascope_sqlite_set_concurrency(1), 0);
  run_writers();
  cr_assert_gt(ascope_sqlite_stat("yields"), 0);
}

/* ---- 200 scopes, a connection each ------------------------------------------------------------
 */

#define SCOPES 200

struct one {
  t_scope t;
  int id;
  t_cb count;
};

static void one_body(ascope *s, t_scope *t) {
  struct one *o = (struct one *)t;
  ascope_sql *db = ascope_resource(s, 0);
  ascope_sql_params *p = ascope_sql_params_new();
  ascope_sql_params_add_int64(p, o->id);
  ascope_sql_exec(s, db, "INSERT INTO t VALUES ($1)", p, NULL, NULL);
  ascope_sql_query(s, db, "SELECT count(*) FROM t WHERE id = $1", p, t_cb_fn, &o->count);
  ascope_sql_params_free(p);
}

Test(sqlite_load, two_hundred_scopes_with_their_own_connections) {
  const char *path = t_path("many.db");
  t_raw(path, "PRAGMA journal_mode=WAL; CREATE TABLE t(id)");
  static struct one o[SCOPES];
  for (int i = 0; i < SCOPES; i++) {
    o[i] = (struct one){.t.body = one_body, .id = i};
    ascope *s = ascope_new(T_rt);
    /* 200 writers take the one write lock in turn, and SQLite's busy
     * handler is not fair: under TSan on a loaded machine the last one
     * can wait past 10 s. How long a lock is waited for is not what this
     * test is about. */
    cr_assert_eq(ascope_use_sqlite(s, path, "wal=1 busy_timeout=60000"), 0);
    cr_assert_eq(ascope_start(s, t_body, t_done, &o[i]), 0);
  }
  cr_assert_eq(ascope_rt_run(T_rt), 0);
  for (int i = 0; i < SCOPES; i++) {
    cr_assert_eq(o[i].t.done_calls, 1);
    cr_assert_eq(o[i].t.status, 0, "%d: %s", i, o[i].t.msg);
    cr_assert_eq(o[i].count.first, 1);
  }
  cr_assert_eq(t_raw_int(path, "SELECT count(*) FROM t"), SCOPES);
  cr_assert_eq(ascope_sqlite_stat("opened"), SCOPES);
}

/* ---- 64 scopes on 4 shared connections
 * ----------------------------------------------------------- */

#define SHARED_CONNS 4
#define WORKERS 64
#define LOOKUPS 40

struct shared {
  t_scope t;
  ascope *scope;
  ascope_sql *db[SHARED_CONNS];
  int wrong, done;
};

struct worker {
  struct shared *sh;
  ascope *scope;
  ascope_sql *db;
  ascope_sql_params *p;
  int n, id;
};
static struct worker workers[WORKERS];

static void lookup(struct worker *w);

static int looked_up(ascope *s, int status, ascope_rows *rows, void *ud) {
  (void)s;
  struct worker *w = ud;
  if (status || ascope_rows_int64(rows, 0, 0) != (w->id * 1000 + w->n) * 2) w->sh->wrong++;
  w->n++;
  lookup(w);
  return 0;
}

static void lookup(struct worker *w) {
  if (w->n == LOOKUPS) {
    w->sh->done++;
    ascope_sql_params_free(w->p);
    return;
  }
  ascope_sql_params_clear(w->p);
  ascope_sql_params_add_int64(w->p, w->id * 1000 + w->n);
  ascope_sql_query(w->scope, w->db, "SELECT v FROM kv WHERE k = $1", w->p, looked_up, w);
}

static void worker_body(ascope *s, void *ud) {
  struct worker *w = ud;
  w->scope = s;
  w->p = ascope_sql_params_new();
  lookup(w);
}

static void shared_body(ascope *s, t_scope *t) {
  struct shared *sh = (struct shared *)t;
  for (int i = 0; i < SHARED_CONNS; i++) sh->db[i] = ascope_resource(s, (size_t)i);
  for (int i = 0; i < WORKERS; i++) {
    workers[i] = (struct worker){.sh = sh, .db = sh->db[i % SHARED_CONNS], .id = i};
    ascope *c = ascope_child(s);
    ascope_start(c, worker_body, NULL, &workers[i]);
  }
}

Test(sqlite_load, sixty_four_scopes_share_four_connections) {
  const char *path = t_path("kv.db");
  t_raw(path, "PRAGMA journal_mode=WAL; CREATE TABLE kv(k INTEGER PRIMARY KEY, v);"
              "WITH RECURSIVE c(x) AS (SELECT 0 UNION ALL SELECT x + 1 FROM c WHERE x < 64000)"
              "INSERT INTO kv SELECT x, 2 * x FROM c");
  struct shared sh = {.t.body = shared_body};
  ascope *s = ascope_new(T_rt);
  for (int i = 0; i < SHARED_CONNS; i++) ascope_use_sqlite(s, path, "mode=ro");
  cr_assert_eq(t_run(s, &sh.t), 0, "%s", sh.t.msg);
  cr_assert_eq(sh.done, WORKERS);
  cr_assert_eq(sh.wrong, 0);
  cr_assert_lt(ascope_sqlite_stat("hops"), WORKERS * LOOKUPS, "hops carry several statements");
}

/* ---- the pool stays open to file I/O
 * --------------------------------------------------------------- */

#define HOGS 16

struct starve {
  uv_fs_t open_req, read_req;
  uv_file fd;
  char buf[64];
  uint64_t t0, t_read;
  ssize_t got;
  ascope *hogs[HOGS];
  int64_t running_max;
};

static void cancel_hogs(struct starve *x) {
  for (int i = 0; i < HOGS; i++) ascope_cancel(x->hogs[i]);
}

static void on_read(uv_fs_t *r) {
  struct starve *x = r->data;
  x->got = r->result;
  x->t_read = t_now_ms();
  uv_fs_req_cleanup(r);
  uv_fs_t close_req;
  uv_fs_close(r->loop, &close_req, x->fd, NULL); /* synchronous */
  uv_fs_req_cleanup(&close_req);
  cancel_hogs(x);
}

static void on_open(uv_fs_t *r) {
  struct starve *x = r->data;
  cr_assert_geq(r->result, 0);
  x->fd = (uv_file)r->result;
  uv_fs_req_cleanup(r);
  uv_buf_t b = uv_buf_init(x->buf, sizeof x->buf - 1);
  x->read_req.data = x;
  uv_fs_read(r->loop, &x->read_req, x->fd, &b, 1, 0, on_read);
}

static void read_file(void *ud) {
  struct starve *x = ud;
  x->running_max = ascope_sqlite_stat("running");
  x->t0 = t_now_ms();
  x->open_req.data = x;
  uv_fs_open(ascope_rt_loop(T_rt), &x->open_req, t_path("hello.txt"), O_RDONLY, 0, on_open);
}

static bool two_running(void *ud) {
  (void)ud;
  return ascope_sqlite_stat("running") >= 2 && ascope_sqlite_stat("hops") >= 4; /* not opens */
}

static void hog_body(ascope *s, t_scope *t) {
  (void)t;
  ascope_sql_query(s, ascope_resource(s, 0), LONG_QUERY, NULL, NULL, NULL);
}

Test(sqlite_load, file_reads_go_on_while_sixteen_long_queries_run) {
  FILE *f = fopen(t_path("hello.txt"), "w");
  cr_assert_not_null(f);
  fputs("hello, pool", f);
  fclose(f);
  static struct starve x;
  static t_scope h[HOGS];
  for (int i = 0; i < HOGS; i++) {
    char name[32];
    snprintf(name, sizeof name, "hog%d.db", i);
    h[i] = (t_scope){.body = hog_body};
    x.hogs[i] = ascope_new(T_rt);
    ascope_use_sqlite(x.hogs[i], t_path(name), NULL);
    cr_assert_eq(ascope_start(x.hogs[i], t_body, t_done, &h[i]), 0);
  }
  t_when(two_running, read_file, &x); /* the long queries have the threads they may have */
  cr_assert_eq(ascope_rt_run(T_rt), 0);
  cr_assert_eq(x.got, 11);
  cr_assert_str_eq(x.buf, "hello, pool");
  cr_assert_lt(x.t_read - x.t0, 250, "the read took %llu ms",
               (unsigned long long)(x.t_read - x.t0));
  cr_assert_leq(x.running_max, 2, "at most 2 connections on the pool");
  for (int i = 0; i < HOGS; i++) {
    cr_assert_eq(h[i].done_calls, 1);
    cr_assert_eq(h[i].status, ASCOPE_ECANCELED);
  }
}
