/* One scope, every path: acquire order and unwinding, operations that
 * succeed or fail (with and without a callback), ascope_fail, cancellation
 * from inside and outside, deadlines during acquire, body and release, the
 * release deadline and abort, the error chain, and ascope_return /
 * ascope_value ownership. Each path checks that every acquired resource is
 * released exactly once, with the scope's status as its outcome, and that
 * done runs exactly once with the right status and error. */
#include <criterion/criterion.h>

#include "test_driver.h"
#include "test_util.h"

static ascope_rt *rt;

static void setup(void) {
  td_reset();
  rt = ascope_rt_new(NULL);
  cr_assert_not_null(rt);
}

static void teardown(void) {
  /* Every test leaves nothing pending and nothing held. */
  cr_assert_eq(ascope_rt_free(rt), 0);
  cr_assert_eq(td_live(), 0, "%d resources still held", td_live());
}

TestSuite(scope, .init = setup, .fini = teardown, .timeout = 60);

/* Every spec was acquired once and released once, told `outcome`. */
static void assert_released(td_spec *sp, int n, int outcome) {
  for (int i = 0; i < n; i++) {
    cr_assert_eq(sp[i].acquired, 1, "%s acquired %d times", sp[i].name, sp[i].acquired);
    cr_assert_eq(sp[i].release_calls, 1, "%s released %d times", sp[i].name, sp[i].release_calls);
    cr_assert_eq(sp[i].release_outcome, outcome, "%s told %d (%s), want %d (%s)", sp[i].name,
                 sp[i].release_outcome, ascope_err_name(sp[i].release_outcome), outcome,
                 ascope_err_name(outcome));
  }
}

static ascope *scope_with(td_spec *sp, int n) {
  ascope *s = ascope_new(rt);
  cr_assert_not_null(s);
  for (int i = 0; i < n; i++) cr_assert_eq(td_use(s, &sp[i]), 0);
  return s;
}

/* ---- order ------------------------------------------------------------------ */

Test(scope, five_uses_acquired_in_order_released_in_reverse) {
  td_spec sp[5] = {{.name = "a"},
                   {.name = "b", .acquire = TD_OK_LATE, .delay_ms = 3},
                   {.name = "c", .release = TD_OK_LATE, .delay_ms = 2},
                   {.name = "d", .acquire = TD_OK_LATE, .release = TD_OK_LATE, .delay_ms = 1},
                   {.name = "e"}};
  ascope *s = scope_with(sp, 5);
  rec r = {0};
  cr_assert_eq(rec_start(s, &r), 0);
  cr_assert_eq(ascope_rt_run(rt), 0);
  assert_done(&r, 0);
  cr_assert_eq(r.body_calls, 1);
  cr_assert_str_eq(td_log(), "+a +b +c +d +e -e -d -c -b -a");
  assert_released(sp, 5, 0);
  /* The body saw every resource, and only those. */
  for (int i = 0; i < 5; i++) cr_assert_not_null(r.res_in_body[i], "resource %d", i);
  cr_assert_null(r.res_in_body[5]);
  /* Each use's acquire began after the previous one completed. */
  for (int i = 1; i < 5; i++) cr_assert_gt(sp[i].acquire_seq, sp[i - 1].acquire_seq);
  cr_assert_lt(sp[4].release_seq, sp[0].release_seq);
  /* The body ran between the last acquire and the first release. */
  cr_assert_gt(r.body_seq, sp[4].acquire_seq);
  cr_assert_lt(r.body_seq, sp[4].release_seq);
}

/* The k-th of five uses fails its acquire: the ones before it are released
 * in reverse, told the acquire's error; the ones after are never touched;
 * the body never runs. Both for a failure from inside the acquire call and
 * for a late one. */
static void unwind_case(int k, enum td_mode how, int fail_status) {
  td_reset();
  static const char *names[5] = {"a", "b", "c", "d", "e"};
  td_spec sp[5];
  memset(sp, 0, sizeof sp);
  for (int i = 0; i < 5; i++) {
    sp[i].name = names[i];
    sp[i].delay_ms = 1;
    if (i % 2) sp[i].acquire = TD_OK_LATE;
  }
  sp[k - 1].acquire = how;
  sp[k - 1].fail_status = fail_status;
  ascope *s = scope_with(sp, 5);
  rec r = {0};
  cr_assert_eq(rec_start(s, &r), 0);
  cr_assert_eq(ascope_rt_run(rt), 0);
  int want = fail_status ? fail_status : ASCOPE_EDRIVER;
  assert_done(&r, want);
  cr_assert_eq(r.body_calls, 0, "k=%d: the body ran", k);
  char expect[64] = "";
  for (int i = 0; i < k - 1; i++)
    snprintf(expect + strlen(expect), sizeof expect - strlen(expect), "%s+%s", i ? " " : "",
             names[i]);
  for (int i = k - 2; i >= 0; i--)
    snprintf(expect + strlen(expect), sizeof expect - strlen(expect), " -%s", names[i]);
  cr_assert_str_eq(td_log(), expect, "k=%d: log '%s', want '%s'", k, td_log(), expect);
  assert_released(sp, k - 1, want);
  cr_assert_eq(sp[k - 1].acquire_calls, 1);
  cr_assert_eq(sp[k - 1].release_calls, 0, "k=%d: a failed acquire was released", k);
  for (int i = k; i < 5; i++) cr_assert_eq(sp[i].acquire_calls, 0, "k=%d: use %d acquired", k, i);
  cr_assert_eq(r.nerr, 1);
  assert_err(&r, 0, want, "test", "TD_ACQUIRE");
  cr_assert_str_eq(r.err[0].msg, "the test driver's acquire failed");
  cr_assert_eq(td_live(), 0);
}

Test(scope, unwind_when_kth_acquire_fails) {
  for (int k = 1; k <= 5; k++) unwind_case(k, TD_FAIL, 0);
}

Test(scope, unwind_when_kth_acquire_fails_late) {
  for (int k = 1; k <= 5; k++) unwind_case(k, TD_FAIL_LATE, 0);
}

Test(scope, acquire_failure_status_passes_through) {
  for (int k = 1; k <= 5; k++) unwind_case(k, TD_FAIL, UV_ECONNREFUSED);
}

