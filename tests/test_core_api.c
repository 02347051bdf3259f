/* The API's rules: what ascope_start may and may not do, what a failing call
 * leaves behind, EBUSY after start, UV_EINVAL for bad arguments, discarding,
 * ascope_op_begin on a scope that takes no more work, status names. */
#include <criterion/criterion.h>
#include <limits.h>

#include <ascope/driver.h>
#include <stdint.h>

#include "test_driver.h"
#include "test_util.h"

static ascope_rt *rt;

static void setup(void) {
  td_reset();
  rt = ascope_rt_new(NULL);
  cr_assert_not_null(rt);
}

static void teardown(void) {
  cr_assert_eq(ascope_rt_free(rt), 0);
  cr_assert_eq(td_live(), 0);
}

TestSuite(api, .init = setup, .fini = teardown, .timeout = 60);

/* ---- ascope_start ------------------------------------------------------------ */

Test(api, start_runs_neither_body_nor_done_before_returning) {
  /* Every use completes synchronously: a start that drained would finish. */
  td_spec sp[2] = {{.name = "a"}, {.name = "b"}};
  ascope *s = ascope_new(rt);
  for (int i = 0; i < 2; i++) cr_assert_eq(td_use(s, &sp[i]), 0);
  rec r = {0};
  cr_assert_eq(rec_start(s, &r), 0);
  cr_assert_eq(r.body_calls, 0);
  cr_assert_eq(r.done_calls, 0);
  cr_assert_eq(sp[0].acquire_calls, 0, "acquiring began inside ascope_start");
  cr_assert_eq(ascope_rt_run(rt), 0);
  assert_done(&r, 0);
  cr_assert_eq(r.body_calls, 1);
}

/* The same from inside a body (a child) and from inside a done (a new
 * top-level scope): no re-entrant run of the new scope's callbacks. */
struct nested {
  ascope *child;
  rec child_rec, next_rec;
  td_spec cs, ns;
  bool child_ran_in_start, next_ran_in_start;
};

static void body_start_child(ascope *s, rec *r) {
  struct nested *n = r->arg;
  n->child = ascope_child(s);
  cr_assert_eq(td_use(n->child, &n->cs), 0);
  cr_assert_eq(rec_start(n->child, &n->child_rec), 0);
  n->child_ran_in_start = n->child_rec.body_calls || n->child_rec.done_calls || n->cs.acquire_calls;
}

static void done_start_next(ascope *s, rec *r) {
  (void)s;
  struct nested *n = r->arg;
  ascope *next = ascope_new(rt);
  cr_assert_eq(td_use(next, &n->ns), 0);
  cr_assert_eq(rec_start(next, &n->next_rec), 0);
  n->next_ran_in_start = n->next_rec.body_calls || n->next_rec.done_calls || n->ns.acquire_calls;
}

Test(api, start_from_body_and_done_is_not_reentrant) {
  struct nested n = {.cs = {.name = "c"}, .ns = {.name = "n"}};
  ascope *s = ascope_new(rt);
  rec r = {.body = body_start_child, .on_done = done_start_next, .arg = &n};
  cr_assert_eq(rec_start(s, &r), 0);
  cr_assert_eq(ascope_rt_run(rt), 0);
  cr_assert(!n.child_ran_in_start);
  cr_assert(!n.next_ran_in_start);
  assert_done(&r, 0);
  assert_done(&n.child_rec, 0);
  assert_done(&n.next_rec, 0);
  cr_assert_gt(n.next_rec.done_seq, r.done_seq);
}

/* Starting from a plain libuv callback (outside any ascope callback). */
struct from_timer {
  td_spec sp;
  rec r;
  bool ran_in_start;
};

static void start_from_timer(void *arg) {
  struct from_timer *ft = arg;
  ascope *s = ascope_new(rt);
  cr_assert_eq(td_use(s, &ft->sp), 0);
  cr_assert_eq(rec_start(s, &ft->r), 0);
  ft->ran_in_start = ft->r.body_calls || ft->r.done_calls || ft->sp.acquire_calls;
}

Test(api, start_from_foreign_callback_is_not_reentrant) {
  static struct from_timer ft = {.sp = {.name = "a"}};
  static tu_timer t;
  /* a scope pending keeps the loop running until the timer fired */
  ascope *keep = ascope_new(rt);
  td_spec ks = {.name = "keep", .acquire = TD_OK_LATE, .delay_ms = 20};
  cr_assert_eq(td_use(keep, &ks), 0);
  cr_assert_eq(ascope_start(keep, NULL, NULL, NULL), 0);
  tu_after(ascope_rt_loop(rt), &t, 2, start_from_timer, &ft);
  cr_assert_eq(ascope_rt_run(rt), 0);
  cr_assert_eq(t.fired, 1);
  cr_assert(!ft.ran_in_start);
  assert_done(&ft.r, 0);
}

