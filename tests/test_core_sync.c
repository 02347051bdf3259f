/* The async lock and the counting semaphore: FIFO order (by arrival, not by
 * start), cancelled and timed-out waiters leaving the queue without losing a
 * wake-up, the permit count never exceeded, freeing with waiters
 * (ASCOPE_ECLOSED) and with a holder (memory lives until it releases). */
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

TestSuite(sync, .init = setup, .fini = teardown, .timeout = 60);

/* Holders right now (body entered, done not yet run) and the most seen. */
static int holders, max_holders;
static int order[20000], norder;

struct waiter {
  rec r;
  td_spec pre;     /* a use before the lock, if named */
  enum td_mode op; /* what the body does */
  unsigned op_ms;
  td_manual m; /* for op == TD_HANG: ended by hand */
  ascope *s;
};

static void waiter_body(ascope *s, rec *r) {
  struct waiter *w = r->arg;
  holders++;
  if (holders > max_holders) max_holders = holders;
  if (norder < (int)(sizeof order / sizeof *order)) order[norder++] = r->index;
  if (w->op == TD_HANG)
    cr_assert_eq(td_manual_start(s, &w->m), 0);
  else if (w->op_ms)
    cr_assert_eq(td_op_start(s, w->op, w->op_ms, 0, NULL, NULL, NULL), 0);
}

static void waiter_done(ascope *s, rec *r) {
  (void)s;
  if (r->body_calls) holders--;
}

/* A scope using [pre?] + lock (or sem). */
static void start_waiter(struct waiter *w, int index, ascope_lock *l, ascope_sem *sem,
                         uint64_t timeout) {
  w->s = ascope_new(rt);
  cr_assert_not_null(w->s);
  if (w->pre.name) cr_assert_eq(td_use(w->s, &w->pre), 0);
  if (l) cr_assert_eq(ascope_use_lock(w->s, l), 0);
  if (sem) cr_assert_eq(ascope_use_sem(w->s, sem), 0);
  if (timeout) cr_assert_eq(ascope_set_timeout(w->s, timeout), 0);
  w->r.body = waiter_body;
  w->r.on_done = waiter_done;
  w->r.arg = w;
  w->r.index = index;
  cr_assert_eq(rec_start(w->s, &w->r), 0);
}

static void reset_counts(void) {
  holders = max_holders = norder = 0;
}

/* ---- FIFO ---------------------------------------------------------------------- */

Test(sync, lock_fifo_in_start_order) {
  reset_counts();
  ascope_lock *l = ascope_lock_new(rt);
  cr_assert_not_null(l);
  static struct waiter w[50];
  memset(w, 0, sizeof w);
  for (int i = 0; i < 50; i++) {
    w[i].op = TD_OK_LATE;
    w[i].op_ms = 1;
    start_waiter(&w[i], i, l, NULL, 0);
  }
  cr_assert_eq(ascope_rt_run(rt), 0);
  cr_assert_eq(norder, 50);
  for (int i = 0; i < 50; i++) {
    assert_done(&w[i].r, 0);
    cr_assert_eq(order[i], i, "body %d was scope %d", i, order[i]);
  }
  cr_assert_eq(max_holders, 1, "%d holders of a lock at once", max_holders);
  ascope_lock_free(l);
}

/* Waiters arrive at the lock in the reverse of their start order (a use
 * before the lock completes later for earlier scopes); the lock serves them
 * by arrival. A holder keeps the lock until all have queued. */
Test(sync, lock_fifo_by_arrival) {
  reset_counts();
  ascope_lock *l = ascope_lock_new(rt);
  static struct waiter h, w[20];
  memset(&h, 0, sizeof h);
  memset(w, 0, sizeof w);
  h.op = TD_OK_LATE;
  h.op_ms = 60;
  start_waiter(&h, 100, l, NULL, 0);
  static char names[20][8];
  for (int i = 0; i < 20; i++) {
    snprintf(names[i], sizeof names[i], "w%d", i);
    w[i].pre = (td_spec){.name = names[i], .acquire = TD_OK_LATE, .delay_ms = 2 + (19 - i)};
    start_waiter(&w[i], i, l, NULL, 0);
  }
  cr_assert_eq(ascope_rt_run(rt), 0);
  cr_assert_eq(norder, 21);
  cr_assert_eq(order[0], 100);
  for (int i = 0; i < 20; i++) {
    cr_assert_eq(order[1 + i], 19 - i, "body %d was scope %d, want %d", 1 + i, order[1 + i],
                 19 - i);
    assert_done(&w[i].r, 0);
  }
  cr_assert_eq(max_holders, 1);
  ascope_lock_free(l);
}

