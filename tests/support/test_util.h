/* Helpers shared by the core's Criterion tests: a record of what a scope's
 * body and done saw (including its whole error chain, copied while done
 * runs, since the error objects are only valid there), and a one-shot timer
 * for doing something "from outside" at a given time. Header-only so every
 * test binary gets its own copy. */
#ifndef ASCOPE_TEST_UTIL_H
#define ASCOPE_TEST_UTIL_H

#include <ascope/ascope.h>
#include <criterion/criterion.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test_driver.h"

#define REC_MAX_ERRS 8

typedef struct rec_err {
  int status;
  bool has_driver, has_code;
  char driver[32], code[48], msg[256];
} rec_err;

/* What one scope saw. `ud` of ascope_start points at it. */
typedef struct rec {
  int body_calls, done_calls, done_status;
  int body_seq, done_seq; /* td_tick() at body entry and at done */
  int nerr;               /* length of the error chain seen in done */
  rec_err err[REC_MAX_ERRS];
  bool err_consistent;  /* ascope_error() is NULL iff status == 0, and its status matches */
  void *res_in_body[8]; /* ascope_resource(s, i) as the body saw it */
  void (*body)(ascope *s, struct rec *r);    /* the test's own body, may be NULL */
  void (*on_done)(ascope *s, struct rec *r); /* extra work inside done, may be NULL */
  void *arg;                                 /* the test's own */
  int index;
  int user; /* the test's own */
} rec;

static inline void rec_body(ascope *s, void *ud) {
  rec *r = ud;
  r->body_calls++;
  r->body_seq = td_tick();
  for (size_t i = 0; i < 8; i++) r->res_in_body[i] = ascope_resource(s, i);
  if (r->body) r->body(s, r);
}

static inline void rec_done(ascope *s, int status, void *ud) {
  rec *r = ud;
  r->done_calls++;
  r->done_status = status;
  r->done_seq = td_tick();
  const ascope_err *e = ascope_error(s);
  r->err_consistent = status == 0 ? e == NULL : (e != NULL && ascope_err_status(e) == status);
  r->nerr = 0;
  for (; e && r->nerr < REC_MAX_ERRS; e = ascope_err_next(e), r->nerr++) {
    rec_err *x = &r->err[r->nerr];
    x->status = ascope_err_status(e);
    const char *d = ascope_err_driver(e), *c = ascope_err_code(e), *m = ascope_err_message(e);
    x->has_driver = d != NULL;
    x->has_code = c != NULL;
    snprintf(x->driver, sizeof x->driver, "%s", d ? d : "");
    snprintf(x->code, sizeof x->code, "%s", c ? c : "");
    snprintf(x->msg, sizeof x->msg, "%s", m ? m : "(null)");
  }
  if (r->on_done) r->on_done(s, r);
}

/* Starts s with rec_body/rec_done and r as ud. */
static inline int rec_start(ascope *s, rec *r) {
  return ascope_start(s, rec_body, rec_done, r);
}

/* Starts s like rec_start, but from inside the loop (an ascope_rt_post):
 * its first steps then run in the same loop turn as its start. For scopes
 * with a short deadline: started from the test's code, a machine slow to
 * enter the loop could spend the deadline before the scope acquired
 * anything (which is right, but not what such a test means to look at).
 * d must live until the post ran (the test's frame, around ascope_rt_run). */
typedef struct tu_deferred {
  ascope *s;
  rec *r;
} tu_deferred;

static inline void tu_deferred_cb(void *ud) {
  tu_deferred *d = ud;
  cr_assert_eq(rec_start(d->s, d->r), 0);
}

static inline void rec_start_in_loop(tu_deferred *d, ascope *s, rec *r) {
  d->s = s;
  d->r = r;
  cr_assert_eq(ascope_rt_post(ascope_scope_rt(s), tu_deferred_cb, d), 0);
}

/* Assertions for loops: ctest runs each binary with --full-stats, which
 * reports every passing cr_assert to the runner; hundreds of thousands of
 * them cost more than the test. These call cr_assert only on failure. */
#define chk(cond, i)                                                                               \
  do {                                                                                             \
    if (!(cond)) cr_assert(cond, "at %d", (int)(i));                                               \
  } while (0)
#define chk_eq(a, b, i)                                                                            \
  do {                                                                                             \
    if ((a) != (b))                                                                                \
      cr_assert_eq(a, b, "at %d: %lld != %lld", (int)(i), (long long)(a), (long long)(b));         \
  } while (0)

