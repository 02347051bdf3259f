#include "test_driver.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int seq, live;
static char logbuf[1 << 16];

void td_reset(void) {
  seq = live = 0;
  logbuf[0] = '\0';
}
int td_seq(void) {
  return seq;
}
int td_tick(void) {
  return ++seq;
}
int td_live(void) {
  return live;
}
const char *td_log(void) {
  return logbuf;
}

static void logf_(char sign, const char *name) {
  size_t n = strlen(logbuf);
  if (n + 40 < sizeof logbuf)
    snprintf(logbuf + n, sizeof logbuf - n, "%s%c%s", n ? " " : "", sign, name ? name : "?");
}

/* A timer that lives on the heap, so a resource whose release was aborted
 * can still finish later without touching state the core reclaimed. */
struct delay {
  uv_timer_t timer;
  void (*fire)(struct delay *d);
  ascope_res *res;
  ascope_op *op;
  int status;
  void *state;
};

static void delay_closed(uv_handle_t *h) {
  free(h->data);
}

static struct delay *delay_start(uv_loop_t *loop, unsigned ms, void (*fire)(struct delay *)) {
  (void)ms;
  struct delay *d = calloc(1, sizeof *d);
  if (d == NULL) abort();
  uv_timer_init(loop, &d->timer);
  d->timer.data = d;
  d->fire = fire;
  return d;
}

static void delay_cb(uv_timer_t *t) {
  struct delay *d = t->data;
  t->data = d;
  uv_close((uv_handle_t *)t, delay_closed);
  d->fire(d);
}

static void delay_arm(struct delay *d, unsigned ms) {
  uv_timer_start(&d->timer, delay_cb, ms, 0);
}

static void delay_drop(struct delay *d) {
  uv_timer_stop(&d->timer);
  uv_close((uv_handle_t *)&d->timer, delay_closed);
}

typedef struct td_state {
  td_spec *spec;
  struct delay *pending; /* a late completion in flight */
  bool holding;
} td_state;

static int fail_of(td_spec *sp) {
  return sp->fail_status ? sp->fail_status : ASCOPE_EDRIVER;
}

static void acquire_finish(ascope_res *r, td_state *st, int status) {
  st->pending = NULL;
  if (status == 0) {
    st->spec->acquired++;
    st->holding = true;
    live++;
    logf_('+', st->spec->name);
    ascope_res_done(r, 0, NULL, NULL);
  } else {
    ascope_res_done(r, status, "TD_ACQUIRE", "the test driver's acquire failed");
  }
}

static void acquire_late(struct delay *d) {
  td_state *st = ascope_res_state(d->res);
  acquire_finish(d->res, st, d->status);
}

static void td_acquire(ascope_res *r, const void *arg, const char *options) {
  (void)options;
  td_state *st = ascope_res_state(r);
  st->spec = (td_spec *)arg;
  td_spec *sp = st->spec;
  sp->acquire_calls++;
  sp->acquire_seq = ++seq;
  switch (sp->acquire) {
  case TD_OK:
    acquire_finish(r, st, 0);
    break;
  case TD_FAIL:
    acquire_finish(r, st, fail_of(sp));
    break;
  case TD_OK_LATE:
  case TD_FAIL_LATE:
    st->pending = delay_start(ascope_rt_loop(ascope_res_rt(r)), sp->delay_ms, acquire_late);
    st->pending->res = r;
    st->pending->status = sp->acquire == TD_OK_LATE ? 0 : fail_of(sp);
    sp->acquire_armed_ns = uv_hrtime();
    sp->acquire_due_ns = (uv_now(ascope_rt_loop(ascope_res_rt(r))) + sp->delay_ms) * 1000000;
    delay_arm(st->pending, sp->delay_ms);
    break;
  case TD_HANG:
    break;
  }
}

static void td_cancel(ascope_res *r) {
  td_state *st = ascope_res_state(r);
  st->spec->cancel_calls++;
  if (st->spec->ignore_cancel) return;
  if (st->pending) {
    delay_drop(st->pending);
    st->pending = NULL;
  }
  ascope_res_done(r, ASCOPE_ECANCELED, NULL, "acquire cancelled");
}

static void release_finish(ascope_res *r, td_state *st, int status) {
  st->pending = NULL;
  if (st->holding) { /* not if an abort already closed it */
    st->holding = false;
    live--;
    st->spec->release_seq = ++seq;
    logf_('-', st->spec->name);
  } else {
    st->spec->late_done_calls++;
  }
  if (status == 0)
    ascope_res_done(r, 0, NULL, NULL);
  else
    ascope_res_done(r, status, "TD_RELEASE", "the test driver's release failed");
}

static void release_late(struct delay *d) {
  td_state *st = d->state;
  release_finish(d->res, st, d->status);
}