/* Ten thousand waiters on one lock: served in order, and the chain of
 * hand-overs does not grow the stack. */
Test(sync, lock_ten_thousand_waiters) {
  reset_counts();
  ascope_lock *l = ascope_lock_new(rt);
  enum { N = 10000 };
  struct waiter *w = calloc(N, sizeof *w);
  cr_assert_not_null(w);
  for (int i = 0; i < N; i++) {
    w[i].s = ascope_new(rt);
    chk_eq(ascope_use_lock(w[i].s, l), 0, i);
    w[i].r = (rec){.body = waiter_body, .on_done = waiter_done, .arg = &w[i], .index = i};
    chk_eq(rec_start(w[i].s, &w[i].r), 0, i);
  }
  cr_assert_eq(ascope_rt_run(rt), 0);
  cr_assert_eq(norder, N);
  for (int i = 0; i < N; i++) {
    chk_eq(order[i], i, i);
    chk_eq(w[i].r.done_calls, 1, i);
    chk_eq(w[i].r.done_status, 0, i);
  }
  cr_assert_eq(max_holders, 1);
  free(w);
  ascope_lock_free(l);
}

/* ---- waiters leaving the queue -------------------------------------------------- */

static void end_holder_cb(void *arg) {
  td_manual_end(&((struct waiter *)arg)->m, 0);
}

/* The holder h holds, and w has queued behind it. */
struct queued {
  struct waiter *h, *w;
  tu_timer later;
};

static bool is_queued(void *arg) {
  struct queued *q = arg;
  return q->h->m.started && q->w->pre.acquired;
}

static void end_queued_holder(void *arg) {
  end_holder_cb(((struct queued *)arg)->h);
}

static bool waiter_gone(void *arg) {
  return ((struct queued *)arg)->w->r.done_calls == 1;
}

/* cancels the waiter; once it is done the holder lets go (a fixed delay
 * here could pass before the waiter's done on a loaded machine) */
static void cancel_waiter_cb(void *arg) {
  struct queued *q = arg;
  ascope_cancel(q->w->s);
  tu_when(ascope_rt_loop(rt), &q->later, waiter_gone, end_queued_holder, q);
}

Test(sync, cancelled_waiter_leaves_queue_next_still_served) {
  reset_counts();
  ascope_lock *l = ascope_lock_new(rt);
  static struct waiter h, w[3];
  memset(&h, 0, sizeof h);
  memset(w, 0, sizeof w);
  h.op = TD_HANG;
  start_waiter(&h, 100, l, NULL, 0);
  static const char *names[3] = {"w0", "w1", "w2"};
  for (int i = 0; i < 3; i++) {
    w[i].pre.name = names[i];
    start_waiter(&w[i], i, l, NULL, 0);
  }
  static struct queued q;
  q = (struct queued){.h = &h, .w = &w[1]};
  static tu_timer t1;
  tu_when(ascope_rt_loop(rt), &t1, is_queued, cancel_waiter_cb, &q);
  cr_assert_eq(ascope_rt_run(rt), 0);
  cr_assert_eq(t1.fired, 1);
  cr_assert_eq(q.later.fired, 1);
  assert_done(&h.r, 0);
  assert_done(&w[1].r, ASCOPE_ECANCELED);
  cr_assert_eq(w[1].r.body_calls, 0);
  cr_assert_eq(w[1].pre.release_outcome, ASCOPE_ECANCELED);
  /* it left before the holder released: done before the others ran */
  cr_assert_lt(w[1].r.done_seq, w[0].r.body_seq);
  assert_done(&w[0].r, 0);
  assert_done(&w[2].r, 0);
  cr_assert_eq(norder, 3);
  cr_assert_eq(order[0], 100);
  cr_assert_eq(order[1], 0);
  cr_assert_eq(order[2], 2);
  ascope_lock_free(l);
}

static struct waiter tl_h, tl_w[3];
static ascope_lock *tl_lock;

static void launch_timed_out(void *ud) {
  (void)ud;
  start_waiter(&tl_h, 100, tl_lock, NULL, 0);
  for (int i = 0; i < 3; i++)
    start_waiter(&tl_w[i], i, tl_lock, NULL, i == 0 ? 10 : 0); /* the head of the queue times out */
}

