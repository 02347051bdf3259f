/* The generic pool over a driver written for the test: reuse, FIFO order
 * for 10,000 waiters, the acquire timeout kept apart from the scope's own
 * deadline, waiters cancelled and timed out at random never receiving a
 * resource, connect failures reaching the waiter, discard by outcome, check
 * and reset, idle_timeout with min, max_lifetime, and closing with
 * resources in use and waiters queued. */
#include <criterion/criterion.h>

#include "alloc_fail.h"
#include "test_driver.h"
#include "test_util.h"

/* ---- the pooled driver: counts everything, fails on request ------------- */

struct pd_res {
  int id;
  bool broken;
  ascope_res *r;
};

static struct {
  int acquires, releases, checks, resets, live, next_id;
  int fail_acquire; /* the next acquires fail with this status */
  int fail_reset;   /* resets fail with this */
  bool late;        /* acquires and resets complete on a later loop turn */
  int last_outcome;
  char last_options[128];
} pd;

static void pd_finish_acquire(void *ud) {
  ascope_res *r = ud;
  if (pd.fail_acquire) {
    ascope_res_done(r, pd.fail_acquire, "PD01", "the test driver refused");
    return;
  }
  struct pd_res *x = ascope_res_state(r);
  x->id = ++pd.next_id;
  x->r = r;
  pd.live++;
  ascope_res_done(r, 0, NULL, NULL);
}

static void pd_acquire(ascope_res *r, const void *arg, const char *options) {
  (void)arg;
  pd.acquires++;
  snprintf(pd.last_options, sizeof pd.last_options, "%s", options ? options : "");
  if (pd.late)
    cr_assert_eq(ascope_rt_post(ascope_res_rt(r), pd_finish_acquire, r), 0);
  else
    pd_finish_acquire(r);
}

static void pd_release(ascope_res *r, int outcome) {
  pd.releases++;
  pd.live--;
  pd.last_outcome = outcome;
  ascope_res_done(r, 0, NULL, NULL);
}

static void pd_abort(ascope_res *r) {
  (void)r;
}

static int pd_check(ascope_res *r) {
  pd.checks++;
  return ((struct pd_res *)ascope_res_state(r))->broken ? ASCOPE_ECLOSED : 0;
}

static void pd_finish_reset(void *ud) {
  ascope_res_done(ud, pd.fail_reset, NULL, pd.fail_reset ? "reset failed" : NULL);
}

static void pd_reset(ascope_res *r) {
  pd.resets++;
  if (pd.late)
    cr_assert_eq(ascope_rt_post(ascope_res_rt(r), pd_finish_reset, r), 0);
  else
    pd_finish_reset(r);
}

static const ascope_driver pd_driver = {
    .abi = ASCOPE_DRIVER_ABI,
    .name = "pooltest",
    .state_size = sizeof(struct pd_res),
    .acquire = pd_acquire,
    .release = pd_release,
    .abort = pd_abort,
    .check = pd_check,
    .reset = pd_reset,
};

static const ascope_driver pd_noreset = {
    .abi = ASCOPE_DRIVER_ABI,
    .name = "pooltest",
    .state_size = sizeof(struct pd_res),
    .acquire = pd_acquire,
    .release = pd_release,
    .abort = pd_abort,
    .check = pd_check,
};

/* The body notes the id of the resource it got (the state is reused once
 * the member is gone), then runs the test's body, kept here by rec. */
#define MAXREC 16
static struct {
  rec *r;
  void (*body)(ascope *, rec *);
} bodies[MAXREC];

/* ---- fixture ------------------------------------------------------------ */

static ascope_rt *rt;
static ascope_pool *pool;
static int closed_calls;

static void setup(void) {
  td_reset();
  memset(&pd, 0, sizeof pd);
  closed_calls = 0;
  pool = NULL;
  memset(bodies, 0, sizeof bodies);
  rt = ascope_rt_new(NULL);
  cr_assert_not_null(rt);
}

static void on_closed(void *ud) {
  (void)ud;
  closed_calls++;
}

/* Closes the pool (when the test left it open), runs until it is closed. */
static void close_pool(void) {
  if (pool == NULL) return;
  ascope_pool_close(pool, on_closed, NULL);
  pool = NULL;
  cr_assert_eq(ascope_rt_run(rt), 0);
  cr_assert_eq(closed_calls, 1, "closed ran %d times", closed_calls);
}

static void teardown(void) {
  close_pool();
  cr_assert_eq(ascope_rt_free(rt), 0);
  cr_assert_eq(pd.live, 0, "%d pooled resources never released", pd.live);
  cr_assert_eq(td_live(), 0);
}

