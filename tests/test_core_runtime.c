/* The runtime: on the caller's loop inside an existing libuv program (with
 * handles of its own), keeping that loop alive exactly while scopes are
 * pending; ascope_rt_free on a caller's loop, then one more loop run, then
 * uv_loop_close succeeds; the rules of run and free. */
#include <criterion/criterion.h>

#include "test_driver.h"
#include "test_util.h"

TestSuite(runtime, .timeout = 60); /* a hang fails the test instead of stalling the run */

/* ---- on the caller's loop ------------------------------------------------------------ */

struct app {
  uv_loop_t loop;
  uv_timer_t ticker; /* the program's own handle */
  int ticks;
  bool ticker_closed;
  ascope_rt *rt;
  rec r;
  td_spec sp;
  td_op_stats st;
};

static void on_tick(uv_timer_t *t) {
  ((struct app *)t->data)->ticks++;
}

static void ticker_closed(uv_handle_t *h) {
  ((struct app *)h->data)->ticker_closed = true;
}

static void app_body(ascope *s, rec *r) {
  struct app *a = r->arg;
  cr_assert_eq(ascope_rt_loop(ascope_scope_rt(s)), &a->loop);
  cr_assert_eq(td_op_start(s, TD_OK_LATE, 15, 0, NULL, NULL, &a->st), 0);
}

/* The program stops its own handle once the scope is done. */
static void app_done_close_ticker(ascope *s, rec *r) {
  (void)s;
  struct app *a = r->arg;
  uv_close((uv_handle_t *)&a->ticker, ticker_closed);
}

static void app_init(struct app *a) {
  memset(a, 0, sizeof *a);
  td_reset();
  cr_assert_eq(uv_loop_init(&a->loop), 0);
  cr_assert_eq(uv_timer_init(&a->loop, &a->ticker), 0);
  a->ticker.data = a;
  cr_assert_eq(uv_timer_start(&a->ticker, on_tick, 1, 1), 0);
  a->rt = ascope_rt_new(&a->loop);
  cr_assert_not_null(a->rt);
  cr_assert_eq(ascope_rt_loop(a->rt), &a->loop);
  a->sp = (td_spec){.name = "a", .release = TD_OK_LATE, .delay_ms = 2};
}

static void app_finish(struct app *a) {
  cr_assert_eq(ascope_rt_free(a->rt), 0);
  /* the caller runs its loop once more: the runtime's handles close and its
   * memory goes */
  cr_assert_eq(uv_run(&a->loop, UV_RUN_DEFAULT), 0);
  cr_assert_eq(uv_loop_close(&a->loop), 0, "a handle was left open on the caller's loop");
  cr_assert_eq(td_live(), 0);
}

/* The program drives its own loop with uv_run; scopes progress inside it. */
Test(runtime, on_callers_loop_driven_by_uv_run) {
  static struct app a;
  app_init(&a);
  ascope *s = ascope_new(a.rt);
  cr_assert_eq(td_use(s, &a.sp), 0);
  a.r = (rec){.body = app_body, .on_done = app_done_close_ticker, .arg = &a};
  cr_assert_eq(rec_start(s, &a.r), 0);
  /* returns when the program's ticker is closed and the runtime is idle */
  cr_assert_eq(uv_run(&a.loop, UV_RUN_DEFAULT), 0);
  assert_done(&a.r, 0);
  cr_assert(a.ticker_closed);
  cr_assert_gt(a.ticks, 0, "the program's own timer did not run alongside");
  cr_assert_str_eq(td_log(), "+a -a");
  app_finish(&a);
}

/* The program uses ascope_rt_run: it returns when the scope is done, while
 * the program's own handle is still active. */
Test(runtime, on_callers_loop_driven_by_rt_run) {
  static struct app a;
  app_init(&a);
  ascope *s = ascope_new(a.rt);
  cr_assert_eq(td_use(s, &a.sp), 0);
  a.r = (rec){.body = app_body, .arg = &a};
  cr_assert_eq(rec_start(s, &a.r), 0);
  cr_assert_eq(ascope_rt_run(a.rt), 0);
  assert_done(&a.r, 0);
  cr_assert(uv_is_active((uv_handle_t *)&a.ticker));
  cr_assert_gt(a.ticks, 0);
  uv_close((uv_handle_t *)&a.ticker, ticker_closed);
  app_finish(&a);
  cr_assert(a.ticker_closed);
}

