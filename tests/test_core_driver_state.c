/* A driver's per-runtime state (ascope_rt_driver_state) and its counters
 * under "<driver>.<counter>" (ascope_driver_set_stats): made once per
 * runtime and driver, zeroed, distinct per runtime and per driver, its fini
 * run exactly once when the runtime is freed (after the last release, on
 * the runtime's own loop and on a caller's), NULL when memory runs out. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "ascope/driver.h"

TestSuite(driver_state, .timeout = 60);

/* ---- a driver that keeps its counters per runtime ----------------------------------- */

struct dstate {
  long acquired, released;
  unsigned char rest[200]; /* zeroed too */
};

static const ascope_driver counting;
static int finis;                /* fini calls */
static long fini_released;       /* what the last fini found */
static struct dstate *fini_seen; /* the state it was given */

static void dstate_fini(void *state) {
  struct dstate *d = state;
  finis++;
  fini_released = d->released;
  fini_seen = d;
}

static struct dstate *dstate_of(ascope_rt *rt) {
  return ascope_rt_driver_state(rt, &counting, sizeof(struct dstate), dstate_fini);
}

static void c_acquire(ascope_res *r, const void *arg, const char *options) {
  (void)arg, (void)options;
  struct dstate *d = dstate_of(ascope_res_rt(r));
  if (d == NULL) {
    ascope_res_done(r, UV_ENOMEM, NULL, "out of memory");
    return;
  }
  d->acquired++;
  ascope_res_done(r, 0, NULL, NULL);
}

static void c_release(ascope_res *r, int outcome) {
  (void)outcome;
  dstate_of(ascope_res_rt(r))->released++;
  ascope_res_done(r, 0, NULL, NULL);
}

static void c_abort(ascope_res *r) {
  (void)r;
}

static const ascope_driver counting = {
    .abi = ASCOPE_DRIVER_ABI,
    .name = "counting",
    .state_size = 8,
    .acquire = c_acquire,
    .release = c_release,
    .abort = c_abort,
};
static const ascope_driver other = {.abi = ASCOPE_DRIVER_ABI, .name = "other"};
static const ascope_driver imposter = {.abi = ASCOPE_DRIVER_ABI, .name = "counting"};
static const ascope_driver reserved = {.abi = ASCOPE_DRIVER_ABI, .name = "errors"};

static int64_t counting_stat(void *state, const char *counter) {
  struct dstate *d = state;
  if (strcmp(counter, "acquired") == 0) return d ? d->acquired : 0;
  if (strcmp(counter, "released") == 0) return d ? d->released : 0;
  return UV_EINVAL;
}

static void reset(void) {
  finis = 0;
  fini_released = -1;
  fini_seen = NULL;
}

static void body(ascope *s, void *ud) {
  (void)s, (void)ud;
}

static void done(ascope *s, int status, void *ud) {
  (void)s;
  *(int *)ud = status;
}

/* n scopes, each with one use of the counting driver, run to their end. */
static void run_scopes(ascope_rt *rt, int n) {
  for (int i = 0; i < n; i++) {
    int status = 1;
    ascope *s = ascope_new(rt);
    cr_assert_not_null(s);
    cr_assert_eq(ascope_use(s, &counting, NULL, NULL), 0);
    cr_assert_eq(ascope_start(s, body, done, &status), 0);
    cr_assert_eq(ascope_rt_run(rt), 0);
    cr_assert_eq(status, 0);
  }
}

/* ---- the state -------------------------------------------------------------------------- */

Test(driver_state, made_once_zeroed_same_pointer) {
  reset();
  ascope_rt *rt = ascope_rt_new(NULL);
  cr_assert_not_null(rt);
  struct dstate *d = dstate_of(rt);
  cr_assert_not_null(d);
  for (size_t i = 0; i < sizeof d->rest; i++) cr_assert_eq(d->rest[i], 0);
  cr_assert_eq(d->acquired, 0);
  memset(d->rest, 0xab, sizeof d->rest); /* all of it is ours */
  cr_assert_eq(dstate_of(rt), d);
  /* the first call's size and fini stand */
  cr_assert_eq(ascope_rt_driver_state(rt, &counting, 1, NULL), d);
  cr_assert_eq(finis, 0);
  cr_assert_eq(ascope_rt_free(rt), 0);
  cr_assert_eq(finis, 1);
  cr_assert_eq(fini_seen, d);
}

