/* Allocation failure for the drivers' tests: a counting allocator, set with
 * ascope_set_allocator, that fails its N-th call, and a sweep that runs a
 * scenario for N = 1, 2, ... until it runs through without reaching N.
 *
 * Drivers allocate through the same hook (ascope_malloc), on the loop
 * thread and on libuv's threadpool (where SQLite's statements run), so
 * the counters are atomics: the hook must be thread-safe, and this one is.
 *
 * Each run of a sweep must end cleanly: the scope's done called exactly
 * once, each operation that started ending exactly once, every status 0 or
 * UV_ENOMEM (or ASCOPE_ECANCELED, a sibling of the failure cancelled), no
 * block of the allocator's left after ascope_rt_free, and a run right after
 * with no failure injected succeeding. The failures are counted while the
 * sweep runs and asserted once at its end (a sweep is hundreds of runs).
 *
 * ASCOPE_ALLOC_TRACE=N prints the stack of the N-th allocation when it
 * fails, to find the call site a report names; ASCOPE_ALLOC_VERBOSE=1
 * says which allocation each run fails. Header-only: each test
 * binary has its own copy. */
#ifndef ASCOPE_ALLOC_FAIL_H
#define ASCOPE_ALLOC_FAIL_H

#include <ascope/ascope.h>
#include <criterion/criterion.h>
#include <execinfo.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static atomic_long af_calls_, af_fail_at_, af_outstanding_, af_failures_;
static long af_trace_at_;

static inline void af_note_failure(long n) {
  af_failures_++;
  if (af_trace_at_ == n) {
    void *frames[32];
    int k = backtrace(frames, 32);
    fprintf(stderr, "alloc_fail: allocation %ld fails here:\n", n);
    backtrace_symbols_fd(frames, k, 2);
  }
}

static inline void *af_malloc(size_t n) {
  long k = ++af_calls_;
  if (k == af_fail_at_) {
    af_note_failure(k);
    return NULL;
  }
  void *p = malloc(n);
  if (p) af_outstanding_++;
  return p;
}

static inline void *af_realloc(void *p, size_t n) {
  long k = ++af_calls_;
  if (k == af_fail_at_) {
    af_note_failure(k);
    return NULL;
  }
  void *q = realloc(p, n);
  if (q && p == NULL) af_outstanding_++;
  return q;
}

static inline void af_free(void *p) {
  if (p) af_outstanding_--;
  free(p);
}

/* Installs the allocator failing its fail_at-th call (0: none). Before any
 * runtime exists. */
static inline int af_start(long fail_at) {
  const char *t = getenv("ASCOPE_ALLOC_TRACE");
  af_trace_at_ = t ? atol(t) : 0;
  af_calls_ = af_outstanding_ = af_failures_ = 0;
  af_fail_at_ = fail_at;
  return ascope_set_allocator(af_malloc, af_realloc, af_free);
}

static inline int af_stop(void) {
  return ascope_set_allocator(NULL, NULL, NULL);
}

/* What one run of a scenario saw; the scenario fills it. */
typedef struct af_run {
  int done_calls, done_status; /* the scope's done */
  bool begun;                  /* the scope was started: done must come */
  int started;                 /* operations whose start returned 0 */
  int ended;                   /* their final callbacks */
  int status;                  /* the first failure a start, use or callback saw */
  void *arg;                   /* the scenario's own */
  char why[200];               /* the scope's error: code and message */
} af_run;

static inline void af_saw(af_run *r, int status) {
  if (status && r->status == 0) r->status = status;
}

/* What a start function returned: an operation begun, or a failure seen. */
static inline void af_start_op(af_run *r, int rc) {
  if (rc == 0)
    r->started++;
  else
    af_saw(r, rc);
}

/* The SQL tests' operation callback (when sql.h was included first): the
 * operation ended, its status seen. A stream's batches are not its end. */
#ifdef ASCOPE_SQL_H
static inline int af_sql_cb(ascope *s, int status, ascope_rows *rows, void *ud) {
  (void)s, (void)rows;
  af_run *r = ud;
  r->ended++;
  af_saw(r, status);
  return status;
}
#endif

static inline bool af_clean_status(int status) {
  return status == 0 || status == UV_ENOMEM || status == ASCOPE_ECANCELED;
}

static inline void af_done(ascope *s, int status, void *ud) {
  af_run *r = ud;
  r->done_calls++;
  r->done_status = status;
  af_saw(r, status);
  const ascope_err *e = ascope_error(s);
  if (e) {
    const char *code = ascope_err_code(e), *msg = ascope_err_message(e);
    snprintf(r->why, sizeof r->why, "%s: %s", code ? code : "-", msg ? msg : "-");
  }
}

