/* Allocation failure, injected at every allocation of a scenario in turn:
 * a counting allocator (ascope_set_allocator) fails its N-th call, for
 * N = 1, 2, ... until the scenario runs through without reaching N. Each
 * time: every failure surfaces as NULL or UV_ENOMEM (or as a scope failing
 * with UV_ENOMEM), nothing crashes, every acquired resource is released
 * exactly once, and after ascope_rt_free no allocation is outstanding.
 * Also: the steady state of opening and closing scopes does not allocate. */
#include <criterion/criterion.h>

#include "test_driver.h"
#include "test_util.h"

TestSuite(alloc, .timeout = 60); /* a hang fails the test instead of stalling the run */

/* ---- the counting allocator ------------------------------------------------------ */

static long calls;       /* malloc + realloc calls so far */
static long fail_at;     /* the call that fails (1-based); 0: none */
static long outstanding; /* live blocks */
static int failures;     /* injected failures so far */

static void *c_malloc(size_t n) {
  if (++calls == fail_at) {
    failures++;
    return NULL;
  }
  void *p = malloc(n);
  if (p) outstanding++;
  return p;
}

static void *c_realloc(void *p, size_t n) {
  if (++calls == fail_at) {
    failures++;
    return NULL;
  }
  void *q = realloc(p, n);
  if (q && p == NULL) outstanding++;
  return q;
}

static void c_free(void *p) {
  if (p) outstanding--;
  free(p);
}

static void use_counting(long at) {
  calls = 0;
  fail_at = at;
  outstanding = 0;
  failures = 0;
  cr_assert_eq(ascope_set_allocator(c_malloc, c_realloc, c_free), 0);
}

static void restore(void) {
  cr_assert_eq(ascope_set_allocator(NULL, NULL, NULL), 0);
}

/* ---- the scenario ------------------------------------------------------------------ */

/* A status is acceptable if it is what the scenario expects, or UV_ENOMEM,
 * or a consequence of a UV_ENOMEM elsewhere (a sibling cancelled). */
static int bad_status; /* a status that is none of these */

static void expect(int got, int want, bool allow_cancel) {
  if (got == want) return;
  if (fail_at == 0) { /* nothing failed: exactly what the scenario says */
    if (bad_status == 0) bad_status = got ? got : 1;
    return;
  }
  if (got == UV_ENOMEM) return;
  if (allow_cancel && got == ASCOPE_ECANCELED) return;
  if (bad_status == 0) bad_status = got ? got : 1;
}

static long posted;
static void on_post(void *ud) {
  (void)ud;
  posted++;
}

struct scen {
  ascope_lock *lock;
  ascope_sem *sem;
  td_spec a, b, c, k1, k2;
  td_op_stats st;
  rec top, kid1, kid2, other;
  ascope *kid1_s, *kid2_s;
  char longmsg[400];
  int use_rc_bad; /* an API call returned something other than 0 / UV_ENOMEM */
};

static void kid1_body(ascope *s, rec *r) {
  struct scen *sc = r->arg;
  /* an op that fails and is handled, then a long-message failure of its own */
  int rc = td_op_start(s, TD_OK_LATE, 1, 0, NULL, NULL, &sc->st);
  if (rc != 0 && rc != ASCOPE_ECANCELED) sc->use_rc_bad = rc;
  ascope_fail(s, UV_EIO, sc->longmsg);
}

static void kid2_body(ascope *s, rec *r) {
  struct scen *sc = r->arg;
  int rc = td_op_start(s, TD_OK_LATE, 2, 0, NULL, NULL, &sc->st);
  if (rc != 0 && rc != ASCOPE_ECANCELED) sc->use_rc_bad = rc;
}

