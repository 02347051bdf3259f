/* bench/http_bench: ascope's HTTP driver beside wrk, against the same URL.
 *
 * ascope: N GETs of the 1 KiB file with K in flight on one session (each
 * completion starts the next request), timed from the first start to the
 * last completion, best of R rounds. wrk: `wrk -t1 -cK -dSs` against the same
 * URL, run by this program in the same run, best of R rounds too. The figure
 * is requests/s, and the ratio of the two bests.
 *
 *   ASCOPE_HTTP_URL=http://127.0.0.1:PORT bench/http_bench [N] [K] [S] [R]
 *   (defaults: 20000 requests, 64 in flight, wrk for 5 s, 3 rounds;
 *    scripts/http-start prints ASCOPE_HTTP_URL)
 */
#include <ascope/http.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct run {
  const char *url;
  ascope_http *h;
  long total, started, ok, failed;
  int in_flight;
  uint64_t t0, t1;
} run;

static int on_resp(ascope *s, int status, ascope_http_resp *r, void *ud);

static void next(ascope *s, run *x) {
  x->started++;
  if (ascope_http_get(s, x->h, x->url, on_resp, x) != 0) x->failed++;
}

static int on_resp(ascope *s, int status, ascope_http_resp *r, void *ud) {
  run *x = ud;
  size_t len = 0;
  if (status == 0 && ascope_http_resp_status(r) == 200 && ascope_http_resp_body(r, &len) && len)
    x->ok++;
  else
    x->failed++;
  if (x->started < x->total) next(s, x);
  if (x->ok + x->failed == x->total) x->t1 = uv_hrtime();
  return 0;
}

static void body(ascope *s, void *ud) {
  run *x = ud;
  x->h = ascope_resource(s, 0);
  x->t0 = uv_hrtime();
  for (int i = 0; i < x->in_flight && x->started < x->total; i++) next(s, x);
}

static double ascope_round(ascope_rt *rt, const char *url, long n, int k) {
  run x = {.url = url, .total = n, .in_flight = k};
  char opts[64];
  snprintf(opts, sizeof opts, "max_connections=%d", k);
  ascope *s = ascope_new(rt);
  ascope_use_http(s, opts);
  ascope_start(s, body, NULL, &x);
  ascope_rt_run(rt);
  if (x.failed) fprintf(stderr, "http_bench: %ld requests failed\n", x.failed);
  return (double)x.ok / ((double)(x.t1 - x.t0) / 1e9);
}

/* wrk's "Requests/sec:" line; negative if wrk could not be run. */
static double wrk_round(const char *url, int k, int seconds, long *requests) {
  char cmd[2048], line[512];
  snprintf(cmd, sizeof cmd, "wrk -t1 -c%d -d%ds '%s' 2>&1", k, seconds, url);
  FILE *p = popen(cmd, "r");
  if (p == NULL) return -1;
  double rps = -1;
  *requests = 0;
  while (fgets(line, sizeof line, p)) {
    sscanf(line, "Requests/sec: %lf", &rps);
    long n;
    if (sscanf(line, " %ld requests in", &n) == 1) *requests = n;
  }
  if (pclose(p) != 0) return -1;
  return rps;
}

int main(int argc, char **argv) {
  const char *base = getenv("ASCOPE_HTTP_URL");
  if (base == NULL) {
    fprintf(stderr, "http_bench: set ASCOPE_HTTP_URL (scripts/http-start prints it)\n");
    return 2;
  }
  long n = argc > 1 ? atol(argv[1]) : 20000;
  int k = argc > 2 ? atoi(argv[2]) : 64;
  int secs = argc > 3 ? atoi(argv[3]) : 5;
  int rounds = argc > 4 ? atoi(argv[4]) : 3;
  char url[1024];
  snprintf(url, sizeof url, "%s/static/1k.bin", base);

  ascope_rt *rt = ascope_rt_new(NULL);
  double best = 0;
  for (int i = 0; i < rounds; i++) {
    double rps = ascope_round(rt, url, n, k);
    printf("ascope round %d: %.0f requests/s\n", i + 1, rps);
    if (rps > best) best = rps;
  }
  ascope_rt_free(rt);

  long wrk_n = 0;
  double wrk = -1;
  for (int i = 0; i < rounds; i++) {
    long got;
    double rps = wrk_round(url, k, secs, &got);
    if (rps < 0) break;
    printf("wrk round %d: %.0f requests/s\n", i + 1, rps);
    if (rps > wrk) {
      wrk = rps;
      wrk_n = got;
    }
  }
  printf("\n| client | requests | in flight | requests/s |\n|---|---:|---:|---:|\n");
  printf("| ascope-http (best of %d) | %ld | %d | %.0f |\n", rounds, n, k, best);
  if (wrk < 0) {
    printf("| wrk -t1 -c%d -d%ds | (wrk not found: scripts/deps bench) | | |\n", k, secs);
    return 1;
  }
  printf("| wrk -t1 -c%d -d%ds (best of %d) | %ld | %d | %.0f |\n", k, secs, rounds, wrk_n, k, wrk);
  printf("\nratio ascope/wrk: %.2f\n", best / wrk);
  return 0;
}