Test(scope, no_uses_no_body_no_done) {
  ascope *s = ascope_new(rt);
  cr_assert_eq(ascope_start(s, NULL, NULL, NULL), 0);
  cr_assert_eq(ascope_rt_run(rt), 0);
  /* and with only a done */
  s = ascope_new(rt);
  rec r = {0};
  cr_assert_eq(ascope_start(s, NULL, rec_done, &r), 0);
  cr_assert_eq(ascope_rt_run(rt), 0);
  assert_done(&r, 0);
}

/* ---- operations ------------------------------------------------------------- */

struct opcase {
  enum td_mode mode;
  td_op_cb cb;
  int fail_status;
  td_op_stats st;
  int cb_status; /* what the callback saw */
};

static int cb_pass_up(ascope *s, int status, void *result, void *ud) {
  (void)s;
  (void)result;
  ((struct opcase *)ud)->cb_status = status;
  return status;
}

static int cb_handle(ascope *s, int status, void *result, void *ud) {
  (void)s;
  (void)result;
  ((struct opcase *)ud)->cb_status = status;
  return 0;
}

static int cb_replace(ascope *s, int status, void *result, void *ud) {
  (void)s;
  (void)result;
  ((struct opcase *)ud)->cb_status = status;
  return status ? UV_EIO : 0;
}

static void body_one_op(ascope *s, rec *r) {
  struct opcase *oc = r->arg;
  cr_assert_eq(td_op_start(s, oc->mode, 2, oc->fail_status, oc->cb, oc, &oc->st), 0);
}

static void run_op_case(struct opcase *oc, int want_status, const char *want_code) {
  td_reset();
  td_spec sp[2] = {{.name = "a"}, {.name = "b", .release = TD_OK_LATE, .delay_ms = 1}};
  ascope *s = scope_with(sp, 2);
  rec r = {.body = body_one_op, .arg = oc};
  cr_assert_eq(rec_start(s, &r), 0);
  cr_assert_eq(ascope_rt_run(rt), 0);
  assert_done(&r, want_status);
  cr_assert_eq(r.body_calls, 1);
  cr_assert_eq(oc->st.started, 1);
  cr_assert_eq(oc->st.completed, 1);
  cr_assert_eq(oc->st.cancelled, 0);
  cr_assert_str_eq(td_log(), "+a +b -b -a");
  assert_released(sp, 2, want_status);
  if (want_status) {
    cr_assert_eq(r.nerr, 1);
    assert_err(&r, 0, want_status, "test", want_code);
    cr_assert_str_eq(r.err[0].msg, "the test operation failed");
  } else {
    cr_assert_eq(r.nerr, 0);
  }
}

Test(scope, op_ok) {
  struct opcase a = {.mode = TD_OK}, b = {.mode = TD_OK_LATE, .cb = cb_pass_up};
  run_op_case(&a, 0, NULL);
  run_op_case(&b, 0, NULL);
  cr_assert_eq(b.st.callbacks, 1);
  cr_assert_eq(b.cb_status, 0);
}

Test(scope, op_error_without_callback_fails_scope) {
  struct opcase a = {.mode = TD_FAIL}, b = {.mode = TD_FAIL_LATE};
  run_op_case(&a, ASCOPE_EDRIVER, "TD_OP");
  run_op_case(&b, ASCOPE_EDRIVER, "TD_OP");
  struct opcase c = {.mode = TD_FAIL_LATE, .fail_status = UV_ECONNRESET};
  run_op_case(&c, UV_ECONNRESET, "TD_OP");
}

Test(scope, op_error_passed_up_by_callback_fails_scope) {
  struct opcase a = {.mode = TD_FAIL, .cb = cb_pass_up},
                b = {.mode = TD_FAIL_LATE, .cb = cb_pass_up};
  run_op_case(&a, ASCOPE_EDRIVER, "TD_OP");
  run_op_case(&b, ASCOPE_EDRIVER, "TD_OP");
  cr_assert_eq(a.st.callbacks, 1);
  cr_assert_eq(a.cb_status, ASCOPE_EDRIVER);
  cr_assert_eq(b.cb_status, ASCOPE_EDRIVER);
}

Test(scope, op_error_handled_by_callback_returning_0) {
  struct opcase a = {.mode = TD_FAIL, .cb = cb_handle}, b = {.mode = TD_FAIL_LATE, .cb = cb_handle};
  run_op_case(&a, 0, NULL);
  run_op_case(&b, 0, NULL);
  cr_assert_eq(a.st.callbacks, 1);
  cr_assert_eq(a.cb_status, ASCOPE_EDRIVER);
  cr_assert_eq(b.cb_status, ASCOPE_EDRIVER);
}

Test(scope, op_callback_status_is_what_the_scope_sees) {
  struct opcase a = {.mode = TD_FAIL_LATE, .cb = cb_replace};
  run_op_case(&a, UV_EIO, "TD_OP");
  cr_assert_eq(a.cb_status, ASCOPE_EDRIVER);
}

/* An operation failing cancels the others still in flight. */
struct two_ops {
  td_op_stats hang, fail;
  int hang_cb_status;
};

static int cb_record_hang(ascope *s, int status, void *result, void *ud) {
  (void)s;
  (void)result;
  ((struct two_ops *)ud)->hang_cb_status = status;
  return status;
}

static void body_two_ops(ascope *s, rec *r) {
  struct two_ops *t = r->arg;
  cr_assert_eq(td_op_start(s, TD_HANG, 0, 0, cb_record_hang, t, &t->hang), 0);
  cr_assert_eq(td_op_start(s, TD_FAIL_LATE, 2, UV_EPIPE, NULL, NULL, &t->fail), 0);
}

Test(scope, op_error_cancels_the_other_ops) {
  td_spec sp[1] = {{.name = "a"}};
  ascope *s = scope_with(sp, 1);
  struct two_ops t = {0};
  rec r = {.body = body_two_ops, .arg = &t};
  cr_assert_eq(rec_start(s, &r), 0);
  cr_assert_eq(ascope_rt_run(rt), 0);
  assert_done(&r, UV_EPIPE);
  cr_assert_eq(t.hang.cancelled, 1);
  cr_assert_eq(t.hang.completed, 1);
  cr_assert_eq(t.hang_cb_status, ASCOPE_ECANCELED);
  cr_assert_eq(r.nerr, 1, "the cancelled op's ECANCELED must not be chained");
  assert_err(&r, 0, UV_EPIPE, "test", "TD_OP");
  assert_released(sp, 1, UV_EPIPE);
}

