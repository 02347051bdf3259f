/* Child scopes: TaskGroup / gather semantics. A child failing in
 * ASCOPE_FAIL_FAST (cancels the siblings, fails the parent with the child's
 * error) and in ASCOPE_COLLECT_ALL (nothing: each child's done sees its own
 * status); a child cancelled on purpose; a parent's failure, cancellation or
 * deadline reaching every descendant; structured completion (a parent never
 * ends before its children); unstarted and discarded children. */
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

TestSuite(group, .init = setup, .fini = teardown, .timeout = 60);

/* What a child does in its body. */
enum act { ACT_NONE, ACT_OK_LATE, ACT_FAIL_LATE, ACT_HANG, ACT_FAIL_SELF };

struct kid {
  enum act act;
  unsigned delay;
  td_spec spec;
  td_op_stats st;
  rec r;
  ascope *s;
};

static void kid_body(ascope *s, rec *r) {
  struct kid *k = r->arg;
  switch (k->act) {
  case ACT_NONE:
    break;
  case ACT_OK_LATE:
    cr_assert_eq(td_op_start(s, TD_OK_LATE, k->delay, 0, NULL, NULL, &k->st), 0);
    break;
  case ACT_FAIL_LATE:
    cr_assert_eq(td_op_start(s, TD_FAIL_LATE, k->delay, 0, NULL, NULL, &k->st), 0);
    break;
  case ACT_HANG:
    cr_assert_eq(td_op_start(s, TD_HANG, 0, 0, NULL, NULL, &k->st), 0);
    break;
  case ACT_FAIL_SELF:
    ascope_fail(s, UV_EIO, "the child failed itself");
    break;
  }
}

/* The parent's scenario. */
struct fam {
  int mode;
  int nkids;
  struct kid kids[6];
  td_spec pspec;
  td_op_stats pst;
  bool parent_hangs; /* the parent starts a hanging op of its own */
  int cancel_kid;    /* >= 0: cancel this kid from the parent's body right after starting */
};

static void parent_body(ascope *s, rec *r) {
  struct fam *f = r->arg;
  if (f->parent_hangs) cr_assert_eq(td_op_start(s, TD_HANG, 0, 0, NULL, NULL, &f->pst), 0);
  for (int i = 0; i < f->nkids; i++) {
    struct kid *k = &f->kids[i];
    k->s = ascope_child(s);
    cr_assert_not_null(k->s);
    if (k->spec.name) cr_assert_eq(td_use(k->s, &k->spec), 0);
    k->r.body = kid_body;
    k->r.arg = k;
    k->r.index = i;
    cr_assert_eq(rec_start(k->s, &k->r), 0);
    /* neither the child's body nor its done ran inside ascope_start */
    cr_assert_eq(k->r.body_calls + k->r.done_calls, 0);
  }
  if (f->cancel_kid >= 0) ascope_cancel(f->kids[f->cancel_kid].s);
}

/* Runs the parent (with use "p") and its children to the end. The rec is
 * the caller's: the scope points at it until done. */
#define RUN_FAMILY(f, pr)                                                                          \
  do {                                                                                             \
    (f)->pspec.name = "p";                                                                         \
    ascope *p_ = ascope_new(rt);                                                                   \
    cr_assert_not_null(p_);                                                                        \
    cr_assert_eq(td_use(p_, &(f)->pspec), 0);                                                      \
    cr_assert_eq(ascope_set_mode(p_, (f)->mode), 0);                                               \
    (pr)->body = parent_body;                                                                      \
    (pr)->arg = (f);                                                                               \
    cr_assert_eq(rec_start(p_, (pr)), 0);                                                          \
    cr_assert_eq(ascope_rt_run(rt), 0);                                                            \
  } while (0)

static void init_kid(struct kid *k, const char *name, enum act act, unsigned delay) {
  memset(k, 0, sizeof *k);
  k->act = act;
  k->delay = delay;
  k->spec.name = name;
}

/* Every child done before the parent's done; every child resource released
 * before the parent's. */