static void top_body(ascope *s, rec *r) {
  struct scen *sc = r->arg;
  int rc = td_op_start(s, TD_OK_LATE, 1, 0, NULL, NULL, &sc->st);
  if (rc != 0 && rc != ASCOPE_ECANCELED) sc->use_rc_bad = rc;
  /* collect-all children: one fails (long message, failing release chained
   * behind it), one succeeds */
  sc->kid1_s = ascope_child(s);
  if (sc->kid1_s) {
    rc = ascope_use(sc->kid1_s, &td_driver, &sc->k1, "a fairly long option string for k1");
    if (rc != 0 && rc != UV_ENOMEM) sc->use_rc_bad = rc;
    sc->kid1 = (rec){.body = kid1_body, .arg = sc};
    if (rec_start(sc->kid1_s, &sc->kid1) != 0) sc->use_rc_bad = 1;
  }
  sc->kid2_s = ascope_child(s);
  if (sc->kid2_s) {
    rc = ascope_use_sem(sc->kid2_s, sc->sem);
    if (rc != 0 && rc != UV_ENOMEM) sc->use_rc_bad = rc;
    rc = td_use(sc->kid2_s, &sc->k2);
    if (rc != 0 && rc != UV_ENOMEM) sc->use_rc_bad = rc;
    sc->kid2 = (rec){.body = kid2_body, .arg = sc};
    if (rec_start(sc->kid2_s, &sc->kid2) != 0) sc->use_rc_bad = 1;
  }
  for (int i = 0; i < 3; i++) {
    rc = ascope_rt_post(ascope_scope_rt(s), on_post, NULL);
    if (rc != 0 && rc != UV_ENOMEM) sc->use_rc_bad = rc;
  }
}

/* Checks every spec: acquired at most once, released once iff acquired. */
static void check_spec(const td_spec *sp) {
  cr_assert_leq(sp->acquired, 1, "%s acquired %d times", sp->name, sp->acquired);
  cr_assert_eq(sp->release_calls, sp->acquired, "%s acquired %d, released %d", sp->name,
               sp->acquired, sp->release_calls);
}

/* Runs the scenario with the n-th allocation failing. Returns true when the
 * failure was reached. */
static bool run_scenario(long n) {
  td_reset();
  bad_status = 0;
  posted = 0;
  use_counting(n);
  static struct scen sc;
  memset(&sc, 0, sizeof sc);
  memset(sc.longmsg, 'm', sizeof sc.longmsg - 1);
  sc.a.name = "a";
  sc.b = (td_spec){.name = "b", .acquire = TD_OK_LATE, .delay_ms = 1};
  sc.c = (td_spec){.name = "c"};
  sc.k1 = (td_spec){.name = "k1", .release = TD_FAIL};
  sc.k2 = (td_spec){.name = "k2", .release = TD_OK_LATE, .delay_ms = 1};

  ascope_rt *rt = ascope_rt_new(NULL);
  if (rt == NULL) {
    restore();
    cr_assert_eq(failures, 1, "ascope_rt_new returned NULL without a failed allocation");
    cr_assert_eq(outstanding, 0, "n=%ld: %ld blocks leaked", n, outstanding);
    return true;
  }
  sc.lock = ascope_lock_new(rt);
  sc.sem = ascope_sem_new(rt, 1);
  bool have_sync = sc.lock && sc.sem;

  ascope *top = ascope_new(rt);
  if (top && have_sync) {
    int rc;
    if ((rc = ascope_use(top, &td_driver, &sc.a, "opt=a")) && rc != UV_ENOMEM) sc.use_rc_bad = rc;
    if ((rc = ascope_use_lock(top, sc.lock)) && rc != UV_ENOMEM) sc.use_rc_bad = rc;
    if ((rc = ascope_use(top, &td_driver, &sc.b, NULL)) && rc != UV_ENOMEM) sc.use_rc_bad = rc;
    cr_assert_eq(ascope_set_mode(top, ASCOPE_COLLECT_ALL), 0);
    cr_assert_eq(ascope_set_timeout(top, 5000), 0);
    sc.top = (rec){.body = top_body, .arg = &sc};
    cr_assert_eq(rec_start(top, &sc.top), 0);
  } else if (top) {
    ascope_discard(top);
    top = NULL;
  }
  /* a second top-level scope waiting on the same lock */
  ascope *other = have_sync ? ascope_new(rt) : NULL;
  if (other) {
    int rc;
    if ((rc = ascope_use_lock(other, sc.lock)) && rc != UV_ENOMEM) sc.use_rc_bad = rc;
    if ((rc = ascope_use(other, &td_driver, &sc.c, "opt=c")) && rc != UV_ENOMEM) sc.use_rc_bad = rc;
    sc.other = (rec){.arg = &sc};
    cr_assert_eq(rec_start(other, &sc.other), 0);
  }
  cr_assert_eq(ascope_rt_run(rt), 0);

  if (top) {
    cr_assert_eq(sc.top.done_calls, 1);
    expect(sc.top.done_status, 0, false);
    if (sc.kid1_s) {
      cr_assert_eq(sc.kid1.done_calls, 1);
      expect(sc.kid1.done_status, UV_EIO, true);
    }
    if (sc.kid2_s) {
      cr_assert_eq(sc.kid2.done_calls, 1);
      expect(sc.kid2.done_status, 0, true);
    }
  }
  if (other) {
    cr_assert_eq(sc.other.done_calls, 1);
    expect(sc.other.done_status, 0, false);
  }
  cr_assert_eq(bad_status, 0, "n=%ld: unexpected status %d (%s)", n, bad_status,
               ascope_err_name(bad_status));
  cr_assert_eq(sc.use_rc_bad, 0, "n=%ld: a call failed with %d", n, sc.use_rc_bad);
  check_spec(&sc.a);
  check_spec(&sc.b);
  check_spec(&sc.c);
  check_spec(&sc.k1);
  check_spec(&sc.k2);
  cr_assert_eq(td_live(), 0);
  cr_assert_leq(posted, 3);
  cr_assert_eq(sc.st.completed, sc.st.started);
  if (n == 0) {
    /* nothing failed: the whole scenario ran as written */
    cr_assert_not_null(top);
    cr_assert_not_null(other);
    cr_assert_eq(posted, 3);
    cr_assert_eq(sc.st.started, 3);
    cr_assert_eq(sc.kid1.nerr, 2);
    assert_err(&sc.kid1, 0, UV_EIO, NULL, NULL);
    cr_assert_eq(strncmp(sc.kid1.err[0].msg, sc.longmsg, sizeof sc.kid1.err[0].msg - 1), 0);
    assert_err(&sc.kid1, 1, ASCOPE_EDRIVER, "test", "TD_RELEASE");
    const td_spec *all[5] = {&sc.a, &sc.b, &sc.c, &sc.k1, &sc.k2};
    for (int i = 0; i < 5; i++) cr_assert_eq(all[i]->acquired, 1, "%s", all[i]->name);
  }

  if (sc.lock) ascope_lock_free(sc.lock);
  if (sc.sem) ascope_sem_free(sc.sem);
  cr_assert_eq(ascope_rt_free(rt), 0);
  bool hit = failures > 0;
  restore();
  cr_assert_eq(outstanding, 0, "n=%ld: %ld blocks leaked", n, outstanding);
  return hit;
}