Test(api, started_scopes_acquire_in_start_order) {
  td_spec sp[10];
  rec r[10];
  memset(sp, 0, sizeof sp);
  memset(r, 0, sizeof r);
  static const char *names[10] = {"0", "1", "2", "3", "4", "5", "6", "7", "8", "9"};
  for (int i = 0; i < 10; i++) {
    sp[i].name = names[i];
    ascope *s = ascope_new(rt);
    cr_assert_eq(td_use(s, &sp[i]), 0);
    cr_assert_eq(rec_start(s, &r[i]), 0);
  }
  cr_assert_eq(ascope_rt_run(rt), 0);
  for (int i = 1; i < 10; i++) cr_assert_gt(sp[i].acquire_seq, sp[i - 1].acquire_seq);
}

Test(api, start_twice_is_ebusy_and_does_nothing) {
  td_spec sp = {.name = "a"};
  ascope *s = ascope_new(rt);
  cr_assert_eq(td_use(s, &sp), 0);
  rec r = {0}, r2 = {0};
  cr_assert_eq(rec_start(s, &r), 0);
  cr_assert_eq(rec_start(s, &r2), ASCOPE_EBUSY);
  cr_assert_eq(ascope_rt_run(rt), 0);
  assert_done(&r, 0);
  cr_assert_eq(r.body_calls, 1);
  cr_assert_eq(r2.body_calls + r2.done_calls, 0, "the failed start's callbacks ran");
  cr_assert_eq(sp.acquire_calls, 1);
  cr_assert_eq(sp.release_calls, 1);
}

Test(api, start_null_is_einval) {
  cr_assert_eq(ascope_start(NULL, rec_body, rec_done, NULL), UV_EINVAL);
}

/* ---- setters after start -------------------------------------------------- */

struct after {
  int use_rc, timeout_rc, mode_rc, start_rc;
  td_spec extra;
};

static void body_set_after_start(ascope *s, rec *r) {
  struct after *a = r->arg;
  a->use_rc = td_use(s, &a->extra);
  a->timeout_rc = ascope_set_timeout(s, 1);
  a->mode_rc = ascope_set_mode(s, ASCOPE_COLLECT_ALL);
  a->start_rc = ascope_start(s, NULL, NULL, NULL);
}

Test(api, setters_after_start_are_ebusy) {
  td_spec sp = {.name = "a"};
  ascope *s = ascope_new(rt);
  cr_assert_eq(td_use(s, &sp), 0);
  struct after a = {.extra = {.name = "x"}};
  rec r = {.body = body_set_after_start, .arg = &a};
  cr_assert_eq(rec_start(s, &r), 0);
  /* right after start, before it ran */
  cr_assert_eq(td_use(s, &a.extra), ASCOPE_EBUSY);
  cr_assert_eq(ascope_set_timeout(s, 5), ASCOPE_EBUSY);
  cr_assert_eq(ascope_set_mode(s, ASCOPE_COLLECT_ALL), ASCOPE_EBUSY);
  cr_assert_eq(ascope_rt_run(rt), 0);
  cr_assert_eq(a.use_rc, ASCOPE_EBUSY);
  cr_assert_eq(a.timeout_rc, ASCOPE_EBUSY);
  cr_assert_eq(a.mode_rc, ASCOPE_EBUSY);
  cr_assert_eq(a.start_rc, ASCOPE_EBUSY);
  /* none of them changed anything: no extra use, no 1 ms deadline */
  assert_done(&r, 0);
  cr_assert_eq(a.extra.acquire_calls, 0);
  cr_assert_str_eq(td_log(), "+a -a");
}

/* ---- bad arguments ---------------------------------------------------------- */

static void dummy_release(ascope_res *r, int outcome) {
  (void)outcome;
  ascope_res_done(r, 0, NULL, NULL);
}