static void assert_structured(struct fam *f, rec *pr) {
  for (int i = 0; i < f->nkids; i++) {
    struct kid *k = &f->kids[i];
    cr_assert_eq(k->r.done_calls, 1, "kid %d: done ran %d times", i, k->r.done_calls);
    cr_assert_lt(k->r.done_seq, pr->done_seq, "kid %d finished after its parent", i);
    if (k->spec.acquired) {
      cr_assert_eq(k->spec.release_calls, 1, "kid %d released %d times", i, k->spec.release_calls);
      cr_assert_lt(k->spec.release_seq, f->pspec.release_seq, "kid %d released after parent", i);
      cr_assert_gt(k->spec.acquire_seq, f->pspec.acquire_seq);
    }
  }
  cr_assert_eq(f->pspec.release_calls, 1);
}

Test(group, children_all_ok) {
  struct fam f = {.mode = ASCOPE_FAIL_FAST, .nkids = 3, .cancel_kid = -1};
  init_kid(&f.kids[0], "c0", ACT_OK_LATE, 5);
  init_kid(&f.kids[1], "c1", ACT_NONE, 0);
  init_kid(&f.kids[2], "c2", ACT_OK_LATE, 1);
  rec pr = {0};
  RUN_FAMILY(&f, &pr);
  assert_done(&pr, 0);
  for (int i = 0; i < 3; i++) {
    assert_done(&f.kids[i].r, 0);
    cr_assert_eq(f.kids[i].spec.release_outcome, 0);
  }
  assert_structured(&f, &pr);
  cr_assert_eq(f.pspec.release_outcome, 0);
  /* the parent's body returned at once; it waited for the children */
  cr_assert_gt(f.kids[0].r.done_seq, pr.body_seq);
}

Test(group, fail_fast_cancels_siblings_and_fails_parent) {
  struct fam f = {.mode = ASCOPE_FAIL_FAST, .nkids = 4, .cancel_kid = -1, .parent_hangs = true};
  init_kid(&f.kids[0], "c0", ACT_HANG, 0);
  init_kid(&f.kids[1], "c1", ACT_FAIL_LATE, 5);
  init_kid(&f.kids[2], "c2", ACT_OK_LATE, 1000);
  init_kid(&f.kids[3], NULL, ACT_HANG, 0); /* no resource */
  rec pr = {0};
  uv_loop_t *loop = ascope_rt_loop(rt);
  uint64_t t0 = uv_now(loop);
  RUN_FAMILY(&f, &pr);
  cr_assert_lt(uv_now(loop) - t0, 900, "a sibling was not cancelled");
  /* the parent fails with the child's error, as the child saw it */
  assert_done(&pr, ASCOPE_EDRIVER);
  assert_err(&pr, 0, ASCOPE_EDRIVER, "test", "TD_OP");
  cr_assert_eq(pr.nerr, 1);
  cr_assert_eq(f.pst.cancelled, 1, "the parent's own op was not cancelled");
  cr_assert_eq(f.pspec.release_outcome, ASCOPE_EDRIVER);
  /* the failing child sees its own error */
  assert_done(&f.kids[1].r, ASCOPE_EDRIVER);
  assert_err(&f.kids[1].r, 0, ASCOPE_EDRIVER, "test", "TD_OP");
  cr_assert_eq(f.kids[1].spec.release_outcome, ASCOPE_EDRIVER);
  /* its siblings are cancelled */
  int sib[3] = {0, 2, 3};
  for (int j = 0; j < 3; j++) {
    struct kid *k = &f.kids[sib[j]];
    assert_done(&k->r, ASCOPE_ECANCELED);
    cr_assert_eq(k->st.cancelled, 1, "kid %d's op was not cancelled", sib[j]);
    if (k->spec.name) cr_assert_eq(k->spec.release_outcome, ASCOPE_ECANCELED);
  }
  assert_structured(&f, &pr);
}