Test(alloc, every_allocation_fails_in_turn) {
  long n = 1;
  while (run_scenario(n)) {
    n++;
    cr_assert_lt(n, 10000, "the scenario never completes");
  }
  /* the scenario really allocates: a run without failures made n-1 calls */
  cr_assert_gt(n, 20, "only %ld allocations: the allocator hook is not used", n - 1);
}

/* Without injected failure the scenario runs exactly as written (so the
 * checks above are not vacuous). */
Test(alloc, scenario_without_failure) {
  cr_assert(!run_scenario(0));
}

/* ---- steady state --------------------------------------------------------------------- */

static void steady_body(ascope *s, void *ud) {
  td_op_stats *st = ud;
  ascope *k = ascope_child(s);
  static td_spec ks;
  ks = (td_spec){.name = "k"};
  td_use(k, &ks);
  ascope_start(k, NULL, NULL, NULL);
  td_op_start(s, TD_OK, 0, 0, NULL, NULL, st);
}

static void steady_round(ascope_rt *rt, ascope_lock *l, int n) {
  static td_spec sp[64];
  static td_op_stats st;
  for (int i = 0; i < n; i++) {
    sp[i] = (td_spec){.name = "s"};
    ascope *s = ascope_new(rt);
    cr_assert_not_null(s);
    chk_eq(ascope_use(s, &td_driver, &sp[i], "some=options"), 0, i);
    chk_eq(ascope_use_lock(s, l), 0, i);
    chk_eq(ascope_start(s, steady_body, NULL, &st), 0, i);
  }
  cr_assert_eq(ascope_rt_run(rt), 0);
}