/* Many operations completing late: the scope waits for all of them. */
static void body_many_ops(ascope *s, rec *r) {
  td_op_stats *st = r->arg;
  for (int i = 0; i < 20; i++)
    cr_assert_eq(td_op_start(s, TD_OK_LATE, (unsigned)(i % 5), 0, NULL, NULL, st), 0);
}

Test(scope, scope_waits_for_every_op) {
  td_spec sp[1] = {{.name = "a"}};
  ascope *s = scope_with(sp, 1);
  td_op_stats st = {0};
  rec r = {.body = body_many_ops, .arg = &st};
  cr_assert_eq(rec_start(s, &r), 0);
  cr_assert_eq(ascope_rt_run(rt), 0);
  assert_done(&r, 0);
  cr_assert_eq(st.started, 20);
  cr_assert_eq(st.completed, 20);
  cr_assert_eq(st.cancelled, 0);
  assert_released(sp, 1, 0);
  cr_assert_gt(sp[0].release_seq, r.body_seq);
}

/* ---- ascope_fail ------------------------------------------------------------- */

static void body_fail(ascope *s, rec *r) {
  td_op_stats *st = r->arg;
  cr_assert_eq(td_op_start(s, TD_HANG, 0, 0, NULL, NULL, st), 0);
  ascope_fail(s, UV_EIO, "boom");
  /* only the first error counts */
  ascope_fail(s, UV_EPERM, "second");
  ascope_cancel(s);
}

Test(scope, fail_in_body) {
  td_spec sp[2] = {{.name = "a"}, {.name = "b"}};
  ascope *s = scope_with(sp, 2);
  td_op_stats st = {0};
  rec r = {.body = body_fail, .arg = &st};
  cr_assert_eq(rec_start(s, &r), 0);
  cr_assert_eq(ascope_rt_run(rt), 0);
  assert_done(&r, UV_EIO);
  cr_assert_eq(r.nerr, 1);
  assert_err(&r, 0, UV_EIO, NULL, NULL);
  cr_assert_str_eq(r.err[0].msg, "boom");
  cr_assert_eq(st.cancelled, 1);
  cr_assert_eq(st.completed, 1);
  assert_released(sp, 2, UV_EIO);
  cr_assert_str_eq(td_log(), "+a +b -b -a");
}

static void body_fail_bad_status(ascope *s, rec *r) {
  (void)r;
  ascope_fail(s, 0, NULL); /* not a failure status: taken as UV_EINVAL, default message */
}

Test(scope, fail_with_non_negative_status_is_einval) {
  td_spec sp[1] = {{.name = "a"}};
  ascope *s = scope_with(sp, 1);
  rec r = {.body = body_fail_bad_status};
  cr_assert_eq(rec_start(s, &r), 0);
  cr_assert_eq(ascope_rt_run(rt), 0);
  assert_done(&r, UV_EINVAL);
  assert_err(&r, 0, UV_EINVAL, NULL, NULL);
  assert_released(sp, 1, UV_EINVAL);
}

/* ascope_fail from a late operation's callback (not from the body). */
static int cb_fail_scope(ascope *s, int status, void *result, void *ud) {
  (void)result;
  (void)ud;
  ascope_fail(s, UV_EBADF, "failed from a callback");
  return status;
}

static void body_fail_later(ascope *s, rec *r) {
  td_op_stats *st = r->arg;
  cr_assert_eq(td_op_start(s, TD_OK_LATE, 2, 0, cb_fail_scope, NULL, &st[0]), 0);
  cr_assert_eq(td_op_start(s, TD_HANG, 0, 0, NULL, NULL, &st[1]), 0);
}

Test(scope, fail_from_op_callback) {
  td_spec sp[1] = {{.name = "a"}};
  ascope *s = scope_with(sp, 1);
  td_op_stats st[2] = {0};
  rec r = {.body = body_fail_later, .arg = st};
  cr_assert_eq(rec_start(s, &r), 0);
  cr_assert_eq(ascope_rt_run(rt), 0);
  assert_done(&r, UV_EBADF);
  cr_assert_str_eq(r.err[0].msg, "failed from a callback");
  cr_assert_eq(st[0].cancelled, 0);
  cr_assert_eq(st[1].cancelled, 1);
  assert_released(sp, 1, UV_EBADF);
}

static void done_msg_len(ascope *s, rec *r) {
  const char *m = ascope_err_message(ascope_error(s));
  *(size_t *)r->arg = m ? strlen(m) : 0;
  if (m) cr_assert_eq(m[strlen(m) - 1], 'd');
}

Test(scope, long_error_message_kept_whole) {
  td_spec sp[1] = {{.name = "a"}};
  ascope *s = scope_with(sp, 1);
  static char msg[1000];
  memset(msg, 'x', sizeof msg - 1);
  memcpy(msg, "start", 5);
  memcpy(msg + sizeof msg - 4, "end", 3);
  size_t len = 0;
  rec r = {.on_done = done_msg_len, .arg = &len};
  cr_assert_eq(rec_start(s, &r), 0);
  ascope_fail(s, UV_E2BIG, msg); /* started, not yet run: the message is copied */
  msg[0] = 'X';
  cr_assert_eq(ascope_rt_run(rt), 0);
  assert_done(&r, UV_E2BIG);
  cr_assert_eq(r.body_calls, 0);
  cr_assert_eq(strncmp(r.err[0].msg, "start", 5), 0);
  cr_assert_eq(len, sizeof msg - 1, "message of %zu characters, want %zu", len, sizeof msg - 1);
  cr_assert_eq(sp[0].acquire_calls, 0, "a scope failed before it ran acquires nothing");
}

/* ---- cancellation ------------------------------------------------------------ */

static void body_cancel_self(ascope *s, rec *r) {
  td_op_stats *st = r->arg;
  cr_assert_eq(td_op_start(s, TD_HANG, 0, 0, NULL, NULL, st), 0);
  cr_assert_eq(td_op_start(s, TD_OK_LATE, 1000, 0, NULL, NULL, st), 0);
  ascope_cancel(s);
  ascope_cancel(s); /* idempotent */
  /* a cancelled scope takes no new work */
  cr_assert_eq(td_op_start(s, TD_OK, 0, 0, NULL, NULL, st), ASCOPE_ECANCELED);
  cr_assert_null(ascope_child(s));
}

