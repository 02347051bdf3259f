/* bench/scope_bench: the cost of opening and closing a scope.
 *
 * A no-op driver (acquire and release complete at once) isolates the core's
 * own overhead: allocation, the run queue, the state machine. Scopes are
 * started in batches and the loop drains them; the figure is wall time per
 * scope. Mallocs are counted through ascope_set_allocator() after a warm-up,
 * so "0" means the steady state recycles every object.
 *
 * The last cases turn observation on: a trace hook that does nothing (the
 * cost of building the events), the JSON writer into /dev/null (formatting,
 * without the disk) and timing alone (the clock reads of acquire_ns and
 * release_ns). The first four are what tracing costs when it is off.
 *
 *   bench/scope_bench [scopes] [off | text]   (default 2,000,000 per case;
 *       "off": only the cases without observation; text: the case of that
 *       name)
 */
#include <ascope/driver.h>
#include <ascope/trace.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static unsigned long long mallocs;
static void *count_malloc(size_t n) {
  mallocs++;
  return malloc(n);
}
static void *count_realloc(void *p, size_t n) {
  mallocs++;
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
static void noop_abort(ascope_res *r) {
  (void)r;
}
static const ascope_driver noop = {
    .abi = ASCOPE_DRIVER_ABI,
    .name = "noop",
    .state_size = 16,
    .acquire = noop_acquire,
    .release = noop_release,
    .abort = noop_abort,
};

enum observe { OFF, HOOK, JSON, TIMING };

struct bench_case {
  const char *name;
  int uses;
  int nested; /* the body opens a child with the same uses */
  enum observe observe;
};

static void noop_hook(const ascope_trace_event *ev, void *ud) {
  (void)ev;
  (void)ud;
}

static unsigned long long completed;
static void on_done(ascope *s, int status, void *ud) {
  (void)s;
  (void)ud;
  if (status == 0) completed++;
}

static void child_body(ascope *s, void *ud) {
  const struct bench_case *c = ud;
  ascope *child = ascope_child(s);
  for (int i = 0; i < c->uses; i++) ascope_use(child, &noop, NULL, NULL);
  ascope_start(child, NULL, on_done, NULL);
}

static void open_batch(ascope_rt *rt, const struct bench_case *c, int n) {
  for (int k = 0; k < n; k++) {
    ascope *s = ascope_new(rt);
    for (int i = 0; i < c->uses; i++) ascope_use(s, &noop, NULL, NULL);
    ascope_start(s, c->nested ? child_body : NULL, on_done, (void *)c);
  }
}

static double now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e9 + ts.tv_nsec;
}

#define BATCH 1000

static void run_case(ascope_rt *rt, const struct bench_case *c, long total) {
  ascope_trace_json *json = NULL;
  if (c->observe == HOOK) ascope_rt_set_trace(rt, noop_hook, NULL);
  if (c->observe == JSON && ascope_trace_json_open(rt, "/dev/null", &json) != 0) return;
  if (c->observe == TIMING) ascope_rt_set_timing(rt, 1);
  for (int w = 0; w < 20; w++) { /* warm-up: grow the caches */
    open_batch(rt, c, BATCH);
    ascope_rt_run(rt);
  }
  completed = 0;
  mallocs = 0;
  double t0 = now_ns();
  for (long done = 0; done < total; done += BATCH) {
    open_batch(rt, c, BATCH);
    ascope_rt_run(rt);
  }
  double ns = (now_ns() - t0) / (double)total;
  if (json) ascope_trace_json_close(json);
  ascope_rt_set_trace(rt, NULL, NULL);
  ascope_rt_set_timing(rt, 0);
  unsigned long long expect = (unsigned long long)total * (c->nested ? 2 : 1);
  printf("| %-26s | %10.1f | %12.3f | %s\n", c->name, ns, (double)mallocs / (double)total,
         completed == expect ? "ok" : "MISSING COMPLETIONS");
}

int main(int argc, char **argv) {
  long total = argc > 1 ? atol(argv[1]) : 2000000;
  const char *filter = argc > 2 ? argv[2] : NULL;
  int only_off = filter && strcmp(filter, "off") == 0;
  total = (total + BATCH - 1) / BATCH * BATCH;
  if (ascope_set_allocator(count_malloc, count_realloc, free) != 0) return 1;
  ascope_rt *rt = ascope_rt_new(NULL);
  static const struct bench_case cases[] = {
      {"0 uses", 0, 0, OFF},
      {"1 use", 1, 0, OFF},
      {"3 uses", 3, 0, OFF},
      {"1 use + nested child (1)", 1, 1, OFF},
      {"1 use, trace hook (no-op)", 1, 0, HOOK},
      {"3 uses, trace hook (no-op)", 3, 0, HOOK},
      {"1 use, JSON to /dev/null", 1, 0, JSON},
      {"1 use, timing", 1, 0, TIMING},
  };
  printf("scope open+close, %ld scopes per case, batches of %d\n\n", total, BATCH);
  printf("| %-26s | %10s | %12s |\n", "case", "ns/scope", "mallocs/scope");
  printf("|----------------------------|------------|--------------|\n");
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
    if (only_off ? cases[i].observe == OFF : !filter || strcmp(cases[i].name, filter) == 0)
      run_case(rt, &cases[i], total);
  ascope_rt_free(rt);
  return 0;
}