/* The done callback ran once with `status`, and ascope_error agreed. */
#define assert_done(r, status_)                                                                    \
  do {                                                                                             \
    cr_assert_eq((r)->done_calls, 1, "done ran %d times", (r)->done_calls);                        \
    cr_assert_eq((r)->done_status, (status_), "done status %d (%s), want %d (%s)",                 \
                 (r)->done_status, ascope_err_name((r)->done_status), (int)(status_),              \
                 ascope_err_name(status_));                                                        \
    cr_assert((r)->err_consistent, "ascope_error disagrees with the status");                      \
  } while (0)

/* The i-th error of the chain: status, driver (NULL for the core), code
 * (NULL for none). */
#define assert_err(r, i, status_, driver_, code_)                                                  \
  do {                                                                                             \
    cr_assert_gt((r)->nerr, (i), "error chain has %d entries, want > %d", (r)->nerr, (int)(i));    \
    const rec_err *x_ = &(r)->err[i];                                                              \
    cr_assert_eq(x_->status, (status_), "error %d: status %d (%s), want %d", (int)(i), x_->status, \
                 ascope_err_name(x_->status), (int)(status_));                                     \
    const char *wd_ = (driver_), *wc_ = (code_);                                                   \
    if (wd_) {                                                                                     \
      cr_assert(x_->has_driver, "error %d: no driver, want %s", (int)(i), wd_);                    \
      cr_assert_str_eq(x_->driver, wd_);                                                           \
    } else {                                                                                       \
      cr_assert(!x_->has_driver, "error %d: driver %s, want the core", (int)(i), x_->driver);      \
    }                                                                                              \
    if (wc_) {                                                                                     \
      cr_assert(x_->has_code, "error %d: no code, want %s", (int)(i), wc_);                        \
      cr_assert_str_eq(x_->code, wc_);                                                             \
    } else {                                                                                       \
      cr_assert(!x_->has_code, "error %d: code %s, want none", (int)(i), x_->code);                \
    }                                                                                              \
    cr_assert_neq(x_->msg[0], '\0', "error %d: empty message", (int)(i));                          \
  } while (0)

/* ---- a one-shot timer on the runtime's loop ------------------------------- */

typedef struct tu_timer {
  uv_timer_t t;
  void (*fn)(void *arg);
  bool (*cond)(void *arg);
  int tries;
  void *arg;
  int fired;
} tu_timer;

static inline void tu_timer_cb(uv_timer_t *t) {
  tu_timer *x = t->data;
  x->fired++;
  uv_close((uv_handle_t *)t, NULL);
  x->fn(x->arg);
}

/* Calls fn(arg) after ms on loop, once; the handle closes itself, and its
 * close completes on a later loop iteration (ascope_rt_free's, for a runtime
 * that owns its loop): x must outlive that, so make it static. */
static inline void tu_after(uv_loop_t *loop, tu_timer *x, uint64_t ms, void (*fn)(void *),
                            void *arg) {
  x->fn = fn;
  x->arg = arg;
  x->fired = 0;
  uv_timer_init(loop, &x->t);
  x->t.data = x;
  uv_timer_start(&x->t, tu_timer_cb, ms, 0);
}

/* Calls fn(arg) once cond(arg) holds, checking every millisecond from the
 * loop; the handle closes itself (x: as for tu_after). For "from outside"
 * actions that must wait until the scenario reached a state (a waiter
 * queued, a body running), whatever the machine's speed. */
static inline void tu_when_cb(uv_timer_t *t) {
  tu_timer *x = t->data;
  bool ok = x->cond(x->arg);
  if (!ok && ++x->tries < 5000) return;
  /* after ~5 s give up, so a broken scenario fails instead of hanging */
  uv_timer_stop(t);
  uv_close((uv_handle_t *)t, NULL);
  if (!ok) return;
  x->fired++;
  x->fn(x->arg);
}

static inline void tu_when(uv_loop_t *loop, tu_timer *x, bool (*cond)(void *), void (*fn)(void *),
                           void *arg) {
  x->fn = fn;
  x->cond = cond;
  x->arg = arg;
  x->fired = x->tries = 0;
  uv_timer_init(loop, &x->t);
  x->t.data = x;
  uv_timer_start(&x->t, tu_when_cb, 1, 1);
}

static inline void tu_cancel_cb(void *arg) {
  ascope_cancel(arg);
}

#endif
