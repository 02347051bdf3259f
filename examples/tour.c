/* examples/tour: ascope in five scenes, each traced step by step.
 *
 * Every acquire and release is printed as it happens, with the time since
 * the tour began. The resources are simulated (examples/sim_driver.c) so the
 * core's behaviour shows plainly; the driver parts that follow use real
 * files, SQLite, PostgreSQL and HTTP when those drivers are built.
 *
 * ASCOPE_TRACE=tour-trace.json writes the whole run as a timeline to open
 * in ui.perfetto.dev or chrome://tracing (docs/guides/tracing.md). */
#include "tour.h"

#include <ascope/trace.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int failures;

static void expect(int status, int want, const char *scene) {
  if (status == want) return;
  printf("!! %s: expected %s, got %s\n", scene, tour_outcome(want), tour_outcome(status));
  failures++;
}

/* ---- 1. a scope with two uses ------------------------------------------------ */

static const sim_target db = {"db", 20, 5}, cache = {"cache", 10, 5};

static void query_body(ascope *s, void *ud) {
  (void)ud;
  tour_say("body: both resources held; running a query");
  sim_sleep(s, "query", 15, 0, NULL, NULL);
  ascope_return(s, strdup("42 rows"), free);
}

static void two_uses_done(ascope *s, int status, void *ud) {
  (void)ud;
  char *value = ascope_value(s);
  tour_say("done: %s, value \"%s\"", tour_outcome(status), value ? value : "");
  free(value);
  expect(status, 0, "two uses");
}

static void scene_two_uses(ascope_rt *rt) {
  tour_title("1. async with db, cache: acquired in order, released in reverse");
  ascope *s = ascope_new(rt);
  ascope_set_name(s, "1. two uses");
  sim_use(s, &db);
  sim_use(s, &cache);
  ascope_start(s, query_body, two_uses_done, NULL);
  ascope_rt_run(rt);
}

/* ---- 2. a timeout ------------------------------------------------------------ */

static void slow_body(ascope *s, void *ud) {
  (void)ud;
  tour_say("body: starting a 500 ms report under a 60 ms deadline");
  sim_sleep(s, "report", 500, 0, NULL, NULL);
}

static void timeout_done(ascope *s, int status, void *ud) {
  (void)ud;
  tour_say("done: %s", tour_outcome(status));
  tour_print_error(s);
  expect(status, ASCOPE_ETIMEDOUT, "timeout");
}

static void scene_timeout(ascope_rt *rt) {
  tour_title("2. asyncio.timeout(): the deadline cancels the body, releases still run");
  ascope *s = ascope_new(rt);
  ascope_set_name(s, "2. timeout");
  sim_use(s, &db);
  ascope_set_timeout(s, 60);
  ascope_start(s, slow_body, timeout_done, NULL);
  ascope_rt_run(rt);
}

/* ---- 3. a cancelled child ------------------------------------------------------ */

static const sim_target replica = {"replica", 10, 5}, primary = {"primary", 10, 5};

static void child_done(ascope *s, int status, void *ud) {
  (void)s;
  tour_say("child %s done: %s", (const char *)ud, tour_outcome(status));
}

static void child_body(ascope *s, void *ud) {
  tour_say("child %s: body", (const char *)ud);
  sim_sleep(s, ud, strcmp(ud, "slow") == 0 ? 400 : 40, 0, NULL, NULL);
}

static int cancel_slow(ascope *s, int status, void *unused, void *ud) {
  (void)s;
  (void)unused;
  tour_say("parent: giving up on the slow child");
  ascope_cancel(ud);
  return status;
}

static void parent_body(ascope *s, void *ud) {
  (void)ud;
  ascope *fast = ascope_child(s), *slow = ascope_child(s);
  ascope_set_name(fast, "fast child");
  ascope_set_name(slow, "slow child");
  sim_use(fast, &primary);
  sim_use(slow, &replica);
  ascope_start(fast, child_body, child_done, "fast");
  ascope_start(slow, child_body, child_done, "slow");
  sim_sleep(s, "patience", 80, 0, cancel_slow, slow);
}

static void parent_done(ascope *s, int status, void *ud) {
  (void)s;
  (void)ud;
  tour_say("parent done: %s (a child cancelled on purpose does not fail it)", tour_outcome(status));
  expect(status, 0, "cancelled child");
}

static void scene_cancel_child(ascope_rt *rt) {
  tour_title("3. a task group: one child cancelled, its sibling and parent carry on");
  ascope *s = ascope_new(rt);
  ascope_set_name(s, "3. task group");
  ascope_start(s, parent_body, parent_done, NULL);
  ascope_rt_run(rt);
}

/* ---- 4. a lock held in turn ---------------------------------------------------- */