Test(sync, timed_out_waiter_leaves_queue_next_still_served) {
  reset_counts();
  tl_lock = ascope_lock_new(rt);
  struct waiter *w = tl_w;
  memset(&tl_h, 0, sizeof tl_h);
  memset(tl_w, 0, sizeof tl_w);
  tl_h.op = TD_OK_LATE;
  tl_h.op_ms = 40;
  static const char *names[3] = {"w0", "w1", "w2"};
  for (int i = 0; i < 3; i++) w[i].pre.name = names[i];
  /* started from inside the loop, so all are queued before any deadline */
  cr_assert_eq(ascope_rt_post(rt, launch_timed_out, NULL), 0);
  cr_assert_eq(ascope_rt_run(rt), 0);
  assert_done(&tl_h.r, 0);
  assert_done(&w[0].r, ASCOPE_ETIMEDOUT);
  cr_assert_eq(w[0].r.body_calls, 0);
  cr_assert_eq(w[0].pre.release_outcome, ASCOPE_ETIMEDOUT);
  cr_assert_lt(w[0].r.done_seq, tl_h.r.done_seq, "the waiter did not leave before the holder");
  assert_done(&w[1].r, 0);
  assert_done(&w[2].r, 0);
  cr_assert_eq(norder, 3);
  cr_assert_eq(order[1], 1);
  cr_assert_eq(order[2], 2);
  ascope_lock_free(tl_lock);
}

/* The holder's done cancels the waiter the lock was just handed to (granted,
 * not yet run): that waiter gives the lock straight back, and the next one
 * still gets it. */
static void done_cancel_next(ascope *s, rec *r) {
  waiter_done(s, r);
  struct waiter *next = ((struct waiter *)r->arg) + 1;
  ascope_cancel(next->s);
}

Test(sync, waiter_cancelled_right_after_hand_over) {
  reset_counts();
  ascope_lock *l = ascope_lock_new(rt);
  static struct waiter w[3];
  memset(w, 0, sizeof w);
  w[0].op = TD_OK_LATE;
  w[0].op_ms = 5;
  static const char *names[3] = {NULL, "w1", "w2"};
  for (int i = 0; i < 3; i++) {
    w[i].pre.name = names[i];
    start_waiter(&w[i], i, l, NULL, 0);
  }
  w[0].r.on_done = done_cancel_next;
  cr_assert_eq(ascope_rt_run(rt), 0);
  assert_done(&w[0].r, 0);
  assert_done(&w[1].r, ASCOPE_ECANCELED);
  cr_assert_eq(w[1].r.body_calls, 0);
  assert_done(&w[2].r, 0);
  cr_assert_eq(w[2].r.body_calls, 1, "the wake-up was lost");
  cr_assert_eq(max_holders, 1);
  ascope_lock_free(l);
}

/* After every waiter left, the lock is free for the next scope at once. */
Test(sync, lock_free_again_after_waiters_left) {
  reset_counts();
  ascope_lock *l = ascope_lock_new(rt);
  static struct waiter h, w[4];
  memset(&h, 0, sizeof h);
  memset(w, 0, sizeof w);
  h.op = TD_OK_LATE;
  h.op_ms = 20;
  start_waiter(&h, 100, l, NULL, 0);
  for (int i = 0; i < 4; i++) start_waiter(&w[i], i, l, NULL, 5);
  cr_assert_eq(ascope_rt_run(rt), 0);
  for (int i = 0; i < 4; i++) assert_done(&w[i].r, ASCOPE_ETIMEDOUT);
  assert_done(&h.r, 0);
  /* a newcomer gets it without waiting; two more queue behind it */
  static struct waiter n[3];
  memset(n, 0, sizeof n);
  for (int i = 0; i < 3; i++) {
    n[i].op = TD_OK_LATE;
    n[i].op_ms = 1;
    start_waiter(&n[i], 10 + i, l, NULL, 1000);
  }
  cr_assert_eq(ascope_rt_run(rt), 0);
  for (int i = 0; i < 3; i++) assert_done(&n[i].r, 0);
  cr_assert_eq(max_holders, 1);
  ascope_lock_free(l);
}

/* A scope whose use after the lock fails releases the lock: the next waiter
 * gets it. */
Test(sync, lock_released_when_a_later_use_fails) {
  reset_counts();
  ascope_lock *l = ascope_lock_new(rt);
  static struct waiter a, b;
  memset(&a, 0, sizeof a);
  memset(&b, 0, sizeof b);
  a.s = ascope_new(rt);
  cr_assert_eq(ascope_use_lock(a.s, l), 0);
  td_spec bad = {.name = "bad", .acquire = TD_FAIL_LATE, .delay_ms = 3};
  cr_assert_eq(td_use(a.s, &bad), 0);
  a.r = (rec){.body = waiter_body, .on_done = waiter_done, .arg = &a};
  cr_assert_eq(rec_start(a.s, &a.r), 0);
  start_waiter(&b, 1, l, NULL, 0);
  cr_assert_eq(ascope_rt_run(rt), 0);
  assert_done(&a.r, ASCOPE_EDRIVER);
  cr_assert_eq(a.r.body_calls, 0);
  assert_done(&b.r, 0);
  cr_assert_eq(b.r.body_calls, 1);
  ascope_lock_free(l);
}