TestSuite(pool, .init = setup, .fini = teardown, .timeout = 120);

static ascope_pool *make(const ascope_driver *drv, const char *options) {
  pool = ascope_pool_new(rt, drv, NULL, options);
  cr_assert_not_null(pool, "ascope_pool_new(%s)", options);
  return pool;
}

static int64_t pstat(const char *name) {
  return ascope_pool_stat(pool, name);
}

static void noting_body(ascope *s, rec *r) {
  r->user = r->res_in_body[0] ? ((struct pd_res *)r->res_in_body[0])->id : 0;
  for (int i = 0; i < MAXREC; i++)
    if (bodies[i].r == r && bodies[i].body) bodies[i].body(s, r);
}

/* A scope using the pool, with the body given (NULL: returns at once). */
static ascope *pool_scope(rec *r, void (*body)(ascope *, rec *)) {
  ascope *s = ascope_new(rt);
  cr_assert_not_null(s);
  cr_assert_eq(ascope_use_pool(s, pool), 0);
  for (int i = 0; i < MAXREC; i++)
    if (bodies[i].r == NULL || bodies[i].r == r) {
      bodies[i].r = r;
      bodies[i].body = body;
      r->body = noting_body;
      return s;
    }
  r->body = body;
  return s;
}

static int seen_id(rec *r) {
  return r->user;
}

/* ---- reuse --------------------------------------------------------------- */

Test(pool, a_resource_is_reused_by_one_scope_after_another) {
  make(&pd_driver, "max=2");
  int first = 0;
  for (int i = 0; i < 5; i++) {
    rec r = {0};
    cr_assert_eq(rec_start(pool_scope(&r, NULL), &r), 0);
    cr_assert_eq(ascope_rt_run(rt), 0);
    assert_done(&r, 0);
    if (i == 0) first = seen_id(&r);
    cr_assert_eq(seen_id(&r), first, "scope %d got resource %d, not the first one", i, seen_id(&r));
  }
  cr_assert_eq(pd.acquires, 1);
  cr_assert_eq(pd.resets, 5, "a reset after each use");
  cr_assert_eq(pstat("created"), 1);
  cr_assert_eq(pstat("size"), 1);
  cr_assert_eq(pstat("idle"), 1);
  cr_assert_eq(pstat("in_use"), 0);
  cr_assert_eq(pstat("acquired"), 5);
}

static void body_resource_of(ascope *s, rec *r) {
  r->arg = ascope_resource_of(s, 0, &pd_driver);
  cr_assert_null(ascope_resource_of(s, 0, &pd_noreset), "another table is not this driver");
}

Test(pool, resource_of_recognises_the_pooled_driver) {
  make(&pd_driver, NULL);
  rec r = {0};
  ascope *s = pool_scope(&r, body_resource_of);
  cr_assert_eq(rec_start(s, &r), 0);
  cr_assert_eq(ascope_rt_run(rt), 0);
  assert_done(&r, 0);
  cr_assert_eq(r.arg, r.res_in_body[0]);
}

Test(pool, min_members_open_at_once_and_options_reach_the_driver) {
  make(&pd_driver, "min=3 max=4 flavour=mint, acquire_timeout_ms=100");
  cr_assert_eq(ascope_rt_run(rt), 0);
  cr_assert_eq(pd.acquires, 3);
  cr_assert_eq(pstat("size"), 3);
  cr_assert_eq(pstat("idle"), 3);
  cr_assert_str_eq(pd.last_options, "flavour=mint", "the pool's own keys are not the driver's");
}

Test(pool, bad_options_make_no_pool) {
  const char *bad[] = {"max=0", "min=5 max=2", "acquire_timeout_ms=soon", "max=-1", "min"};
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
    cr_assert_null(ascope_pool_new(rt, &pd_driver, NULL, bad[i]), "%s", bad[i]);
  cr_assert_null(ascope_pool_new(NULL, &pd_driver, NULL, NULL));
  cr_assert_null(ascope_pool_new(rt, NULL, NULL, NULL));
  cr_assert_eq(ascope_use_pool(NULL, NULL), UV_EINVAL);
  cr_assert_eq(ascope_pool_stat(NULL, "size"), UV_EINVAL);
  make(&pd_driver, NULL);
  cr_assert_eq(pstat("no_such_counter"), UV_EINVAL);
  cr_assert_eq(pstat("max"), 10, "max defaults to 10");
  cr_assert_eq(pd.acquires, 0, "no pool that failed opened anything");
}

/* ---- FIFO under load ------------------------------------------------------ */

#define NWAIT 10000
static int order[NWAIT], norder, holders, max_holders;