Test(driver_state, distinct_per_runtime_and_per_driver) {
  reset();
  ascope_rt *a = ascope_rt_new(NULL), *b = ascope_rt_new(NULL);
  cr_assert_not_null(a);
  cr_assert_not_null(b);
  void *da = dstate_of(a), *db = dstate_of(b);
  void *oa = ascope_rt_driver_state(a, &other, 16, NULL);
  cr_assert_not_null(da);
  cr_assert_not_null(db);
  cr_assert_not_null(oa);
  cr_assert_neq(da, db);
  cr_assert_neq(da, oa);
  cr_assert_eq(ascope_rt_driver_state(a, &other, 16, NULL), oa);
  cr_assert_eq(dstate_of(a), da);
  cr_assert_eq(dstate_of(b), db);
  cr_assert_eq(ascope_rt_free(a), 0);
  cr_assert_eq(finis, 1, "only a's state went");
  cr_assert_eq(fini_seen, da);
  cr_assert_eq(dstate_of(b), db);
  cr_assert_eq(ascope_rt_free(b), 0);
  cr_assert_eq(finis, 2);
  cr_assert_eq(fini_seen, db);
}

Test(driver_state, bad_arguments) {
  ascope_rt *rt = ascope_rt_new(NULL);
  cr_assert_not_null(rt);
  cr_assert_null(ascope_rt_driver_state(NULL, &counting, 8, NULL));
  cr_assert_null(ascope_rt_driver_state(rt, NULL, 8, NULL));
  cr_assert_not_null(ascope_rt_driver_state(rt, &other, 0, NULL), "an empty state is a state");
  cr_assert_null(ascope_rt_driver_state(rt, &counting, SIZE_MAX, NULL));
  cr_assert_eq(ascope_rt_free(rt), 0);
}

/* fini runs once, after the last release: what the releases counted is
 * there, and a runtime where the driver never worked runs none. */
Test(driver_state, fini_once_after_the_last_release) {
  reset();
  ascope_rt *rt = ascope_rt_new(NULL);
  cr_assert_not_null(rt);
  run_scopes(rt, 5);
  cr_assert_eq(finis, 0);
  cr_assert_eq(ascope_rt_free(rt), 0);
  cr_assert_eq(finis, 1);
  cr_assert_eq(fini_released, 5);
  reset();
  rt = ascope_rt_new(NULL);
  cr_assert_not_null(rt);
  cr_assert_eq(ascope_rt_free(rt), 0);
  cr_assert_eq(finis, 0, "no state, no fini");
}

/* On a caller's loop the runtime ends with its last handle's close
 * callback: fini runs there, once. */
Test(driver_state, fini_on_a_callers_loop) {
  reset();
  uv_loop_t loop;
  cr_assert_eq(uv_loop_init(&loop), 0);
  ascope_rt *rt = ascope_rt_new(&loop);
  cr_assert_not_null(rt);
  run_scopes(rt, 3);
  cr_assert_eq(ascope_rt_free(rt), 0);
  cr_assert_eq(finis, 0, "not before the close callbacks");
  cr_assert_eq(uv_run(&loop, UV_RUN_DEFAULT), 0);
  cr_assert_eq(finis, 1);
  cr_assert_eq(fini_released, 3);
  cr_assert_eq(uv_loop_close(&loop), 0);
}

/* A state is made before ascope_rt_free only: once freeing began, none. */
static void made_while_freeing(void *state) {
  (void)state;
  finis++;
}

Test(driver_state, none_made_while_freeing) {
  reset();
  uv_loop_t loop;
  cr_assert_eq(uv_loop_init(&loop), 0);
  ascope_rt *rt = ascope_rt_new(&loop);
  cr_assert_not_null(rt);
  void *d = ascope_rt_driver_state(rt, &counting, 8, made_while_freeing);
  cr_assert_not_null(d);
  cr_assert_eq(ascope_rt_free(rt), 0);
  cr_assert_eq(ascope_rt_driver_state(rt, &counting, 8, made_while_freeing), d, "made: still");
  cr_assert_null(ascope_rt_driver_state(rt, &other, 8, made_while_freeing));
  cr_assert_eq(uv_run(&loop, UV_RUN_DEFAULT), 0);
  cr_assert_eq(finis, 1);
  cr_assert_eq(uv_loop_close(&loop), 0);
}

