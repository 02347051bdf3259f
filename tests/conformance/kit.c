/* The driver conformance kit: see kit.h. One run = a fresh loop and
 * runtime, one scope with one use of the wrapped driver, a body that runs
 * the adapter's operations one after the other, and one injection at one
 * step. Everything the driver does is recorded in the global K and checked
 * once the runtime is gone. */
#include "kit.h"

#include <dirent.h>
#include <dlfcn.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- what a run injects --------------------------------------------------- */

enum inject { INJ_NONE, INJ_BAD, INJ_FAIL, INJ_DEADLINE, INJ_CANCEL, INJ_TIMEOUT };
static const char *const inj_name[] = {"ok", "bad-target", "fail", "deadline", "cancel", "timeout"};
#define STEP_ACQ (-1)
#define STEP_REL 1000 /* the release; ops are 0 … nops-1 */

/* ---- the record of one run ------------------------------------------------ */

enum phase { P_NONE, P_ACQ, P_HELD, P_FAILED, P_REL, P_ABORTING, P_ABORTED, P_RELEASED };

struct res_rec { /* the one use of the run */
  ascope_res *r;
  int acquires, acq_done, acq_status, cancels, cancel_outside;
  int releases, rel_outcome, rel_done, rel_status, aborts, late_done, stray;
  bool acq_in_flight;      /* not completed inside the acquire call */
  bool acq_held, rel_held; /* the wrapper holds the call back until the core's timer fires */
  const void *arg;
  const char *options;
  bool rel_in_flight;
  enum phase phase;
};

#define MAX_OPS 64
struct op_rec { /* one ascope_op_begin by the driver */
  ascope_op *op;
  void (*cancel)(ascope_op *op);
  int cancels, ends, end_status;
};

struct ascope_kit_op { /* one operation the kit asked the adapter for */
  int index, start_rc, cb_calls, cb_status;
  bool started, returned, in_flight, inline_cb;
  int op_first, op_last; /* the ascope_op_begin calls its start made: K.ops[first, last) */
  uint64_t start_ns;
};

static struct {
  /* the run's setup */
  const ascope_kit_driver *d;
  ascope_driver proxy;
  const char *case_name;
  int step, inject, which;
  uint64_t deadline_ms;
  bool alloc_sweep;
  unsigned nops;
  /* what happened */
  bool active, in_start;
  int body_calls, done_calls, done_status, body_in_start, done_in_start;
  char err_driver[32];
  bool err_has_driver;
  uint64_t start_ns;
  bool reached;  /* the injection hit its step while the step was in flight */
  bool injected; /* the injection happened (the scope may fail from here on) */
  struct res_rec res;
  struct op_rec ops[MAX_OPS];
  int nops_begun, op_unknown_end, op_double_end;
  struct ascope_kit_op kops[MAX_OPS];
  int handle_in_state;
  bool warmup; /* the first run: what a library sets up once per process is not a leak */
  int64_t timed_out;
  /* the runtime's "timed_out" counter at the end of the run */ /* libuv handles still open in
                                                                   the state at a completion */
  uv_loop_t *loop;
  /* across runs */
  int failures;
  int runs, not_reached;
  bool interposed;
  int driver_allocs; /* allocations while the driver's own code ran */
  int in_driver;
} K;

static void bad(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "kit[%s] %s: ", K.d->name, K.case_name);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
  K.failures++;
}

static void spin_until(uint64_t ns) {
  /* Holding the loop until the time passed makes the core's timer due
   * before the loop can deliver the driver's completion: the deadline (or
   * the release timeout) then fires while the step is in flight, on any
   * machine, without sleeping toward it. */
  while (uv_hrtime() < ns) {
  }
}

/* ---- the libuv handles inside a state --------------------------------------- */

struct walk_ctx {
  const char *lo, *hi;
  int n;
  uv_handle_t *skip;
  char types[128];
};

static void walk_in_range(uv_handle_t *h, void *arg) {
  struct walk_ctx *w = arg;
  const char *p = (const char *)h;
  if (h == w->skip || (w->lo && (p < w->lo || p >= w->hi))) return;
  if (!w->lo && uv_is_closing(h)) return;
  w->n++;
  size_t len = strlen(w->types);
  snprintf(w->types + len, sizeof w->types - len, "%s%s", len ? "," : "",
           uv_handle_type_name(uv_handle_get_type(h)));
}

/* The state memory may be reused once a failed acquire or a release
 * completes: no handle of the loop may still live inside it. */