static void hold_briefly(ascope *s, rec *r) {
  if (norder < NWAIT) order[norder++] = r->index;
  if (++holders > max_holders) max_holders = holders;
  cr_assert_eq(td_op_start(s, TD_OK_LATE, 0, 0, NULL, NULL, NULL), 0);
}

static void count_out(ascope *s, rec *r) {
  (void)s;
  if (r->body_calls) holders--;
}

Test(pool, ten_thousand_waiters_on_a_pool_of_four_are_served_in_order) {
  make(&pd_driver, "max=4 acquire_timeout_ms=0");
  static rec recs[NWAIT];
  memset(recs, 0, sizeof recs);
  norder = holders = max_holders = 0;
  for (int i = 0; i < NWAIT; i++) {
    recs[i].index = i;
    recs[i].on_done = count_out;
    cr_assert_eq(rec_start(pool_scope(&recs[i], hold_briefly), &recs[i]), 0);
  }
  cr_assert_eq(ascope_rt_run(rt), 0);
  for (int i = 0; i < NWAIT; i++) {
    chk_eq(recs[i].done_calls, 1, i);
    chk_eq(recs[i].done_status, 0, i);
  }
  cr_assert_eq(norder, NWAIT);
  for (int i = 0; i < NWAIT; i++) chk_eq(order[i], i, i);
  cr_assert_eq(max_holders, 4, "never more than the pool's size at once");
  cr_assert_eq(pd.acquires, 4);
  cr_assert_eq(pstat("created"), 4);
  cr_assert_eq(pstat("waiting"), 0);
  cr_assert_eq(pstat("in_use"), 0);
  cr_assert_gt(pstat("wait_ns"), 0);
}

/* ---- waiting: the pool's timeout, the scope's deadline, cancellation ------ */

static td_manual holder;

static void hold_until_told(ascope *s, rec *r) {
  (void)r;
  cr_assert_eq(td_manual_start(s, &holder), 0);
}

static void let_holder_go(ascope *s, rec *r) {
  (void)s;
  (void)r;
  td_manual_end(&holder, 0);
}

Test(pool, a_waiter_past_the_acquire_timeout_fails_with_pool_timeout) {
  make(&pd_driver, "max=1 acquire_timeout_ms=30");
  memset(&holder, 0, sizeof holder);
  rec a = {0}, b = {0};
  cr_assert_eq(rec_start(pool_scope(&a, hold_until_told), &a), 0);
  b.on_done = let_holder_go;
  cr_assert_eq(rec_start(pool_scope(&b, NULL), &b), 0);
  cr_assert_eq(ascope_rt_run(rt), 0);
  assert_done(&a, 0);
  assert_done(&b, ASCOPE_ETIMEDOUT);
  assert_err(&b, 0, ASCOPE_ETIMEDOUT, "pooltest", "POOL_TIMEOUT");
  cr_assert(strstr(b.err[0].msg, "30 ms"), "%s", b.err[0].msg);
  cr_assert_eq(b.body_calls, 0);
  cr_assert_eq(pstat("timeouts"), 1);
  cr_assert_eq(pstat("waiting"), 0);
  cr_assert_eq(pstat("acquired"), 1);
  /* the loop's clock counts whole milliseconds: a hair under 30 ms is 30 */
  cr_assert_geq(pstat("wait_ns"), 29 * 1000000ll, "the wait is counted");
}

Test(pool, the_scopes_own_deadline_is_not_the_pools_timeout) {
  make(&pd_driver, "max=1 acquire_timeout_ms=60000");
  memset(&holder, 0, sizeof holder);
  rec a = {0}, b = {0};
  cr_assert_eq(rec_start(pool_scope(&a, hold_until_told), &a), 0);
  ascope *s = pool_scope(&b, NULL);
  cr_assert_eq(ascope_set_timeout(s, 30), 0);
  b.on_done = let_holder_go;
  cr_assert_eq(rec_start(s, &b), 0);
  cr_assert_eq(ascope_rt_run(rt), 0);
  assert_done(&b, ASCOPE_ETIMEDOUT);
  cr_assert(strcmp(b.err[0].code, "POOL_TIMEOUT") != 0, "the scope's deadline, not the pool's");
  cr_assert_eq(pstat("timeouts"), 0);
  cr_assert_eq(pstat("waiting"), 0, "the waiter left the queue");
  cr_assert_eq(pstat("acquired"), 1);
}

/* Waiters cancelled and timed out at random while a pool of 2 serves the
 * rest: each ends once; those that failed never ran; those served were
 * served in order of arrival; nothing is left in use or waiting. */
