/* The template driver's tests: what each driver's tests show, on the
 * smallest driver. Success; a driver error with its code; the scope
 * cancelled mid-operation and during the acquire; a deadline; bad options;
 * the resource through a pool, reused; found by name. Each test runs the
 * loop to the end and checks that every resource was released. */
#include <criterion/criterion.h>
#include <string.h>

#include "countdown.h"

static ascope_rt *rt;

static void setup(void) {
  rt = ascope_rt_new(NULL);
  cr_assert_not_null(rt);
}

static void teardown(void) {
  cr_assert_eq(ascope_rt_free(rt), 0, "a scope never ended");
}

TestSuite(countdown, .init = setup, .fini = teardown, .timeout = 60);

struct run {
  int ticks;     /* how many to take */
  int seen;      /* callbacks */
  unsigned last; /* the value left at the last one */
  int status, done_calls;
  char code[16];
  ascope_countdown *c;
};

static int on_tick(ascope *s, int status, unsigned left, void *ud) {
  struct run *r = ud;
  r->seen++;
  r->last = left;
  if (status == 0 && r->seen < r->ticks)
    cr_assert_eq(ascope_countdown_tick(s, r->c, on_tick, r), 0);
  return status;
}

static void body(ascope *s, void *ud) {
  struct run *r = ud;
  r->c = ascope_countdown_resource(s, 0);
  cr_assert_not_null(r->c);
  cr_assert_eq(ascope_countdown_tick(s, r->c, on_tick, r), 0);
}

static void done(ascope *s, int status, void *ud) {
  struct run *r = ud;
  r->done_calls++;
  r->status = status;
  const ascope_err *e = ascope_error(s);
  if (e && ascope_err_code(e)) strncpy(r->code, ascope_err_code(e), sizeof r->code - 1);
}

static int run(struct run *r, unsigned start, const char *options, uint64_t timeout) {
  ascope *s = ascope_new(rt);
  cr_assert_eq(ascope_use_countdown(s, start, options), 0);
  if (timeout) cr_assert_eq(ascope_set_timeout(s, timeout), 0);
  cr_assert_eq(ascope_start(s, body, done, r), 0);
  cr_assert_eq(ascope_rt_run(rt), 0);
  cr_assert_eq(r->done_calls, 1);
  return r->status;
}

Test(countdown, ticks_count_down) {
  struct run r = {.ticks = 3};
  cr_assert_eq(run(&r, 5, NULL, 0), 0);
  cr_assert_eq(r.seen, 3);
  cr_assert_eq(r.last, 2);
}

Test(countdown, past_zero_is_the_drivers_error_with_its_code) {
  struct run r = {.ticks = 5};
  cr_assert_eq(run(&r, 2, NULL, 0), ASCOPE_EDRIVER);
  cr_assert_str_eq(r.code, "CD01");
  cr_assert_eq(r.seen, 3);
}

Test(countdown, a_deadline_cancels_the_tick_in_flight) {
  struct run r = {.ticks = 1};
  cr_assert_eq(run(&r, 5, "tick_ms=60000", 20), ASCOPE_ETIMEDOUT);
  cr_assert_eq(r.seen, 0, "a cancelled tick's callback is not called");
}

Test(countdown, a_deadline_during_the_acquire_cancels_it) {
  struct run r = {.ticks = 1};
  cr_assert_eq(run(&r, 5, "connect_ms=60000", 20), ASCOPE_ETIMEDOUT);
  cr_assert_eq(r.seen, 0);
}

Test(countdown, bad_options_fail_the_acquire_with_a_clear_error) {
  struct run r = {.ticks = 1};
  cr_assert_eq(run(&r, 5, "tick_ms=soon", 0), UV_EINVAL);
  struct run z = {.ticks = 1};
  cr_assert_eq(run(&z, 0, NULL, 0), UV_EINVAL);
}

static void body_pooled(ascope *s, void *ud) {
  struct run *r = ud;
  r->c = ascope_countdown_resource(s, 0);
  cr_assert_not_null(r->c, "a pool use is the driver's own resource");
  cr_assert_eq(ascope_countdown_tick(s, r->c, on_tick, r), 0);
}

Test(countdown, through_a_pool_one_counter_serves_scope_after_scope) {
  ascope_pool *p =
      ascope_pool_new(rt, ascope_countdown_driver(), (const void *)(uintptr_t)10, "max=1");
  cr_assert_not_null(p);
  for (int i = 0; i < 4; i++) {
    struct run r = {.ticks = 2};
    ascope *s = ascope_new(rt);
    cr_assert_eq(ascope_use_pool(s, p), 0);
    cr_assert_eq(ascope_start(s, body_pooled, done, &r), 0);
    cr_assert_eq(ascope_rt_run(rt), 0);
    cr_assert_eq(r.status, 0);
    cr_assert_eq(r.last, (unsigned)(10 - 2 * (i + 1)), "the same counter, going on");
  }
  cr_assert_eq(ascope_pool_stat(p, "created"), 1);
  ascope_pool_close(p, NULL, NULL);
  cr_assert_eq(ascope_rt_run(rt), 0);
}

Test(countdown, found_by_name) {
  char why[256];
  cr_assert_eq(ascope_driver_find("countdown", why, sizeof why), ascope_countdown_driver(), "%s",
               why);
}
