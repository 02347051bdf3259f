/* The error contract, as docs/drivers/postgres.md states it: a lost
 * connection is ASCOPE_ECLOSED with code 08006 and a one-line message for
 * whatever was on it (a running stream, the statements queued behind it,
 * the transaction); a transaction that was to roll back anyway ends
 * quietly; the DSN's connect_timeout is the time asked for; the rows_live
 * counter counts result objects. */
#include "pg_support.h"
#include "temp_dir.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <dlfcn.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

TestSuite(postgres_errors, .init = t_init, .fini = t_fini, .timeout = 120);

/* ---- cutting a connection from the client side --------------------------------------------- */

/* The descriptor of this process's socket whose local port is port. */
static int fd_with_local_port(int port) {
  DIR *d = opendir("/proc/self/fd");
  cr_assert_not_null(d);
  int found = -1;
  for (struct dirent *e; found < 0 && (e = readdir(d)) != NULL;) {
    int fd = atoi(e->d_name);
    struct sockaddr_in a;
    socklen_t len = sizeof a;
    if (fd <= 2 || getsockname(fd, (struct sockaddr *)&a, &len) != 0) continue;
    if (a.sin_family == AF_INET && ntohs(a.sin_port) == port) found = fd;
  }
  closedir(d);
  return found;
}

/* The socket under db's connection is shut down: libpq reads the end of
 * the stream without a word from the server, the case that gives libpq's
 * multi-line "server closed the connection unexpectedly". */
static void cut(ascope_sql *db) {
  int pid = ascope_postgres_backend_pid(db);
  cr_assert_gt(pid, 0);
  int port = (int)t_raw_int(t_sql("SELECT client_port FROM pg_stat_activity WHERE pid = %d", pid));
  int fd = fd_with_local_port(port);
  cr_assert_geq(fd, 0, "the connection's socket (port %d)", port);
  cr_assert_eq(shutdown(fd, SHUT_RDWR), 0);
}

struct lost {
  t_scope t;
  ascope_sql *db;
  t_cb stream, behind[3];
  int batches;
};

static int lost_stream_cb(ascope *s, int status, ascope_rows *rows, void *ud) {
  struct lost *l = ud;
  if (status == 0 && rows) {
    if (l->batches++ == 0) cut(l->db); /* the stream is running: cut under it */
    return ASCOPE_CONTINUE;
  }
  return t_cb_fn(s, status, rows, &l->stream);
}

static void lost_body(ascope *s, t_scope *t) {
  struct lost *l = (struct lost *)t;
  l->db = ascope_resource(s, 0);
  l->stream.db = l->db;
  /* rows forever, sent slowly enough that the cut finds it running */
  ascope_sql_stream(s, l->db, "SELECT g, pg_sleep(0.001) FROM generate_series(1, 1000000) g", NULL,
                    lost_stream_cb, l, NULL);
  for (int i = 0; i < 3; i++) {
    l->behind[i].db = l->db;
    ascope_sql_query(s, l->db, "SELECT 1", NULL, t_cb_fn, &l->behind[i]);
  }
}

static void assert_one_line(const char *msg) {
  cr_assert(strlen(msg) > 0);
  cr_assert_null(strchr(msg, '\n'), "one line: %s", msg);
  cr_assert_null(strchr(msg, '\t'), "one line: %s", msg);
}

Test(postgres_errors, a_lost_connection_is_eclosed_08006_for_everything_on_it) {
  struct lost l = {.t.body = lost_body};
  cr_assert_eq(t_run_db(&l.t, "batch=10"), 0, "the callbacks handled the errors: %s", l.t.msg);
  cr_assert_gt(l.batches, 0);
  cr_assert_eq(l.stream.calls, 1);
  cr_assert_eq(l.stream.status, ASCOPE_ECLOSED, "%d %s: %s", l.stream.status, l.stream.code,
               l.stream.msg);
  cr_assert_str_eq(l.stream.code, "08006");
  assert_one_line(l.stream.msg);
  for (int i = 0; i < 3; i++) {
    cr_assert_eq(l.behind[i].calls, 1);
    cr_assert_eq(l.behind[i].status, ASCOPE_ECLOSED);
    cr_assert_str_eq(l.behind[i].code, "08006");
    assert_one_line(l.behind[i].msg);
  }
  cr_assert_eq(ascope_postgres_stat("broken"), 1);
}