Test(group, fail_fast_child_failing_itself) {
  struct fam f = {.mode = ASCOPE_FAIL_FAST, .nkids = 2, .cancel_kid = -1};
  init_kid(&f.kids[0], "c0", ACT_HANG, 0);
  init_kid(&f.kids[1], "c1", ACT_FAIL_SELF, 0);
  rec pr = {0};
  RUN_FAMILY(&f, &pr);
  assert_done(&pr, UV_EIO);
  assert_err(&pr, 0, UV_EIO, NULL, NULL);
  cr_assert_str_eq(pr.err[0].msg, "the child failed itself");
  assert_done(&f.kids[1].r, UV_EIO);
  assert_done(&f.kids[0].r, ASCOPE_ECANCELED);
  assert_structured(&f, &pr);
}

Test(group, fail_fast_child_acquire_failure) {
  struct fam f = {.mode = ASCOPE_FAIL_FAST, .nkids = 2, .cancel_kid = -1};
  init_kid(&f.kids[0], "c0", ACT_HANG, 0);
  init_kid(&f.kids[1], "c1", ACT_NONE, 0);
  f.kids[1].spec.acquire = TD_FAIL_LATE;
  f.kids[1].spec.delay_ms = 3;
  f.kids[1].spec.fail_status = UV_ECONNREFUSED;
  rec pr = {0};
  RUN_FAMILY(&f, &pr);
  assert_done(&pr, UV_ECONNREFUSED);
  assert_err(&pr, 0, UV_ECONNREFUSED, "test", "TD_ACQUIRE");
  assert_done(&f.kids[1].r, UV_ECONNREFUSED);
  cr_assert_eq(f.kids[1].r.body_calls, 0);
  assert_done(&f.kids[0].r, ASCOPE_ECANCELED);
  assert_structured(&f, &pr);
}

Test(group, collect_all_keeps_going) {
  struct fam f = {.mode = ASCOPE_COLLECT_ALL, .nkids = 4, .cancel_kid = -1};
  init_kid(&f.kids[0], "c0", ACT_FAIL_LATE, 1);
  init_kid(&f.kids[1], "c1", ACT_OK_LATE, 15);
  init_kid(&f.kids[2], "c2", ACT_FAIL_SELF, 0);
  init_kid(&f.kids[3], "c3", ACT_NONE, 0);
  f.kids[3].spec.release = TD_FAIL;
  f.kids[3].spec.fail_status = UV_EPIPE;
  rec pr = {0};
  RUN_FAMILY(&f, &pr);
  assert_done(&pr, 0);
  cr_assert_eq(f.pspec.release_outcome, 0);
  assert_done(&f.kids[0].r, ASCOPE_EDRIVER);
  assert_done(&f.kids[1].r, 0);
  cr_assert_eq(f.kids[1].st.cancelled, 0, "a sibling was cancelled in COLLECT_ALL");
  cr_assert_eq(f.kids[1].st.completed, 1);
  assert_done(&f.kids[2].r, UV_EIO);
  assert_done(&f.kids[3].r, UV_EPIPE);
  assert_err(&f.kids[3].r, 0, UV_EPIPE, "test", "TD_RELEASE");
  cr_assert_eq(f.kids[0].spec.release_outcome, ASCOPE_EDRIVER);
  cr_assert_eq(f.kids[1].spec.release_outcome, 0);
  cr_assert_eq(f.kids[2].spec.release_outcome, UV_EIO);
  assert_structured(&f, &pr);
}

/* A child whose own deadline passes: FAIL_FAST takes it up, COLLECT_ALL not. */
static void deadline_kid_body(ascope *s, rec *r) {
  struct kid *k = r->arg;
  (void)s;
  cr_assert_eq(td_op_start(s, TD_HANG, 0, 0, NULL, NULL, &k->st), 0);
}

struct tfam {
  int mode;
  struct kid slow, ok;
};