static void check_state_handles(ascope_res *r) {
  struct walk_ctx w = {.lo = ascope_res_state(r)};
  w.hi = w.lo + (K.proxy.state_size ? K.proxy.state_size : 1);
  uv_walk(K.loop, walk_in_range, &w);
  if (w.n) {
    K.handle_in_state++;
    bad("completed with %d libuv handle(s) still open inside its state (%s)", w.n, w.types);
  }
}

/* ---- the proxy vtable --------------------------------------------------------- */

static struct res_rec *rec_of(ascope_res *r) {
  return K.active && K.res.r == r ? &K.res : NULL;
}

static void forward_acquire(ascope_res *r, const void *arg, const char *options) {
  K.in_driver++;
  K.d->driver->acquire(r, arg, options);
  K.in_driver--;
}

static void p_acquire(ascope_res *r, const void *arg, const char *options) {
  struct res_rec *x = &K.res;
  if (x->r && x->r != r) bad("a second resource in a one-use scope");
  x->r = r;
  x->acquires++;
  x->phase = P_ACQ;
  if (K.step == STEP_ACQ && K.inject == INJ_DEADLINE) {
    K.injected = true;
    if (K.d->driver->cancel) {
      /* Held back until the deadline fires (the core then calls cancel):
       * the driver sees its acquire and, right after it, the cancel, with
       * no chance for the acquire to complete first. */
      x->acq_held = true;
      x->arg = arg;
      x->options = options;
      return;
    }
    /* No cancel: the deadline cannot reach the acquire; it is due before
     * the acquire starts and fires at the loop's next turn. */
    spin_until(K.start_ns + (K.deadline_ms + 1) * 1000000);
  }
  forward_acquire(r, arg, options);
  if (x->phase == P_ACQ) x->acq_in_flight = true; /* not completed inside the call */
  if (K.step == STEP_ACQ && K.inject == INJ_CANCEL) {
    K.reached = x->phase == P_ACQ;
    K.injected = true;
    ascope_cancel(ascope_res_scope(r));
  }
}

static void p_cancel(ascope_res *r) {
  struct res_rec *x = &K.res;
  x->cancels++;
  if (x->phase != P_ACQ) x->cancel_outside++;
  if (x->acq_held) {
    x->acq_held = false;
    forward_acquire(r, x->arg, x->options);
    x->acq_in_flight = x->phase == P_ACQ;
    K.reached = x->acq_in_flight;
    if (x->phase != P_ACQ) return; /* completed at once: nothing to cancel */
  }
  K.in_driver++;
  K.d->driver->cancel(r);
  K.in_driver--;
}

static void forward_release(ascope_res *r, int outcome) {
  K.in_driver++;
  K.d->driver->release(r, outcome);
  K.in_driver--;
}

static void p_release(ascope_res *r, int outcome) {
  struct res_rec *x = &K.res;
  if (x->r != r || x->phase != P_HELD) bad("release of a resource that is not held (core)");
  x->releases++;
  x->rel_outcome = outcome;
  x->phase = P_REL;
  if (K.step == STEP_REL && K.inject == INJ_TIMEOUT) {
    /* Held back until the release timeout fires and the core calls abort:
     * the driver then sees its release and, right after it, the abort. */
    K.injected = true;
    x->rel_held = true;
    return;
  }
  forward_release(r, outcome);
  if (x->phase == P_REL) x->rel_in_flight = true;
  if (K.step == STEP_REL && K.inject == INJ_CANCEL) {
    K.reached = x->phase == P_REL;
    K.injected = true;
    ascope_cancel(ascope_res_scope(r)); /* ignored while releasing */
  }
}

static void p_abort(ascope_res *r) {
  struct res_rec *x = &K.res;
  x->aborts++;
  x->phase = P_ABORTING;
  if (x->rel_held) {
    x->rel_held = false;
    forward_release(r, x->rel_outcome);
    K.reached = x->phase == P_ABORTING;
    if (x->phase != P_ABORTING) return; /* completed at once: nothing to abort */
  }
  K.in_driver++;
  K.d->driver->abort(r);
  K.in_driver--;
  if (x->phase == P_ABORTING) x->phase = P_ABORTED; /* its completion comes late */
}

static void p_reset(ascope_res *r) {
  K.d->driver->reset(r);
}

/* ---- the driver's completions, seen on their way to libascope ----------------- */