/* One run: a runtime on its own loop and one scope; uses() appends the
 * scope's uses, body starts its operations (ud: the af_run). */
/* The scope of the run under way, for a debugger looking at a run that
 * hangs. */
static ascope *af_current_scope __attribute__((used));

static inline void af_scope(af_run *r, int (*uses)(ascope *s, af_run *r), ascope_body_fn body) {
  ascope_rt *rt = ascope_rt_new(NULL);
  if (rt == NULL) {
    af_saw(r, UV_ENOMEM);
    return;
  }
  ascope *s = ascope_new(rt);
  af_current_scope = s;
  int rc = s ? uses(s, r) : UV_ENOMEM;
  if (rc == 0) {
    rc = ascope_start(s, body, af_done, r);
    r->begun = rc == 0;
  } else if (s) {
    ascope_discard(s);
  }
  af_saw(r, rc);
  ascope_rt_run(rt);
  int freed = ascope_rt_free(rt); /* ASCOPE_EBUSY: a scope never ended */
  if (freed) r->status = freed;   /* reported as the run's unclean end */
}

/* Runs scenario(fail_at) for fail_at = 1, 2, ... until a run needs fewer
 * allocations; asserts what the header says. arg is handed to each run. */
static inline void af_sweep(const char *what, void (*scenario)(af_run *r), void *arg) {
  char first[512] = "";
  int bad = 0;
  long n;
  const long limit = 20000;
#define AF_BAD(...)                                                                                \
  do {                                                                                             \
    if (bad++ == 0) snprintf(first, sizeof first, __VA_ARGS__);                                    \
  } while (0)
  for (n = 1; n < limit; n++) {
    af_run r = {.arg = arg};
    if (getenv("ASCOPE_ALLOC_VERBOSE")) fprintf(stderr, "%s: allocation %ld fails\n", what, n);
    if (af_start(n) != 0) { /* no cr_assert per run: a sweep is hundreds of them */
      AF_BAD("%s: ascope_set_allocator refused", what);
      break;
    }
    scenario(&r);
    af_stop();
    long failures = af_failures_, left = af_outstanding_;
    if (failures == 0) { /* the run needed fewer than n allocations: it is the good run */
      if (r.status != 0 || r.done_calls != 1 || r.ended != r.started)
        AF_BAD("%s: the run without a failure ended with %d (%s), done %d time(s), %d of %d "
               "operation(s) ended",
               what, r.status, ascope_err_name(r.status), r.done_calls, r.ended, r.started);
      if (left) AF_BAD("%s: the run without a failure left %ld block(s)", what, left);
      break;
    }
    if (!af_clean_status(r.status) || !af_clean_status(r.done_status))
      AF_BAD("%s: allocation %ld failed: the run ended with %d (%s), the scope with %d (%s: %s)",
             what, n, r.status, ascope_err_name(r.status), r.done_status,
             ascope_err_name(r.done_status), r.why);
    if (r.begun && r.done_calls != 1)
      AF_BAD("%s: allocation %ld failed: done called %d time(s)", what, n, r.done_calls);
    if (r.ended != r.started)
      AF_BAD("%s: allocation %ld failed: %d operation(s) started, %d ended", what, n, r.started,
             r.ended);
    if (left) AF_BAD("%s: allocation %ld failed: %ld block(s) never freed", what, n, left);
    /* The next attempt, with nothing failing, must succeed: the failure
     * left no state behind that breaks it. */
    af_run again = {.arg = arg};
    if (getenv("ASCOPE_ALLOC_VERBOSE")) fprintf(stderr, "%s: the run after\n", what);
    af_start(0);
    scenario(&again);
    af_stop();
    if (again.status != 0 || again.done_calls != 1 || again.ended != again.started)
      AF_BAD("%s: after allocation %ld failed, the next run ended with %d (%s)", what, n,
             again.status, ascope_err_name(again.status));
    if (af_outstanding_)
      AF_BAD("%s: after allocation %ld failed, the next run left %ld block(s)", what, n,
             (long)af_outstanding_);
  }
#undef AF_BAD
  fprintf(stderr, "%s: %ld allocation(s) failed in turn, %d problem(s)\n", what, n - 1, bad);
  cr_assert_lt(n, limit, "%s: the scenario never ran through", what);
  cr_assert_gt(n, 1, "%s: the scenario allocated nothing through ascope_set_allocator", what);
  cr_assert_eq(bad, 0, "%s (and %d more)", first, bad - 1);
}

#endif