#define NRAND 400
static rec rrecs[NRAND];
static ascope *rscopes[NRAND];
static tu_timer cancel_timers[NRAND];

static void cancel_it(void *arg) {
  ascope *s = arg;
  ascope_cancel(s);
}

Test(pool, waiters_cancelled_and_timed_out_at_random_never_receive_a_resource) {
  make(&pd_driver, "max=2 acquire_timeout_ms=0");
  srand(12345);
  memset(rrecs, 0, sizeof rrecs);
  norder = holders = max_holders = 0;
  int kinds[3] = {0};
  for (int i = 0; i < NRAND; i++) {
    rrecs[i].index = i;
    rrecs[i].on_done = count_out;
    rscopes[i] = pool_scope(&rrecs[i], hold_briefly);
    int kind = rand() % 3;
    kinds[kind]++;
    if (kind == 1) cr_assert_eq(ascope_set_timeout(rscopes[i], 1 + rand() % 20), 0);
    cr_assert_eq(rec_start(rscopes[i], &rrecs[i]), 0);
    if (kind == 2) {
      tu_after(ascope_rt_loop(rt), &cancel_timers[i], (uint64_t)(rand() % 20), cancel_it,
               rscopes[i]);
    }
  }
  cr_assert_eq(ascope_rt_run(rt), 0);
  /* A scope cancelled or timed out while it waited ends without a body; one
   * cancelled while its body held the resource ends failed after it. */
  int bodies = 0, gave_up = 0;
  for (int i = 0; i < NRAND; i++) {
    chk_eq(rrecs[i].done_calls, 1, i);
    bodies += rrecs[i].body_calls;
    if (rrecs[i].done_status == 0) chk_eq(rrecs[i].body_calls, 1, i);
    if (rrecs[i].body_calls == 0) {
      gave_up++;
      chk(rrecs[i].done_status == ASCOPE_ECANCELED || rrecs[i].done_status == ASCOPE_ETIMEDOUT, i);
    }
  }
  cr_assert_gt(bodies, 0);
  cr_assert_gt(gave_up, 0, "some waiters gave up");
  for (int i = 1; i < norder; i++) chk(order[i] > order[i - 1], i);
  cr_assert_eq(norder, bodies);
  cr_assert_leq(max_holders, 2);
  cr_assert_eq(pstat("waiting"), 0);
  cr_assert_eq(pstat("in_use"), 0);
  /* every resource handed out went to a scope whose body then ran: none
   * to a waiter that had left */
  cr_assert_eq(pstat("acquired"), bodies);
  /* cancel timers still to close: run the loop once more */
  uv_run(ascope_rt_loop(rt), UV_RUN_NOWAIT);
  (void)kinds;
}

/* ---- failures ------------------------------------------------------------- */

Test(pool, a_connect_failure_reaches_the_waiter_with_the_drivers_error) {
  make(&pd_driver, "max=2");
  pd.fail_acquire = ASCOPE_EDRIVER;
  rec a = {0};
  cr_assert_eq(rec_start(pool_scope(&a, NULL), &a), 0);
  cr_assert_eq(ascope_rt_run(rt), 0);
  assert_done(&a, ASCOPE_EDRIVER);
  assert_err(&a, 0, ASCOPE_EDRIVER, "pooltest", "PD01");
  cr_assert_eq(pstat("connect_errors"), 1);
  cr_assert_eq(pstat("size"), 0);
  pd.fail_acquire = 0;
  rec b = {0};
  cr_assert_eq(rec_start(pool_scope(&b, NULL), &b), 0);
  cr_assert_eq(ascope_rt_run(rt), 0);
  assert_done(&b, 0);
  cr_assert_eq(pstat("size"), 1);
}

Test(pool, a_late_connect_failure_fails_waiters_one_each_and_none_hangs) {
  make(&pd_driver, "max=2");
  pd.late = true;
  pd.fail_acquire = ASCOPE_EDRIVER;
  rec r[5] = {0};
  for (int i = 0; i < 5; i++) cr_assert_eq(rec_start(pool_scope(&r[i], NULL), &r[i]), 0);
  cr_assert_eq(ascope_rt_run(rt), 0);
  for (int i = 0; i < 5; i++) {
    assert_done(&r[i], ASCOPE_EDRIVER);
    assert_err(&r[i], 0, ASCOPE_EDRIVER, "pooltest", "PD01");
  }
  cr_assert_eq(pstat("connect_errors"), 5);
  cr_assert_eq(pstat("waiting"), 0);
}

static void fail_closed(ascope *s, rec *r) {
  (void)r;
  ascope_fail(s, ASCOPE_ECLOSED, "the resource broke");
}