Test(scope, cancel_from_inside_body) {
  td_spec sp[2] = {{.name = "a"}, {.name = "b", .release = TD_OK_LATE, .delay_ms = 1}};
  ascope *s = scope_with(sp, 2);
  td_op_stats st = {0};
  rec r = {.body = body_cancel_self, .arg = &st};
  cr_assert_eq(rec_start(s, &r), 0);
  uint64_t t0 = uv_now(ascope_rt_loop(rt));
  cr_assert_eq(ascope_rt_run(rt), 0);
  cr_assert_lt(uv_now(ascope_rt_loop(rt)) - t0, 900, "the late op was not cancelled");
  assert_done(&r, ASCOPE_ECANCELED);
  assert_err(&r, 0, ASCOPE_ECANCELED, NULL, NULL);
  cr_assert_eq(st.started, 2);
  cr_assert_eq(st.cancelled, 2);
  cr_assert_eq(st.completed, 2);
  assert_released(sp, 2, ASCOPE_ECANCELED);
}

static void body_hang(ascope *s, rec *r) {
  td_op_stats *st = r->arg;
  cr_assert_eq(td_op_start(s, TD_HANG, 0, 0, NULL, NULL, st), 0);
}

struct outside {
  ascope *s;
  td_op_stats *st;
  td_spec *waiting; /* or: this spec's acquire was called */
};

static bool op_started(void *arg) {
  struct outside *o = arg;
  return o->st->started > 0;
}

static bool acquire_called(void *arg) {
  struct outside *o = arg;
  return o->waiting->acquire_calls > 0;
}

static void cancel_outside(void *arg) {
  ascope_cancel(((struct outside *)arg)->s);
}

Test(scope, cancel_from_outside_timer) {
  td_spec sp[2] = {{.name = "a"}, {.name = "b"}};
  ascope *s = scope_with(sp, 2);
  td_op_stats st = {0};
  rec r = {.body = body_hang, .arg = &st};
  cr_assert_eq(rec_start(s, &r), 0);
  /* a timer cancels it once its body started the op */
  static struct outside o;
  o = (struct outside){.s = s, .st = &st};
  static tu_timer t; /* its close completes in the teardown's loop run */
  tu_when(ascope_rt_loop(rt), &t, op_started, cancel_outside, &o);
  cr_assert_eq(ascope_rt_run(rt), 0);
  cr_assert_eq(t.fired, 1);
  assert_done(&r, ASCOPE_ECANCELED);
  cr_assert_eq(st.cancelled, 1);
  assert_released(sp, 2, ASCOPE_ECANCELED);
}

Test(scope, cancel_during_acquire) {
  td_spec sp[3] = {{.name = "a"}, {.name = "b", .acquire = TD_HANG}, {.name = "c"}};
  ascope *s = scope_with(sp, 3);
  rec r = {0};
  cr_assert_eq(rec_start(s, &r), 0);
  static struct outside o;
  o = (struct outside){.s = s, .waiting = &sp[1]};
  static tu_timer t; /* its close completes in the teardown's loop run */
  tu_when(ascope_rt_loop(rt), &t, acquire_called, cancel_outside, &o);
  cr_assert_eq(ascope_rt_run(rt), 0);
  cr_assert_eq(t.fired, 1);
  assert_done(&r, ASCOPE_ECANCELED);
  cr_assert_eq(r.body_calls, 0);
  cr_assert_eq(sp[1].cancel_calls, 1);
  cr_assert_eq(sp[1].release_calls, 0);
  cr_assert_eq(sp[2].acquire_calls, 0);
  assert_released(sp, 1, ASCOPE_ECANCELED);
  cr_assert_str_eq(td_log(), "+a -a");
}

/* Another scope cancels this one from its operation's callback. */
static int cb_cancel_other(ascope *s, int status, void *result, void *ud) {
  (void)s;
  (void)result;
  ascope_cancel(ud);
  return status;
}

struct other {
  ascope *victim;
  td_op_stats st;
};

static void body_cancel_other(ascope *s, rec *r) {
  struct other *o = r->arg;
  cr_assert_eq(td_op_start(s, TD_OK_LATE, 5, 0, cb_cancel_other, o->victim, &o->st), 0);
}

Test(scope, cancel_from_another_scope) {
  td_spec va[1] = {{.name = "v"}}, ka[1] = {{.name = "k"}};
  ascope *victim = scope_with(va, 1);
  ascope *killer = scope_with(ka, 1);
  td_op_stats vst = {0};
  struct other o = {.victim = victim};
  rec rv = {.body = body_hang, .arg = &vst}, rk = {.body = body_cancel_other, .arg = &o};
  cr_assert_eq(rec_start(victim, &rv), 0);
  cr_assert_eq(rec_start(killer, &rk), 0);
  cr_assert_eq(ascope_rt_run(rt), 0);
  assert_done(&rv, ASCOPE_ECANCELED);
  assert_done(&rk, 0);
  cr_assert_eq(vst.cancelled, 1);
  assert_released(va, 1, ASCOPE_ECANCELED);
  assert_released(ka, 1, 0);
}

Test(scope, cancel_before_start) {
  td_spec sp[1] = {{.name = "a"}};
  ascope *s = scope_with(sp, 1);
  ascope_cancel(s);
  rec r = {0};
  cr_assert_eq(rec_start(s, &r), 0);
  cr_assert_eq(r.done_calls, 0);
  cr_assert_eq(ascope_rt_run(rt), 0);
  assert_done(&r, ASCOPE_ECANCELED);
  cr_assert_eq(r.body_calls, 0);
  cr_assert_eq(sp[0].acquire_calls, 0);
}

Test(scope, cancel_after_start_before_run) {
  td_spec sp[1] = {{.name = "a"}};
  ascope *s = scope_with(sp, 1);
  rec r = {0};
  cr_assert_eq(rec_start(s, &r), 0);
  ascope_cancel(s);
  cr_assert_eq(ascope_rt_run(rt), 0);
  assert_done(&r, ASCOPE_ECANCELED);
  cr_assert_eq(r.body_calls, 0);
  cr_assert_eq(sp[0].acquire_calls, 0);
}

