/* A driver for tests whose acquire, release and operations can be told to
 * succeed, fail, hang or finish late, and which records everything the core
 * asks of it: the order of acquires and releases, each release's outcome,
 * cancels and aborts. */
#ifndef ASCOPE_TEST_DRIVER_H
#define ASCOPE_TEST_DRIVER_H

#include <ascope/driver.h>
#include <stdbool.h>
#include <stdint.h>

enum td_mode {
  TD_OK,        /* completes with 0 from inside the call */
  TD_OK_LATE,   /* completes with 0 after delay_ms, from a timer */
  TD_FAIL,      /* completes with fail_status from inside the call */
  TD_FAIL_LATE, /* completes with fail_status after delay_ms */
  TD_HANG       /* never completes by itself: only cancel or abort ends it */
};

/* One use's script (the `arg` of ascope_use) and what happened to it. */
typedef struct td_spec {
  const char *name;
  enum td_mode acquire, release;
  unsigned delay_ms;
  int fail_status;       /* 0: ASCOPE_EDRIVER */
  bool ignore_cancel;    /* acquire: a cancel that is not honoured */
  bool no_cancel_hook;   /* the driver offers no cancel for this use */
  bool late_after_abort; /* abort leaves a late release running: it completes after */
  /* filled in */
  int acquire_calls, acquired, release_calls, cancel_calls, abort_calls;
  int release_outcome;
  int release_seq;     /* global order of the release, from 1 */
  int late_done_calls; /* releases completed after an abort */
  int acquire_seq;
  /* A late acquire or release: uv_hrtime() when it armed its timer, and the
   * loop time the timer was due, in ns. libuv counts a timer from the
   * loop's cached time (uv_now, whole ms, behind uv_hrtime by however long
   * the loop turn has run), so a delay_ms completion is due no earlier than
   * *_due_ns, but may come less than delay_ms after *_armed_ns. */
  uint64_t acquire_armed_ns, acquire_due_ns, release_armed_ns, release_due_ns;
} td_spec;

extern const ascope_driver td_driver;
extern const ascope_driver td_driver_nocancel; /* the same without a cancel hook */

void td_reset(void);      /* clears the global counters and the log */
int td_seq(void);         /* events so far */
int td_tick(void);        /* one more event, for the test's own marks: returns its number */
int td_live(void);        /* acquired and not yet released, across all specs */
const char *td_log(void); /* "+a +b -b -a": acquires and releases in order */

int td_use(ascope *s, td_spec *spec); /* ascope_use with the right vtable */

/* An operation: completes per mode after delay_ms, then calls cb (may be
 * NULL). cb's return is what the scope sees (docs/api/core.md). */
typedef int (*td_op_cb)(ascope *s, int status, void *result, void *ud);
typedef struct td_op_stats {
  int started, completed, cancelled, callbacks;
} td_op_stats;
int td_op_start(ascope *s, enum td_mode mode, unsigned delay_ms, int fail_status, td_op_cb cb,
                void *ud, td_op_stats *stats);

/* A hanging operation the test ends by hand with td_manual_end(); a cancel
 * from the core ends it with ASCOPE_ECANCELED. No callback: the status given
 * is what the scope sees. */
typedef struct td_manual {
  ascope_op *op; /* NULL once ended */
  int started, cancelled, ended;
  int end_status;
} td_manual;
int td_manual_start(ascope *s, td_manual *m); /* 0, or ASCOPE_ECANCELED */
void td_manual_end(td_manual *m, int status); /* nothing if already ended */

#endif