typedef void (*res_done_fn)(ascope_res *, int, const char *, const char *);
typedef ascope_op *(*op_begin_fn)(ascope *, const ascope_driver *, void (*)(ascope_op *), void *);
typedef void (*op_end_fn)(ascope_op *, int, const char *, const char *);
typedef int (*use_fn)(ascope *, const ascope_driver *, const void *, const char *);
static struct {
  res_done_fn res_done;
  op_begin_fn op_begin;
  op_end_fn op_end;
  use_fn use;
} real;
static const ascope_driver *captured; /* ascope_kit_driver_of */
static bool capturing;

static void resolve(void) {
  if (real.res_done) return;
  real.res_done = (res_done_fn)dlsym(RTLD_NEXT, "ascope_res_done");
  real.op_begin = (op_begin_fn)dlsym(RTLD_NEXT, "ascope_op_begin");
  real.op_end = (op_end_fn)dlsym(RTLD_NEXT, "ascope_op_end");
  real.use = (use_fn)dlsym(RTLD_NEXT, "ascope_use");
  if (!real.res_done || !real.op_begin || !real.op_end || !real.use) {
    fprintf(stderr, "kit: libascope's symbols not found: link ascope as a shared library\n");
    abort();
  }
  /* The driver reaches these definitions only when the executable exports
   * them (the linker does when a shared library it links references them). */
  K.interposed = dlsym(RTLD_DEFAULT, "ascope_res_done") == (void *)ascope_res_done;
}

void ascope_res_done(ascope_res *r, int status, const char *code, const char *message) {
  resolve();
  struct res_rec *x = rec_of(r);
  if (x) {
    switch (x->phase) {
    case P_ACQ:
      x->acq_done++;
      x->acq_status = status;
      x->phase = status < 0 ? P_FAILED : P_HELD;
      if (status < 0) check_state_handles(r);
      break;
    case P_REL:
    case P_ABORTING:
      x->rel_done++;
      x->rel_status = status;
      x->phase = P_RELEASED;
      check_state_handles(r);
      break;
    case P_ABORTED:
      x->late_done++;
      x->phase = P_RELEASED;
      check_state_handles(r);
      break;
    default:
      x->stray++; /* nothing in flight: a completion after the completion */
      bad("ascope_res_done(%d) with nothing in flight (after %s)", status,
          x->phase == P_RELEASED ? "the release completed"
          : x->phase == P_FAILED ? "the acquire failed"
                                 : "the acquire completed");
      return; /* the core would ignore it too */
    }
  }
  real.res_done(r, status, code, message);
}

static struct op_rec *op_rec_of(ascope_op *op, bool live) {
  for (int i = K.nops_begun - 1; i >= 0; i--)
    if (K.ops[i].op == op && (K.ops[i].ends == 0) == live) return &K.ops[i];
  return NULL;
}

static void kit_op_cancel(ascope_op *op) {
  struct op_rec *o = op_rec_of(op, true);
  if (o == NULL) return;
  o->cancels++;
  K.in_driver++;
  o->cancel(op);
  K.in_driver--;
}

ascope_op *ascope_op_begin(ascope *s, const ascope_driver *drv, void (*cancel)(ascope_op *op),
                           void *data) {
  resolve();
  if (!K.active || K.nops_begun >= MAX_OPS) return real.op_begin(s, drv, cancel, data);
  int in = K.in_driver;
  K.in_driver = 0; /* the core's allocations are not the driver's */
  ascope_op *op = real.op_begin(s, drv, cancel ? kit_op_cancel : NULL, data);
  K.in_driver = in;
  if (op) K.ops[K.nops_begun++] = (struct op_rec){.op = op, .cancel = cancel};
  return op;
}

void ascope_op_end(ascope_op *op, int status, const char *code, const char *message) {
  resolve();
  if (K.active) {
    struct op_rec *o = op_rec_of(op, true);
    if (o == NULL) {
      if (op_rec_of(op, false)) {
        K.op_double_end++;
        bad("ascope_op_end twice for one operation (status %d)", status);
        return; /* the core's op is recycled: forwarding would corrupt it */
      }
      K.op_unknown_end++;
    } else {
      o->ends++;
      o->end_status = status;
    }
  }
  int in = K.in_driver;
  K.in_driver = 0;
  real.op_end(op, status, code, message);
  K.in_driver = in;
}

int ascope_use(ascope *s, const ascope_driver *drv, const void *arg, const char *options) {
  resolve();
  if (capturing) captured = drv;
  return real.use(s, drv, arg, options);
}

/* ---- allocations -------------------------------------------------------------- */

/* Atomics: drivers allocate through the hook on libuv's threadpool too
 * (SQLite's statements run there). */
static atomic_long a_calls, a_fail_at, a_outstanding, a_failures;