Test(api, bad_arguments_are_einval) {
  ascope *s = ascope_new(rt);
  td_spec sp = {.name = "a"};
  ascope_driver wrong_abi = td_driver, no_name = td_driver, no_acquire = td_driver,
                no_release = td_driver;
  wrong_abi.abi = ASCOPE_DRIVER_ABI_MIN - 1; /* older than any this core reads */
  no_name.name = NULL;
  no_acquire.acquire = NULL;
  no_release.release = NULL;
  cr_assert_eq(ascope_use(NULL, &td_driver, &sp, NULL), UV_EINVAL);
  cr_assert_eq(ascope_use(s, NULL, &sp, NULL), UV_EINVAL);
  cr_assert_eq(ascope_use(s, &wrong_abi, &sp, NULL), UV_EINVAL);
  cr_assert_eq(ascope_use(s, &no_name, &sp, NULL), UV_EINVAL);
  cr_assert_eq(ascope_use(s, &no_acquire, &sp, NULL), UV_EINVAL);
  cr_assert_eq(ascope_use(s, &no_release, &sp, NULL), UV_EINVAL);
  /* a driver built against a newer header: its extra members are ignored */
  ascope_driver newer = td_driver;
  newer.abi = ASCOPE_DRIVER_ABI + 1;
  ascope *s2 = ascope_new(rt);
  cr_assert_eq(ascope_use(s2, &newer, &sp, NULL), 0);
  ascope_discard(s2);
  cr_assert_eq(ascope_use_lock(s, NULL), UV_EINVAL);
  cr_assert_eq(ascope_use_sem(s, NULL), UV_EINVAL);
  cr_assert_eq(ascope_set_mode(s, 2), UV_EINVAL);
  cr_assert_eq(ascope_set_mode(s, -1), UV_EINVAL);
  cr_assert_eq(ascope_set_mode(NULL, ASCOPE_FAIL_FAST), UV_EINVAL);
  cr_assert_eq(ascope_set_timeout(NULL, 1), UV_EINVAL);
  cr_assert_eq(ascope_rt_run(NULL), UV_EINVAL);
  cr_assert_eq(ascope_rt_free(NULL), UV_EINVAL);
  cr_assert_eq(ascope_rt_post(NULL, free, NULL), UV_EINVAL);
  cr_assert_eq(ascope_rt_post(rt, NULL, NULL), UV_EINVAL);
  cr_assert_eq(ascope_rt_set_release_timeout(NULL, 1), UV_EINVAL);
  cr_assert_eq(ascope_op_resume(NULL), UV_EINVAL);
  cr_assert_null(ascope_new(NULL));
  cr_assert_null(ascope_child(NULL));
  cr_assert_null(ascope_rt_loop(NULL));
  cr_assert_null(ascope_scope_rt(NULL));
  cr_assert_null(ascope_resource(NULL, 0));
  cr_assert_null(ascope_lock_new(NULL));
  cr_assert_null(ascope_sem_new(NULL, 1));
  cr_assert_null(ascope_op_begin(NULL, &td_driver, NULL, NULL));
  /* harmless no-ops */
  ascope_fail(NULL, UV_EIO, NULL);
  ascope_cancel(NULL);
  ascope_discard(NULL);
  ascope_lock_free(NULL);
  ascope_sem_free(NULL);
  ascope_op_end(NULL, 0, NULL, NULL);
  ascope_res_done(NULL, 0, NULL, NULL);
  cr_assert_null(ascope_err_message(NULL));
  cr_assert_eq(ascope_err_status(NULL), 0);
  cr_assert_null(ascope_err_next(NULL));
  /* the failed uses left the scope as it was: it still runs, with one use */
  cr_assert_eq(td_use(s, &sp), 0);
  rec r = {0};
  cr_assert_eq(rec_start(s, &r), 0);
  cr_assert_eq(ascope_rt_run(rt), 0);
  assert_done(&r, 0);
  cr_assert_str_eq(td_log(), "+a -a");
}

/* A minimal driver of our own: options are copied, arg is passed through. */
static char seen_options[64];
static const void *seen_arg;
static void opt_acquire(ascope_res *r, const void *arg, const char *options) {
  snprintf(seen_options, sizeof seen_options, "%s", options ? options : "(null)");
  seen_arg = arg;
  ascope_res_done(r, 0, NULL, NULL);
}
static const ascope_driver opt_driver = {.abi = ASCOPE_DRIVER_ABI,
                                         .name = "opt",
                                         .state_size = 0,
                                         .acquire = opt_acquire,
                                         .release = dummy_release};

Test(api, options_are_copied) {
  ascope *s = ascope_new(rt);
  char opts[32] = "mode=rw size=3";
  int arg = 7;
  cr_assert_eq(ascope_use(s, &opt_driver, &arg, opts), 0);
  strcpy(opts, "overwritten");
  rec r = {0};
  cr_assert_eq(rec_start(s, &r), 0);
  cr_assert_eq(ascope_rt_run(rt), 0);
  assert_done(&r, 0);
  cr_assert_str_eq(seen_options, "mode=rw size=3");
  cr_assert_eq(seen_arg, &arg);
  /* a zero state_size still gives a resource the body can see */
  cr_assert_not_null(r.res_in_body[0]);
}

/* The driver's state is zeroed before every acquire, also when the core
 * reuses a resource object another driver (or use) wrote into; the driver
 * sees its resource's runtime and scope. */