/* ---- deadlines ------------------------------------------------------------------ */

Test(scope, deadline_during_acquire) {
  td_spec sp[3] = {{.name = "a"}, {.name = "b", .acquire = TD_HANG}, {.name = "c"}};
  ascope *s = scope_with(sp, 3);
  cr_assert_eq(ascope_set_timeout(s, 20), 0);
  rec r = {0};
  uv_loop_t *loop = ascope_rt_loop(rt);
  uv_update_time(loop);
  uint64_t t0 = uv_now(loop);
  tu_deferred d;
  rec_start_in_loop(&d, s, &r);
  cr_assert_eq(ascope_rt_run(rt), 0);
  cr_assert_geq(uv_now(loop) - t0, 19);
  assert_done(&r, ASCOPE_ETIMEDOUT);
  cr_assert_eq(r.body_calls, 0);
  cr_assert_eq(r.nerr, 1, "the acquire's ECANCELED must not be chained");
  assert_err(&r, 0, ASCOPE_ETIMEDOUT, NULL, NULL);
  cr_assert(strstr(r.err[0].msg, "deadline") != NULL, "message: %s", r.err[0].msg);
  cr_assert_eq(sp[1].cancel_calls, 1);
  cr_assert_eq(sp[1].release_calls, 0);
  cr_assert_eq(sp[2].acquire_calls, 0);
  assert_released(sp, 1, ASCOPE_ETIMEDOUT);
}

/* A driver without a cancel hook: the late acquire completes, then the
 * resource is released at once, told the deadline. */
Test(scope, deadline_during_acquire_without_cancel_hook) {
  td_spec sp[2] = {{.name = "a"},
                   {.name = "b", .acquire = TD_OK_LATE, .delay_ms = 40, .no_cancel_hook = true}};
  ascope *s = scope_with(sp, 2);
  cr_assert_eq(ascope_set_timeout(s, 10), 0);
  rec r = {0};
  tu_deferred d;
  rec_start_in_loop(&d, s, &r);
  cr_assert_eq(ascope_rt_run(rt), 0);
  assert_done(&r, ASCOPE_ETIMEDOUT);
  cr_assert_eq(r.body_calls, 0);
  cr_assert_eq(sp[1].cancel_calls, 0);
  assert_released(sp, 2, ASCOPE_ETIMEDOUT);
  cr_assert_str_eq(td_log(), "+a +b -b -a");
}

/* A cancel the driver does not honour: the same. */
Test(scope, deadline_during_acquire_cancel_ignored) {
  td_spec sp[2] = {{.name = "a"},
                   {.name = "b", .acquire = TD_OK_LATE, .delay_ms = 40, .ignore_cancel = true}};
  ascope *s = scope_with(sp, 2);
  cr_assert_eq(ascope_set_timeout(s, 10), 0);
  rec r = {0};
  tu_deferred d;
  rec_start_in_loop(&d, s, &r);
  cr_assert_eq(ascope_rt_run(rt), 0);
  assert_done(&r, ASCOPE_ETIMEDOUT);
  cr_assert_eq(sp[1].cancel_calls, 1);
  cr_assert_eq(r.body_calls, 0);
  assert_released(sp, 2, ASCOPE_ETIMEDOUT);
}

Test(scope, deadline_during_body) {
  td_spec sp[2] = {{.name = "a"}, {.name = "b", .acquire = TD_OK_LATE, .delay_ms = 2}};
  ascope *s = scope_with(sp, 2);
  cr_assert_eq(ascope_set_timeout(s, 20), 0);
  td_op_stats st = {0};
  rec r = {.body = body_hang, .arg = &st};
  tu_deferred d;
  rec_start_in_loop(&d, s, &r);
  cr_assert_eq(ascope_rt_run(rt), 0);
  assert_done(&r, ASCOPE_ETIMEDOUT);
  cr_assert_eq(r.body_calls, 1);
  cr_assert_eq(st.cancelled, 1);
  cr_assert_eq(r.nerr, 1);
  assert_err(&r, 0, ASCOPE_ETIMEDOUT, NULL, NULL);
  assert_released(sp, 2, ASCOPE_ETIMEDOUT);
}

static void body_late_op(ascope *s, rec *r) {
  td_op_stats *st = r->arg;
  cr_assert_eq(td_op_start(s, TD_OK_LATE, 15, 0, NULL, NULL, st), 0);
}

Test(scope, deadline_not_reached) {
  td_spec sp[1] = {{.name = "a"}};
  ascope *s = scope_with(sp, 1);
  cr_assert_eq(ascope_set_timeout(s, 2000), 0);
  td_op_stats st = {0};
  rec r = {.body = body_late_op, .arg = &st};
  cr_assert_eq(rec_start(s, &r), 0);
  uv_loop_t *loop = ascope_rt_loop(rt);
  uint64_t t0 = uv_now(loop);
  cr_assert_eq(ascope_rt_run(rt), 0);
  /* the run ends when the scope does, not when the deadline would */
  cr_assert_lt(uv_now(loop) - t0, 1500);
  assert_done(&r, 0);
  assert_released(sp, 1, 0);
}

/* "A deadline ms after ascope_start": counted from the call, even when the
 * loop's cached time is stale (the program was busy since the loop last
 * ran). Here the loop time is 60 ms old at start; a 40 ms deadline must not
 * cut short a body that needs 5 ms. */
static void body_short_op(ascope *s, rec *r) {
  td_op_stats *st = r->arg;
  cr_assert_eq(td_op_start(s, TD_OK_LATE, 5, 0, NULL, NULL, st), 0);
}

Test(scope, deadline_counts_from_start_not_from_stale_loop_time) {
  uv_loop_t *loop = ascope_rt_loop(rt);
  uv_update_time(loop);
  uv_sleep(60); /* busy elsewhere: the loop's cached time falls behind */
  td_spec sp[1] = {{.name = "a"}};
  ascope *s = scope_with(sp, 1);
  cr_assert_eq(ascope_set_timeout(s, 40), 0);
  td_op_stats st = {0};
  rec r = {.body = body_short_op, .arg = &st};
  cr_assert_eq(rec_start(s, &r), 0);
  cr_assert_eq(ascope_rt_run(rt), 0);
  assert_done(&r, 0);
  cr_assert_eq(r.body_calls, 1);
  cr_assert_eq(st.completed, 1);
}