Test(alloc, steady_state_does_not_allocate) {
  td_reset();
  use_counting(0);
  ascope_rt *rt = ascope_rt_new(NULL);
  ascope_lock *l = ascope_lock_new(rt);
  /* Warm the caches. Two rounds: a recycled resource object keeps the state
   * and option buffers it grew, and in the first reuse a lock's object may
   * serve a test use (larger state, options) and grow once more. */
  steady_round(rt, l, 64);
  steady_round(rt, l, 64);
  long before = calls;
  steady_round(rt, l, 64);
  steady_round(rt, l, 10);
  long after = calls;
  ascope_lock_free(l);
  cr_assert_eq(ascope_rt_free(rt), 0);
  restore();
  cr_assert_eq(after - before, 0, "%ld allocations in the steady state", after - before);
  cr_assert_eq(outstanding, 0);
}

Test(alloc, post_enomem) {
  td_reset();
  use_counting(0);
  ascope_rt *rt = ascope_rt_new(NULL);
  fail_at = calls + 1; /* the post queue's first growth */
  cr_assert_eq(ascope_rt_post(rt, on_post, NULL), UV_ENOMEM);
  posted = 0;
  cr_assert_eq(ascope_rt_post(rt, on_post, NULL), 0);
  cr_assert_eq(ascope_rt_run(rt), 0);
  cr_assert_eq(posted, 1, "the failed post was delivered");
  cr_assert_eq(ascope_rt_free(rt), 0);
  restore();
  cr_assert_eq(outstanding, 0);
}

/* ---- each failure point, one at a time, with its documented result ----------- */

/* A failed ascope_use (at each of its allocations: the resource object, its
 * state, its copy of the options) returns UV_ENOMEM and leaves the scope as
 * it was: started, it runs with the uses it had. */
Test(alloc, failed_use_leaves_scope_usable) {
  for (long k = 1; k <= 3; k++) {
    td_reset();
    use_counting(0);
    ascope_rt *rt = ascope_rt_new(NULL);
    ascope *s = ascope_new(rt);
    td_spec a = {.name = "a"}, b = {.name = "b"};
    cr_assert_eq(td_use(s, &a), 0);
    fail_at = calls + k;
    cr_assert_eq(ascope_use(s, &td_driver, &b, "some options"), UV_ENOMEM, "k=%ld", k);
    cr_assert_eq(failures, 1);
    rec r = {0};
    cr_assert_eq(rec_start(s, &r), 0);
    cr_assert_eq(ascope_rt_run(rt), 0);
    assert_done(&r, 0);
    cr_assert_str_eq(td_log(), "+a -a");
    cr_assert_eq(b.acquire_calls, 0);
    cr_assert_eq(ascope_rt_free(rt), 0);
    restore();
    cr_assert_eq(outstanding, 0, "k=%ld: %ld blocks leaked", k, outstanding);
  }
}

struct point {
  int op_rc;
  ascope *child;
  bool child_tried;
  char longmsg[400];
  bool fail_chain; /* the secondary error's object cannot be had */
};

static void body_op_nomem(ascope *s, rec *r) {
  struct point *p = r->arg;
  fail_at = calls + 1;
  p->op_rc = td_op_start(s, TD_OK, 0, 0, NULL, NULL, NULL);
}

/* ascope_op_begin out of memory: NULL, the driver reports ASCOPE_ECANCELED,
 * and the scope fails with UV_ENOMEM saying why. */
Test(alloc, op_begin_out_of_memory_fails_scope) {
  td_reset();
  use_counting(0);
  ascope_rt *rt = ascope_rt_new(NULL);
  ascope *s = ascope_new(rt);
  td_spec a = {.name = "a"};
  cr_assert_eq(td_use(s, &a), 0);
  struct point p = {0};
  rec r = {.body = body_op_nomem, .arg = &p};
  cr_assert_eq(rec_start(s, &r), 0);
  cr_assert_eq(ascope_rt_run(rt), 0);
  cr_assert_eq(failures, 1);
  cr_assert_eq(p.op_rc, ASCOPE_ECANCELED);
  assert_done(&r, UV_ENOMEM);
  assert_err(&r, 0, UV_ENOMEM, "test", NULL);
  cr_assert(strstr(r.err[0].msg, "out of memory") != NULL, "message: %s", r.err[0].msg);
  cr_assert_eq(a.release_outcome, UV_ENOMEM);
  cr_assert_eq(ascope_rt_free(rt), 0);
  restore();
  cr_assert_eq(outstanding, 0);
}

