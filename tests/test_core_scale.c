/* Scale: scopes nested 1,000 deep (each body opens one child), completing,
 * failing at the bottom, and cancelled from the top; 100,000 scopes open at
 * once (all started, then run). Nothing may grow the C stack with the depth
 * or the count, and every resource is released exactly once. */
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
  cr_assert_eq(ascope_rt_free(rt), 0);
  cr_assert_eq(td_live(), 0, "%d resources still held", td_live());
}

TestSuite(scale, .init = setup, .fini = teardown, .timeout = 60);

/* ---- 1,000 deep ---------------------------------------------------------------- */

#define DEPTH 1000

enum bottom { B_OK, B_FAIL, B_HANG };

struct deep {
  enum bottom bottom;
  td_spec spec[DEPTH];
  rec r[DEPTH];
  ascope *s[DEPTH];
  td_op_stats st;
  int deepest;
  tu_timer timer;
};

static void cancel_top(void *arg);

static void deep_body(ascope *s, rec *r) {
  struct deep *d = r->arg;
  int lvl = r->index;
  if (lvl > d->deepest) d->deepest = lvl;
  if (lvl + 1 == DEPTH) {
    enum td_mode m = d->bottom == B_OK ? TD_OK_LATE : d->bottom == B_FAIL ? TD_FAIL_LATE : TD_HANG;
    cr_assert_eq(td_op_start(s, m, 2, UV_EPROTO, NULL, NULL, &d->st), 0);
    /* the whole chain is open: cancel it from outside, from a timer */
    if (d->bottom == B_HANG) tu_after(ascope_rt_loop(rt), &d->timer, 1, cancel_top, d);
    return;
  }
  ascope *k = ascope_child(s);
  chk(k != NULL, lvl + 1);
  d->s[lvl + 1] = k;
  chk_eq(td_use(k, &d->spec[lvl + 1]), 0, lvl + 1);
  d->r[lvl + 1] = (rec){.body = deep_body, .arg = d, .index = lvl + 1};
  chk_eq(rec_start(k, &d->r[lvl + 1]), 0, lvl + 1);
}

static struct deep *deep_new(enum bottom b) {
  struct deep *d = calloc(1, sizeof *d);
  cr_assert_not_null(d);
  d->bottom = b;
  for (int i = 0; i < DEPTH; i++) d->spec[i].name = "n";
  d->s[0] = ascope_new(rt);
  cr_assert_eq(td_use(d->s[0], &d->spec[0]), 0);
  d->r[0] = (rec){.body = deep_body, .arg = d, .index = 0};
  cr_assert_eq(rec_start(d->s[0], &d->r[0]), 0);
  return d;
}

static void deep_check(struct deep *d, int status) {
  cr_assert_eq(d->deepest, DEPTH - 1);
  for (int i = 0; i < DEPTH; i++) {
    chk_eq(d->r[i].done_calls, 1, i);
    chk_eq(d->r[i].done_status, status, i);
    chk_eq(d->spec[i].acquired, 1, i);
    chk_eq(d->spec[i].release_calls, 1, i);
    chk_eq(d->spec[i].release_outcome, status, i);
    if (i) {
      /* a child is acquired after its parent, released and done before it */
      chk(d->spec[i].acquire_seq > d->spec[i - 1].acquire_seq, i);
      chk(d->spec[i].release_seq < d->spec[i - 1].release_seq, i);
      chk(d->r[i].done_seq < d->r[i - 1].done_seq, i);
    }
  }
}

Test(scale, nested_1000_deep_ok) {
  struct deep *d = deep_new(B_OK);
  cr_assert_eq(ascope_rt_run(rt), 0);
  deep_check(d, 0);
  cr_assert_eq(d->st.completed, 1);
  free(d);
}