/* The same for the release timeout: a release that needs 5 ms of a 40 ms
 * bound is not aborted because the loop's clock lagged when it began. */
static void body_busy(ascope *s, rec *r) {
  (void)s;
  (void)r;
  uv_sleep(60); /* a long body: the release starts in the same loop turn */
}

/* A driver whose release completes 5 ms of real time after it began, as
 * I/O would (its timer reads the clock, not the loop's cached time). */
struct rt_state {
  uv_timer_t timer;
  ascope_res *res;
  int aborted;
};

static void rt_acquire(ascope_res *r, const void *arg, const char *options) {
  (void)arg;
  (void)options;
  ascope_res_done(r, 0, NULL, NULL);
}

static void rt_closed(uv_handle_t *h) {
  struct rt_state *st = h->data;
  ascope_res_done(st->res, 0, NULL, NULL); /* the handle is closed: the state may go */
}

static void rt_fire(uv_timer_t *t) {
  uv_close((uv_handle_t *)t, rt_closed);
}

static void rt_release(ascope_res *r, int outcome) {
  (void)outcome;
  struct rt_state *st = ascope_res_state(r);
  st->res = r;
  uv_loop_t *loop = ascope_rt_loop(ascope_res_rt(r));
  uv_timer_init(loop, &st->timer);
  st->timer.data = st;
  uv_update_time(loop);
  uv_timer_start(&st->timer, rt_fire, 5, 0);
}

static int realtime_aborts;
static void rt_abort(ascope_res *r) {
  (void)r;
  realtime_aborts++;
}

static const ascope_driver realtime_driver = {.abi = ASCOPE_DRIVER_ABI,
                                              .name = "realtime",
                                              .state_size = sizeof(struct rt_state),
                                              .acquire = rt_acquire,
                                              .release = rt_release,
                                              .abort = rt_abort};

Test(scope, release_timeout_counts_from_release_start) {
  realtime_aborts = 0;
  cr_assert_eq(ascope_rt_set_release_timeout(rt, 40), 0);
  ascope *s = ascope_new(rt);
  cr_assert_eq(ascope_use(s, &realtime_driver, NULL, NULL), 0);
  rec r = {.body = body_busy};
  cr_assert_eq(rec_start(s, &r), 0);
  cr_assert_eq(ascope_rt_run(rt), 0);
  cr_assert_eq(realtime_aborts, 0, "the release was aborted before its bound");
  assert_done(&r, 0);
}

Test(scope, timeout_zero_means_none) {
  td_spec sp[1] = {{.name = "a"}};
  ascope *s = scope_with(sp, 1);
  cr_assert_eq(ascope_set_timeout(s, 5), 0);
  cr_assert_eq(ascope_set_timeout(s, 0), 0);
  td_op_stats st = {0};
  rec r = {.body = body_late_op, .arg = &st};
  cr_assert_eq(rec_start(s, &r), 0);
  cr_assert_eq(ascope_rt_run(rt), 0);
  assert_done(&r, 0);
  cr_assert_eq(st.cancelled, 0);
}

/* The deadline covers up to the start of release: a slow release that
 * completes is not a timeout. */
Test(scope, deadline_does_not_cover_release_completion) {
  td_spec sp[2] = {{.name = "a", .release = TD_OK_LATE, .delay_ms = 40}, {.name = "b"}};
  ascope *s = scope_with(sp, 2);
  cr_assert_eq(ascope_set_timeout(s, 15), 0);
  rec r = {0};
  tu_deferred d;
  rec_start_in_loop(&d, s, &r);
  cr_assert_eq(ascope_rt_run(rt), 0);
  assert_done(&r, 0);
  assert_released(sp, 2, 0);
}

/* The same without a release timeout: nothing restarts the scope's timer
 * at release, so the deadline itself must have stopped. */
Test(scope, deadline_stops_at_release_start) {
  cr_assert_eq(ascope_rt_set_release_timeout(rt, 0), 0);
  td_spec sp[1] = {{.name = "a", .release = TD_OK_LATE, .delay_ms = 40}};
  ascope *s = scope_with(sp, 1);
  cr_assert_eq(ascope_set_timeout(s, 15), 0);
  rec r = {0};
  tu_deferred d;
  rec_start_in_loop(&d, s, &r);
  cr_assert_eq(ascope_rt_run(rt), 0);
  assert_done(&r, 0);
  assert_released(sp, 1, 0);
}

/* ---- releases: failures, the release deadline, abort ---------------------------- */

/* A hanging release is bounded by the runtime's release timeout; then the
 * driver's abort force-closes it. All was well before: ETIMEDOUT becomes the
 * status, from that driver; the releases after it are told so. */
Test(scope, hanging_release_aborted_after_release_timeout) {
  cr_assert_eq(ascope_rt_set_release_timeout(rt, 20), 0);
  td_spec sp[3] = {{.name = "a"}, {.name = "b", .release = TD_HANG}, {.name = "c"}};
  ascope *s = scope_with(sp, 3);
  rec r = {0};
  uv_loop_t *loop = ascope_rt_loop(rt);
  uv_update_time(loop);
  uint64_t t0 = uv_now(loop);
  cr_assert_eq(rec_start(s, &r), 0);
  cr_assert_eq(ascope_rt_run(rt), 0);
  cr_assert_geq(uv_now(loop) - t0, 19);
  assert_done(&r, ASCOPE_ETIMEDOUT);
  cr_assert_eq(r.nerr, 1);
  assert_err(&r, 0, ASCOPE_ETIMEDOUT, "test", NULL);
  cr_assert(strstr(r.err[0].msg, "release") != NULL, "message: %s", r.err[0].msg);
  cr_assert_str_eq(td_log(), "+a +b +c -c !b -a");
  cr_assert_eq(sp[1].release_calls, 1);
  cr_assert_eq(sp[1].abort_calls, 1);
  cr_assert_eq(sp[0].abort_calls + sp[2].abort_calls, 0);
  cr_assert_eq(sp[2].release_outcome, 0);
  cr_assert_eq(sp[1].release_outcome, 0);
  cr_assert_eq(sp[0].release_outcome, ASCOPE_ETIMEDOUT);
  cr_assert_eq(sp[0].release_calls, 1);
}