struct zero_check {
  int acquires, dirty;
  ascope *scope_seen;
  ascope_rt *rt_seen;
};
static struct zero_check zc;

static void zero_acquire(ascope_res *r, const void *arg, const char *options) {
  (void)options;
  size_t n = (size_t)(uintptr_t)arg;
  unsigned char *st = ascope_res_state(r);
  for (size_t i = 0; i < n; i++)
    if (st[i]) zc.dirty++;
  memset(st, 0xA5, n); /* leave a mess for the next user */
  zc.acquires++;
  zc.scope_seen = ascope_res_scope(r);
  zc.rt_seen = ascope_res_rt(r);
  ascope_res_done(r, 0, NULL, NULL);
}
static const ascope_driver zero_small = {.abi = ASCOPE_DRIVER_ABI,
                                         .name = "zero",
                                         .state_size = 16,
                                         .acquire = zero_acquire,
                                         .release = dummy_release};
static const ascope_driver zero_big = {.abi = ASCOPE_DRIVER_ABI,
                                       .name = "zero",
                                       .state_size = 300,
                                       .acquire = zero_acquire,
                                       .release = dummy_release};

Test(api, driver_state_zeroed_on_every_acquire) {
  memset(&zc, 0, sizeof zc);
  for (int round = 0; round < 6; round++) {
    ascope *s = ascope_new(rt);
    const ascope_driver *d = round % 2 ? &zero_big : &zero_small;
    for (int u = 0; u < 3; u++)
      cr_assert_eq(ascope_use(s, d, (void *)(uintptr_t)d->state_size, NULL), 0);
    rec r = {0};
    cr_assert_eq(rec_start(s, &r), 0);
    cr_assert_eq(ascope_rt_run(rt), 0);
    assert_done(&r, 0);
    cr_assert_eq(zc.scope_seen, s);
    cr_assert_eq(zc.rt_seen, rt);
  }
  cr_assert_eq(zc.acquires, 18);
  cr_assert_eq(zc.dirty, 0, "%d state bytes were not zeroed", zc.dirty);
}

/* ---- discard ------------------------------------------------------------------ */

Test(api, discard_unstarted_scope) {
  td_spec sp = {.name = "a"};
  ascope *s = ascope_new(rt);
  cr_assert_eq(td_use(s, &sp), 0);
  ascope_discard(s);
  cr_assert_eq(ascope_rt_run(rt), 0);
  cr_assert_eq(sp.acquire_calls, 0);
  /* the runtime has nothing pending: it can be freed (teardown) */
}

Test(api, discard_started_scope_does_nothing) {
  td_spec sp = {.name = "a"};
  ascope *s = ascope_new(rt);
  cr_assert_eq(td_use(s, &sp), 0);
  rec r = {0};
  cr_assert_eq(rec_start(s, &r), 0);
  ascope_discard(s);
  cr_assert_eq(ascope_rt_run(rt), 0);
  assert_done(&r, 0);
  cr_assert_str_eq(td_log(), "+a -a");
}

Test(api, rt_free_busy_while_pending) {
  ascope *s = ascope_new(rt);
  td_spec sp = {.name = "a", .acquire = TD_OK_LATE, .delay_ms = 1};
  cr_assert_eq(td_use(s, &sp), 0);
  rec r = {0};
  cr_assert_eq(rec_start(s, &r), 0);
  cr_assert_eq(ascope_rt_free(rt), ASCOPE_EBUSY);
  cr_assert_eq(ascope_rt_run(rt), 0);
  assert_done(&r, 0);
  /* an unstarted scope does not keep the runtime: freed with it */
  ascope *unstarted = ascope_new(rt);
  cr_assert_not_null(unstarted);
  cr_assert_eq(td_use(unstarted, &sp), 0);
}

/* ---- inside callbacks ----------------------------------------------------------- */

struct inside {
  int run_rc, free_rc;
  ascope_op *op_in_done;
  void *res_in_done;
  ascope_rt *scope_rt;
};

static void body_inside(ascope *s, rec *r) {
  struct inside *in = r->arg;
  in->run_rc = ascope_rt_run(rt);
  in->free_rc = ascope_rt_free(rt);
  in->scope_rt = ascope_scope_rt(s);
}

static void done_inside(ascope *s, rec *r) {
  struct inside *in = r->arg;
  in->op_in_done = ascope_op_begin(s, &td_driver, NULL, NULL);
  in->res_in_done = ascope_resource(s, 0);
}