/* ---- allocation failure ------------------------------------------------------------------ */

static int fail_next; /* the next allocation fails */
static long live;     /* blocks out */

static void *f_malloc(size_t n) {
  if (fail_next) {
    fail_next = 0;
    return NULL;
  }
  void *p = malloc(n);
  if (p) live++;
  return p;
}

static void *f_realloc(void *p, size_t n) {
  if (fail_next) {
    fail_next = 0;
    return NULL;
  }
  void *q = realloc(p, n);
  if (q && p == NULL) live++;
  return q;
}

static void f_free(void *p) {
  if (p) live--;
  free(p);
}

Test(driver_state, out_of_memory_is_null_then_made) {
  reset();
  live = 0;
  cr_assert_eq(ascope_set_allocator(f_malloc, f_realloc, f_free), 0);
  ascope_rt *rt = ascope_rt_new(NULL);
  cr_assert_not_null(rt);
  fail_next = 1;
  cr_assert_null(dstate_of(rt));
  cr_assert_eq(fail_next, 0, "the state was asked of the allocator");
  /* a use whose state cannot be made fails with UV_ENOMEM */
  int status = 1;
  ascope *s = ascope_new(rt);
  cr_assert_not_null(s);
  cr_assert_eq(ascope_use(s, &counting, NULL, NULL), 0);
  cr_assert_eq(ascope_start(s, body, done, &status), 0);
  fail_next = 1; /* the first allocation after: the resource's state, or ours */
  cr_assert_eq(ascope_rt_run(rt), 0);
  cr_assert(status == UV_ENOMEM || status == 0);
  fail_next = 0;
  struct dstate *d = dstate_of(rt);
  cr_assert_not_null(d, "made once memory is there");
  cr_assert_eq(dstate_of(rt), d);
  cr_assert_eq(ascope_rt_free(rt), 0);
  cr_assert_eq(finis, 1);
  cr_assert_eq(live, 0, "nothing left");
  cr_assert_eq(ascope_set_allocator(NULL, NULL, NULL), 0);
}

/* ---- counters: "<driver>.<counter>" -------------------------------------------------------- */

Test(driver_state, counters_per_runtime) {
  reset();
  cr_assert_eq(ascope_driver_set_stats(&counting, counting_stat), 0);
  cr_assert_eq(ascope_driver_set_stats(&counting, counting_stat), 0, "the same table again");
  cr_assert_eq(ascope_driver_set_stats(&imposter, counting_stat), UV_EEXIST);
  cr_assert_eq(ascope_driver_set_stats(&reserved, counting_stat), UV_EINVAL);
  cr_assert_eq(ascope_driver_set_stats(NULL, counting_stat), UV_EINVAL);
  cr_assert_eq(ascope_driver_set_stats(&other, NULL), UV_EINVAL);
  ascope_rt *a = ascope_rt_new(NULL), *b = ascope_rt_new(NULL);
  cr_assert_not_null(a);
  cr_assert_not_null(b);
  cr_assert_eq(ascope_rt_stat(a, "counting.acquired"), 0, "no state yet: 0");
  cr_assert_eq(ascope_rt_stat(a, "counting.nonsense"), UV_EINVAL);
  run_scopes(a, 4);
  run_scopes(b, 2);
  cr_assert_eq(ascope_rt_stat(a, "counting.acquired"), 4);
  cr_assert_eq(ascope_rt_stat(a, "counting.released"), 4);
  cr_assert_eq(ascope_rt_stat(b, "counting.acquired"), 2);
  cr_assert_eq(ascope_rt_stat(a, "scopes"), 4, "the core's names as before");
  cr_assert_eq(ascope_rt_stat(a, "errors.ETIMEDOUT"), 0);
  cr_assert_eq(ascope_rt_stat(a, "errors.nonsense"), UV_EINVAL);
  cr_assert_eq(ascope_rt_stat(a, "nobody.acquired"), UV_EINVAL, "no such driver");
  cr_assert_eq(ascope_rt_stat(a, "counting"), UV_EINVAL);
  cr_assert_eq(ascope_rt_stat(a, ".acquired"), UV_EINVAL);
  cr_assert_eq(ascope_rt_stat(a, "countin.acquired"), UV_EINVAL);
  cr_assert_eq(ascope_rt_free(a), 0);
  cr_assert_eq(ascope_rt_free(b), 0);
  cr_assert_eq(finis, 2);
}