/* A release that would finish after the release timeout: aborted, and its
 * late completion (dropped by abort) never arrives. */
Test(scope, late_release_aborted_after_release_timeout) {
  cr_assert_eq(ascope_rt_set_release_timeout(rt, 10), 0);
  td_spec sp[1] = {{.name = "a", .release = TD_OK_LATE, .delay_ms = 60}};
  ascope *s = scope_with(sp, 1);
  rec r = {0};
  cr_assert_eq(rec_start(s, &r), 0);
  cr_assert_eq(ascope_rt_run(rt), 0);
  assert_done(&r, ASCOPE_ETIMEDOUT);
  cr_assert_eq(sp[0].abort_calls, 1);
  cr_assert_str_eq(td_log(), "+a !a");
}

/* A driver whose abort leaves its release running: the late completion
 * arrives while the scope still releases its other resources. */
Test(scope, late_release_after_abort_while_scope_releases) {
  cr_assert_eq(ascope_rt_set_release_timeout(rt, 20), 0);
  td_spec sp[2] = {{.name = "a", .release = TD_OK_LATE, .delay_ms = 15},
                   {.name = "b", .release = TD_OK_LATE, .delay_ms = 25, .late_after_abort = true}};
  ascope *s = scope_with(sp, 2);
  rec r = {0};
  cr_assert_eq(rec_start(s, &r), 0);
  cr_assert_eq(ascope_rt_run(rt), 0);
  assert_done(&r, ASCOPE_ETIMEDOUT);
  assert_err(&r, 0, ASCOPE_ETIMEDOUT, "test", NULL);
  cr_assert_eq(sp[1].abort_calls, 1);
  cr_assert_eq(sp[1].late_done_calls, 1);
  cr_assert_eq(sp[0].abort_calls, 0);
  cr_assert_eq(sp[0].release_outcome, ASCOPE_ETIMEDOUT);
  cr_assert_str_eq(td_log(), "+a +b !b -a");
}

/* ... and after the scope is done: accepted then, and the resource object
 * goes back to the runtime (reused by the next scope). */
Test(scope, late_release_after_abort_after_scope_done) {
  cr_assert_eq(ascope_rt_set_release_timeout(rt, 10), 0);
  td_spec sp = {.name = "b", .release = TD_OK_LATE, .delay_ms = 40, .late_after_abort = true};
  ascope *s = scope_with(&sp, 1);
  rec r = {0};
  cr_assert_eq(rec_start(s, &r), 0);
  cr_assert_eq(ascope_rt_run(rt), 0);
  assert_done(&r, ASCOPE_ETIMEDOUT);
  /* Usually still to come; on a machine that stalled past 40 ms both
   * timers fire in one loop turn and it came right after done: either way
   * after the scope was done. */
  cr_assert_leq(sp.late_done_calls, 1);
  while (sp.late_done_calls == 0) uv_run(ascope_rt_loop(rt), UV_RUN_ONCE);
  cr_assert_eq(sp.late_done_calls, 1);
  /* the runtime goes on */
  for (int i = 0; i < 3; i++) {
    td_spec again = {.name = "c"};
    ascope *s2 = scope_with(&again, 1);
    rec r2 = {0};
    cr_assert_eq(rec_start(s2, &r2), 0);
    cr_assert_eq(ascope_rt_run(rt), 0);
    assert_done(&r2, 0);
    cr_assert_eq(again.release_calls, 1);
  }
}

static void body_fail_eio(ascope *s, rec *r) {
  (void)r;
  ascope_fail(s, UV_EIO, "first");
}

/* After a first error, the release timeout rides behind it. */
Test(scope, hanging_release_after_first_error_is_chained) {
  cr_assert_eq(ascope_rt_set_release_timeout(rt, 10), 0);
  td_spec sp[2] = {{.name = "a"}, {.name = "b", .release = TD_HANG}};
  ascope *s = scope_with(sp, 2);
  rec r = {.body = body_fail_eio};
  cr_assert_eq(rec_start(s, &r), 0);
  cr_assert_eq(ascope_rt_run(rt), 0);
  assert_done(&r, UV_EIO);
  cr_assert_eq(r.nerr, 2);
  assert_err(&r, 0, UV_EIO, NULL, NULL);
  cr_assert_str_eq(r.err[0].msg, "first");
  assert_err(&r, 1, ASCOPE_ETIMEDOUT, "test", NULL);
  cr_assert_eq(sp[1].abort_calls, 1);
  cr_assert_eq(sp[1].release_outcome, UV_EIO);
  cr_assert_eq(sp[0].release_outcome, UV_EIO);
  cr_assert_eq(sp[0].release_calls, 1);
}

/* A release failing when all was well makes its failure the status (as an
 * exception from __aexit__); releases still to run are told that status;
 * those that ran before were told 0. */
Test(scope, failing_release_becomes_the_status) {
  td_spec sp[3] = {
      {.name = "a"}, {.name = "b", .release = TD_FAIL, .fail_status = UV_EIO}, {.name = "c"}};
  ascope *s = scope_with(sp, 3);
  rec r = {0};
  cr_assert_eq(rec_start(s, &r), 0);
  cr_assert_eq(ascope_rt_run(rt), 0);
  assert_done(&r, UV_EIO);
  cr_assert_eq(r.body_calls, 1);
  cr_assert_eq(r.nerr, 1);
  assert_err(&r, 0, UV_EIO, "test", "TD_RELEASE");
  cr_assert_str_eq(r.err[0].msg, "the test driver's release failed");
  cr_assert_eq(sp[2].release_outcome, 0);
  cr_assert_eq(sp[1].release_outcome, 0);
  cr_assert_eq(sp[0].release_outcome, UV_EIO);
  for (int i = 0; i < 3; i++) cr_assert_eq(sp[i].release_calls, 1);
  cr_assert_str_eq(td_log(), "+a +b +c -c -b -a");
}

/* After a first error, failing releases are chained behind it, in the order
 * they happened (reverse use order), and never replace it. */