Test(api, run_and_free_from_a_callback_are_ebusy) {
  td_spec sp = {.name = "a"};
  ascope *s = ascope_new(rt);
  cr_assert_eq(td_use(s, &sp), 0);
  struct inside in = {0};
  rec r = {.body = body_inside, .on_done = done_inside, .arg = &in};
  cr_assert_eq(rec_start(s, &r), 0);
  cr_assert_eq(ascope_rt_run(rt), 0);
  assert_done(&r, 0);
  cr_assert_eq(in.run_rc, ASCOPE_EBUSY);
  cr_assert_eq(in.free_rc, ASCOPE_EBUSY);
  cr_assert_eq(in.scope_rt, rt);
  cr_assert_null(in.op_in_done, "ascope_op_begin in done");
  cr_assert_null(in.res_in_done, "a released resource is visible in done");
  cr_assert_not_null(r.res_in_body[0]);
}

/* ---- ascope_op_begin on a scope that takes no more work --------------------- */

struct opbegin {
  ascope_op *after_fail, *after_cancel;
  int td_rc;
};

static void body_op_after_fail(ascope *s, rec *r) {
  struct opbegin *o = r->arg;
  ascope_fail(s, UV_EIO, "stop");
  o->after_fail = ascope_op_begin(s, &td_driver, NULL, NULL);
  o->td_rc = td_op_start(s, TD_OK, 0, 0, NULL, NULL, NULL);
}

Test(api, op_begin_null_on_failing_scope) {
  ascope *s = ascope_new(rt);
  struct opbegin o = {0};
  rec r = {.body = body_op_after_fail, .arg = &o};
  cr_assert_eq(rec_start(s, &r), 0);
  /* not in its body yet */
  cr_assert_null(ascope_op_begin(s, &td_driver, NULL, NULL));
  cr_assert_eq(ascope_rt_run(rt), 0);
  cr_assert_null(o.after_fail);
  cr_assert_eq(o.td_rc, ASCOPE_ECANCELED);
  assert_done(&r, UV_EIO);
}

static void body_op_after_cancel(ascope *s, rec *r) {
  struct opbegin *o = r->arg;
  ascope_cancel(s);
  o->after_cancel = ascope_op_begin(s, &td_driver, NULL, NULL);
}

Test(api, op_begin_null_on_cancelled_scope) {
  ascope *s = ascope_new(rt);
  struct opbegin o = {0};
  rec r = {.body = body_op_after_cancel, .arg = &o};
  cr_assert_eq(rec_start(s, &r), 0);
  cr_assert_eq(ascope_rt_run(rt), 0);
  cr_assert_null(o.after_cancel);
  assert_done(&r, ASCOPE_ECANCELED);
}

/* An operation the driver ends with a positive (flow-control) status is
 * not a failure; ascope_op_resume without a hook is UV_ENOTSUP. */
struct manual_case {
  td_manual m;
  int resume_rc;
};

static void body_manual(ascope *s, rec *r) {
  struct manual_case *mc = r->arg;
  cr_assert_eq(td_manual_start(s, &mc->m), 0);
  cr_assert_eq(ascope_op_data(mc->m.op), &mc->m);
  cr_assert_eq(ascope_op_scope(mc->m.op), s);
  mc->resume_rc = ascope_op_resume(mc->m.op);
  td_manual_end(&mc->m, ASCOPE_STOP);
}

Test(api, op_positive_end_status_is_not_failure) {
  ascope *s = ascope_new(rt);
  struct manual_case mc = {0};
  rec r = {.body = body_manual, .arg = &mc};
  cr_assert_eq(rec_start(s, &r), 0);
  cr_assert_eq(ascope_rt_run(rt), 0);
  assert_done(&r, 0);
  cr_assert_eq(mc.resume_rc, UV_ENOTSUP);
  cr_assert_eq(mc.m.ended, 1);
}

/* ascope_op_set_resume: ascope_op_resume calls the hook. */
static int resumed;
static void on_resume(ascope_op *op) {
  resumed++;
  td_manual *m = ascope_op_data(op);
  td_manual_end(m, 0);
}

static void body_resume(ascope *s, rec *r) {
  struct manual_case *mc = r->arg;
  cr_assert_eq(td_manual_start(s, &mc->m), 0);
  ascope_op_set_resume(mc->m.op, on_resume);
  mc->resume_rc = ascope_op_resume(mc->m.op);
}

Test(api, op_resume_calls_the_hook) {
  resumed = 0;
  ascope *s = ascope_new(rt);
  struct manual_case mc = {0};
  rec r = {.body = body_resume, .arg = &mc};
  cr_assert_eq(rec_start(s, &r), 0);
  cr_assert_eq(ascope_rt_run(rt), 0);
  assert_done(&r, 0);
  cr_assert_eq(mc.resume_rc, 0);
  cr_assert_eq(resumed, 1);
}