/* ---- semaphore -------------------------------------------------------------------- */

static void sem_case(unsigned permits, int n) {
  reset_counts();
  ascope_sem *sem = ascope_sem_new(rt, permits);
  cr_assert_not_null(sem);
  struct waiter *w = calloc((size_t)n, sizeof *w);
  for (int i = 0; i < n; i++) {
    w[i].op = TD_OK_LATE;
    w[i].op_ms = 2 + (unsigned)(i % 3);
    start_waiter(&w[i], i, NULL, sem, 0);
  }
  cr_assert_eq(ascope_rt_run(rt), 0);
  for (int i = 0; i < n; i++) assert_done(&w[i].r, 0);
  cr_assert_eq(norder, n);
  cr_assert_eq(max_holders, (int)permits, "%d holders at once, %u permits", max_holders, permits);
  cr_assert_eq(holders, 0);
  free(w);
  ascope_sem_free(sem);
}

Test(sync, semaphore_never_more_holders_than_permits) {
  sem_case(3, 20);
  sem_case(1, 10);
  sem_case(5, 40);
}

Test(sync, semaphore_zero_permits_waiter_times_out) {
  reset_counts();
  ascope_sem *sem = ascope_sem_new(rt, 0);
  static struct waiter w;
  memset(&w, 0, sizeof w);
  w.pre.name = "pre";
  start_waiter(&w, 0, NULL, sem, 10);
  cr_assert_eq(ascope_rt_run(rt), 0);
  assert_done(&w.r, ASCOPE_ETIMEDOUT);
  assert_err(&w.r, 0, ASCOPE_ETIMEDOUT, NULL, NULL);
  cr_assert_eq(w.r.body_calls, 0);
  ascope_sem_free(sem);
}

/* A scope holding two permits of one semaphore, and a lock and a semaphore
 * together: released in reverse. */
Test(sync, sem_and_lock_in_one_scope) {
  reset_counts();
  ascope_sem *sem = ascope_sem_new(rt, 2);
  ascope_lock *l = ascope_lock_new(rt);
  static struct waiter a, b;
  memset(&a, 0, sizeof a);
  memset(&b, 0, sizeof b);
  a.s = ascope_new(rt);
  cr_assert_eq(ascope_use_sem(a.s, sem), 0);
  cr_assert_eq(ascope_use_sem(a.s, sem), 0);
  cr_assert_eq(ascope_use_lock(a.s, l), 0);
  a.op = TD_OK_LATE;
  a.op_ms = 5;
  a.r = (rec){.body = waiter_body, .on_done = waiter_done, .arg = &a, .index = 0};
  cr_assert_eq(rec_start(a.s, &a.r), 0);
  start_waiter(&b, 1, NULL, sem, 0); /* needs one of the two permits a holds */
  cr_assert_eq(ascope_rt_run(rt), 0);
  assert_done(&a.r, 0);
  assert_done(&b.r, 0);
  cr_assert_gt(b.r.body_seq, a.r.done_seq, "b ran while a held both permits");
  ascope_lock_free(l);
  ascope_sem_free(sem);
}

/* ---- freeing ------------------------------------------------------------------------ */

struct freeing {
  ascope_lock *l;
  struct waiter *h, *w, *late;
  tu_timer later;
};

static bool all_queued(void *arg) {
  struct freeing *f = arg;
  return f->h->m.started && f->w[0].pre.acquired && f->w[1].pre.acquired;
}

static void end_freeing_holder(void *arg) {
  end_holder_cb(((struct freeing *)arg)->h);
}

static bool waiters_failed(void *arg) {
  struct freeing *f = arg;
  return f->w[0].r.done_calls && f->w[1].r.done_calls && f->late->r.done_calls;
}

static void free_lock_cb(void *arg) {
  struct freeing *f = arg;
  ascope_lock_free(f->l);
  /* freed but still held: a newcomer is refused, not left waiting */
  start_waiter(f->late, 50, f->l, NULL, 0);
  /* once the waiters and the newcomer are done, the holder lets go */
  tu_when(ascope_rt_loop(rt), &f->later, waiters_failed, end_freeing_holder, f);
}