static void td_release(ascope_res *r, int outcome) {
  td_state *st = ascope_res_state(r);
  td_spec *sp = st->spec;
  sp->release_calls++;
  sp->release_outcome = outcome;
  switch (sp->release) {
  case TD_OK:
    release_finish(r, st, 0);
    break;
  case TD_FAIL:
    release_finish(r, st, fail_of(sp));
    break;
  case TD_OK_LATE:
  case TD_FAIL_LATE:
    st->pending = delay_start(ascope_rt_loop(ascope_res_rt(r)), sp->delay_ms, release_late);
    st->pending->res = r;
    st->pending->state = st;
    st->pending->status = sp->release == TD_OK_LATE ? 0 : fail_of(sp);
    sp->release_armed_ns = uv_hrtime();
    sp->release_due_ns = (uv_now(ascope_rt_loop(ascope_res_rt(r))) + sp->delay_ms) * 1000000;
    delay_arm(st->pending, sp->delay_ms);
    break;
  case TD_HANG:
    break;
  }
}

static void td_abort(ascope_res *r) {
  td_state *st = ascope_res_state(r);
  st->spec->abort_calls++;
  if (st->pending && !st->spec->late_after_abort) {
    delay_drop(st->pending);
    st->pending = NULL;
  }
  if (st->holding) {
    st->holding = false;
    live--;
    st->spec->release_seq = ++seq;
    logf_('!', st->spec->name);
  }
}

const ascope_driver td_driver = {
    .abi = ASCOPE_DRIVER_ABI,
    .name = "test",
    .state_size = sizeof(td_state),
    .acquire = td_acquire,
    .release = td_release,
    .cancel = td_cancel,
    .abort = td_abort,
};

const ascope_driver td_driver_nocancel = {
    .abi = ASCOPE_DRIVER_ABI,
    .name = "test",
    .state_size = sizeof(td_state),
    .acquire = td_acquire,
    .release = td_release,
    .abort = td_abort,
};

int td_use(ascope *s, td_spec *spec) {
  return ascope_use(s, spec->no_cancel_hook ? &td_driver_nocancel : &td_driver, spec, NULL);
}

/* ---- operations ---------------------------------------------------------- */

typedef struct td_opctx {
  ascope *scope;
  ascope_op *op;
  td_op_cb cb;
  void *ud;
  td_op_stats *stats;
  struct delay *pending;
  int status;
  bool finishing; /* in the user's callback: a cancel now has nothing to stop */
} td_opctx;

static void op_finish(td_opctx *c, int status) {
  c->finishing = true;
  if (c->stats) c->stats->completed++;
  int rc = status;
  if (c->cb) {
    if (c->stats) c->stats->callbacks++;
    rc = c->cb(c->scope, status, NULL, c->ud);
  }
  ascope_op *op = c->op;
  free(c);
  ascope_op_end(op, rc, status ? "TD_OP" : NULL, status ? "the test operation failed" : NULL);
}

static void op_late(struct delay *d) {
  td_opctx *c = d->state;
  c->pending = NULL;
  op_finish(c, c->status);
}

static void op_cancel(ascope_op *op) {
  td_opctx *c = ascope_op_data(op);
  /* The callback may cancel its own scope: the operation is already ending. */
  if (c->finishing) return;
  if (c->stats) c->stats->cancelled++;
  if (c->pending) {
    delay_drop(c->pending);
    c->pending = NULL;
  }
  op_finish(c, ASCOPE_ECANCELED);
}

int td_op_start(ascope *s, enum td_mode mode, unsigned delay_ms, int fail_status, td_op_cb cb,
                void *ud, td_op_stats *stats) {
  td_opctx *c = calloc(1, sizeof *c);
  if (c == NULL) return UV_ENOMEM;
  c->scope = s;
  c->cb = cb;
  c->ud = ud;
  c->stats = stats;
  c->op = ascope_op_begin(s, &td_driver, op_cancel, c);
  if (c->op == NULL) {
    free(c);
    return ASCOPE_ECANCELED;
  }
  if (stats) stats->started++;
  int fail = fail_status ? fail_status : ASCOPE_EDRIVER;
  switch (mode) {
  case TD_OK:
    op_finish(c, 0);
    break;
  case TD_FAIL:
    op_finish(c, fail);
    break;
  case TD_OK_LATE:
  case TD_FAIL_LATE:
    c->status = mode == TD_OK_LATE ? 0 : fail;
    c->pending = delay_start(ascope_rt_loop(ascope_scope_rt(s)), delay_ms, op_late);
    c->pending->state = c;
    delay_arm(c->pending, delay_ms);
    break;
  case TD_HANG:
    break;
  }
  return 0;
}

/* ---- manual operations ---------------------------------------------------- */

static void manual_cancel(ascope_op *op) {
  td_manual *m = ascope_op_data(op);
  m->cancelled++;
  td_manual_end(m, ASCOPE_ECANCELED);
}

int td_manual_start(ascope *s, td_manual *m) {
  m->op = ascope_op_begin(s, &td_driver, manual_cancel, m);
  if (m->op == NULL) return ASCOPE_ECANCELED;
  m->started++;
  return 0;
}

void td_manual_end(td_manual *m, int status) {
  ascope_op *op = m->op;
  if (op == NULL) return;
  m->op = NULL;
  m->ended++;
  m->end_status = status;
  ascope_op_end(op, status, status ? "TD_MANUAL" : NULL,
                status ? "the manual operation failed" : NULL);
}
