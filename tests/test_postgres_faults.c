/* Every stage failing, timing out and being cancelled: the acquire
 * (resolving, connecting, BEGIN), the operations, the release (COMMIT, the
 * connection's close). Whatever happens the scope's done runs once (t_run
 * checks), every connection opened is closed once, and nothing is left
 * (t_fini checks connections, requests and transactions; ASan/LSan the
 * memory). */
#include "pg_support.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static void faults_fini(void);
TestSuite(postgres_faults, .init = t_init, .fini = faults_fini);

/* A TCP port that accepts connections (the kernel does) and never answers:
 * a server that hangs. */
static int blackhole(int *port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  cr_assert_eq(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
  cr_assert_eq(listen(fd, 16), 0);
  socklen_t len = sizeof a;
  getsockname(fd, (struct sockaddr *)&a, &len);
  *port = ntohs(a.sin_port);
  return fd;
}

static const char *hung_dsn(int port) {
  static char dsn[256];
  snprintf(dsn, sizeof dsn, "host=127.0.0.1 port=%d dbname=x user=x password=Secret9", port);
  return dsn;
}

static void never_body(ascope *s, t_scope *t) {
  (void)s;
  cr_assert_fail("the body ran after a failed acquire (%d)", t->body_calls);
}

/* ---- driving a scenario to a state --------------------------------------------------------- */

/* fn(ud) from the loop once cond(ud) holds, checked every 5 ms. A test that
 * cancels "after 100 ms" means "while the connect is under way" or "while
 * the statement runs", and on a loaded machine 100 ms may pass before the
 * connection is even open: wait for the state itself. Fails the test if the
 * state is not reached within 20 s. */
struct when {
  uv_timer_t t;
  bool (*cond)(void *ud);
  void (*fn)(void *ud);
  void *ud;
  uint64_t give_up;
};

static void when_closed(uv_handle_t *h) {
  free(h->data);
}

static void when_tick(uv_timer_t *t) {
  struct when *w = t->data;
  bool ok = w->cond(w->ud);
  if (!ok && t_now_ms() < w->give_up) return;
  void (*fn)(void *) = w->fn;
  void *ud = w->ud;
  uv_timer_stop(t);
  uv_close((uv_handle_t *)t, when_closed);
  if (!ok) cr_assert_fail("the scenario did not reach the state it waits for");
  fn(ud);
}

static void when(bool (*cond)(void *ud), void (*fn)(void *ud), void *ud) {
  struct when *w = calloc(1, sizeof *w);
  cr_assert_not_null(w);
  *w = (struct when){.cond = cond, .fn = fn, .ud = ud, .give_up = t_now_ms() + 20000};
  uv_timer_init(ascope_rt_loop(T_rt), &w->t);
  w->t.data = w;
  uv_timer_start(&w->t, when_tick, 5, 5);
}

/* The driver's acquire is under way (resolving or connecting). */
static bool connecting(void *ud) {
  (void)ud;
  return ascope_postgres_stat("connections") == 1;
}

/* A scope to cancel once it reached a state, and when it was cancelled. */
struct canceller {
  ascope *s;
  uint64_t at; /* t_now_ms() at the cancel */
};

static void cancel_now(void *ud) {
  struct canceller *c = ud;
  /* the loop's clock too, so a timer the cancel starts counts from here */
  uv_update_time(ascope_rt_loop(T_rt));
  c->at = t_now_ms();
  ascope_cancel(c->s);
}

/* The server runs the scope's pg_sleep: its connection's backend (the
 * scope's first use) is active on it. Asked of the server, as nothing on
 * the client's side says a statement sent has started. */
static bool sleeping(void *ud) {
  struct canceller *c = ud;
  ascope_sql *db = ascope_resource(c->s, 0);
  int pid = db ? ascope_postgres_backend_pid(db) : 0;
  if (pid == 0) return false;
  return t_raw_int(t_sql("SELECT count(*) FROM pg_stat_activity WHERE pid = %d AND state = "
                         "'active' AND query LIKE 'SELECT pg_sleep%%'",
                         pid)) == 1;
}

/* ---- the acquire ------------------------------------------------------------------------ */

Test(postgres_faults, a_connect_to_a_hung_server_times_out) {
  int port, fd = blackhole(&port);
  t_scope t = {.body = never_body};
  ascope *s = ascope_new(T_rt);
  ascope_use_postgres(s, hung_dsn(port), "connect_timeout=150");
  cr_assert_eq(t_run(s, &t), ASCOPE_ETIMEDOUT);
  cr_assert_str_eq(t.driver, "postgres");
  cr_assert_str_eq(t.code, "08001");
  cr_assert_geq(t.t_done - t.t_start, 145);
  cr_assert_lt(t.t_done - t.t_start, 1500);
  cr_assert_null(strstr(t.msg, "Secret9"));
  close(fd);
}

Test(postgres_faults, the_dsn_connect_timeout_bounds_the_connect) {
  int port, fd = blackhole(&port);
  char dsn[300];
  snprintf(dsn, sizeof dsn, "%s connect_timeout=2", hung_dsn(port));
  t_scope t = {.body = never_body};
  ascope *s = ascope_new(T_rt);
  ascope_use_postgres(s, dsn, NULL);
  cr_assert_eq(t_run(s, &t), ASCOPE_ETIMEDOUT);
  cr_assert_geq(t.t_done - t.t_start, 1950);
  cr_assert_lt(t.t_done - t.t_start, 3500);
  close(fd);
}

Test(postgres_faults, a_deadline_cancels_a_connect) {
  int port, fd = blackhole(&port);
  t_scope t = {.body = never_body};
  ascope *s = ascope_new(T_rt);
  ascope_use_postgres(s, hung_dsn(port), NULL);
  ascope_set_timeout(s, 100);
  cr_assert_eq(t_run(s, &t), ASCOPE_ETIMEDOUT);
  cr_assert_lt(t.t_done - t.t_start, 1000);
  cr_assert_eq(ascope_postgres_stat("opened"), 0);
  close(fd);
}

Test(postgres_faults, a_connect_is_cancelled) {
  int port, fd = blackhole(&port);
  t_scope t = {.body = never_body};
  struct canceller c = {.s = ascope_new(T_rt)};
  ascope_use_postgres(c.s, hung_dsn(port), NULL);
  when(connecting, cancel_now, &c);
  cr_assert_eq(t_run(c.s, &t), ASCOPE_ECANCELED);
  cr_assert_lt(t.t_done - c.at, 1000);
  close(fd);
}

/* A name lookup waiting for a threadpool thread (all four are busy) is
 * cancelled before it runs. The four are held until the test lets them go,
 * not for a fixed time that a slow machine could outlast. */
static uv_sem_t pool_gate;

static void block_work(uv_work_t *w) {
  (void)w;
  uv_sem_wait(&pool_gate);
}

static void block_after(uv_work_t *w, int status) {
  (void)status;
  free(w);
}

Test(postgres_faults, a_host_lookup_is_cancelled) {
  cr_assert_eq(uv_sem_init(&pool_gate, 0), 0);
  for (int i = 0; i < 4; i++) {
    uv_work_t *w = calloc(1, sizeof *w);
    uv_queue_work(ascope_rt_loop(T_rt), w, block_work, block_after);
  }
  t_scope t = {.body = never_body};
  struct canceller c = {.s = ascope_new(T_rt)};
  char dsn[1200];
  snprintf(dsn, sizeof dsn, "%s host=localhost", t_dsn());
  ascope_use_postgres(c.s, dsn, NULL);
  when(connecting, cancel_now, &c);
  cr_assert_eq(t_run(c.s, &t), ASCOPE_ECANCELED);
  cr_assert_lt(t.t_done - c.at, 1000);
  cr_assert_eq(ascope_postgres_stat("opened"), 0);
  for (int i = 0; i < 4; i++) uv_sem_post(&pool_gate); /* t_fini waits for them */
}

Test(postgres_faults, a_bad_dsn_fails_the_acquire_at_once) {
  t_scope t = {.body = never_body};
  ascope *s = ascope_new(T_rt);
  ascope_use_postgres(s, "host=127.0.0.1 no_such_keyword=1", NULL);
  cr_assert_eq(t_run(s, &t), UV_EINVAL);
  cr_assert(strstr(t.msg, "no_such_keyword"), "%s", t.msg);
}

/* BEGIN sent behind a long statement of the parent; the child's deadline
 * passes meanwhile. The BEGIN cannot be taken back: it runs, the child is
 * released (ROLLBACK), and no transaction is left on the parent's
 * connection. */
struct begin_late {
  t_scope t, kid;
  t_cb sleep, status;
  ascope *parent;
};

static void begin_kid_body(ascope *s, t_scope *t) {
  (void)s;
  (void)t;
}

static int check_idle(ascope *s, int status, ascope_rows *rows, void *ud) {
  (void)s;
  struct begin_late *b = ud;
  (void)rows;
  cr_assert_eq(status, ASCOPE_EDRIVER, "a transaction is open");
  cr_assert_str_eq(ascope_sql_errcode(ascope_resource(b->parent, 0)), "25P01");
  b->status.calls++;
  return 0;
}

static int after_sleep(ascope *s, int status, ascope_rows *rows, void *ud) {
  (void)rows;
  struct begin_late *b = ud;
  b->sleep.status = status;
  (void)s;
  return 0;
}

static void begin_done(ascope *s, int status, void *ud) {
  t_done(s, status, ud);
  struct begin_late *b = (struct begin_late *)((char *)ud - offsetof(struct begin_late, kid));
  /* the child is gone: the parent's connection is in no transaction, so a
   * SAVEPOINT fails (25P01) */
  ascope_sql_exec(b->parent, ascope_resource(b->parent, 0), "SAVEPOINT probe", NULL, check_idle, b);
}

static void begin_parent(ascope *s, t_scope *t) {
  struct begin_late *b = (struct begin_late *)t;
  ascope_sql *db = ascope_resource(s, 0);
  b->parent = s;
  ascope_sql_query(s, db, "SELECT pg_sleep(0.4)", NULL, after_sleep, b);
  b->kid.body = begin_kid_body;
  ascope *k = ascope_child(s);
  ascope_use_sql_tx(k, db, NULL);
  ascope_set_timeout(k, 100);
  ascope_start(k, t_body, begin_done, &b->kid);
}

Test(postgres_faults, a_begin_outlived_by_its_deadline_leaves_no_transaction) {
  struct begin_late b = {.t.body = begin_parent};
  ascope *s = ascope_new(T_rt);
  ascope_set_mode(s, ASCOPE_COLLECT_ALL);
  ascope_use_postgres(s, t_dsn(), NULL);
  cr_assert_eq(t_run(s, &b.t), 0, "%s", b.t.msg);
  cr_assert_eq(b.kid.done_calls, 1);
  cr_assert_eq(b.kid.status, ASCOPE_ETIMEDOUT);
  cr_assert_eq(b.kid.body_calls, 0);
  cr_assert_eq(b.sleep.status, 0);
  cr_assert_eq(b.status.calls, 1);
}

/* ---- operations -------------------------------------------------------------------------- */

struct op {
  t_scope t;
  t_cb q;
};

static void long_op_body(ascope *s, t_scope *t) {
  struct op *o = (struct op *)t;
  o->q.db = ascope_resource(s, 0);
  ascope_sql_query(s, o->q.db, LONG_SLEEP, NULL, t_cb_fn, &o->q);
}

Test(postgres_faults, an_operation_is_cancelled) {
  struct op o = {.t.body = long_op_body};
  struct canceller c = {.s = ascope_new(T_rt)};
  ascope_use_postgres(c.s, t_dsn(), NULL);
  when(sleeping, cancel_now, &c);
  cr_assert_eq(t_run(c.s, &o.t), ASCOPE_ECANCELED);
  cr_assert_eq(o.q.calls, 1);
  cr_assert_eq(o.q.status, ASCOPE_ECANCELED);
  cr_assert_lt(o.t.t_done - c.at, 2000);
  cr_assert_geq(ascope_postgres_stat("cancels"), 1);
}

static void failing_op_body(ascope *s, t_scope *t) {
  struct op *o = (struct op *)t;
  o->q.db = ascope_resource(s, 0);
  o->q.pass = true;
  ascope_sql_query(s, o->q.db, "SELECT * FROM no_such_table", NULL, t_cb_fn, &o->q);
  ascope_sql_query(s, o->q.db, LONG_SLEEP, NULL, NULL, NULL); /* cancelled by the failure */
}

Test(postgres_faults, a_failing_operation_cancels_the_rest) {
  struct op o = {.t.body = failing_op_body};
  cr_assert_eq(t_run_db(&o.t, NULL), ASCOPE_EDRIVER);
  cr_assert_str_eq(o.t.code, "42P01");
  cr_assert_lt(o.t.t_done - o.t.t_start, 2000);
}

static int fail_in_cb(ascope *s, int status, ascope_rows *rows, void *ud) {
  (void)s, (void)rows, (void)ud;
  cr_assert_eq(status, 0);
  return UV_EPROTO;
}

static void cb_fails_body(ascope *s, t_scope *t) {
  (void)t;
  ascope_sql *db = ascope_resource(s, 0);
  ascope_sql_query(s, db, "SELECT 1", NULL, fail_in_cb, NULL);
  ascope_sql_query(s, db, LONG_SLEEP, NULL, NULL, NULL);
}

Test(postgres_faults, a_callback_that_fails_cancels_the_rest) {
  t_scope t = {.body = cb_fails_body};
  cr_assert_eq(t_run_db(&t, NULL), UV_EPROTO);
  cr_assert_lt(t.t_done - t.t_start, 4500); /* under cancel_timeout, the connect included */
}

/* ---- the release ----------------------------------------------------------------------- */

static void insert_twice(ascope *s, t_scope *t) {
  (void)t;
  ascope_sql *db = ascope_resource(s, 0);
  ascope_sql_exec(s, db, t_sql("INSERT INTO %s VALUES (1), (1)", t_name("defer")), NULL, NULL,
                  NULL);
}

Test(postgres_faults, a_failing_commit_is_the_scope_error) {
  t_raw(t_sql("CREATE TABLE %s(id int UNIQUE DEFERRABLE INITIALLY DEFERRED)", t_name("defer")));
  t_scope t = {.body = insert_twice};
  ascope *s = ascope_new(T_rt);
  ascope_use_postgres(s, t_dsn(), NULL);
  ascope_use_sql_tx_at(s, ascope_postgres(), 0, NULL);
  cr_assert_eq(t_run(s, &t), ASCOPE_EDRIVER);
  cr_assert_str_eq(t.code, "23505", "the COMMIT's error: %s", t.msg);
  cr_assert_eq(t_raw_int(t_sql("SELECT count(*) FROM %s", t_name("defer"))), 0);
}

/* A COMMIT that outlives the release timeout (a deferred trigger sleeps):
 * the core aborts the transaction use, the connection's release stops the
 * server's work (a cancel request) and closes; nothing is committed. */
static void slow_commit_setup(void) {
  const char *tab = t_name("slowc");
  t_raw(t_sql("CREATE TABLE %s(id int)", tab));
  t_raw(t_sql("CREATE FUNCTION %s_f() RETURNS trigger LANGUAGE plpgsql AS "
              "$$ BEGIN PERFORM pg_sleep(5); RETURN NULL; END $$",
              tab));
  t_raw(t_sql("CREATE CONSTRAINT TRIGGER %s_t AFTER INSERT ON %s DEFERRABLE INITIALLY DEFERRED "
              "FOR EACH ROW EXECUTE FUNCTION %s_f()",
              tab, tab, tab));
}

static void slow_commit_body(ascope *s, t_scope *t) {
  (void)t;
  ascope_sql_exec(s, ascope_resource(s, 0), t_sql("INSERT INTO %s VALUES (1)", t_name("slowc")),
                  NULL, NULL, NULL);
}

Test(postgres_faults, a_commit_outliving_the_release_timeout_is_aborted) {
  slow_commit_setup();
  cr_assert_eq(ascope_rt_set_release_timeout(T_rt, 200), 0);
  t_scope t = {.body = slow_commit_body};
  ascope *s = ascope_new(T_rt);
  ascope_use_postgres(s, t_dsn(), NULL);
  ascope_use_sql_tx_at(s, ascope_postgres(), 0, NULL);
  cr_assert_eq(t_run(s, &t), ASCOPE_ETIMEDOUT);
  cr_assert_str_eq(t.driver, "postgres");
  cr_assert_lt(t.t_done - t.t_start, 4500);
  /* the backend got the cancel request before the connection went */
  for (int i = 0; i < 50; i++) {
    if (t_raw_int(t_sql("SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'COMMIT%%' AND "
                        "datname = current_database() AND pid <> pg_backend_pid()")) == 0)
      break;
    usleep(20 * 1000);
  }
  cr_assert_eq(t_raw_int(t_sql("SELECT count(*) FROM %s", t_name("slowc"))), 0);
}

/* A connection whose release must wait (a cancel request still out for a
 * stream given up on) outlives a 1 ms release timeout: abort closes it at
 * once and its late completion is absorbed. */
static int stop_at_once(ascope *s, int status, ascope_rows *rows, void *ud) {
  (void)s, (void)status, (void)ud;
  return rows ? ASCOPE_STOP : status;
}

static void stopped_stream_body(ascope *s, t_scope *t) {
  (void)t;
  ascope_sql_stream(s, ascope_resource(s, 0), "SELECT g FROM generate_series(1, 5000000) g", NULL,
                    stop_at_once, NULL, NULL);
}

Test(postgres_faults, a_release_outliving_its_timeout_is_aborted) {
  cr_assert_eq(ascope_rt_set_release_timeout(T_rt, 1), 0);
  t_scope t = {.body = stopped_stream_body};
  int st = t_run_db(&t, "batch=10");
  cr_assert(st == 0 || st == ASCOPE_ETIMEDOUT, "%d", st);
  cr_assert_eq(ascope_postgres_stat("opened"), 1);
}

Test(postgres_faults, statements_on_a_closing_connection_are_refused) {
  t_scope t = {.body = stopped_stream_body};
  cr_assert_eq(t_run_db(&t, "batch=10"), 0, "%s", t.msg);
  cr_assert_geq(ascope_postgres_stat("cancels"), 1);
}

/* ---- a cancel request that cannot be delivered ------------------------------------------- */

/* A proxy in front of the server: it forwards the first connection (the
 * driver's), and holds every later one (a cancel request's) open without
 * reading it, so PQcancel waits for ever -- until the proxy stops. */
struct proxy {
  int listen_fd, port, server_port;
  int held[8], nheld;
  pthread_t thread;
  atomic_int stop; /* set by the test's thread, read by the proxy's */
};
static struct proxy *running_proxy; /* stopped by the suite's fini if a test failed early */

static int connect_server(int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET,
                          .sin_port = htons((uint16_t)port),
                          .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  cr_assert_eq(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
  return fd;
}

static void *proxy_run(void *ud) {
  struct proxy *p = ud;
  int client = -1, server = -1;
  bool forwarded = false; /* only ever the first connection */
  char buf[65536];
  while (!atomic_load(&p->stop)) {
    struct pollfd fds[3] = {{p->listen_fd, POLLIN, 0}, {client, POLLIN, 0}, {server, POLLIN, 0}};
    if (poll(fds, 3, 20) <= 0) continue;
    if (fds[0].revents & POLLIN) {
      int fd = accept(p->listen_fd, NULL, NULL);
      if (!forwarded) {
        forwarded = true;
        client = fd;
        server = connect_server(p->server_port);
      } else if (p->nheld < 8) {
        p->held[p->nheld++] = fd; /* a cancel request: never answered */
      } else {
        close(fd);
      }
    }
    for (int i = 1; i < 3; i++) {
      if (!(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      ssize_t n = read(fds[i].fd, buf, sizeof buf);
      if (n <= 0) {
        close(client);
        close(server);
        client = server = -1;
        break;
      }
      for (ssize_t off = 0, k; off < n; off += k)
        if ((k = send(i == 1 ? server : client, buf + off, (size_t)(n - off), MSG_NOSIGNAL)) <= 0)
          break;
    }
  }
  if (client >= 0) close(client);
  if (server >= 0) close(server);
  for (int i = 0; i < p->nheld; i++) close(p->held[i]);
  return NULL;
}

static const char *proxy_start(struct proxy *p) {
  p->listen_fd = blackhole(&p->port);
  const char *s = strstr(t_dsn(), "port=");
  p->server_port = atoi(s + 5);
  pthread_create(&p->thread, NULL, proxy_run, p);
  running_proxy = p;
  static char dsn[1200];
  char *d = strdup(t_dsn()), *out = dsn;
  size_t cap = sizeof dsn;
  for (char *tok = strtok(d, " "); tok; tok = strtok(NULL, " ")) {
    if (!strncmp(tok, "port=", 5)) continue;
    int k = snprintf(out, cap, "%s ", tok);
    out += k;
    cap -= (size_t)k;
  }
  snprintf(out, cap, "port=%d", p->port);
  free(d);
  return dsn;
}

static void proxy_stop(struct proxy *p) {
  if (p != running_proxy) return;
  running_proxy = NULL;
  atomic_store(&p->stop, 1);
  pthread_join(p->thread, NULL);
  close(p->listen_fd);
}

/* A failed assertion skips the rest of its test: a proxy left holding a
 * cancel request would keep PQcancel, and so the runtime's end, waiting. */
static void faults_fini(void) {
  if (running_proxy) proxy_stop(running_proxy);
  t_fini();
}

static void short_sleep_body(ascope *s, t_scope *t) {
  struct op *o = (struct op *)t;
  o->q.db = ascope_resource(s, 0);
  ascope_sql_query(s, o->q.db, "SELECT pg_sleep(3)", NULL, t_cb_fn, &o->q);
}

/* Cancelled while the statement runs (not by a deadline, which on a loaded
 * machine could pass during the connect, before any statement): the cancel
 * request is swallowed, and cancel_timeout later the connection is closed. */
Test(postgres_faults, a_connection_a_cancel_cannot_bring_back_is_closed) {
  static struct proxy p;
  const char *dsn = proxy_start(&p);
  struct op o = {.t.body = short_sleep_body};
  struct canceller c = {.s = ascope_new(T_rt)};
  ascope_use_postgres(c.s, dsn, "cancel_timeout=300");
  when(sleeping, cancel_now, &c);
  cr_assert_eq(t_run(c.s, &o.t), ASCOPE_ECANCELED);
  cr_assert_eq(o.q.status, ASCOPE_ECLOSED, "%d %s", o.q.status, o.q.msg);
  cr_assert(strstr(o.q.msg, "cancel"), "%s", o.q.msg);
  uint64_t took = o.t.t_done - c.at; /* the loop's clock can trail by a tick */
  cr_assert_geq(took, 295, "took %llu ms", (unsigned long long)took);
  cr_assert_lt(took, 2000, "took %llu ms", (unsigned long long)took);
  cr_assert_eq(ascope_postgres_stat("broken"), 1);
  proxy_stop(&p); /* PQcancel returns, its job ends */
}

static void stop_then_release(ascope *s, t_scope *t) {
  (void)t;
  ascope_sql_stream(s, ascope_resource(s, 0), "SELECT g FROM generate_series(1, 5000000) g", NULL,
                    stop_at_once, NULL, NULL);
}

Test(postgres_faults, a_release_waiting_on_a_cancel_request_is_aborted) {
  static struct proxy p;
  const char *dsn = proxy_start(&p);
  cr_assert_eq(ascope_rt_set_release_timeout(T_rt, 200), 0);
  t_scope t = {.body = stop_then_release};
  ascope *s = ascope_new(T_rt);
  ascope_use_postgres(s, dsn, "batch=10");
  cr_assert_eq(t_run(s, &t), ASCOPE_ETIMEDOUT);
  cr_assert(strstr(t.msg, "release did not complete"), "%s", t.msg);
  /* from the scope's start, the connect included: bounded, not for ever */
  cr_assert_lt(t.t_done - t.t_start, 8000);
  cr_assert_eq(ascope_postgres_stat("aborted"), 1);
  proxy_stop(&p);
}
