#include <criterion/criterion.h>

#include "test_driver.h"

static int done_calls, done_status;
static void on_done(ascope *s, int status, void *ud) {
  (void)s;
  (void)ud;
  done_calls++;
  done_status = status;
}

Test(smoke, two_uses_release_in_reverse) {
  td_reset();
  ascope_rt *rt = ascope_rt_new(NULL);
  td_spec a = {.name = "a"}, b = {.name = "b", .acquire = TD_OK_LATE, .delay_ms = 5};
  ascope *s = ascope_new(rt);
  cr_assert_eq(td_use(s, &a), 0);
  cr_assert_eq(td_use(s, &b), 0);
  cr_assert_eq(ascope_start(s, NULL, on_done, NULL), 0);
  cr_assert_eq(done_calls, 0);
  ascope_rt_run(rt);
  cr_assert_eq(done_calls, 1);
  cr_assert_eq(done_status, 0);
  cr_assert_str_eq(td_log(), "+a +b -b -a");
  cr_assert_eq(ascope_rt_free(rt), 0);
}