Test(scale, nested_1000_deep_failure_at_the_bottom_reaches_the_top) {
  struct deep *d = deep_new(B_FAIL);
  cr_assert_eq(ascope_rt_run(rt), 0);
  deep_check(d, UV_EPROTO);
  assert_err(&d->r[0], 0, UV_EPROTO, "test", "TD_OP");
  free(d);
}

static void cancel_top(void *arg) {
  struct deep *d = arg;
  ascope_cancel(d->s[0]);
}

Test(scale, nested_1000_deep_cancelled_from_the_top) {
  struct deep *d = deep_new(B_HANG);
  cr_assert_eq(ascope_rt_run(rt), 0);
  cr_assert_eq(d->timer.fired, 1);
  deep_check(d, ASCOPE_ECANCELED);
  cr_assert_eq(d->st.cancelled, 1);
  /* the timer's close completes in the loop: run it before freeing d */
  uv_run(ascope_rt_loop(rt), UV_RUN_NOWAIT);
  free(d);
}

/* ---- 100,000 at once ------------------------------------------------------------ */

#define MANY 100000

static int many_done, many_bad, many_body, last_index, out_of_order;

static void many_body_fn(ascope *s, void *ud) {
  (void)ud;
  many_body++;
  if (ascope_resource(s, 0) == NULL) many_bad++;
}

static void many_done_fn(ascope *s, int status, void *ud) {
  (void)s;
  int idx = (int)(intptr_t)ud;
  if (status != 0) many_bad++;
  if (idx != last_index + 1) out_of_order++;
  last_index = idx;
  many_done++;
}

static void run_many(td_spec *sp) {
  many_done = many_bad = many_body = out_of_order = 0;
  last_index = -1;
  for (int i = 0; i < MANY; i++) {
    ascope *s = ascope_new(rt);
    chk(s != NULL, i);
    chk_eq(td_use(s, &sp[i]), 0, i);
    chk_eq(ascope_start(s, many_body_fn, many_done_fn, (void *)(intptr_t)i), 0, i);
  }
  /* all started, none ran */
  cr_assert_eq(many_body + many_done, 0);
  cr_assert_eq(ascope_rt_run(rt), 0);
  cr_assert_eq(many_done, MANY);
  cr_assert_eq(many_body, MANY);
  cr_assert_eq(many_bad, 0);
  cr_assert_eq(out_of_order, 0, "scopes finished out of start order");
  for (int i = 0; i < MANY; i++) {
    chk_eq(sp[i].acquired, 1, i);
    chk_eq(sp[i].release_calls, 1, i);
  }
}

Test(scale, hundred_thousand_scopes_at_once) {
  td_spec *sp = calloc(MANY, sizeof *sp);
  cr_assert_not_null(sp);
  for (int i = 0; i < MANY; i++) sp[i].name = "m";
  run_many(sp);
  /* and again on the same runtime, from recycled objects */
  memset(sp, 0, MANY * sizeof *sp);
  for (int i = 0; i < MANY; i++) sp[i].name = "m";
  run_many(sp);
  free(sp);
}

/* 100,000 started scopes whose resources complete late, all in flight at
 * once: each holds its resource until its op ends. */
static int late_done, late_bad;
static void late_body(ascope *s, void *ud) {
  (void)ud;
  if (td_op_start(s, TD_OK_LATE, 1, 0, NULL, NULL, NULL) != 0) late_bad++;
}
static void late_done_fn(ascope *s, int status, void *ud) {
  (void)s;
  (void)ud;
  if (status) late_bad++;
  late_done++;
}

Test(scale, hundred_thousand_scopes_in_flight) {
  for (int i = 0; i < MANY; i++) {
    ascope *s = ascope_new(rt);
    chk(s != NULL, i);
    chk_eq(ascope_start(s, late_body, late_done_fn, NULL), 0, i);
  }
  cr_assert_eq(ascope_rt_run(rt), 0);
  cr_assert_eq(late_done, MANY);
  cr_assert_eq(late_bad, 0);
}