Test(pool, an_outcome_of_eclosed_discards_the_resource) {
  make(&pd_driver, "max=1");
  rec a = {0}, b = {0};
  cr_assert_eq(rec_start(pool_scope(&a, fail_closed), &a), 0);
  cr_assert_eq(ascope_rt_run(rt), 0);
  assert_done(&a, ASCOPE_ECLOSED);
  cr_assert_eq(pd.releases, 1);
  cr_assert_eq(pd.last_outcome, ASCOPE_ECLOSED, "the driver's release sees the outcome");
  cr_assert_eq(pstat("discarded"), 1);
  cr_assert_eq(pd.resets, 0);
  cr_assert_eq(rec_start(pool_scope(&b, NULL), &b), 0);
  cr_assert_eq(ascope_rt_run(rt), 0);
  assert_done(&b, 0);
  cr_assert_eq(seen_id(&b), 2, "a new resource");
}

static void break_it(ascope *s, rec *r) {
  (void)s;
  ((struct pd_res *)r->res_in_body[0])->broken = true;
}

Test(pool, a_resource_the_check_finds_broken_is_not_handed_out) {
  make(&pd_driver, "max=1");
  rec a = {0}, b = {0};
  cr_assert_eq(rec_start(pool_scope(&a, break_it), &a), 0);
  cr_assert_eq(ascope_rt_run(rt), 0);
  assert_done(&a, 0);
  cr_assert_eq(pstat("idle"), 1, "reset succeeded: idle until checked");
  cr_assert_eq(rec_start(pool_scope(&b, NULL), &b), 0);
  cr_assert_eq(ascope_rt_run(rt), 0);
  assert_done(&b, 0);
  cr_assert_eq(seen_id(&b), 2);
  cr_assert_eq(pstat("discarded"), 1);
  cr_assert_eq(pd.releases, 1);
}

Test(pool, a_failed_reset_discards_the_resource) {
  make(&pd_driver, "max=1");
  pd.late = true;
  pd.fail_reset = ASCOPE_EDRIVER;
  rec a = {0};
  cr_assert_eq(rec_start(pool_scope(&a, NULL), &a), 0);
  cr_assert_eq(ascope_rt_run(rt), 0);
  assert_done(&a, 0);
  /* the scope ended before the reset: wait for it */
  while (pstat("resetting")) uv_run(ascope_rt_loop(rt), UV_RUN_ONCE);
  cr_assert_eq(pd.resets, 1);
  cr_assert_eq(pstat("discarded"), 1);
  cr_assert_eq(pstat("size"), 0);
  cr_assert_eq(pd.releases, 1);
}

static void fail_body(ascope *s, rec *r) {
  (void)r;
  ascope_fail(s, ASCOPE_EDRIVER, "the body failed");
}

Test(pool, without_a_reset_a_failed_scope_discards_and_a_good_one_keeps) {
  make(&pd_noreset, "max=1");
  rec a = {0}, b = {0}, c = {0};
  cr_assert_eq(rec_start(pool_scope(&a, NULL), &a), 0);
  cr_assert_eq(ascope_rt_run(rt), 0);
  cr_assert_eq(rec_start(pool_scope(&b, fail_body), &b), 0);
  cr_assert_eq(ascope_rt_run(rt), 0);
  cr_assert_eq(rec_start(pool_scope(&c, NULL), &c), 0);
  cr_assert_eq(ascope_rt_run(rt), 0);
  assert_done(&a, 0);
  assert_done(&b, ASCOPE_EDRIVER);
  assert_done(&c, 0);
  cr_assert_eq(seen_id(&a), 1);
  cr_assert_eq(seen_id(&b), 1, "a good scope's resource is kept");
  cr_assert_eq(seen_id(&c), 2, "a failed scope's resource is not");
  cr_assert_eq(pstat("discarded"), 1);
}

static void cancel_self(ascope *s, rec *r) {
  (void)r;
  ascope_cancel(s);
}

Test(pool, a_cancelled_scope_gives_its_resource_back_through_the_reset) {
  make(&pd_driver, "max=1");
  rec a = {0}, b = {0};
  cr_assert_eq(rec_start(pool_scope(&a, cancel_self), &a), 0);
  cr_assert_eq(ascope_rt_run(rt), 0);
  assert_done(&a, ASCOPE_ECANCELED);
  cr_assert_eq(rec_start(pool_scope(&b, NULL), &b), 0);
  cr_assert_eq(ascope_rt_run(rt), 0);
  assert_done(&b, 0);
  cr_assert_eq(seen_id(&b), 1);
  cr_assert_eq(pd.resets, 2);
}

/* ---- idle_timeout, min, max_lifetime -------------------------------------- */