static void *a_malloc(size_t n) {
  if (++a_calls == a_fail_at) {
    a_failures++;
    return NULL;
  }
  if (K.in_driver) K.driver_allocs++;
  void *p = malloc(n);
  if (p) a_outstanding++;
  return p;
}

static void *a_realloc(void *p, size_t n) {
  if (++a_calls == a_fail_at) {
    a_failures++;
    return NULL;
  }
  if (K.in_driver) K.driver_allocs++;
  void *q = realloc(p, n);
  if (q && p == NULL) a_outstanding++;
  return q;
}

static void a_free(void *p) {
  if (p) a_outstanding--;
  free(p);
}

/* ---- the scope -------------------------------------------------------------------- */

static int start_op(ascope *s, int i);
static ascope *cur_scope; /* the run's scope, for operations started from callbacks */

int ascope_kit_op_done(ascope_kit_op *k, int status) {
  k->cb_calls++;
  k->cb_status = status;
  if (!k->returned) k->inline_cb = true;
  if (k->cb_calls > 1) {
    bad("op%d: callback ran %d times", k->index, k->cb_calls);
    return 0;
  }
  if (K.step == k->index && K.inject == INJ_FAIL) {
    K.reached = K.injected = true;
    return UV_EIO; /* the failure "right after the step": the scope fails with it */
  }
  if (status < 0) return status;
  if (!K.injected && k->index + 1 < (int)K.nops && !(K.d->flags & ASCOPE_KIT_OPS_PIPELINED))
    start_op(cur_scope, k->index + 1);
  return 0;
}

void *ascope_kit_op_ud(ascope_kit_op *k) {
  (void)k;
  return K.d->ud;
}

static int start_op(ascope *s, int i) {
  struct ascope_kit_op *k = &K.kops[i];
  *k = (struct ascope_kit_op){.index = i, .started = true, .start_ns = uv_hrtime()};
  if (K.step == i && K.inject == INJ_DEADLINE) {
    /* The deadline is due before the operation starts: it fires at the
     * loop's next turn, while the operation is in flight unless the driver
     * completes it at once. */
    K.injected = true;
    spin_until(K.start_ns + (K.deadline_ms + 1) * 1000000);
  }
  int begun = K.nops_begun;
  int rc = K.d->op(s, ascope_resource(s, 0), k);
  k->returned = true;
  k->start_rc = rc;
  k->op_first = begun;
  k->op_last = K.nops_begun;
  if (rc != 0) {
    if (k->cb_calls) bad("op%d: its start returned %d and its callback ran", i, rc);
    for (int j = begun; j < K.nops_begun; j++)
      if (K.ops[j].ends == 0) bad("op%d: its start returned %d and left an operation begun", i, rc);
    bool expected = K.injected || (K.alloc_sweep && (rc == UV_ENOMEM || rc == ASCOPE_ECANCELED));
    if (!expected) bad("op%d: start returned %d (%s)", i, rc, ascope_err_name(rc));
    return rc;
  }
  k->in_flight = k->cb_calls == 0;
  if (K.step == i && K.inject == INJ_CANCEL) {
    K.reached = k->in_flight;
    K.injected = true;
    ascope_cancel(s);
  }
  return 0;
}

static void kit_body(ascope *s, void *ud) {
  (void)ud;
  K.body_calls++;
  if (K.in_start) K.body_in_start++;
  cur_scope = s;
  if (ascope_resource(s, 0) == NULL) bad("the body runs but the use is not held");
  if (K.step == STEP_ACQ && K.inject == INJ_FAIL) {
    K.reached = K.injected = true;
    ascope_fail(s, UV_EIO, "kit: failing right after the acquire");
    return;
  }
  if (K.d->flags & ASCOPE_KIT_OPS_PIPELINED) {
    /* an injection ends the series: what follows would be refused */
    for (unsigned i = 0; i < K.nops && !K.injected; i++)
      if (start_op(s, (int)i) != 0) break;
  } else if (K.nops) {
    start_op(s, 0);
  }
}

static void kit_done(ascope *s, int status, void *ud) {
  (void)ud;
  K.done_calls++;
  if (K.in_start) K.done_in_start++;
  K.done_status = status;
  const ascope_err *e = ascope_error(s);
  const char *drv = e ? ascope_err_driver(e) : NULL;
  K.err_has_driver = drv != NULL;
  snprintf(K.err_driver, sizeof K.err_driver, "%s", drv ? drv : "");
}

/* ---- one run ---------------------------------------------------------------------- */

static int count_fds(void) {
  DIR *d = opendir("/proc/self/fd");
  if (d == NULL) return -1;
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL)
    if (e->d_name[0] != '.') n++;
  closedir(d);
  return n - 1; /* the directory's own descriptor */
}