/* ---- ascope_op_cancel: one operation, not its scope --------------------------------- */

struct one_cancel {
  ascope_op *a, *b, *c;
  int a_calls, b_calls, c_calls;
  int rc_again, rc_none, rc_null;
};
static struct one_cancel *oc;

static void cancel_a(ascope_op *op) { /* handled: ends with 0, the scope goes on */
  oc->a_calls++;
  ascope_op_end(op, 0, NULL, NULL);
}
static void cancel_b(ascope_op *op) {
  oc->b_calls++;
  ascope_op_end(op, ASCOPE_ECANCELED, NULL, NULL);
}
static void cancel_c(ascope_op *op) { /* acknowledges; ends later */
  (void)op;
  oc->c_calls++;
}

static void body_one_cancel(ascope *s, rec *r) {
  oc = r->arg;
  oc->a = ascope_op_begin(s, &td_driver, cancel_a, NULL);
  oc->b = ascope_op_begin(s, &td_driver, cancel_b, NULL);
  oc->c = ascope_op_begin(s, &td_driver, cancel_c, NULL);
  ascope_op *plain = ascope_op_begin(s, &td_driver, NULL, NULL);
  cr_assert_eq(ascope_op_cancel(oc->a), 0); /* ends it: the others untouched */
  cr_assert_eq(oc->b_calls + oc->c_calls, 0);
  cr_assert_eq(ascope_op_cancel(oc->c), 0);
  oc->rc_again = ascope_op_cancel(oc->c); /* once per operation */
  oc->rc_none = ascope_op_cancel(plain);  /* nothing to call */
  oc->rc_null = ascope_op_cancel(NULL);
  ascope_op_end(plain, 0, NULL, NULL);
  ascope_cancel(s); /* reaches b; c was cancelled already and is not called again */
  ascope_op_end(oc->c, ASCOPE_ECANCELED, NULL, NULL);
}

Test(api, op_cancel_stops_one_operation_once) {
  ascope *s = ascope_new(rt);
  struct one_cancel o = {0};
  rec r = {.body = body_one_cancel, .arg = &o};
  cr_assert_eq(rec_start(s, &r), 0);
  cr_assert_eq(ascope_rt_run(rt), 0);
  assert_done(&r, ASCOPE_ECANCELED);
  cr_assert_eq(o.a_calls, 1);
  cr_assert_eq(o.b_calls, 1);
  cr_assert_eq(o.c_calls, 1);
  cr_assert_eq(o.rc_again, UV_ENOTSUP);
  cr_assert_eq(o.rc_none, UV_ENOTSUP);
  cr_assert_eq(o.rc_null, UV_EINVAL);
}

/* A cancelled operation that ends with 0 (its callback handled the
 * cancel) leaves the scope to succeed. */
static void body_cancel_handled(ascope *s, rec *r) {
  oc = r->arg;
  oc->a = ascope_op_begin(s, &td_driver, cancel_a, NULL);
  cr_assert_eq(ascope_op_cancel(oc->a), 0);
}

Test(api, op_cancel_handled_leaves_the_scope_to_succeed) {
  ascope *s = ascope_new(rt);
  struct one_cancel o = {0};
  rec r = {.body = body_cancel_handled, .arg = &o};
  cr_assert_eq(rec_start(s, &r), 0);
  cr_assert_eq(ascope_rt_run(rt), 0);
  assert_done(&r, 0);
  cr_assert_eq(o.a_calls, 1);
}

/* ---- status names --------------------------------------------------------------- */

Test(api, status_names_and_messages) {
  cr_assert_str_eq(ascope_err_name(0), "OK");
  cr_assert_str_eq(ascope_err_name(ASCOPE_EDRIVER), "ASCOPE_EDRIVER");
  cr_assert_str_eq(ascope_err_name(ASCOPE_ECLOSED), "ASCOPE_ECLOSED");
  cr_assert_str_eq(ascope_err_name(ASCOPE_EBUSY), "ASCOPE_EBUSY");
  cr_assert_str_eq(ascope_err_name(ASCOPE_ECANCELED), "ECANCELED");
  cr_assert_str_eq(ascope_err_name(ASCOPE_ETIMEDOUT), "ETIMEDOUT");
  int codes[] = {0, ASCOPE_EDRIVER, ASCOPE_ECLOSED, ASCOPE_EBUSY, UV_EINVAL, UV_ENOMEM, 5};
  for (size_t i = 0; i < sizeof codes / sizeof *codes; i++) {
    cr_assert_not_null(ascope_strerror(codes[i]));
    cr_assert_neq(ascope_strerror(codes[i])[0], '\0');
    cr_assert_not_null(ascope_err_name(codes[i]));
  }
  cr_assert_eq(ascope_version(), (unsigned)((ASCOPE_VERSION_MAJOR << 16) |
                                            (ASCOPE_VERSION_MINOR << 8) | ASCOPE_VERSION_PATCH));
  cr_assert_eq(ASCOPE_FAIL_FAST, 0);
  cr_assert_eq(ASCOPE_COLLECT_ALL, 1);
}

