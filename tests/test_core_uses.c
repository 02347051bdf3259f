/* Uses by index, checked; string targets copied; an error chain printed in
 * one call. */
#include <ascope/driver.h>
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "support/test_driver.h"

static ascope_rt *rt;

static void setup(void) {
  td_reset();
  rt = ascope_rt_new(NULL);
}

static void teardown(void) {
  cr_assert_eq(ascope_rt_free(rt), 0);
}

TestSuite(uses, .init = setup, .fini = teardown, .timeout = 60);

/* A driver whose state is the target string it was given, as it read it
 * when the acquire ran. */
struct echo_state {
  char seen[64];
};

static void echo_acquire(ascope_res *r, const void *arg, const char *options) {
  (void)options;
  struct echo_state *st = ascope_res_state(r);
  snprintf(st->seen, sizeof st->seen, "%s", arg ? (const char *)arg : "(null)");
  ascope_res_done(r, 0, NULL, NULL);
}

static void echo_release(ascope_res *r, int outcome) {
  (void)outcome;
  ascope_res_done(r, 0, NULL, NULL);
}

static const ascope_driver echo_driver = {.abi = ASCOPE_DRIVER_ABI,
                                          .name = "echo",
                                          .state_size = sizeof(struct echo_state),
                                          .acquire = echo_acquire,
                                          .release = echo_release};

struct seen {
  size_t echo_at, td_at;
  char target[64];
  void *as_echo, *as_td_wrong, *out_of_range;
  int done_calls, status;
  char formatted[512];
  int needed, small_needed;
  char small[16];
};

static void seen_body(ascope *s, void *ud) {
  struct seen *x = ud;
  struct echo_state *st = ascope_resource_of(s, x->echo_at, &echo_driver);
  if (st) snprintf(x->target, sizeof x->target, "%s", st->seen);
  x->as_echo = st;
  x->as_td_wrong = ascope_resource_of(s, x->echo_at, &td_driver);
  x->out_of_range = ascope_resource_of(s, 99, &echo_driver);
}

static void seen_done(ascope *s, int status, void *ud) {
  struct seen *x = ud;
  x->done_calls++;
  x->status = status;
  x->needed = ascope_err_format(ascope_error(s), x->formatted, sizeof x->formatted);
  x->small_needed = ascope_err_format(ascope_error(s), x->small, sizeof x->small);
}

Test(uses, a_string_target_is_copied_and_a_resource_is_checked_by_driver) {
  td_spec spec = {.name = "a"};
  struct seen x = {0};
  char target[32] = "first.db";
  ascope *s = ascope_new(rt);
  cr_assert_eq(ascope_use_count(s), 0);
  x.td_at = ascope_use_count(s);
  cr_assert_eq(td_use(s, &spec), 0);
  x.echo_at = ascope_use_count(s);
  cr_assert_eq(x.echo_at, 1);
  cr_assert_eq(ascope_use_str(s, &echo_driver, target, "k=v"), 0);
  cr_assert_eq(ascope_use_count(s), 2);
  strcpy(target, "overwritten"); /* the caller's buffer is the caller's again */
  cr_assert_eq(ascope_start(s, seen_body, seen_done, &x), 0);
  cr_assert_eq(ascope_rt_run(rt), 0);
  cr_assert_eq(x.done_calls, 1);
  cr_assert_eq(x.status, 0);
  cr_assert_str_eq(x.target, "first.db", "the driver saw the copy");
  cr_assert_not_null(x.as_echo);
  cr_assert_null(x.as_td_wrong, "another driver's state is never handed out");
  cr_assert_null(x.out_of_range);
  cr_assert_eq(x.needed, 0, "no error: nothing to print");
  cr_assert_str_eq(x.formatted, "");
}

Test(uses, bad_uses_are_refused_and_leave_the_scope_usable) {
  ascope *s = ascope_new(rt);
  cr_assert_eq(ascope_use_str(s, &echo_driver, NULL, NULL), UV_EINVAL);
  cr_assert_eq(ascope_use_str(NULL, &echo_driver, "x", NULL), UV_EINVAL);
  cr_assert_eq(ascope_use_count(s), 0, "a refused use took no index");
  cr_assert_eq(ascope_use_count(NULL), 0);
  cr_assert_null(ascope_resource_of(NULL, 0, &echo_driver));
  cr_assert_eq(ascope_use_str(s, &echo_driver, "x", NULL), 0);
  cr_assert_null(ascope_resource_of(s, 0, &echo_driver), "not acquired yet");
  cr_assert_null(ascope_resource_of(s, 0, NULL));
  struct seen x = {0};
  cr_assert_eq(ascope_start(s, NULL, seen_done, &x), 0);
  cr_assert_eq(ascope_use_str(s, &echo_driver, "y", NULL), ASCOPE_EBUSY);
  cr_assert_eq(ascope_rt_run(rt), 0);
  cr_assert_eq(x.done_calls, 1);
}

/* The first error, then what a release raised, in one call. */
static void failing_body(ascope *s, void *ud) {
  (void)ud;
  ascope_fail(s, ASCOPE_EDRIVER, "the body gave up");
}

Test(uses, an_error_chain_prints_in_one_call) {
  td_spec spec = {.name = "a", .release = TD_FAIL, .fail_status = UV_EIO};
  struct seen x = {0};
  ascope *s = ascope_new(rt);
  cr_assert_eq(td_use(s, &spec), 0);
  cr_assert_eq(ascope_start(s, failing_body, seen_done, &x), 0);
  cr_assert_eq(ascope_rt_run(rt), 0);
  cr_assert_eq(x.status, ASCOPE_EDRIVER);
  cr_log_info("%s", x.formatted);
  cr_assert(strstr(x.formatted, "ASCOPE_EDRIVER: the body gave up") == x.formatted, "%s",
            x.formatted);
  cr_assert(strstr(x.formatted, "\n  then, releasing: "), "%s", x.formatted);
  cr_assert(strstr(x.formatted, "EIO"), "the release's error is there: %s", x.formatted);
  cr_assert_eq(x.needed, (int)strlen(x.formatted));
  /* a buffer too small: cut, terminated, and the length needed returned */
  cr_assert_eq(x.small_needed, x.needed);
  cr_assert_eq(strlen(x.small), sizeof x.small - 1);
  cr_assert_eq(strncmp(x.small, x.formatted, sizeof x.small - 1), 0);
}

Test(uses, formatting_nothing_is_empty) {
  char buf[8] = "junk";
  cr_assert_eq(ascope_err_format(NULL, buf, sizeof buf), 0);
  cr_assert_str_eq(buf, "");
  cr_assert_eq(ascope_err_format(NULL, NULL, 0), 0);
}