static void on_watchdog(uv_timer_t *t) {
  uv_stop(t->loop);
}

/* Runs the loop until nothing keeps it alive, or 5 s: a driver that leaves
 * a handle active fails the handle check below instead of hanging. */
static void drain(uv_loop_t *loop, uv_timer_t *wd) {
  uv_timer_start(wd, on_watchdog, 5000, 0);
  uv_run(loop, UV_RUN_DEFAULT);
  uv_timer_stop(wd);
}

static const char *expect_name(int st) {
  return ascope_err_name(st);
}

/* Returns false when the run could not even begin (out of memory making
 * the runtime or the scope in the allocation sweep). */
static bool run_once(void) {
  const ascope_kit_driver *d = K.d;
  int which = K.which;
  int fds0 = count_fds();
  uv_loop_t loop;
  uv_timer_t wd;
  if (uv_loop_init(&loop) != 0) {
    bad("uv_loop_init failed");
    return false;
  }
  uv_timer_init(&loop, &wd);
  uv_unref((uv_handle_t *)&wd);
  K.loop = &loop;
  ascope_rt *rt = ascope_rt_new(&loop);
  bool began = false;
  const void *arg = NULL;
  ascope *s = NULL;
  if (rt == NULL) {
    if (!K.alloc_sweep) bad("ascope_rt_new failed");
    goto close_loop;
  }
  if (K.inject == INJ_TIMEOUT) ascope_rt_set_release_timeout(rt, 1);
  if (d->make_arg)
    arg = d->make_arg(rt, which, d->ud);
  else if (which == ASCOPE_KIT_BAD)
    arg = d->bad_target ? (const void *)d->bad_target : d->bad_arg;
  else
    arg = d->target ? (const void *)d->target : d->arg;
  const char *opts = which == ASCOPE_KIT_BAD ? d->bad_options : d->options;
  if (d->make_arg && arg == NULL) goto free_rt; /* no such target (or out of memory) */
  s = ascope_new(rt);
  if (s == NULL) {
    if (!K.alloc_sweep) bad("ascope_new failed");
    goto free_rt;
  }
  int rc = d->target && !d->make_arg ? ascope_use_str(s, &K.proxy, arg, opts)
                                     : ascope_use(s, &K.proxy, arg, opts);
  if (rc != 0) {
    if (!(K.alloc_sweep && rc == UV_ENOMEM)) bad("ascope_use returned %d", rc);
    ascope_discard(s);
    goto free_rt;
  }
  if (K.inject == INJ_DEADLINE) ascope_set_timeout(s, K.deadline_ms);
  uv_update_time(&loop); /* the deadline counts from now, not from the loop's last turn */
  K.active = true;
  K.in_start = true;
  K.start_ns = uv_hrtime();
  rc = ascope_start(s, kit_body, kit_done, NULL);
  K.in_start = false;
  if (rc != 0) {
    bad("ascope_start returned %d", rc);
    ascope_discard(s);
    goto free_rt;
  }
  began = true;
  ascope_rt_run(rt);
  /* An aborted release completes late, if at all: wait for it while the
   * runtime still exists (the core frees the record then). */
  if (K.res.phase == P_ABORTED) drain(&loop, &wd);
  K.timed_out = ascope_rt_stat(rt, "timed_out");
free_rt:
  if (d->free_arg && arg) d->free_arg(arg, which, d->ud);
  rc = ascope_rt_free(rt);
  if (rc != 0) bad("ascope_rt_free returned %d", rc);
close_loop:
  drain(&loop, &wd);
  K.active = false;
  struct walk_ctx w = {.skip = (uv_handle_t *)&wd};
  uv_walk(&loop, walk_in_range, &w);
  if (w.n)
    bad("%d libuv handle(s) left open on the loop after the runtime was freed: %s", w.n, w.types);
  uv_close((uv_handle_t *)&wd, NULL);
  uv_run(&loop, UV_RUN_NOWAIT);
  if (uv_loop_close(&loop) != 0 && w.n == 0) bad("the loop cannot be closed");
  int fds1 = count_fds();
  if (fds0 >= 0 && fds1 != fds0 && !K.warmup)
    bad("%d file descriptor(s) open before, %d after", fds0, fds1);
  K.runs++;
  return began;
}