static void locked_body(ascope *s, void *ud) {
  tour_say("worker %s: holds the lock", (const char *)ud);
  sim_sleep(s, ud, 20, 0, NULL, NULL);
}

static void locked_done(ascope *s, int status, void *ud) {
  (void)s;
  tour_say("worker %s: released the lock (%s)", (const char *)ud, tour_outcome(status));
}

static void scene_lock(ascope_rt *rt) {
  tour_title("4. async with lock: three scopes take it in turn, first come first served");
  ascope_lock *lock = ascope_lock_new(rt);
  static const char *names[] = {"A", "B", "C"};
  for (int i = 0; i < 3; i++) {
    ascope *s = ascope_new(rt);
    char name[32];
    snprintf(name, sizeof name, "4. worker %s", names[i]);
    ascope_set_name(s, name);
    ascope_use_lock(s, lock);
    ascope_start(s, locked_body, locked_done, (void *)names[i]);
  }
  ascope_rt_run(rt);
  ascope_lock_free(lock);
}

/* ---- 5. an error path ---------------------------------------------------------- */

static const sim_target a = {"inventory", 5, 5}, b = {"payments", 5, 5}, c = {"audit", 5, 5};

static void failing_body(ascope *s, void *ud) {
  (void)ud;
  tour_say("body: the payment fails; a slower shipping step is cancelled");
  sim_sleep(s, "charge card", 10, ASCOPE_EDRIVER, NULL, NULL);
  sim_sleep(s, "ship order", 200, 0, NULL, NULL);
}

static void failing_done(ascope *s, int status, void *ud) {
  (void)ud;
  tour_say("done: %s; every resource was released, each told the error", tour_outcome(status));
  tour_print_error(s);
  expect(status, ASCOPE_EDRIVER, "error path");
}

static void scene_error(ascope_rt *rt) {
  tour_title("5. an error: pending work is cancelled, all three uses are released");
  ascope *s = ascope_new(rt);
  ascope_set_name(s, "5. error path");
  sim_use(s, &a);
  sim_use(s, &b);
  sim_use(s, &c);
  ascope_start(s, failing_body, failing_done, NULL);
  ascope_rt_run(rt);
}

int main(void) {
  ascope_rt *rt = ascope_rt_new(NULL);
  if (rt == NULL) {
    fprintf(stderr, "tour: cannot create a runtime\n");
    return 1;
  }
  const char *trace_path = getenv("ASCOPE_TRACE");
  ascope_trace_json *trace = NULL;
  if (trace_path && *trace_path) {
    int rc = ascope_trace_json_open(rt, trace_path, &trace);
    if (rc) fprintf(stderr, "tour: cannot write %s: %s\n", trace_path, ascope_strerror(rc));
  }
  tour_say("ascope tour, library version %u.%u.%u", ascope_version() >> 16,
           (ascope_version() >> 8) & 0xff, ascope_version() & 0xff);
  scene_two_uses(rt);
  scene_timeout(rt);
  scene_cancel_child(rt);
  scene_lock(rt);
  scene_error(rt);
#ifdef TOUR_HAVE_FILE
  tour_title("6. files: an atomic report, and a failed write that loses nothing");
  failures += tour_file(rt) != 0;
#endif
#ifdef TOUR_HAVE_SQLITE
  tour_title("7. SQLite: the embedded default");
  failures += tour_sqlite(rt) != 0;
#endif
#ifdef TOUR_HAVE_POSTGRES
  if (getenv("ASCOPE_PG_DSN")) {
    tour_title("8. PostgreSQL");
    failures += tour_postgres(rt) != 0;
  }
#endif
#ifdef TOUR_HAVE_HTTP
  if (getenv("ASCOPE_HTTP_URL")) {
    tour_title("9. HTTP");
    failures += tour_http(rt) != 0;
  }
#endif
  if (trace) {
    int rc = ascope_trace_json_close(trace);
    if (rc)
      fprintf(stderr, "tour: writing %s failed: %s\n", trace_path, ascope_strerror(rc));
    else
      printf("\ntrace: %s (open it in ui.perfetto.dev or chrome://tracing)\n", trace_path);
  }
  ascope_rt_free(rt);
  printf("\n%s\n",
         failures ? "tour: something did not go as described" : "tour: all scenes as described");
  return failures ? 1 : 0;
}

char *tour_temp_dir(char *buf, size_t cap) {
  const char *root = getenv("TMPDIR"); /* where mkdtemp(3) users put scratch files */
  int n = snprintf(buf, cap, "%s/ascope-tour-XXXXXX", root && *root ? root : "/tmp");
  if (n < 0 || (size_t)n >= cap) return NULL;
  return mkdtemp(buf);
}