static void tfam_body(ascope *s, rec *r) {
  struct tfam *t = r->arg;
  t->slow.s = ascope_child(s);
  cr_assert_eq(ascope_set_timeout(t->slow.s, 10), 0);
  t->slow.r.body = deadline_kid_body;
  t->slow.r.arg = &t->slow;
  cr_assert_eq(rec_start(t->slow.s, &t->slow.r), 0);
  t->ok.s = ascope_child(s);
  t->ok.r.body = kid_body;
  t->ok.r.arg = &t->ok;
  t->ok.act = ACT_OK_LATE;
  t->ok.delay = 40;
  cr_assert_eq(rec_start(t->ok.s, &t->ok.r), 0);
}

Test(group, child_deadline_in_each_mode) {
  for (int mode = ASCOPE_FAIL_FAST; mode <= ASCOPE_COLLECT_ALL; mode++) {
    struct tfam t;
    memset(&t, 0, sizeof t);
    ascope *p = ascope_new(rt);
    cr_assert_eq(ascope_set_mode(p, mode), 0);
    rec pr = {.body = tfam_body, .arg = &t};
    cr_assert_eq(rec_start(p, &pr), 0);
    cr_assert_eq(ascope_rt_run(rt), 0);
    assert_done(&t.slow.r, ASCOPE_ETIMEDOUT);
    cr_assert_eq(t.slow.st.cancelled, 1);
    if (mode == ASCOPE_FAIL_FAST) {
      assert_done(&pr, ASCOPE_ETIMEDOUT);
      assert_done(&t.ok.r, ASCOPE_ECANCELED);
    } else {
      assert_done(&pr, 0);
      assert_done(&t.ok.r, 0);
    }
  }
}

/* A child cancelled on purpose does not fail its parent, in either mode. */
Test(group, child_cancelled_on_purpose_does_not_fail_parent) {
  for (int mode = ASCOPE_FAIL_FAST; mode <= ASCOPE_COLLECT_ALL; mode++) {
    td_reset();
    struct fam f = {.mode = mode, .nkids = 3, .cancel_kid = 1};
    init_kid(&f.kids[0], "c0", ACT_OK_LATE, 10);
    init_kid(&f.kids[1], "c1", ACT_HANG, 0);
    init_kid(&f.kids[2], "c2", ACT_OK_LATE, 5);
    rec pr = {0};
    RUN_FAMILY(&f, &pr);
    assert_done(&pr, 0);
    cr_assert_eq(f.pspec.release_outcome, 0);
    /* cancelled right after its start: it completes without acquiring */
    assert_done(&f.kids[1].r, ASCOPE_ECANCELED);
    cr_assert_eq(f.kids[1].r.body_calls, 0);
    cr_assert_eq(f.kids[1].spec.acquire_calls, 0);
    assert_done(&f.kids[0].r, 0);
    assert_done(&f.kids[2].r, 0);
    cr_assert_eq(f.kids[0].st.cancelled + f.kids[2].st.cancelled, 0);
    assert_structured(&f, &pr);
  }
}

/* A child cancelled on purpose from a timer, later on. */
static bool kid_op_started(void *arg) {
  return ((struct kid *)arg)->st.started > 0;
}

static void cancel_kid_cb(void *arg) {
  struct kid *k = arg;
  ascope_cancel(k->s);
}

Test(group, child_cancelled_from_timer_does_not_fail_parent) {
  struct fam f = {.mode = ASCOPE_FAIL_FAST, .nkids = 2, .cancel_kid = -1};
  init_kid(&f.kids[0], "c0", ACT_OK_LATE, 20);
  init_kid(&f.kids[1], "c1", ACT_HANG, 0);
  static tu_timer t;
  tu_when(ascope_rt_loop(rt), &t, kid_op_started, cancel_kid_cb, &f.kids[1]);
  rec pr = {0};
  RUN_FAMILY(&f, &pr);
  cr_assert_eq(t.fired, 1);
  assert_done(&pr, 0);
  assert_done(&f.kids[1].r, ASCOPE_ECANCELED);
  cr_assert_eq(f.kids[1].st.cancelled, 1);
  cr_assert_eq(f.kids[1].spec.release_outcome, ASCOPE_ECANCELED);
  assert_done(&f.kids[0].r, 0);
  cr_assert_eq(f.kids[0].spec.release_outcome, 0);
  assert_structured(&f, &pr);
}