/* A status libuv does not know: libuv's own uv_strerror()/uv_err_name()
 * make a new heap string for it on every call (a leak: LSan, under ASan)
 * and cut it to 32 bytes. ascope's texts are static: the ones libuv gives
 * UV_UNKNOWN, the same pointer every time, and nothing allocated (counted
 * through libuv's allocator, so this holds without a sanitizer too). */
static int uv_allocs;
static void *count_malloc(size_t n) {
  uv_allocs++;
  return malloc(n);
}
static void *count_realloc(void *p, size_t n) {
  uv_allocs++;
  return realloc(p, n);
}
static void *count_calloc(size_t n, size_t size) {
  uv_allocs++;
  return calloc(n, size);
}

Test(api, unknown_statuses_have_static_texts) {
  static const int unknown[] = {-12345, INT_MIN, -30000, -30004, -1000000, -4096};
  cr_assert_eq(uv_replace_allocator(count_malloc, count_realloc, count_calloc, free), 0);
  uv_allocs = 0;
  for (int round = 0; round < 1000; round++) {
    for (size_t i = 0; i < sizeof unknown / sizeof *unknown; i++) {
      const char *m = ascope_strerror(unknown[i]), *n = ascope_err_name(unknown[i]);
      chk(m == ascope_strerror(unknown[i]), i);
      chk(n == ascope_err_name(unknown[i]), i);
      chk(strcmp(m, "unknown error") == 0, i);
      chk(strcmp(n, "UNKNOWN") == 0, i);
    }
  }
  int allocs = uv_allocs;
  cr_assert_eq(uv_replace_allocator(malloc, realloc, calloc, free), 0);
  cr_assert_eq(allocs, 0, "%d allocations for the texts of unknown statuses", allocs);
  /* what libuv says of its own UV_UNKNOWN, and known codes pass through */
  cr_assert_str_eq(ascope_strerror(-12345), uv_strerror(UV_UNKNOWN));
  cr_assert_str_eq(ascope_err_name(-12345), uv_err_name(UV_UNKNOWN));
  cr_assert_str_eq(ascope_strerror(UV_ENOENT), uv_strerror(UV_ENOENT));
  cr_assert_str_eq(ascope_err_name(UV_EAI_NONAME), "EAI_NONAME");
  cr_assert_str_eq(ascope_err_name(UV_EOF), "EOF");
  cr_assert_str_eq(ascope_strerror(7), "not an error status");
  cr_assert_str_eq(ascope_err_name(7), "UNKNOWN");
}

Test(api, allocator_fixed_while_a_runtime_lives) {
  cr_assert_eq(ascope_set_allocator(malloc, realloc, free), ASCOPE_EBUSY);
  cr_assert_eq(ascope_set_allocator(NULL, NULL, NULL), ASCOPE_EBUSY);
}

/* No runtime exists here: the allocator can be set. */
TestSuite(allocator, .timeout = 60);

Test(allocator, arguments) {
  cr_assert_eq(ascope_set_allocator(malloc, realloc, NULL), UV_EINVAL);
  cr_assert_eq(ascope_set_allocator(NULL, realloc, free), UV_EINVAL);
  cr_assert_eq(ascope_set_allocator(malloc, NULL, free), UV_EINVAL);
  cr_assert_eq(ascope_set_allocator(malloc, realloc, free), 0);
  cr_assert_eq(ascope_set_allocator(NULL, NULL, NULL), 0);
}

/* ---- calls from outside every callback ---------------------------------------- */

/* ascope_cancel / ascope_fail made from a plain libuv callback (outside the
 * core) must not run the scope's done before they return: the handle stays
 * valid for the rest of the caller's code, as a uv_close callback never runs
 * inside uv_close. */
struct outside {
  ascope *s;
  rec r;
  int use_fail;
  int done_before_return; /* done had run when the call returned */
};

static void cancel_from_outside(void *ud) {
  struct outside *o = ud;
  if (o->use_fail)
    ascope_fail(o->s, UV_EIO, "from outside");
  else
    ascope_cancel(o->s);
  o->done_before_return = o->r.done_calls;
}

static void hang_body(ascope *s, rec *r) {
  (void)r;
  td_op_start(s, TD_HANG, 0, 0, NULL, NULL, NULL);
}