Test(scope, failing_releases_after_first_error_are_chained) {
  td_spec sp[3] = {{.name = "a", .release = TD_FAIL_LATE, .delay_ms = 1, .fail_status = UV_EPIPE},
                   {.name = "b"},
                   {.name = "c", .release = TD_FAIL, .fail_status = UV_EIO}};
  ascope *s = scope_with(sp, 3);
  struct opcase oc = {.mode = TD_FAIL_LATE};
  rec r = {.body = body_one_op, .arg = &oc};
  cr_assert_eq(rec_start(s, &r), 0);
  cr_assert_eq(ascope_rt_run(rt), 0);
  assert_done(&r, ASCOPE_EDRIVER);
  cr_assert_eq(r.nerr, 3);
  assert_err(&r, 0, ASCOPE_EDRIVER, "test", "TD_OP");
  assert_err(&r, 1, UV_EIO, "test", "TD_RELEASE");
  assert_err(&r, 2, UV_EPIPE, "test", "TD_RELEASE");
  assert_released(sp, 3, ASCOPE_EDRIVER);
}

/* An acquire failure, then a failing release while unwinding. */
Test(scope, failing_release_while_unwinding_is_chained) {
  td_spec sp[3] = {{.name = "a", .release = TD_FAIL},
                   {.name = "b", .release = TD_FAIL_LATE, .delay_ms = 1},
                   {.name = "c", .acquire = TD_FAIL, .fail_status = UV_ENOENT}};
  ascope *s = scope_with(sp, 3);
  rec r = {0};
  cr_assert_eq(rec_start(s, &r), 0);
  cr_assert_eq(ascope_rt_run(rt), 0);
  assert_done(&r, UV_ENOENT);
  cr_assert_eq(r.nerr, 3);
  assert_err(&r, 0, UV_ENOENT, "test", "TD_ACQUIRE");
  assert_err(&r, 1, ASCOPE_EDRIVER, "test", "TD_RELEASE");
  assert_err(&r, 2, ASCOPE_EDRIVER, "test", "TD_RELEASE");
  assert_released(sp, 2, UV_ENOENT);
  cr_assert_eq(r.body_calls, 0);
}

/* ---- ascope_return / ascope_value --------------------------------------------- */

static int frees;
static void count_free(void *v) {
  frees++;
  free(v);
}

struct valcase {
  bool take;      /* done calls ascope_value */
  int fail;       /* the body fails the scope with this */
  bool twice;     /* the body returns twice */
  void *taken;    /* what ascope_value gave */
  void *returned; /* the last value the body returned */
  int frees_in_done;
  void *value_in_body;
};

static void body_return(ascope *s, rec *r) {
  struct valcase *vc = r->arg;
  if (vc->twice) {
    ascope_return(s, malloc(8), count_free);
    cr_assert_eq(frees, 0);
  }
  vc->returned = malloc(16);
  ascope_return(s, vc->returned, count_free);
  if (vc->twice) cr_assert_eq(frees, 1, "the replaced value was not freed");
  vc->value_in_body = ascope_value(s); /* only inside done */
  if (vc->fail) ascope_fail(s, vc->fail, NULL);
}

static void done_take(ascope *s, rec *r) {
  struct valcase *vc = r->arg;
  vc->frees_in_done = frees;
  if (vc->take) vc->taken = ascope_value(s);
}

static void run_valcase(struct valcase *vc, int want_status, int want_frees) {
  frees = 0;
  td_spec sp[1] = {{.name = "a"}};
  ascope *s = scope_with(sp, 1);
  rec r = {.body = body_return, .on_done = done_take, .arg = vc};
  cr_assert_eq(rec_start(s, &r), 0);
  cr_assert_eq(ascope_rt_run(rt), 0);
  assert_done(&r, want_status);
  cr_assert_null(vc->value_in_body);
  cr_assert_eq(frees, want_frees, "free_fn ran %d times, want %d", frees, want_frees);
  cr_assert_eq(vc->frees_in_done, vc->twice ? 1 : 0, "the value was freed before done");
}

Test(scope, value_taken_by_done_is_not_freed) {
  struct valcase vc = {.take = true};
  run_valcase(&vc, 0, 0);
  cr_assert_not_null(vc.taken);
  cr_assert_eq(vc.taken, vc.returned);
  free(vc.taken); /* ours now */
}

Test(scope, value_not_taken_is_freed) {
  struct valcase vc = {.take = false};
  run_valcase(&vc, 0, 1);
}

Test(scope, value_of_failed_scope_is_freed) {
  struct valcase vc = {.take = true, .fail = UV_EIO};
  run_valcase(&vc, UV_EIO, 1);
  cr_assert_null(vc.taken, "ascope_value must be NULL when the scope failed");
}

Test(scope, value_replaced_by_second_return) {
  struct valcase vc = {.take = true, .twice = true};
  run_valcase(&vc, 0, 1);
  cr_assert_eq(vc.taken, vc.returned);
  free(vc.taken);
}

Test(scope, value_replaced_and_not_taken) {
  struct valcase vc = {.take = false, .twice = true};
  run_valcase(&vc, 0, 2);
}

/* A value returned from an operation's callback, after the body. */
static int cb_return(ascope *s, int status, void *result, void *ud) {
  (void)result;
  ascope_return(s, ud, count_free);
  return status;
}

static void body_return_late(ascope *s, rec *r) {
  struct valcase *vc = r->arg;
  vc->returned = malloc(4);
  cr_assert_eq(td_op_start(s, TD_OK_LATE, 2, 0, cb_return, vc->returned, NULL), 0);
}

Test(scope, value_returned_from_callback) {
  frees = 0;
  ascope *s = ascope_new(rt);
  struct valcase vc = {.take = true};
  rec r = {.body = body_return_late, .on_done = done_take, .arg = &vc};
  cr_assert_eq(rec_start(s, &r), 0);
  cr_assert_eq(ascope_rt_run(rt), 0);
  assert_done(&r, 0);
  cr_assert_eq(vc.taken, vc.returned);
  cr_assert_eq(frees, 0);
  free(vc.taken);
}

Test(scope, value_and_error_null_outside_done) {
  ascope *s = ascope_new(rt);
  cr_assert_null(ascope_value(s));
  cr_assert_null(ascope_error(s));
  ascope_fail(s, UV_EIO, NULL);
  cr_assert_null(ascope_error(s), "ascope_error only inside done");
  ascope_discard(s);
}