/* The parent's own first error: the children complete ECANCELED, and the
 * parent keeps its error, with no child's ECANCELED chained behind it. */
struct pf {
  ascope *p;
  struct fam *f;
};

static bool all_kids_running(void *arg) {
  struct pf *x = arg;
  for (int i = 0; i < x->f->nkids; i++)
    if (x->f->kids[i].st.started == 0) return false;
  return true;
}

static void fail_parent_cb(void *arg) {
  ascope_fail(((struct pf *)arg)->p, UV_EIO, "parent failed");
}

Test(group, parent_failure_cancels_children_and_keeps_its_error) {
  struct fam f = {.mode = ASCOPE_FAIL_FAST, .nkids = 3, .cancel_kid = -1};
  init_kid(&f.kids[0], "c0", ACT_HANG, 0);
  init_kid(&f.kids[1], "c1", ACT_OK_LATE, 1000);
  init_kid(&f.kids[2], NULL, ACT_HANG, 0);
  f.pspec.name = "p";
  ascope *p = ascope_new(rt);
  cr_assert_eq(td_use(p, &f.pspec), 0);
  rec pr = {.body = parent_body, .arg = &f};
  cr_assert_eq(rec_start(p, &pr), 0);
  static struct pf x;
  x = (struct pf){.p = p, .f = &f};
  static tu_timer t;
  tu_when(ascope_rt_loop(rt), &t, all_kids_running, fail_parent_cb, &x);
  cr_assert_eq(ascope_rt_run(rt), 0);
  assert_done(&pr, UV_EIO);
  cr_assert_eq(pr.nerr, 1);
  assert_err(&pr, 0, UV_EIO, NULL, NULL);
  cr_assert_str_eq(pr.err[0].msg, "parent failed");
  for (int i = 0; i < 3; i++) {
    assert_done(&f.kids[i].r, ASCOPE_ECANCELED);
    cr_assert_eq(f.kids[i].st.cancelled, 1);
  }
  cr_assert_eq(f.kids[0].spec.release_outcome, ASCOPE_ECANCELED);
  cr_assert_eq(f.pspec.release_outcome, UV_EIO);
  assert_structured(&f, &pr);
}

Test(group, parent_deadline_cancels_children) {
  struct fam f = {.mode = ASCOPE_COLLECT_ALL, .nkids = 2, .cancel_kid = -1};
  init_kid(&f.kids[0], "c0", ACT_HANG, 0);
  init_kid(&f.kids[1], "c1", ACT_HANG, 0);
  f.pspec.name = "p";
  ascope *p = ascope_new(rt);
  cr_assert_eq(td_use(p, &f.pspec), 0);
  cr_assert_eq(ascope_set_timeout(p, 10), 0);
  cr_assert_eq(ascope_set_mode(p, ASCOPE_COLLECT_ALL), 0);
  rec pr = {.body = parent_body, .arg = &f};
  tu_deferred d;
  rec_start_in_loop(&d, p, &pr);
  cr_assert_eq(ascope_rt_run(rt), 0);
  assert_done(&pr, ASCOPE_ETIMEDOUT);
  cr_assert_eq(pr.nerr, 1);
  for (int i = 0; i < 2; i++) {
    assert_done(&f.kids[i].r, ASCOPE_ECANCELED);
    cr_assert_eq(f.kids[i].spec.release_outcome, ASCOPE_ECANCELED);
  }
  cr_assert_eq(f.pspec.release_outcome, ASCOPE_ETIMEDOUT);
  assert_structured(&f, &pr);
}

/* ---- cancellation reaches every descendant --------------------------------- */

#define LEVELS 4
struct chain {
  td_spec spec[LEVELS];
  td_op_stats st[LEVELS];
  rec r[LEVELS];
  ascope *s[LEVELS];
};