static bool size_is_one(void *arg) {
  (void)arg;
  return ascope_pool_stat(pool, "size") == 1 && pd.releases == 2;
}
static void nothing(void *arg) {
  (void)arg;
}

static void hold_a_little(ascope *s, rec *r) {
  (void)r;
  cr_assert_eq(td_op_start(s, TD_OK_LATE, 5, 0, NULL, NULL, NULL), 0);
}

Test(pool, idle_resources_close_after_idle_timeout_down_to_min) {
  make(&pd_driver, "min=1 max=3 idle_timeout_ms=20");
  rec r[3] = {0};
  for (int i = 0; i < 3; i++) cr_assert_eq(rec_start(pool_scope(&r[i], hold_a_little), &r[i]), 0);
  cr_assert_eq(ascope_rt_run(rt), 0);
  for (int i = 0; i < 3; i++) assert_done(&r[i], 0);
  cr_assert_eq(pstat("size"), 3);
  static tu_timer w;
  tu_when(ascope_rt_loop(rt), &w, size_is_one, nothing, NULL);
  while (!w.fired && w.tries < 5000) uv_run(ascope_rt_loop(rt), UV_RUN_ONCE);
  cr_assert_eq(w.fired, 1, "the pool did not shrink to min (size %lld)", (long long)pstat("size"));
  cr_assert_eq(pd.releases, 2);
  cr_assert_eq(pstat("idle"), 1);
}

static bool one_discarded(void *arg) {
  (void)arg;
  return ascope_pool_stat(pool, "discarded") >= 1;
}

Test(pool, a_resource_past_max_lifetime_is_replaced) {
  make(&pd_driver, "max=1 max_lifetime_ms=30");
  rec a = {0}, b = {0};
  cr_assert_eq(rec_start(pool_scope(&a, NULL), &a), 0);
  cr_assert_eq(ascope_rt_run(rt), 0);
  static tu_timer w;
  tu_when(ascope_rt_loop(rt), &w, one_discarded, nothing, NULL);
  while (!w.fired && w.tries < 5000) uv_run(ascope_rt_loop(rt), UV_RUN_ONCE);
  cr_assert_eq(w.fired, 1);
  cr_assert_eq(rec_start(pool_scope(&b, NULL), &b), 0);
  cr_assert_eq(ascope_rt_run(rt), 0);
  assert_done(&b, 0);
  cr_assert_eq(seen_id(&a), 1);
  cr_assert_eq(seen_id(&b), 2);
}

/* ---- closing -------------------------------------------------------------- */

static rec close_b, close_c;

static void close_now(void *arg) {
  (void)arg;
  ascope_pool_close(pool, on_closed, NULL);
  ascope *late = ascope_new(rt);
  cr_assert_eq(ascope_use_pool(late, pool), ASCOPE_ECLOSED, "no new use of a closing pool");
  ascope_discard(late);
  cr_assert_eq(ascope_rt_free(rt), ASCOPE_EBUSY, "the runtime outlives its pools");
  td_manual_end(&holder, 0);
}

static bool two_waiting(void *arg) {
  (void)arg;
  return ascope_pool_stat(pool, "waiting") == 2;
}

Test(pool, closing_fails_the_waiters_and_waits_for_the_resources_in_use) {
  make(&pd_driver, "max=1");
  memset(&holder, 0, sizeof holder);
  rec a = {0};
  memset(&close_b, 0, sizeof close_b);
  memset(&close_c, 0, sizeof close_c);
  cr_assert_eq(rec_start(pool_scope(&a, hold_until_told), &a), 0);
  cr_assert_eq(rec_start(pool_scope(&close_b, NULL), &close_b), 0);
  cr_assert_eq(rec_start(pool_scope(&close_c, NULL), &close_c), 0);
  static tu_timer w;
  tu_when(ascope_rt_loop(rt), &w, two_waiting, close_now, NULL);
  cr_assert_eq(ascope_rt_run(rt), 0);
  cr_assert_eq(w.fired, 1);
  assert_done(&a, 0);
  assert_done(&close_b, ASCOPE_ECLOSED);
  assert_err(&close_b, 0, ASCOPE_ECLOSED, "pooltest", "POOL_CLOSED");
  assert_done(&close_c, ASCOPE_ECLOSED);
  cr_assert_eq(closed_calls, 1);
  cr_assert_eq(pd.releases, 1, "the resource in use closed once, when it came back");
  cr_assert_eq(pd.resets, 0, "a closing pool does not reset what it closes");
  pool = NULL;
}