/* The rules, once the run is over. */
static void check_run(int want_status, bool core_error) {
  struct res_rec *x = &K.res;
  if (K.body_in_start || K.done_in_start) bad("body or done ran inside ascope_start");
  if (K.done_calls != 1) {
    bad("done ran %d times", K.done_calls);
    return;
  }
  if (K.body_calls > 1) bad("the body ran %d times", K.body_calls);
  if (x->acquires > 1) bad("acquired %d times", x->acquires);
  if (x->acquires == 1 && x->acq_done != 1) bad("the acquire completed %d times", x->acq_done);
  if (x->cancels > 1) bad("cancel called %d times (core)", x->cancels);
  if (x->cancel_outside) bad("cancel called with no acquire in flight (core)");
  bool held = x->acq_done == 1 && x->acq_status >= 0;
  if (held && x->releases != 1) bad("acquired but released %d times", x->releases);
  if (!held && x->releases) bad("released %d times without a successful acquire", x->releases);
  if (held && x->rel_outcome != (K.inject == INJ_TIMEOUT ? 0 : K.done_status))
    bad("release told %d (%s), the scope ended with %d (%s)", x->rel_outcome,
        ascope_err_name(x->rel_outcome), K.done_status, ascope_err_name(K.done_status));
  if (held && x->aborts == 0 && x->rel_done != 1)
    bad("the release completed %d times", x->rel_done);
  if (x->aborts > 1) bad("abort called %d times (core)", x->aborts);
  if (x->aborts == 1 && x->rel_done + x->late_done != 1)
    bad("after abort the release completed %d times (within abort %d, late %d): a release "
        "always completes",
        x->rel_done + x->late_done, x->rel_done, x->late_done);
  if (x->aborts && K.inject != INJ_TIMEOUT) bad("aborted without a release timeout");
  if (x->phase == P_HELD && x->releases == 0 && K.done_calls == 1) bad("held at the end");
  /* operations */
  for (int i = 0; i < K.nops_begun; i++) {
    struct op_rec *o = &K.ops[i];
    if (o->ends != 1) bad("an operation ended %d times", o->ends);
    if (o->cancels > 1) bad("an operation's cancel called %d times (core)", o->cancels);
  }
  for (unsigned i = 0; i < K.nops; i++) {
    struct ascope_kit_op *k = &K.kops[i];
    if (!k->started || k->start_rc != 0) continue;
    if (k->cb_calls != 1) bad("op%u: started, and its callback ran %d times", i, k->cb_calls);
    if (k->in_flight && (int)i == K.step && K.reached &&
        (K.inject == INJ_CANCEL || K.inject == INJ_DEADLINE) && k->cb_status == 0 &&
        !(K.d->flags & ASCOPE_KIT_OPS_RUN_TO_END))
      bad("op%u: cancelled in flight, it ended with 0 (flag ASCOPE_KIT_OPS_RUN_TO_END if it "
          "cannot be stopped)",
          i);
  }
  /* the scope's status */
  if (want_status == 1) { /* any failure from the driver */
    if (K.done_status >= 0)
      bad("the bad target's scope ended with %d", K.done_status);
    else if (!K.err_has_driver || strcmp(K.err_driver, K.d->driver->name) != 0)
      bad("the bad target's error names driver '%s', want '%s'", K.err_driver, K.d->driver->name);
  } else if (K.alloc_sweep) {
    if (K.done_status != 0 && K.done_status != UV_ENOMEM && K.done_status != ASCOPE_ECANCELED)
      bad("with an allocation failed, the scope ended with %d (%s)", K.done_status,
          ascope_err_name(K.done_status));
  } else if (K.done_status != want_status) {
    bad("the scope ended with %d (%s), want %s (error from '%s')", K.done_status,
        ascope_err_name(K.done_status), expect_name(want_status),
        K.err_has_driver ? K.err_driver : "the core");
  } else if (want_status != 0 && core_error == K.err_has_driver) {
    bad("the first error is from %s, want %s", K.err_has_driver ? K.err_driver : "the core",
        core_error ? "the core" : K.d->driver->name);
  }
}

static void reset_run(const char *name, int step, int inject, int which) {
  const ascope_kit_driver *d = K.d;
  int failures = K.failures, runs = K.runs, nr = K.not_reached, da = K.driver_allocs;
  bool interposed = K.interposed;
  uint64_t dl = K.deadline_ms;
  bool sweep = K.alloc_sweep;
  ascope_driver proxy = K.proxy;
  unsigned nops = K.nops;
  memset(&K, 0, sizeof K);
  K.d = d;
  K.failures = failures;
  K.runs = runs;
  K.not_reached = nr;
  K.driver_allocs = da;
  K.interposed = interposed;
  K.deadline_ms = dl;
  K.alloc_sweep = sweep;
  K.proxy = proxy;
  K.nops = nops;
  K.case_name = name;
  K.step = step;
  K.inject = inject;
  K.which = which;
}