static void chain_body(ascope *s, rec *r) {
  struct chain *c = r->arg;
  int lvl = r->index;
  cr_assert_eq(td_op_start(s, TD_HANG, 0, 0, NULL, NULL, &c->st[lvl]), 0);
  if (lvl + 1 == LEVELS) return;
  ascope *k = ascope_child(s);
  cr_assert_not_null(k);
  c->s[lvl + 1] = k;
  cr_assert_eq(td_use(k, &c->spec[lvl + 1]), 0);
  c->r[lvl + 1] = (rec){.body = chain_body, .arg = c, .index = lvl + 1};
  cr_assert_eq(rec_start(k, &c->r[lvl + 1]), 0);
}

static bool chain_built(void *arg) {
  struct chain *c = arg;
  return c->st[LEVELS - 1].started > 0;
}

static bool middle_done(void *arg) {
  struct chain *c = arg;
  return c->r[1].done_calls > 0;
}

static void cancel_root_cb(void *arg) {
  struct chain *c = arg;
  ascope_cancel(c->s[0]);
}

static void cancel_middle_cb(void *arg) {
  struct chain *c = arg;
  ascope_cancel(c->s[1]);
}

static void run_chain(struct chain *c, void (*cb)(void *)) {
  static const char *names[LEVELS] = {"l0", "l1", "l2", "l3"};
  memset(c, 0, sizeof *c);
  for (int i = 0; i < LEVELS; i++) c->spec[i].name = names[i];
  c->s[0] = ascope_new(rt);
  cr_assert_eq(td_use(c->s[0], &c->spec[0]), 0);
  c->r[0] = (rec){.body = chain_body, .arg = c, .index = 0};
  cr_assert_eq(rec_start(c->s[0], &c->r[0]), 0);
  static tu_timer t;
  tu_when(ascope_rt_loop(rt), &t, chain_built, cb, c);
  cr_assert_eq(ascope_rt_run(rt), 0);
  cr_assert_eq(t.fired, 1);
}

Test(group, cancel_reaches_every_descendant) {
  static struct chain c;
  run_chain(&c, cancel_root_cb);
  for (int i = 0; i < LEVELS; i++) {
    assert_done(&c.r[i], ASCOPE_ECANCELED);
    cr_assert_eq(c.st[i].cancelled, 1, "level %d's op was not cancelled", i);
    cr_assert_eq(c.spec[i].release_calls, 1);
    cr_assert_eq(c.spec[i].release_outcome, ASCOPE_ECANCELED);
    if (i) cr_assert_lt(c.r[i].done_seq, c.r[i - 1].done_seq, "level %d done after parent", i);
  }
  cr_assert_str_eq(td_log(), "+l0 +l1 +l2 +l3 -l3 -l2 -l1 -l0");
}

/* Cancelling a middle scope on purpose: its subtree is cancelled, its parent
 * is not failed and goes on (its own op hangs until a second timer cancels
 * the root). */
Test(group, cancel_middle_reaches_its_subtree_only) {
  static struct chain c;
  memset(&c, 0, sizeof c);
  static const char *names[LEVELS] = {"l0", "l1", "l2", "l3"};
  for (int i = 0; i < LEVELS; i++) c.spec[i].name = names[i];
  c.s[0] = ascope_new(rt);
  cr_assert_eq(td_use(c.s[0], &c.spec[0]), 0);
  c.r[0] = (rec){.body = chain_body, .arg = &c, .index = 0};
  cr_assert_eq(rec_start(c.s[0], &c.r[0]), 0);
  static tu_timer t1, t2;
  tu_when(ascope_rt_loop(rt), &t1, chain_built, cancel_middle_cb, &c);
  tu_when(ascope_rt_loop(rt), &t2, middle_done, cancel_root_cb, &c);
  cr_assert_eq(ascope_rt_run(rt), 0);
  for (int i = 1; i < LEVELS; i++) {
    assert_done(&c.r[i], ASCOPE_ECANCELED);
    cr_assert_lt(c.r[i].done_seq, c.spec[0].release_seq);
  }
  /* the root was still running when level 1 finished: its own cancel came later */
  cr_assert_eq(c.st[0].cancelled, 1);
  cr_assert_gt(c.r[0].done_seq, c.r[1].done_seq);
  assert_done(&c.r[0], ASCOPE_ECANCELED);
  cr_assert_eq(c.r[0].nerr, 1);
  cr_assert_str_eq(c.r[0].err[0].msg, "cancelled");
}