Test(pool, closing_an_idle_pool_releases_every_resource_once) {
  make(&pd_driver, "min=3 max=3");
  cr_assert_eq(ascope_rt_run(rt), 0);
  close_pool();
  cr_assert_eq(pd.releases, 3);
}

Test(pool, closing_while_members_are_still_opening) {
  pd.late = true;
  make(&pd_driver, "min=2 max=2");
  close_pool(); /* before the connects completed */
  cr_assert_eq(pd.acquires, 2);
  cr_assert_eq(pd.releases, 2, "each member closed once it was open");
}

/* A member whose release never completes (a hung plugin, a server that
 * stopped answering) must not hold the close, and ascope_rt_run, for ever:
 * past the runtime's release timeout the driver's abort force-closes it. */
Test(pool, a_release_that_never_completes_is_aborted_at_the_release_timeout) {
  td_spec spec = {.name = "m", .acquire = TD_OK, .release = TD_HANG};
  cr_assert_eq(ascope_rt_set_release_timeout(rt, 20), 0);
  pool = ascope_pool_new(rt, &td_driver, &spec, "min=2 max=2");
  cr_assert_not_null(pool);
  cr_assert_eq(ascope_rt_run(rt), 0);
  cr_assert_eq(spec.acquire_calls, 2);
  cr_assert_eq(pstat("aborted"), 0);
  close_pool();
  cr_assert_eq(spec.release_calls, 2);
  cr_assert_eq(spec.abort_calls, 2);
  cr_assert_eq(ascope_rt_stat(rt, "aborted"), 2);
}

static void count_closed(void *ud) {
  ++*(int *)ud;
}

/* A release that fails (at once or later) still closes the member once:
 * nothing waits for an outcome nobody can act on. */
Test(pool, a_failing_release_closes_the_member_once) {
  td_spec now = {.name = "n", .acquire = TD_OK, .release = TD_FAIL};
  td_spec late = {.name = "l", .acquire = TD_OK, .release = TD_FAIL_LATE, .delay_ms = 5};
  pool = ascope_pool_new(rt, &td_driver, &now, "min=2 max=2");
  cr_assert_not_null(pool);
  ascope_pool *p2 = ascope_pool_new(rt, &td_driver, &late, "min=2 max=2");
  cr_assert_not_null(p2);
  cr_assert_eq(ascope_rt_run(rt), 0);
  int p2_closed = 0;
  ascope_pool_close(p2, count_closed, &p2_closed);
  cr_assert_eq(ascope_rt_run(rt), 0);
  cr_assert_eq(p2_closed, 1);
  close_pool();
  cr_assert_eq(now.release_calls, 2);
  cr_assert_eq(late.release_calls, 2);
  cr_assert_eq(now.abort_calls + late.abort_calls, 0);
}

/* The same release completing late, after its abort: the core takes the
 * late completion as an aborted resource's and frees what it held. */
Test(pool, a_release_completing_after_its_abort_is_freed_then) {
  td_spec spec = {.name = "m",
                  .acquire = TD_OK,
                  .release = TD_OK_LATE,
                  .delay_ms = 300,
                  .late_after_abort = true};
  cr_assert_eq(ascope_rt_set_release_timeout(rt, 20), 0);
  pool = ascope_pool_new(rt, &td_driver, &spec, "min=2 max=2");
  cr_assert_not_null(pool);
  cr_assert_eq(ascope_rt_run(rt), 0);
  close_pool(); /* does not wait for them */
  cr_assert_eq(spec.abort_calls, 2);
  cr_assert_eq(spec.late_done_calls, 0);
  uv_run(ascope_rt_loop(rt), UV_RUN_DEFAULT); /* until the late releases' timers have fired */
  cr_assert_eq(spec.late_done_calls, 2);
}

/* ---- stats callback -------------------------------------------------------- */

static int stats_calls;
static void on_stats(ascope_pool *p, void *ud) {
  (void)ud;
  cr_assert_eq(p, pool);
  stats_calls++;
}
static bool stats_seen(void *arg) {
  (void)arg;
  return stats_calls >= 2;
}

Test(pool, the_stats_callback_runs_while_the_pool_is_open) {
  make(&pd_driver, NULL);
  stats_calls = 0;
  cr_assert_eq(ascope_pool_on_stats(pool, 5, on_stats, NULL), 0);
  static tu_timer w;
  tu_when(ascope_rt_loop(rt), &w, stats_seen, nothing, NULL);
  while (!w.fired && w.tries < 5000) uv_run(ascope_rt_loop(rt), UV_RUN_ONCE);
  cr_assert_eq(w.fired, 1);
  cr_assert_eq(ascope_pool_on_stats(pool, 0, NULL, NULL), 0);
}