static void body_child_nomem(ascope *s, rec *r) {
  struct point *p = r->arg;
  fail_at = calls + 1;
  p->child = ascope_child(s);
  p->child_tried = true;
}

/* ascope_child out of memory: NULL, and the parent goes on unharmed. */
Test(alloc, child_out_of_memory_is_null) {
  td_reset();
  use_counting(0);
  ascope_rt *rt = ascope_rt_new(NULL);
  ascope *s = ascope_new(rt);
  struct point p = {0};
  rec r = {.body = body_child_nomem, .arg = &p};
  cr_assert_eq(rec_start(s, &r), 0);
  cr_assert_eq(ascope_rt_run(rt), 0);
  cr_assert(p.child_tried);
  cr_assert_null(p.child);
  cr_assert_eq(failures, 1);
  assert_done(&r, 0);
  cr_assert_eq(ascope_rt_free(rt), 0);
  restore();
  cr_assert_eq(outstanding, 0);
}

static void body_long_fail_nomem(ascope *s, rec *r) {
  struct point *p = r->arg;
  fail_at = calls + 1; /* the message's heap buffer */
  ascope_fail(s, UV_EIO, p->longmsg);
  if (p->fail_chain) fail_at = calls + 1; /* the release's secondary error */
}

/* An error path never fails for want of memory: a long message that cannot
 * get its buffer is truncated, not lost; a secondary error that cannot get
 * its object is dropped, and the first error stands. */
Test(alloc, error_paths_without_memory) {
  for (int chain = 0; chain <= 1; chain++) {
    td_reset();
    use_counting(0);
    ascope_rt *rt = ascope_rt_new(NULL);
    ascope *s = ascope_new(rt);
    td_spec a = {.name = "a", .release = TD_FAIL};
    cr_assert_eq(td_use(s, &a), 0);
    struct point p = {.fail_chain = chain};
    memset(p.longmsg, 'q', sizeof p.longmsg - 1);
    rec r = {.body = body_long_fail_nomem, .arg = &p};
    cr_assert_eq(rec_start(s, &r), 0);
    cr_assert_eq(ascope_rt_run(rt), 0);
    cr_assert_eq(failures, 1 + chain);
    assert_done(&r, UV_EIO);
    assert_err(&r, 0, UV_EIO, NULL, NULL);
    size_t n = strlen(r.err[0].msg);
    cr_assert(n > 100 && n < sizeof p.longmsg - 1, "message of %zu characters", n);
    cr_assert_eq(strspn(r.err[0].msg, "q"), n, "the truncated message is not a prefix");
    if (chain) {
      cr_assert_eq(r.nerr, 1, "a secondary error appeared from nowhere");
    } else {
      cr_assert_eq(r.nerr, 2);
      assert_err(&r, 1, ASCOPE_EDRIVER, "test", "TD_RELEASE");
    }
    cr_assert_eq(a.release_calls, 1);
    cr_assert_eq(ascope_rt_free(rt), 0);
    restore();
    cr_assert_eq(outstanding, 0);
  }
}

Test(alloc, constructors_out_of_memory_are_null) {
  use_counting(1);
  cr_assert_null(ascope_rt_new(NULL));
  restore();
  cr_assert_eq(outstanding, 0);
  use_counting(0);
  ascope_rt *rt = ascope_rt_new(NULL);
  fail_at = calls + 1;
  cr_assert_null(ascope_new(rt));
  fail_at = calls + 1;
  cr_assert_null(ascope_lock_new(rt));
  fail_at = calls + 1;
  cr_assert_null(ascope_sem_new(rt, 2));
  cr_assert_eq(failures, 3);
  /* and the runtime is fine afterwards */
  ascope *s = ascope_new(rt);
  cr_assert_not_null(s);
  rec r = {0};
  cr_assert_eq(rec_start(s, &r), 0);
  cr_assert_eq(ascope_rt_run(rt), 0);
  assert_done(&r, 0);
  cr_assert_eq(ascope_rt_free(rt), 0);
  restore();
  cr_assert_eq(outstanding, 0);
}
