/* The HTTP driver under a storm of cancels: many scopes, each streaming the
 * 64 MiB file through one shared session and cancelled at a random moment,
 * so that transfers end in every phase (connecting, reading the head,
 * streaming) while other watchers share the loop: plain TCP clients that
 * open and close a connection after another, taking the descriptor numbers
 * libcurl has just freed. Before the driver closed its watch of a socket
 * libcurl had closed behind its back (libcurl 7.88 to 8.1 close a socket
 * still connecting without the close callback), libuv aborted in uv_run.
 *
 * The counts scale with ASCOPE_HTTP_STORM_SCOPES (default 400) and
 * ASCOPE_HTTP_STORM_ROUNDS (default 2); scripts/http-start provides the
 * server. */
#include <ascope/http.h>
#include <criterion/criterion.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uv_loop_t loop;
static ascope_rt *rt;

static const char *env(const char *name) {
  const char *v = getenv(name);
  cr_assert(v && *v,
            "%s is not set: start the test servers with scripts/http-start <build dir> and "
            "export the lines it prints (scripts/test does both)",
            name);
  return v;
}

static long env_long(const char *name, long dflt) {
  const char *v = getenv(name);
  return v && *v ? strtol(v, NULL, 10) : dflt;
}

static void setup(void) {
  cr_assert_eq(uv_loop_init(&loop), 0);
  rt = ascope_rt_new(&loop);
  cr_assert(rt);
}

static void teardown(void) {
  cr_assert_eq(ascope_rt_free(rt), 0);
  for (int i = 0; i < 20; i++) uv_run(&loop, UV_RUN_NOWAIT);
  cr_assert_eq(uv_loop_close(&loop), 0, "a libuv handle was left open");
}

TestSuite(http_storm, .init = setup, .fini = teardown, .timeout = 600);

/* ---- neighbours: other watchers of the loop ----------------------------------------- */

/* A TCP client fetching the 1 KiB file over a fresh connection, again and
 * again until told to stop: each connection takes the lowest free descriptor
 * number, often one libcurl has just closed. A round that does not finish
 * within its deadline means its socket lost its place in epoll. */
typedef struct neighbour {
  uv_tcp_t tcp;
  uv_connect_t conn;
  uv_write_t wr;
  uv_timer_t deadline;
  struct sockaddr_in addr;
  char buf[4096];
  size_t got;
  int rounds, failures, closing;
  int slow_ticks, slow_rounds; /* deadlines passed while still in epoll */
  bool stop;
  char why[128];
} neighbour;

static const char NB_REQUEST[] = "GET /static/1k.bin HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                 "Connection: close\r\n\r\n";

static void nb_round(neighbour *n);

static void nb_fail(neighbour *n, const char *why, int status) {
  if (n->failures++ == 0)
    snprintf(n->why, sizeof n->why, "%s: %s", why, status ? uv_strerror(status) : "");
}

static void nb_closed(uv_handle_t *handle) {
  neighbour *n = handle->data;
  n->closing = 0;
  n->rounds++;
  if (!n->stop) nb_round(n);
}

static void nb_end(neighbour *n) {
  if (n->closing) return;
  n->closing = 1;
  uv_timer_stop(&n->deadline);
  uv_close((uv_handle_t *)&n->tcp, nb_closed);
}

static void nb_alloc(uv_handle_t *handle, size_t hint, uv_buf_t *b) {
  (void)hint;
  neighbour *n = handle->data;
  *b = uv_buf_init(n->buf, sizeof n->buf);
}

static void nb_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *b) {
  (void)b;
  neighbour *n = stream->data;
  if (nread > 0) {
    n->got += (size_t)nread;
    return;
  }
  if (nread == 0) return;
  if (nread != UV_EOF)
    nb_fail(n, "read", (int)nread);
  else if (n->got < 1024)
    nb_fail(n, "a short response", 0);
  nb_end(n);
}

static void nb_written(uv_write_t *w, int status) {
  neighbour *n = w->data;
  if (status) {
    nb_fail(n, "write", status);
    nb_end(n);
  }
}

static void nb_connected(uv_connect_t *c, int status) {
  neighbour *n = c->data;
  if (status) {
    nb_fail(n, "connect", status);
    nb_end(n);
    return;
  }
  uv_buf_t b = uv_buf_init((char *)NB_REQUEST, sizeof NB_REQUEST - 1);
  uv_write(&n->wr, (uv_stream_t *)&n->tcp, &b, 1, nb_written);
  uv_read_start((uv_stream_t *)&n->tcp, nb_alloc, nb_read);
}

/* Whether fd is registered in the loop's epoll, from /proc/self/fdinfo:
 * tells a socket taken out of epoll from a server that is merely slow. */