/* The same loss with a transaction open: the scope fails with the loss
 * alone; the transaction's release adds no error of its own (the server
 * rolled it back, which is what the failed scope wanted). */
static void tx_lost_body(ascope *s, t_scope *t) {
  struct lost *l = (struct lost *)t;
  l->db = ascope_resource(s, 0);
  cut(l->db);
  ascope_sql_query(s, l->db, "SELECT 1", NULL, NULL, NULL); /* its error fails the scope */
}

Test(postgres_errors, a_transaction_on_a_lost_connection_adds_no_second_error) {
  struct lost l = {.t.body = tx_lost_body};
  ascope *s = ascope_new(T_rt);
  ascope_use_postgres(s, t_dsn(), NULL);
  ascope_use_sql_tx_at(s, ascope_postgres(), 0, NULL);
  cr_assert_eq(t_run(s, &l.t), ASCOPE_ECLOSED, "%s", l.t.msg);
  cr_assert_str_eq(l.t.code, "08006");
  assert_one_line(l.t.msg);
  cr_assert_eq(l.t.nerr, 1, "no secondary error; the second was %s", l.t.err_code[1]);
}

/* A scope that ends well but whose connection was lost before its COMMIT:
 * the release reports the loss, the transaction rolled back. */
static int cut_then_ok(ascope *s, int status, ascope_rows *rows, void *ud) {
  (void)s, (void)rows;
  struct lost *l = ud;
  cr_assert_eq(status, 0);
  cut(l->db);
  return 0;
}

static void commit_lost_body(ascope *s, t_scope *t) {
  struct lost *l = (struct lost *)t;
  l->db = ascope_resource(s, 0);
  ascope_sql_query(s, l->db, "SELECT 1", NULL, cut_then_ok, l);
}

Test(postgres_errors, a_commit_on_a_lost_connection_says_it_rolled_back) {
  struct lost l = {.t.body = commit_lost_body};
  ascope *s = ascope_new(T_rt);
  ascope_use_postgres(s, t_dsn(), NULL);
  ascope_use_sql_tx_at(s, ascope_postgres(), 0, NULL);
  cr_assert_eq(t_run(s, &l.t), ASCOPE_ECLOSED, "%s", l.t.msg);
  cr_assert_str_eq(l.t.code, "08006");
  cr_assert(strstr(l.t.msg, "rolled back"), "%s", l.t.msg);
}

/* A statement whose send finds the connection gone before any part of it
 * reached the pipeline still ends, with the loss. libpq refuses a send
 * once it has given the connection up (a write met the server's end); the
 * test makes the next send fail that way by interposing libpq's
 * PQsendQueryParams (the driver calls it through the dynamic linker, so
 * this executable's definition comes first). Such a statement once ended
 * nowhere, and its scope never completed, deadline or not. */
static int fail_next_send;

__attribute__((visibility("default"))) int
PQsendQueryParams(PGconn *conn, const char *command, int nParams, const Oid *paramTypes,
                  const char *const *paramValues, const int *paramLengths, const int *paramFormats,
                  int resultFormat) {
  static int (*real)(PGconn *, const char *, int, const Oid *, const char *const *, const int *,
                     const int *, int);
  if (real == NULL) *(void **)&real = dlsym(RTLD_NEXT, "PQsendQueryParams");
  if (fail_next_send) {
    fail_next_send = 0;
    return 0;
  }
  return real(conn, command, nParams, paramTypes, paramValues, paramLengths, paramFormats,
              resultFormat);
}

struct refused {
  t_scope t;
  ascope_sql *db;
  t_cb stream, behind;
};

static int refused_first_cb(ascope *s, int status, ascope_rows *rows, void *ud) {
  (void)rows;
  struct refused *f = ud;
  cr_assert_eq(status, 0);
  fail_next_send = 1;
  ascope_sql_stream(s, f->db, "SELECT g FROM generate_series(1, 10) g", NULL, t_cb_fn, &f->stream,
                    NULL);
  ascope_sql_query(s, f->db, "SELECT 2", NULL, t_cb_fn, &f->behind);
  return 0;
}

static void refused_body(ascope *s, t_scope *t) {
  struct refused *f = (struct refused *)t;
  f->db = f->stream.db = f->behind.db = ascope_resource(s, 0);
  ascope_sql_query(s, f->db, "SELECT 1", NULL, refused_first_cb, f);
}