/* ---- the cases ----------------------------------------------------------------- */

static bool selected(const char *filter, const char *name) {
  return filter == NULL || strstr(name, filter) != NULL;
}

static void step_name(char *buf, size_t len, int step, int inject) {
  if (step == STEP_ACQ)
    snprintf(buf, len, "acquire/%s", inj_name[inject]);
  else if (step == STEP_REL)
    snprintf(buf, len, "release/%s", inj_name[inject]);
  else
    snprintf(buf, len, "op%d/%s", step, inj_name[inject]);
}

/* One case: an injection at one step. Deadlines are retried with a longer
 * deadline when the run did not reach the step before the deadline passed
 * (a slow connect), so the injection lands inside the step. */
static void run_case(int step, int inject, uint64_t step_ms, int which) {
  char name[48];
  step_name(name, sizeof name, step, inject);
  if (which == ASCOPE_KIT_WAITS)
    snprintf(name + strlen(name), sizeof name - strlen(name), "-waits");
  bool op_step = step >= 0 && step != STEP_REL;
  K.deadline_ms = op_step ? 20 + 3 * step_ms : 5;
  for (int attempt = 0; attempt < 4; attempt++) {
    reset_run(name, step, inject, which);
    int f0 = K.failures;
    if (!run_once()) return;
    if (inject == INJ_DEADLINE && op_step) {
      struct ascope_kit_op *k = &K.kops[step];
      if (!k->returned && attempt < 3) { /* it passed before the operation began */
        K.deadline_ms *= 4;
        continue;
      }
      for (int j = k->op_first; j < k->op_last; j++)
        if (K.ops[j].cancels) K.reached = true;
    }
    int want = 0;
    bool core_error = true; /* the first error is the core's (no driver named) */
    switch (inject) {
    case INJ_BAD:
      want = 1;
      break;
    case INJ_FAIL:
      /* after the acquire: ascope_fail; after an operation: its callback's
       * status, which ascope_op_end reports under the driver's name */
      want = UV_EIO;
      core_error = step == STEP_ACQ;
      break;
    case INJ_DEADLINE:
      /* due before the step began; it may still fire only once the scope
       * is releasing (everything else completed in one loop turn), and the
       * deadline covers nothing past the start of release */
      want = K.timed_out ? ASCOPE_ETIMEDOUT : 0;
      break;
    case INJ_CANCEL:
      want = step == STEP_REL ? 0 : ASCOPE_ECANCELED;
      break;
    case INJ_TIMEOUT:
      want = ASCOPE_ETIMEDOUT;
      core_error = false;
      break;
    }
    check_run(want, core_error);
    if (K.failures == f0 && !K.reached && inject != INJ_BAD && inject != INJ_FAIL) {
      K.not_reached++;
      fprintf(stderr,
              "kit[%s] %s: note: the step completed at once (%s); nothing in flight to "
              "inject into\n",
              K.d->name, name,
              inject == INJ_DEADLINE && !K.timed_out ? "the deadline never fired"
                                                     : "checked as such");
    }
    return;
  }
}

static void run_alloc_sweep(void) {
  K.alloc_sweep = true;
  long n;
  for (n = 1; n < 5000; n++) {
    reset_run("alloc", -2, INJ_NONE, ASCOPE_KIT_GOOD);
    int f0 = K.failures;
    a_calls = a_outstanding = a_failures = 0;
    a_fail_at = n;
    if (ascope_set_allocator(a_malloc, a_realloc, a_free) != 0) {
      bad("ascope_set_allocator refused");
      break;
    }
    bool began = run_once();
    ascope_set_allocator(NULL, NULL, NULL);
    if (began) check_run(0, false);
    if (a_outstanding != 0)
      bad("allocation %ld failed: %ld block(s) never freed", n, a_outstanding);
    if (K.failures > f0)
      fprintf(stderr, "kit[%s] alloc: (the failure above: allocation %ld)\n", K.d->name, n);
    if (a_failures == 0) break; /* the run needed fewer than n allocations */
  }
  K.alloc_sweep = false;
  fprintf(stderr, "kit[%s] alloc: %ld allocation(s) of ascope's failed in turn; %s\n", K.d->name,
          n - 1,
          K.driver_allocs ? "the driver allocates through ascope_set_allocator"
                          : "none of the driver's own allocations goes through "
                            "ascope_set_allocator (not swept)");
}