static int in_epoll(int fd) {
  char path[64], line[256];
  snprintf(path, sizeof path, "/proc/self/fdinfo/%d", uv_backend_fd(&loop));
  FILE *f = fopen(path, "r");
  if (f == NULL) return -1;
  int found = 0, tfd;
  while (fgets(line, sizeof line, f))
    if (sscanf(line, "tfd: %d", &tfd) == 1 && tfd == fd) found = 1;
  fclose(f);
  return found;
}

/* A round past its deadline: a failure if its socket has left epoll (what a
 * watcher closed on a reused number does); merely slow if it is still
 * registered (a busy machine), up to 120 s. */
static void nb_timeout(uv_timer_t *t) {
  neighbour *n = t->data;
  uv_os_fd_t fd = -1;
  uv_fileno((uv_handle_t *)&n->tcp, &fd);
  int reg = in_epoll(fd);
  if (reg == 1 && ++n->slow_ticks < 12) {
    uv_timer_start(&n->deadline, nb_timeout, 10000, 0);
    return;
  }
  nb_fail(n, reg == 0 ? "no answer, and its socket is not in epoll" : "no answer within 120 s", 0);
  nb_end(n);
}

static void nb_round(neighbour *n) {
  if (n->slow_ticks) n->slow_rounds++;
  n->slow_ticks = 0;
  n->got = 0;
  cr_assert_eq(uv_tcp_init(&loop, &n->tcp), 0);
  n->tcp.data = n->conn.data = n->wr.data = n;
  uv_timer_start(&n->deadline, nb_timeout, 10000, 0);
  int rc = uv_tcp_connect(&n->conn, &n->tcp, (const struct sockaddr *)&n->addr, nb_connected);
  if (rc) {
    nb_fail(n, "connect", rc);
    nb_end(n);
  }
}

static void nb_start(neighbour *n, int port) {
  memset(n, 0, sizeof *n);
  uv_ip4_addr("127.0.0.1", port, &n->addr);
  uv_timer_init(&loop, &n->deadline);
  n->deadline.data = n;
  nb_round(n);
}

/* ---- the storm ----------------------------------------------------------------------- */

#define NB 4

typedef struct storm {
  char url[512];
  ascope *root, *parent; /* the session's scope; the victims' parent */
  ascope_http *h;
  long total, started, ended, cancelled, completed;
  long other;
  char other_msg[512];
  int parallel;
  unsigned seed;
  neighbour nb[NB];
  /* the session still serves a plain request afterwards */
  int after_status, after_http;
  size_t after_len;
  int root_status;
  char root_msg[512];
} storm;

typedef struct victim {
  storm *st;
  ascope *s;
  uv_timer_t timer;
  int finals;
} victim;

static void victim_freed(uv_handle_t *handle) {
  free(handle->data);
}

static void cancel_now(uv_timer_t *t) {
  victim *v = t->data;
  if (v->s) ascope_cancel(v->s);
}

static int victim_item(ascope *s, int status, ascope_http_resp *r, void *ud) {
  (void)s;
  victim *v = ud;
  if (r == NULL) v->finals++;
  return r ? ASCOPE_CONTINUE : status;
}

static void victim_body(ascope *s, void *ud) {
  victim *v = ud;
  v->s = s;
  ascope_http_req *q = ascope_http_req_new(v->st->h, "GET", v->st->url);
  cr_assert(q);
  cr_assert_eq(ascope_http_stream(s, q, victim_item, v, NULL), 0);
  uv_timer_start(&v->timer, cancel_now, (uint64_t)(rand_r(&v->st->seed) % 201), 0);
}

static void victim_start(storm *st);

static void victim_done(ascope *s, int status, void *ud) {
  victim *v = ud;
  storm *st = v->st;
  v->s = NULL;
  st->ended++;
  cr_assert_eq(v->finals, 1, "the stream's final call ran %d times", v->finals);
  if (status == ASCOPE_ECANCELED) {
    st->cancelled++;
  } else if (status == 0) {
    st->completed++; /* 64 MiB can arrive before the cancel */
  } else if (st->other++ == 0) {
    const ascope_err *e = ascope_error(s);
    snprintf(st->other_msg, sizeof st->other_msg, "%s: %s", ascope_err_name(status),
             e ? ascope_err_message(e) : "");
  }
  uv_timer_stop(&v->timer);
  v->timer.data = v;
  uv_close((uv_handle_t *)&v->timer, victim_freed);
  if (st->started < st->total) victim_start(st);
}

static void victim_start(storm *st) {
  victim *v = calloc(1, sizeof *v);
  cr_assert(v);
  v->st = st;
  uv_timer_init(&loop, &v->timer);
  v->timer.data = v;
  st->started++;
  ascope *c = ascope_child(st->parent);
  cr_assert(c);
  cr_assert_eq(ascope_start(c, victim_body, victim_done, v), 0);
}