/* A failure deep down travels up through FAIL_FAST parents. */
static void chain_fail_body(ascope *s, rec *r) {
  struct chain *c = r->arg;
  int lvl = r->index;
  if (lvl + 1 == LEVELS) {
    cr_assert_eq(td_op_start(s, TD_FAIL_LATE, 3, UV_EPROTO, NULL, NULL, &c->st[lvl]), 0);
    return;
  }
  cr_assert_eq(td_op_start(s, TD_HANG, 0, 0, NULL, NULL, &c->st[lvl]), 0);
  ascope *k = ascope_child(s);
  c->s[lvl + 1] = k;
  cr_assert_eq(td_use(k, &c->spec[lvl + 1]), 0);
  c->r[lvl + 1] = (rec){.body = chain_fail_body, .arg = c, .index = lvl + 1};
  cr_assert_eq(rec_start(k, &c->r[lvl + 1]), 0);
}

Test(group, grandchild_failure_travels_up) {
  static struct chain c;
  static const char *names[LEVELS] = {"l0", "l1", "l2", "l3"};
  for (int i = 0; i < LEVELS; i++) c.spec[i].name = names[i];
  c.s[0] = ascope_new(rt);
  cr_assert_eq(td_use(c.s[0], &c.spec[0]), 0);
  c.r[0] = (rec){.body = chain_fail_body, .arg = &c, .index = 0};
  cr_assert_eq(rec_start(c.s[0], &c.r[0]), 0);
  cr_assert_eq(ascope_rt_run(rt), 0);
  for (int i = 0; i < LEVELS; i++) {
    assert_done(&c.r[i], UV_EPROTO);
    assert_err(&c.r[i], 0, UV_EPROTO, "test", "TD_OP");
    cr_assert_eq(c.spec[i].release_outcome, UV_EPROTO);
    if (i < LEVELS - 1) cr_assert_eq(c.st[i].cancelled, 1);
  }
  cr_assert_str_eq(td_log(), "+l0 +l1 +l2 +l3 -l3 -l2 -l1 -l0");
}

/* ---- unstarted and discarded children ------------------------------------- */

struct pend {
  ascope *kid;
  rec kr;
  td_spec kspec;
  int action; /* 0: start the kid later, 1: discard it later, 2: fail the parent, then start */
  ascope *parent;
  rec *pr;
  int turns, parent_done_early;
};

static void pend_body(ascope *s, rec *r) {
  struct pend *p = r->arg;
  p->kid = ascope_child(s);
  cr_assert_not_null(p->kid);
  cr_assert_eq(td_use(p->kid, &p->kspec), 0);
}

/* The child exists; and a few loop turns passed with the parent still
 * waiting for it. */
static bool pend_ready(void *arg) {
  struct pend *p = arg;
  return p->kid != NULL && ++p->turns >= 5;
}

static void pend_later(void *arg) {
  struct pend *p = arg;
  p->parent_done_early = p->pr->done_calls;
  if (p->action == 2) {
    ascope_fail(p->parent, UV_EIO, NULL);
    cr_assert_null(ascope_child(p->parent), "a failing parent takes no new children");
  }
  if (p->action == 1)
    ascope_discard(p->kid);
  else
    cr_assert_eq(rec_start(p->kid, &p->kr), 0);
}