/* An idle runtime never keeps the caller's loop alive. */
Test(runtime, idle_runtime_does_not_keep_loop_alive) {
  uv_loop_t loop;
  cr_assert_eq(uv_loop_init(&loop), 0);
  ascope_rt *rt = ascope_rt_new(&loop);
  cr_assert_not_null(rt);
  cr_assert_eq(uv_loop_alive(&loop), 0);
  cr_assert_eq(uv_run(&loop, UV_RUN_DEFAULT), 0); /* returns at once */
  /* and after scopes ran, again */
  ascope *s = ascope_new(rt);
  rec r = {0};
  cr_assert_eq(rec_start(s, &r), 0);
  cr_assert_neq(uv_loop_alive(&loop), 0, "a pending scope must keep the loop alive");
  cr_assert_eq(uv_run(&loop, UV_RUN_DEFAULT), 0);
  assert_done(&r, 0);
  cr_assert_eq(uv_loop_alive(&loop), 0);
  cr_assert_eq(ascope_rt_free(rt), 0);
  cr_assert_eq(uv_run(&loop, UV_RUN_DEFAULT), 0);
  cr_assert_eq(uv_loop_close(&loop), 0);
}

/* Between ascope_rt_free and the loop run that completes it, the runtime
 * refuses new work and a second free. */
Test(runtime, callers_loop_free_then_run) {
  uv_loop_t loop;
  cr_assert_eq(uv_loop_init(&loop), 0);
  ascope_rt *rt = ascope_rt_new(&loop);
  /* make the runtime own a few scope timers that must be closed too */
  for (int i = 0; i < 3; i++) {
    ascope *s = ascope_new(rt);
    cr_assert_eq(ascope_set_timeout(s, 1000), 0);
    cr_assert_eq(ascope_start(s, NULL, NULL, NULL), 0);
  }
  cr_assert_eq(ascope_rt_run(rt), 0);
  cr_assert_eq(ascope_rt_free(rt), 0);
  cr_assert_null(ascope_new(rt), "a scope from a runtime being freed");
  cr_assert_eq(ascope_rt_free(rt), ASCOPE_ECLOSED);
  cr_assert_eq(uv_run(&loop, UV_RUN_NOWAIT), 0);
  cr_assert_eq(uv_loop_close(&loop), 0);
}

/* Two runtimes on one caller's loop work side by side. */
Test(runtime, two_runtimes_one_loop) {
  td_reset();
  uv_loop_t loop;
  cr_assert_eq(uv_loop_init(&loop), 0);
  ascope_rt *r1 = ascope_rt_new(&loop), *r2 = ascope_rt_new(&loop);
  td_spec a = {.name = "a", .acquire = TD_OK_LATE, .delay_ms = 5}, b = {.name = "b"};
  ascope *s1 = ascope_new(r1), *s2 = ascope_new(r2);
  cr_assert_eq(td_use(s1, &a), 0);
  cr_assert_eq(td_use(s2, &b), 0);
  rec x = {0}, y = {0};
  cr_assert_eq(rec_start(s1, &x), 0);
  cr_assert_eq(rec_start(s2, &y), 0);
  cr_assert_eq(uv_run(&loop, UV_RUN_DEFAULT), 0);
  assert_done(&x, 0);
  assert_done(&y, 0);
  cr_assert_eq(ascope_rt_free(r1), 0);
  cr_assert_eq(ascope_rt_free(r2), 0);
  cr_assert_eq(uv_run(&loop, UV_RUN_DEFAULT), 0);
  cr_assert_eq(uv_loop_close(&loop), 0);
}

/* ---- on its own loop ---------------------------------------------------------------- */

Test(runtime, own_loop_run_and_free) {
  td_reset();
  ascope_rt *rt = ascope_rt_new(NULL);
  cr_assert_not_null(rt);
  cr_assert_not_null(ascope_rt_loop(rt));
  /* nothing pending: returns at once */
  cr_assert_eq(ascope_rt_run(rt), 0);
  td_spec sp = {.name = "a", .acquire = TD_OK_LATE, .delay_ms = 3};
  ascope *s = ascope_new(rt);
  cr_assert_eq(td_use(s, &sp), 0);
  cr_assert_eq(ascope_set_timeout(s, 500), 0);
  rec r = {0};
  cr_assert_eq(rec_start(s, &r), 0);
  cr_assert_eq(ascope_rt_free(rt), ASCOPE_EBUSY);
  cr_assert_eq(ascope_rt_run(rt), 0);
  assert_done(&r, 0);
  /* run again with nothing pending */
  cr_assert_eq(ascope_rt_run(rt), 0);
  cr_assert_eq(ascope_rt_set_release_timeout(rt, 0), 0);
  cr_assert_eq(ascope_rt_free(rt), 0);
}

/* Release timeout 0: no bound; a slow release simply completes. */
Test(runtime, release_timeout_zero_is_unbounded) {
  td_reset();
  ascope_rt *rt = ascope_rt_new(NULL);
  cr_assert_eq(ascope_rt_set_release_timeout(rt, 0), 0);
  td_spec sp = {.name = "a", .release = TD_OK_LATE, .delay_ms = 20};
  ascope *s = ascope_new(rt);
  cr_assert_eq(td_use(s, &sp), 0);
  rec r = {0};
  cr_assert_eq(rec_start(s, &r), 0);
  cr_assert_eq(ascope_rt_run(rt), 0);
  assert_done(&r, 0);
  cr_assert_eq(sp.abort_calls, 0);
  cr_assert_eq(ascope_rt_free(rt), 0);
}