Test(sync, lock_free_fails_waiters_with_eclosed) {
  reset_counts();
  static struct waiter h, w[2], late;
  memset(&h, 0, sizeof h);
  memset(w, 0, sizeof w);
  memset(&late, 0, sizeof late);
  static struct freeing f;
  f.l = ascope_lock_new(rt);
  f.h = &h;
  f.w = w;
  f.late = &late;
  h.op = TD_HANG;
  start_waiter(&h, 100, f.l, NULL, 0);
  static const char *names[2] = {"w0", "w1"};
  for (int i = 0; i < 2; i++) {
    w[i].pre.name = names[i];
    start_waiter(&w[i], i, f.l, NULL, 0);
  }
  static tu_timer t1;
  tu_when(ascope_rt_loop(rt), &t1, all_queued, free_lock_cb, &f);
  cr_assert_eq(ascope_rt_run(rt), 0);
  cr_assert_eq(t1.fired, 1);
  cr_assert_eq(f.later.fired, 1);
  for (int i = 0; i < 2; i++) {
    assert_done(&w[i].r, ASCOPE_ECLOSED);
    assert_err(&w[i].r, 0, ASCOPE_ECLOSED, "lock", NULL);
    cr_assert_eq(w[i].r.body_calls, 0);
    cr_assert_eq(w[i].pre.release_outcome, ASCOPE_ECLOSED);
    /* failed at once, not when the holder let go */
    cr_assert_lt(w[i].r.done_seq, h.r.done_seq);
  }
  assert_done(&late.r, ASCOPE_ECLOSED);
  cr_assert_eq(late.r.body_calls, 0);
  /* the holder is unaffected; its release frees the lock's memory (LSan) */
  assert_done(&h.r, 0);
}

/* The holder h has the only permit and w queued behind it; the semaphore
 * is freed from a loop callback once that is so (not after a fixed delay: a
 * timer due before the first loop turn ran would fire before h held
 * anything, and h's operation would then never be ended). */
struct sem_freeing {
  ascope_sem *sem;
  struct waiter *h, *w;
  tu_timer later;
};

static bool sem_held_and_queued(void *arg) {
  struct sem_freeing *f = arg;
  return f->h->m.started && f->w->pre.acquired;
}

static bool sem_waiter_failed(void *arg) {
  return ((struct sem_freeing *)arg)->w->r.done_calls == 1;
}

static void end_sem_holder(void *arg) {
  end_holder_cb(((struct sem_freeing *)arg)->h);
}

static void free_sem_cb(void *arg) {
  struct sem_freeing *f = arg;
  ascope_sem_free(f->sem);
  tu_when(ascope_rt_loop(rt), &f->later, sem_waiter_failed, end_sem_holder, f);
}

Test(sync, sem_free_fails_waiters_with_eclosed) {
  reset_counts();
  static struct waiter h, w;
  memset(&h, 0, sizeof h);
  memset(&w, 0, sizeof w);
  static struct sem_freeing f;
  f = (struct sem_freeing){.sem = ascope_sem_new(rt, 1), .h = &h, .w = &w};
  cr_assert_not_null(f.sem);
  h.op = TD_HANG;
  start_waiter(&h, 100, NULL, f.sem, 0);
  w.pre.name = "w";
  start_waiter(&w, 0, NULL, f.sem, 0);
  static tu_timer t1;
  tu_when(ascope_rt_loop(rt), &t1, sem_held_and_queued, free_sem_cb, &f);
  cr_assert_eq(ascope_rt_run(rt), 0);
  cr_assert_eq(t1.fired, 1);
  cr_assert_eq(f.later.fired, 1);
  assert_done(&w.r, ASCOPE_ECLOSED);
  assert_err(&w.r, 0, ASCOPE_ECLOSED, "semaphore", NULL);
  cr_assert_eq(w.r.body_calls, 0);
  cr_assert_eq(w.pre.release_outcome, ASCOPE_ECLOSED);
  cr_assert_lt(w.r.done_seq, h.r.done_seq, "the waiter waited for the holder");
  /* the holder is unaffected; its release frees the semaphore (LSan) */
  assert_done(&h.r, 0);
  cr_assert_eq(h.r.body_calls, 1);
}

Test(sync, free_unused) {
  ascope_lock_free(ascope_lock_new(rt));
  ascope_sem_free(ascope_sem_new(rt, 4));
  /* used and released, then freed */
  ascope_lock *l = ascope_lock_new(rt);
  ascope *s = ascope_new(rt);
  cr_assert_eq(ascope_use_lock(s, l), 0);
  rec r = {0};
  cr_assert_eq(rec_start(s, &r), 0);
  cr_assert_eq(ascope_rt_run(rt), 0);
  assert_done(&r, 0);
  ascope_lock_free(l);
}