Test(postgres_errors, a_statement_whose_send_finds_the_connection_gone_still_ends, .timeout = 30) {
  struct refused f = {.t.body = refused_body};
  ascope *s = ascope_new(T_rt);
  ascope_use_postgres(s, t_dsn(), NULL);
  ascope_set_timeout(s, 10000); /* did not help the lost statement: it never ended */
  cr_assert_eq(t_run(s, &f.t), 0, "%s", f.t.msg);
  cr_assert_eq(fail_next_send, 0, "the send was refused");
  cr_assert_eq(f.stream.calls, 1);
  cr_assert_eq(f.stream.status, ASCOPE_ECLOSED, "%s: %s", ascope_err_name(f.stream.status),
               f.stream.msg);
  cr_assert_str_eq(f.stream.code, "08006");
  assert_one_line(f.stream.msg);
  cr_assert_eq(f.behind.calls, 1);
  cr_assert_eq(f.behind.status, ASCOPE_ECLOSED);
}

/* ---- connect_timeout in the DSN ------------------------------------------------------------ */

static int blackhole(int *port) { /* listens, never accepts: a connect hangs */
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t len = sizeof a;
  cr_assert_eq(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
  cr_assert_eq(listen(fd, 16), 0);
  cr_assert_eq(getsockname(fd, (struct sockaddr *)&a, &len), 0);
  *port = ntohs(a.sin_port);
  return fd;
}

Test(postgres_errors, a_dsn_connect_timeout_of_one_second_is_one_second) {
  int port, fd = blackhole(&port);
  char dsn[200];
  snprintf(dsn, sizeof dsn, "host=127.0.0.1 port=%d dbname=x user=x connect_timeout=1", port);
  t_scope t = {0};
  ascope *s = ascope_new(T_rt);
  ascope_use_postgres(s, dsn, NULL);
  cr_assert_eq(t_run(s, &t), ASCOPE_ETIMEDOUT);
  cr_assert_str_eq(t.code, "08001");
  cr_assert(strstr(t.msg, "after 1000 ms"), "the deadline armed was 1 s: %s", t.msg);
  cr_assert_geq(t.t_done - t.t_start, 990);
  close(fd);
}

/* ---- rows_live ------------------------------------------------------------------------------ */

static int64_t live_in_cb = -1;

static int live_cb(ascope *s, int status, ascope_rows *rows, void *ud) {
  (void)s, (void)rows, (void)ud;
  live_in_cb = ascope_sql_stat("rows_live");
  return status;
}

static void live_body(ascope *s, t_scope *t) {
  (void)t;
  ascope_sql_query(s, ascope_resource(s, 0), "SELECT 1", NULL, live_cb, NULL);
}

Test(postgres_errors, rows_live_counts_the_result_objects) {
  cr_assert_eq(ascope_sql_stat("rows_live"), 0);
  t_scope t = {.body = live_body};
  cr_assert_eq(t_run_db(&t, NULL), 0, "%s", t.msg);
  cr_assert_eq(live_in_cb, 1, "the result being read");
  cr_assert_eq(ascope_sql_stat("rows_live"), 0, "freed with its request");
}

/* ---- the values must match the statement's parameters ------------------------------------- */

/* Counted as PostgreSQL counts them: the highest $N outside what can hide
 * one (a string, a quoted name, a comment, a function's $$ body). A
 * mismatch is refused by the call, nothing queued: the statements before it
 * still answer first, in order, and the connection goes on. */
static const struct {
  const char *sql;
  int given; /* int parameters, 1, 2… */
  bool runs; /* else refused: UV_EINVAL */
} counted[] = {
    {"SELECT $1::int", 1, true},
    {"SELECT $1::int + 0 * length('$2') /* $3 */ -- $4\n", 1, true},
    {"SELECT $1::int + 0 * length($tag$ $2 $tag$) + 0 * length(E'\\' $5')", 1, true},
    {"SELECT $1::int AS \"$2\"", 1, true},
    {"SELECT $2::int - $2::int + $1::int", 2, true},
    {"SELECT $2::int", 1, false},
    {"SELECT $1::int", 2, false},
    {"SELECT 1", 1, false},
    {"SELECT $10::int", 9, false},
};
#define NCOUNTED (sizeof counted / sizeof counted[0])

struct count {
  t_scope t;
  t_cb slow, cb[NCOUNTED], after;
  int rc[NCOUNTED];
  int order[NCOUNTED + 2], n;
};

static struct count *the_count;

static int count_cb(ascope *s, int status, ascope_rows *rows, void *ud) {
  t_cb *cb = ud;
  struct count *c = the_count;
  c->order[c->n++] = cb == &c->slow ? -1 : cb == &c->after ? 99 : (int)(cb - c->cb);
  return t_cb_fn(s, status, rows, ud);
}

static void count_body(ascope *s, t_scope *t) {
  struct count *c = (struct count *)t;
  ascope_sql *db = ascope_resource(s, 0);
  ascope_sql_query(s, db, "SELECT 1 FROM pg_sleep(0.05)", NULL, count_cb, &c->slow);
  for (size_t i = 0; i < NCOUNTED; i++) {
    ascope_sql_params *p = ascope_sql_params_new();
    for (int k = 1; k <= counted[i].given; k++) ascope_sql_params_add_int64(p, k);
    c->cb[i].db = db;
    c->rc[i] = ascope_sql_query(s, db, counted[i].sql, p, count_cb, &c->cb[i]);
    ascope_sql_params_free(p);
  }
  ascope_sql_query(s, db, "SELECT 7", NULL, count_cb, &c->after);
}

Test(postgres_errors, the_values_must_match_the_statements_parameters) {
  struct count c = {.t.body = count_body};
  the_count = &c;
  cr_assert_eq(t_run_db(&c.t, NULL), 0, "%s", c.t.msg);
  int k = 0;
  cr_assert_eq(c.order[k++], -1, "the slow statement before them answers first");
  for (size_t i = 0; i < NCOUNTED; i++) {
    if (!counted[i].runs) {
      cr_assert_eq(c.rc[i], UV_EINVAL, "%s", counted[i].sql);
      cr_assert_eq(c.cb[i].calls, 0, "%s: a refused statement has no callback", counted[i].sql);
      continue;
    }
    cr_assert_eq(c.rc[i], 0, "%s", counted[i].sql);
    cr_assert_eq(c.order[k++], (int)i, "in order");
    cr_assert_eq(c.cb[i].status, 0, "%s: %s", counted[i].sql, c.cb[i].msg);
    cr_assert_eq(c.cb[i].first, 1, "%s", counted[i].sql);
  }
  cr_assert_eq(c.order[k++], 99);
  cr_assert_eq(c.n, k);
  cr_assert_eq(c.after.status, 0, "the connection goes on");
  cr_assert_eq(c.after.first, 7);
}

/* ---- nothing on the host's stderr ------------------------------------------------------------ */

/* A backend terminated while its connection is idle sends a FATAL notice
 * before it goes: libpq's default would print it on stderr. The library
 * keeps quiet; the loss reaches the next statement as an error. */
struct quiet {
  t_scope t;
  t_cb after;
};

static void quiet_body(ascope *s, t_scope *t) {
  struct quiet *q = (struct quiet *)t;
  int pid = ascope_postgres_backend_pid(ascope_resource(s, 0));
  cr_assert_eq(t_raw_int(t_sql("SELECT pg_terminate_backend(%d)::int", pid)), 1);
  /* the other connection keeps the loop turning while the notice arrives */
  ascope_sql_query(s, ascope_resource(s, 1), "SELECT 1 FROM pg_sleep(0.3)", NULL, t_cb_fn,
                   &q->after);
}

Test(postgres_errors, a_server_notice_never_reaches_stderr) {
  char path[300];
  snprintf(path, sizeof path, "%s/ascope-stderr-XXXXXX", t_temp_root());
  int fd = mkstemp(path);
  cr_assert_geq(fd, 0);
  int saved = dup(2);
  cr_assert_eq(dup2(fd, 2), 2);
  struct quiet q = {.t.body = quiet_body};
  ascope *s = ascope_new(T_rt);
  ascope_use_postgres(s, t_dsn(), NULL);
  ascope_use_postgres(s, t_dsn(), NULL);
  int status = t_run(s, &q.t);
  dup2(saved, 2);
  close(saved);
  off_t written = lseek(fd, 0, SEEK_END);
  close(fd);
  unlink(path);
  cr_assert_eq(status, 0, "%s", q.t.msg);
  cr_assert_eq(q.after.status, 0);
  cr_assert_eq(written, 0, "%lld bytes written to stderr", (long long)written);
}