int ascope_kit_run_only(const ascope_kit_driver *d, const char *filter) {
  resolve();
  memset(&K, 0, sizeof K);
  K.d = d;
  resolve();
  K.interposed = dlsym(RTLD_DEFAULT, "ascope_res_done") == (void *)ascope_res_done;
  if (!K.interposed) {
    fprintf(stderr,
            "kit[%s]: the driver's completions are not visible to the kit (is the "
            "executable exporting ascope_res_done?)\n",
            d->name);
    return 1;
  }
  K.proxy = *d->driver;
  K.proxy.acquire = p_acquire;
  K.proxy.release = p_release;
  K.proxy.cancel = d->driver->cancel ? p_cancel : NULL;
  K.proxy.abort = d->driver->abort ? p_abort : NULL;
  K.proxy.reset = d->driver->reset ? p_reset : NULL;
  K.nops = d->op ? (d->nops ? d->nops : 1) : 0;
  if (K.nops > MAX_OPS) K.nops = MAX_OPS;
  uint64_t t0 = uv_hrtime();

  /* The baseline first: it also warms up what a driver sets up once per
   * process (a library's global state), so it is not counted as a leaked
   * descriptor, and it times each step for the deadlines. */
  reset_run("ok", STEP_ACQ, INJ_NONE, ASCOPE_KIT_GOOD);
  K.warmup = true;
  run_once();
  check_run(0, false);
  uint64_t step_ms[MAX_OPS + 1] = {0};
  for (unsigned i = 0; i < K.nops; i++)
    if (K.kops[i].start_ns) step_ms[i] = (K.kops[i].start_ns - K.start_ns) / 1000000;
  reset_run("ok", STEP_ACQ, INJ_NONE, ASCOPE_KIT_GOOD);
  run_once();
  check_run(0, false);

  bool has_bad = d->make_arg || d->bad_target || d->bad_arg;
  char name[48];
  int injects[] = {INJ_FAIL, INJ_DEADLINE, INJ_CANCEL};
  if (has_bad && selected(filter, "acquire/bad-target"))
    run_case(STEP_ACQ, INJ_BAD, 0, ASCOPE_KIT_BAD);
  for (int j = 0; j < 3; j++) {
    step_name(name, sizeof name, STEP_ACQ, injects[j]);
    if (selected(filter, name)) run_case(STEP_ACQ, injects[j], 0, ASCOPE_KIT_GOOD);
  }
  /* A target whose acquire waits: the deadline and the cancel then surely
   * reach an acquire in flight, which an acquire that completes at once
   * (a free lock) never shows. */
  if (d->make_arg && selected(filter, "-waits")) {
    for (int j = 1; j < 3; j++) run_case(STEP_ACQ, injects[j], 0, ASCOPE_KIT_WAITS);
  }
  for (unsigned i = 0; i < K.nops; i++)
    for (int j = 0; j < 3; j++) {
      step_name(name, sizeof name, (int)i, injects[j]);
      if (selected(filter, name)) run_case((int)i, injects[j], step_ms[i], ASCOPE_KIT_GOOD);
    }
  if (selected(filter, "release/cancel")) run_case(STEP_REL, INJ_CANCEL, 0, ASCOPE_KIT_GOOD);
  if (d->driver->abort && selected(filter, "release/timeout"))
    run_case(STEP_REL, INJ_TIMEOUT, 0, ASCOPE_KIT_GOOD);
  if (selected(filter, "alloc")) run_alloc_sweep();

  fprintf(stderr, "kit[%s]: %d run(s), %d broken rule(s), %d step(s) completed at once, %.2f s\n",
          d->name, K.runs, K.failures, K.not_reached, (double)(uv_hrtime() - t0) / 1e9);
  return K.failures;
}

int ascope_kit_run(const ascope_kit_driver *d) {
  return ascope_kit_run_only(d, NULL);
}

const ascope_driver *ascope_kit_driver_of(int (*use)(ascope *s, void *ud), void *ud) {
  resolve();
  uv_loop_t loop;
  if (uv_loop_init(&loop) != 0) return NULL;
  ascope_rt *rt = ascope_rt_new(&loop);
  const ascope_driver *drv = NULL;
  if (rt) {
    ascope *s = ascope_new(rt);
    if (s) {
      captured = NULL;
      capturing = true;
      if (use(s, ud) == 0) drv = captured;
      capturing = false;
      ascope_discard(s);
    }
    ascope_rt_free(rt);
    uv_run(&loop, UV_RUN_DEFAULT);
  }
  uv_loop_close(&loop);
  return drv;
}