static int after_cb(ascope *s, int status, ascope_http_resp *r, void *ud) {
  (void)s;
  storm *st = ud;
  st->after_status = status;
  if (r) {
    st->after_http = ascope_http_resp_status(r);
    ascope_http_resp_body(r, &st->after_len);
  }
  for (int i = 0; i < NB; i++) st->nb[i].stop = true;
  return 0;
}

static void after_body(ascope *s, void *ud) {
  storm *st = ud;
  char url[600];
  snprintf(url, sizeof url, "%s/static/1k.bin", env("ASCOPE_HTTP_URL"));
  cr_assert_eq(ascope_http_get(s, st->h, url, after_cb, st), 0);
}

static void victims_body(ascope *s, void *ud) {
  storm *st = ud;
  st->parent = s;
  for (int i = 0; i < st->parallel && st->started < st->total; i++) victim_start(st);
}

static void storm_done(ascope *s, int status, void *ud) {
  storm *st = ud;
  st->root_status = status;
  const ascope_err *e = ascope_error(s);
  snprintf(st->root_msg, sizeof st->root_msg, "%s", e ? ascope_err_message(e) : "");
}

static void root_body(ascope *s, void *ud);

static void run_storm(long total, int parallel) {
  static storm st;
  memset(&st, 0, sizeof st);
  snprintf(st.url, sizeof st.url, "%s/static/64m.bin", env("ASCOPE_HTTP_URL"));
  int port = 0;
  cr_assert_eq(sscanf(env("ASCOPE_HTTP_URL"), "http://127.0.0.1:%d", &port), 1);
  st.total = total;
  st.parallel = parallel;
  st.seed = (unsigned)env_long("ASCOPE_HTTP_STORM_SEED", (long)(uv_hrtime() % 1000000));
  cr_log_info("storm: %ld scopes, %d at a time, seed %u", total, parallel, st.seed);
  for (int i = 0; i < NB; i++) nb_start(&st.nb[i], port);

  ascope *s = ascope_new(rt);
  cr_assert_eq(ascope_use_http(s, NULL), 0);
  ascope_set_mode(s, ASCOPE_COLLECT_ALL);
  cr_assert_eq(ascope_start(s, root_body, storm_done, &st), 0);
  cr_assert_eq(ascope_rt_run(rt), 0);
  uv_run(&loop, UV_RUN_DEFAULT); /* the neighbours finish their last round */
  for (int i = 0; i < NB; i++) uv_close((uv_handle_t *)&st.nb[i].deadline, NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
  for (int i = 0; i < NB; i++) {
    cr_assert_eq(st.nb[i].failures, 0, "neighbour %d failed %d of %d rounds, first: %s", i,
                 st.nb[i].failures, st.nb[i].rounds, st.nb[i].why);
    cr_assert_gt(st.nb[i].rounds, 0);
  }
  cr_assert_eq(st.root_status, 0, "%s", st.root_msg);
  cr_assert_eq(st.ended, total, "%ld of %ld scopes ended", st.ended, total);
  cr_assert_eq(st.other, 0, "%ld scopes ended otherwise than cancelled or done, first: %s",
               st.other, st.other_msg);
  cr_assert_eq(st.after_status, 0);
  cr_assert_eq(st.after_http, 200);
  cr_assert_eq(st.after_len, 1024);
  cr_log_info(
      "storm: %ld cancelled, %ld complete; neighbours: %d %d %d %d rounds (%d slow)", st.cancelled,
      st.completed, st.nb[0].rounds, st.nb[1].rounds, st.nb[2].rounds, st.nb[3].rounds,
      st.nb[0].slow_rounds + st.nb[1].slow_rounds + st.nb[2].slow_rounds + st.nb[3].slow_rounds);
}

/* The root's body starts the victims in one child, so that the last
 * request, on the same session, follows once every victim has ended. */
static void victims_done(ascope *s, int status, void *ud) {
  (void)s;
  (void)status;
  storm *st = ud;
  ascope *c = ascope_child(st->root);
  cr_assert(c);
  cr_assert_eq(ascope_start(c, after_body, NULL, st), 0);
}

static void root_body(ascope *s, void *ud) {
  storm *st = ud;
  st->root = s;
  st->h = ascope_resource(s, 0);
  cr_assert(st->h);
  ascope *c = ascope_child(s);
  cr_assert(c);
  ascope_set_mode(c, ASCOPE_COLLECT_ALL);
  cr_assert_eq(ascope_start(c, victims_body, victims_done, st), 0);
}

Test(http_storm, random_cancels_of_64_streams_in_flight) {
  long scopes = env_long("ASCOPE_HTTP_STORM_SCOPES", 400);
  long rounds = env_long("ASCOPE_HTTP_STORM_ROUNDS", 2);
  for (long i = 0; i < rounds; i++) run_storm(scopes, 64);
}