static void run_pend(struct pend *p, rec *pr) {
  p->kspec.name = "k";
  ascope *s = ascope_new(rt);
  p->parent = s;
  p->pr = pr;
  pr->body = pend_body;
  pr->arg = p;
  cr_assert_eq(rec_start(s, pr), 0);
  static tu_timer t;
  tu_when(ascope_rt_loop(rt), &t, pend_ready, pend_later, p);
  cr_assert_eq(ascope_rt_run(rt), 0);
  cr_assert_eq(t.fired, 1);
  cr_assert_eq(p->parent_done_early, 0,
               "the parent completed while its child was neither started nor discarded");
  cr_assert_eq(pr->done_calls, 1);
}

Test(group, unstarted_child_keeps_parent_pending_until_started) {
  struct pend p = {.action = 0};
  rec pr = {0};
  run_pend(&p, &pr);
  assert_done(&pr, 0);
  assert_done(&p.kr, 0);
  cr_assert_eq(p.kr.body_calls, 1);
  cr_assert_lt(p.kr.done_seq, pr.done_seq);
  cr_assert_str_eq(td_log(), "+k -k");
}

Test(group, unstarted_child_keeps_parent_pending_until_discarded) {
  struct pend p = {.action = 1};
  rec pr = {0};
  run_pend(&p, &pr);
  assert_done(&pr, 0);
  cr_assert_eq(p.kr.done_calls, 0);
  cr_assert_eq(p.kspec.acquire_calls, 0, "a discarded child acquired");
  cr_assert_str_eq(td_log(), "");
}

/* A child cancelled (by its parent's failure) before it was started
 * completes at once with ECANCELED when started, acquiring nothing. */
Test(group, child_cancelled_before_start) {
  struct pend p = {.action = 2};
  rec pr = {0};
  run_pend(&p, &pr);
  assert_done(&pr, UV_EIO);
  cr_assert_eq(pr.nerr, 1);
  assert_done(&p.kr, ASCOPE_ECANCELED);
  cr_assert_eq(p.kr.body_calls, 0);
  cr_assert_eq(p.kspec.acquire_calls, 0);
}

/* ascope_child only while the parent runs and has not failed. */
struct childrule {
  ascope *from_done;
  bool from_done_null;
};

static void done_try_child(ascope *s, rec *r) {
  struct childrule *c = r->arg;
  c->from_done_null = ascope_child(s) == NULL;
}

Test(group, child_only_from_running_parent) {
  ascope *s = ascope_new(rt);
  cr_assert_null(ascope_child(s), "a child of a scope not started");
  cr_assert_null(ascope_child(NULL));
  struct childrule c = {0};
  rec r = {.on_done = done_try_child, .arg = &c};
  cr_assert_eq(rec_start(s, &r), 0);
  cr_assert_null(ascope_child(s), "a child of a scope whose body has not run");
  cr_assert_eq(ascope_rt_run(rt), 0);
  assert_done(&r, 0);
  cr_assert(c.from_done_null, "a child of a scope in its done");
}

/* A child started from an operation's callback, after the body returned. */
static int cb_spawn(ascope *s, int status, void *result, void *ud) {
  (void)result;
  struct kid *k = ud;
  k->s = ascope_child(s);
  cr_assert_not_null(k->s);
  cr_assert_eq(td_use(k->s, &k->spec), 0);
  k->r.body = kid_body;
  k->r.arg = k;
  cr_assert_eq(rec_start(k->s, &k->r), 0);
  return status;
}

static void body_spawn_later(ascope *s, rec *r) {
  cr_assert_eq(td_op_start(s, TD_OK_LATE, 2, 0, cb_spawn, r->arg, NULL), 0);
}

Test(group, child_from_callback) {
  struct kid k;
  init_kid(&k, "k", ACT_OK_LATE, 5);
  td_spec ps = {.name = "p"};
  ascope *s = ascope_new(rt);
  cr_assert_eq(td_use(s, &ps), 0);
  rec r = {.body = body_spawn_later, .arg = &k};
  cr_assert_eq(rec_start(s, &r), 0);
  cr_assert_eq(ascope_rt_run(rt), 0);
  assert_done(&r, 0);
  assert_done(&k.r, 0);
  cr_assert_str_eq(td_log(), "+p +k -k -p");
}