static bool body_ran(void *ud) {
  return ((struct outside *)ud)->r.body_calls == 1;
}

static void outside_run(int use_fail) {
  static struct outside o;
  static tu_timer t;
  static td_spec sp;
  memset(&o, 0, sizeof o);
  memset(&t, 0, sizeof t);
  sp = (td_spec){.name = "a"};
  o.use_fail = use_fail;
  o.r.body = hang_body;
  o.s = ascope_new(rt);
  cr_assert_eq(td_use(o.s, &sp), 0);
  cr_assert_eq(rec_start(o.s, &o.r), 0);
  /* once the body runs (the use is held, the operation in flight), not
   * after a fixed delay: that could pass before the scope acquired */
  tu_when(ascope_rt_loop(rt), &t, body_ran, cancel_from_outside, &o);
  cr_assert_eq(ascope_rt_run(rt), 0);
  cr_assert_eq(t.fired, 1);
  cr_assert_eq(o.done_before_return, 0, "done ran inside the call");
  assert_done(&o.r, use_fail ? UV_EIO : ASCOPE_ECANCELED);
  cr_assert_eq(sp.release_calls, 1);
  cr_assert_eq(sp.release_outcome, use_fail ? UV_EIO : ASCOPE_ECANCELED);
}

Test(api, cancel_from_outside_never_runs_done_before_returning) {
  outside_run(0);
}

Test(api, fail_from_outside_never_runs_done_before_returning) {
  outside_run(1);
}

/* ---- options strings ------------------------------------------------------------ */

Test(allocator, option_strings_tokenize_and_parse) {
  char buf[16], *key, *val;
  const char *s = " a=1,b=off\tbare  toolongkey=abcdefghijk";
  cr_assert_not_null(s = ascope_opt_next(s, buf, sizeof buf, &key, &val));
  cr_assert_str_eq(key, "a");
  cr_assert_str_eq(val, "1");
  cr_assert_not_null(s = ascope_opt_next(s, buf, sizeof buf, &key, &val));
  cr_assert_str_eq(key, "b");
  int b = -1;
  cr_assert_eq(ascope_opt_bool(val, &b), 0);
  cr_assert_eq(b, 0);
  cr_assert_not_null(s = ascope_opt_next(s, buf, sizeof buf, &key, &val));
  cr_assert_str_eq(key, "bare");
  cr_assert_null(val);
  cr_assert_not_null(s = ascope_opt_next(s, buf, sizeof buf, &key, &val));
  cr_assert_eq(strlen(key) + (val ? strlen(val) + 1 : 0), sizeof buf - 1, "cut to the buffer");
  cr_assert_null(ascope_opt_next(s, buf, sizeof buf, &key, &val));

  /* a value holding separators is quoted, as in libpq's conninfo */
  char big[64];
  s = "iso='repeatable read',p='a\\'b\\\\c' q=it's";
  cr_assert_not_null(s = ascope_opt_next(s, big, sizeof big, &key, &val));
  cr_assert_str_eq(key, "iso");
  cr_assert_str_eq(val, "repeatable read");
  cr_assert_not_null(s = ascope_opt_next(s, big, sizeof big, &key, &val));
  cr_assert_str_eq(key, "p");
  cr_assert_str_eq(val, "a'b\\c");
  cr_assert_not_null(s = ascope_opt_next(s, big, sizeof big, &key, &val));
  cr_assert_str_eq(val, "it's", "a quote inside a value is itself");
  cr_assert_null(ascope_opt_next(s, big, sizeof big, &key, &val));

  uint64_t u = 7;
  cr_assert_eq(ascope_opt_uint("42", 100, &u), 0);
  cr_assert_eq(u, 42);
  cr_assert_eq(ascope_opt_uint("101", 100, &u), UV_EINVAL);
  cr_assert_eq(ascope_opt_uint("-1", 100, &u), UV_EINVAL);
  cr_assert_eq(ascope_opt_uint(" 1", 100, &u), UV_EINVAL);
  cr_assert_eq(ascope_opt_uint("1x", 100, &u), UV_EINVAL);
  cr_assert_eq(ascope_opt_uint("99999999999999999999999", UINT64_MAX, &u), UV_EINVAL);
  cr_assert_eq(ascope_opt_uint(NULL, 100, &u), UV_EINVAL);
  cr_assert_eq(u, 42, "a failed parse leaves *out alone");
  cr_assert_eq(ascope_opt_bool("maybe", &b), UV_EINVAL);
  cr_assert_eq(ascope_opt_bool(NULL, &b), UV_EINVAL);
  cr_assert_eq(ascope_opt_bool("yes", &b), 0);
  cr_assert_eq(b, 1);
}
