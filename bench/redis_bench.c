/* bench/redis_bench: the Redis driver beside redis-benchmark, against the
 * same server in the same run.
 *
 * The workload is redis-benchmark's SET and GET tests, byte for byte (its
 * key "key:__rand_int__", which it leaves as is without -r, and its 3-byte
 * value "xxx"), n requests each, with 64 requests in flight on ONE connection:
 * each reply's callback sends the next command, so the window stays full.
 * The fair raw configuration for that is `redis-benchmark -c 1 -P 64`: one
 * connection, 64 commands pipelined. It sends them in lock-step (64, then
 * the next 64 once all replies are in); here the rounds stay 64 commands
 * too, as the server answers a round in one write and the driver sends
 * what the callbacks of one read sent in one write. The common `-c 64` (64 connections,
 * one request each in flight) is shown too: it measures the server's
 * per-connection work more than the client, and a single pipelined
 * connection beats it on a single-threaded server.
 *
 * Each case runs `rounds` times, redis-benchmark and ascope in turn, and the
 * best rate of each side is kept: on a shared machine the best run is the
 * one least disturbed by others.
 *
 *   bench/redis_bench [n] [rounds] [url]   (default 100,000, 3, $ASCOPE_REDIS_URL)
 */
#include <ascope/redis.h>

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define INFLIGHT 64

static long N = 100000;
static int rounds = 3;
static const char *url;
static char host[64], password[128];
static int port;

static double now_s(void) {
  return (double)uv_hrtime() / 1e9;
}

static void die(const char *what) {
  fprintf(stderr, "redis_bench: %s\n", what);
  exit(1);
}

/* ---- redis-benchmark ------------------------------------------------------------ */

/* The rate of test "SET" or "GET" in redis-benchmark's -q output. */
static double parse_rate(const char *out, const char *test) {
  char key[16];
  snprintf(key, sizeof key, "%s: ", test);
  const char *p = NULL, *q = out;
  while ((q = strstr(q, key)) != NULL) p = q++; /* the last: progress lines come first */
  return p ? strtod(p + strlen(key), NULL) : 0;
}

static void raw_run(const char *conf, double *set, double *get) {
  static char out[1 << 20];
  char cmd[512];
  snprintf(cmd, sizeof cmd,
           "redis-benchmark -h %s -p %d -a '%s' -t set,get -n %ld -q %s 2>/dev/null", host, port,
           password, N, conf);
  FILE *f = popen(cmd, "r");
  if (f == NULL) die("cannot run redis-benchmark");
  size_t n = 0, k;
  while ((k = fread(out + n, 1, sizeof out - 1 - n, f)) > 0) n += k;
  out[n] = '\0';
  if (pclose(f) != 0) die("redis-benchmark failed (is redis-tools installed?)");
  *set = parse_rate(out, "SET");
  *get = parse_rate(out, "GET");
  if (*set == 0 || *get == 0) die("cannot read redis-benchmark's output");
}

/* ---- ascope -------------------------------------------------------------------------- */

struct run {
  ascope_redis *r;
  long sent, done;
  bool get;
  double t0, t1;
};

static int on_reply(ascope *s, int status, const ascope_redis_reply *reply, void *ud);

static void send_one(ascope *s, struct run *x) {
  x->sent++;
  int rc = x->get ? ascope_redis_call(s, x->r, on_reply, x, "GET", "key:__rand_int__", NULL)
                  : ascope_redis_call(s, x->r, on_reply, x, "SET", "key:__rand_int__", "xxx", NULL);
  if (rc) die("cannot send");
}

static int on_reply(ascope *s, int status, const ascope_redis_reply *reply, void *ud) {
  struct run *x = ud;
  if (status != 0 || (x->get && ascope_redis_reply_type(reply) != ASCOPE_REDIS_STRING))
    die("a command failed");
  if (++x->done == N) x->t1 = now_s();
  if (x->sent < N) send_one(s, x);
  return 0;
}

static void body(ascope *s, void *ud) {
  struct run *x = ud;
  x->r = ascope_redis_resource(s, 0);
  x->t0 = now_s();
  for (int i = 0; i < INFLIGHT && x->sent < N; i++) send_one(s, x);
}

static void done(ascope *s, int status, void *ud) {
  (void)ud;
  if (status) {
    char buf[512];
    ascope_err_format(ascope_error(s), buf, sizeof buf);
    die(buf);
  }
}

static double ascope_run(ascope_rt *rt, bool get) {
  struct run x = {.get = get};
  ascope *s = ascope_new(rt);
  if (ascope_use_redis(s, url, NULL) || ascope_start(s, body, done, &x)) die("cannot start");
  ascope_rt_run(rt);
  return (double)N / (x.t1 - x.t0);
}

/* ---- main ------------------------------------------------------------------------------- */

static void parse_url(void) {
  /* redis://:password@host:port[/db], as scripts/redis-start prints it */
  const char *at = strrchr(url, '@');
  if (strncmp(url, "redis://:", 9) != 0 || at == NULL) die("the URL must be redis://:pw@host:port");
  snprintf(password, sizeof password, "%.*s", (int)(at - url - 9), url + 9);
  if (sscanf(at + 1, "%63[^:]:%d", host, &port) != 2) die("bad host:port in the URL");
}

static double best(double a, double b) {
  return a > b ? a : b;
}

int main(int argc, char **argv) {
  if (argc > 1) N = atol(argv[1]);
  if (argc > 2) rounds = atoi(argv[2]);
  url = argc > 3 ? argv[3] : getenv("ASCOPE_REDIS_URL");
  if (url == NULL || N <= 0 || rounds <= 0)
    die("usage: redis_bench [n] [rounds] [url]; or set ASCOPE_REDIS_URL (scripts/redis-start)");
  parse_url();
  ascope_rt *rt = ascope_rt_new(NULL);
  double p_set = 0, p_get = 0, c_set = 0, c_get = 0, a_set = 0, a_get = 0, s, g;
  for (int i = 0; i < rounds; i++) {
    raw_run("-c 1 -P 64", &s, &g);
    p_set = best(p_set, s), p_get = best(p_get, g);
    raw_run("-c 64", &s, &g);
    c_set = best(c_set, s), c_get = best(c_get, g);
    a_set = best(a_set, ascope_run(rt, false));
    a_get = best(a_get, ascope_run(rt, true));
  }
  ascope_rt_free(rt);
  printf("redis_bench: %ld requests per test, %d in flight on one connection, best of %d\n", N,
         INFLIGHT, rounds);
  printf("| %-4s | %27s | %26s | %14s | %7s | %7s |\n", "test", "redis-benchmark -c 1 -P 64",
         "redis-benchmark -c 64", "ascope (1 conn)", "vs -P 64", "vs -c 64");
  printf("| SET  | %21.0f req/s | %20.0f req/s | %8.0f req/s | %6.2fx | %6.2fx |\n", p_set, c_set,
         a_set, a_set / p_set, a_set / c_set);
  printf("| GET  | %21.0f req/s | %20.0f req/s | %8.0f req/s | %6.2fx | %6.2fx |\n", p_get, c_get,
         a_get, a_get / p_get, a_get / c_get);
  return 0;
}
