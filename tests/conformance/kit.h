/* The driver conformance kit: runs one driver through every step a scope
 * can take it (acquire, each operation, release), injecting at each step in
 * turn a failure, a deadline, a cancellation and a release that overruns the
 * release timeout, plus an allocation failure at each of ascope's
 * allocations, and checks the rules of docs/guides/writing-a-driver.md:
 * release exactly once with the scope's outcome, done exactly once, nothing
 * after a completion, no handle or descriptor left open.
 *
 * The driver is wrapped: the scope uses a proxy vtable whose functions
 * record each call and forward it to the driver's, with the driver's own
 * state. The kit sees the driver's completions (ascope_res_done,
 * ascope_op_begin, ascope_op_end) by defining those symbols itself and
 * forwarding to libascope's: link the kit into the test executable and the
 * driver and ascope as shared libraries. docs/guides/writing-a-driver.md,
 * "The conformance kit", says how to run it and what each check means.
 */
#ifndef ASCOPE_KIT_H
#define ASCOPE_KIT_H

#include <ascope/driver.h>

/* One operation in flight, for the adapter's op function. */
typedef struct ascope_kit_op ascope_kit_op;

/* Which target make_arg is asked for. */
#define ASCOPE_KIT_GOOD 0  /* acquires successfully */
#define ASCOPE_KIT_BAD 1   /* its acquire fails (a missing file, a refused login) */
#define ASCOPE_KIT_WAITS 2 /* its acquire waits until cancelled (a semaphore with no permit) */

/* flags */
/* An operation cancelled while in flight may still end with 0: it cannot be
 * stopped once sent (a statement on the server, a write on the threadpool).
 * Without it such an operation must end with a negative status. */
#define ASCOPE_KIT_OPS_RUN_TO_END 1u
/* The body starts all nops operations at once, instead of each from the
 * previous one's callback: a driver that pipelines (many operations in
 * flight on one connection, answered in order) then sees each injection
 * while the operations behind the step are still in flight too. */
#define ASCOPE_KIT_OPS_PIPELINED 2u

typedef struct ascope_kit_driver {
  const char *name;            /* for the report */
  const ascope_driver *driver; /* the driver under test */
  const char *target;          /* a string target (copied, ascope_use_str), or NULL: */
  const void *arg;             /* an opaque arg (ascope_use) */
  const char *options;         /* for the good target */
  const char *bad_target;      /* a target whose acquire fails; NULL and bad_arg NULL: none */
  const void *bad_arg;         /* the same, opaque */
  const char *bad_options;     /* options for the bad target */
  /* Optional, instead of target/arg: targets that belong to a runtime (a
   * lock). Called before each run with that run's runtime; NULL: no such
   * target (the cases that need it are skipped). free_arg after the run. */
  const void *(*make_arg)(ascope_rt *rt, int which, void *ud);
  void (*free_arg)(const void *arg, int which, void *ud);
  /* Optional: starts one operation of the driver on res (the use's state,
   * as ascope_resource() gives it) in scope s, whose callback calls
   * ascope_kit_op_done(k, status) and returns what it returns. Returns
   * what the driver's start function returned. */
  int (*op)(ascope *s, void *res, ascope_kit_op *k);
  unsigned nops; /* operations per run, one after the other (0 with op: 1) */
  unsigned flags;
  void *ud; /* for make_arg, free_arg and op (ascope_kit_op_ud) */
} ascope_kit_driver;

/* From the operation's callback: records its status and returns what the
 * callback must return to the driver. */
int ascope_kit_op_done(ascope_kit_op *k, int status);
void *ascope_kit_op_ud(ascope_kit_op *k);

/* Runs every case on the driver; prints each broken rule and a summary to
 * stderr. Returns the number of broken rules: 0 means the driver conforms.
 * Not reentrant: one run at a time per process. */
int ascope_kit_run(const ascope_kit_driver *d);

/* The same, but only the cases whose name (e.g. "acquire/cancel",
 * "op0/deadline", "release/timeout", "alloc") contains filter. */
int ascope_kit_run_only(const ascope_kit_driver *d, const char *filter);

/* The vtable a use function appends, for drivers that do not export theirs
 * (the core's lock and semaphore): calls use(s, ud) on a scratch scope and
 * returns the driver it passed to ascope_use, or NULL. */
const ascope_driver *ascope_kit_driver_of(int (*use)(ascope *s, void *ud), void *ud);

#endif