/* ---- allocation failure ------------------------------------------------------ */

/* One run: a pool made, a scope served by it, the pool closed, each
 * allocation of it failing in turn: clean ends only, nothing leaked. */
static void pool_scenario(af_run *r) {
  ascope_rt *rt2 = ascope_rt_new(NULL);
  if (rt2 == NULL) {
    af_saw(r, UV_ENOMEM);
    return;
  }
  ascope_pool *p = ascope_pool_new(rt2, &pd_driver, NULL, "max=2 flavour=x");
  if (p == NULL) {
    af_saw(r, UV_ENOMEM);
    ascope_rt_free(rt2);
    return;
  }
  ascope *s = ascope_new(rt2);
  int rc = s ? ascope_use_pool(s, p) : UV_ENOMEM;
  if (rc == 0) {
    rc = ascope_start(s, NULL, af_done, r);
    r->begun = rc == 0;
  } else if (s) {
    ascope_discard(s);
  }
  af_saw(r, rc);
  ascope_rt_run(rt2);
  ascope_pool_close(p, NULL, NULL);
  ascope_rt_run(rt2);
  int freed = ascope_rt_free(rt2);
  if (freed) r->status = freed;
}

Test(pool_alloc, each_allocation_of_a_pool_failing_in_turn_ends_cleanly) {
  memset(&pd, 0, sizeof pd);
  af_sweep("pool", pool_scenario, NULL);
  cr_assert_eq(pd.live, 0, "a pooled resource was never released");
}

/* ---- mode=shared ------------------------------------------------------------ */

struct span {
  int id, from, to; /* resource, body and done sequence numbers */
};
static struct span spans[64];

static void note_span(ascope *s, rec *r) {
  spans[r->index].id = r->res_in_body[0] ? ((struct pd_res *)r->res_in_body[0])->id : 0;
  spans[r->index].from = r->body_seq;
  cr_assert_eq(td_op_start(s, TD_OK_LATE, 5, 0, NULL, NULL, NULL), 0);
}

static void end_span(ascope *s, rec *r) {
  (void)s;
  spans[r->index].to = r->done_seq;
}

Test(pool, shared_mode_lends_one_resource_to_many_scopes_spread_by_load) {
  make(&pd_driver, "mode=shared max=2");
  static rec r[20];
  memset(r, 0, sizeof r);
  for (int i = 0; i < 20; i++) {
    r[i].index = i;
    r[i].on_done = end_span;
    ascope *s = ascope_new(rt);
    cr_assert_eq(ascope_use_pool(s, pool), 0);
    r[i].body = note_span;
    cr_assert_eq(rec_start(s, &r[i]), 0);
  }
  cr_assert_eq(ascope_rt_run(rt), 0);
  int per[3] = {0};
  for (int i = 0; i < 20; i++) {
    assert_done(&r[i], 0);
    cr_assert(spans[i].id == 1 || spans[i].id == 2, "resource %d", spans[i].id);
    per[spans[i].id]++;
  }
  cr_assert_eq(pd.acquires, 2, "two resources for twenty scopes");
  cr_assert_gt(per[1], 2, "shared by several");
  cr_assert_gt(per[2], 2, "the load spread to the second");
  cr_assert_eq(pstat("in_use"), 0);
}

Test(pool, in_shared_mode_an_exclusive_use_has_its_resource_to_itself) {
  make(&pd_driver, "mode=shared max=2");
  static rec r[30];
  memset(r, 0, sizeof r);
  for (int i = 0; i < 30; i++) {
    r[i].index = i;
    r[i].on_done = end_span;
    ascope *s = ascope_new(rt);
    cr_assert_eq(ascope_use_pool(s, pool), 0);
    if (i == 10 || i == 20) cr_assert_eq(ascope_pool_use_exclusive(s, 0), 0);
    r[i].body = note_span;
    cr_assert_eq(rec_start(s, &r[i]), 0);
  }
  ascope *bad = ascope_new(rt);
  cr_assert_eq(ascope_pool_use_exclusive(bad, 0), UV_EINVAL, "no such use");
  ascope_discard(bad);
  cr_assert_eq(ascope_rt_run(rt), 0);
  for (int i = 0; i < 30; i++) assert_done(&r[i], 0);
  for (int x = 10; x <= 20; x += 10)
    for (int i = 0; i < 30; i++) {
      if (i == x || spans[i].id != spans[x].id) continue;
      bool apart = spans[i].to < spans[x].from || spans[i].from > spans[x].to;
      cr_assert(apart, "scope %d shared resource %d with exclusive scope %d", i, spans[i].id, x);
    }
  cr_assert_leq(pd.acquires, 2);
}
