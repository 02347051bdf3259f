/* A simulated network resource for the tour: the smallest honest driver.
 *
 * It shows the driver contract in a page: acquire and release complete
 * later, from a timer; cancel stops a pending connect; every libuv handle in
 * the state is closed before ascope_res_done, because the core may reuse the
 * state as soon as the driver completes. */
#include "tour.h"

#include <stdlib.h>

typedef struct sim_conn {
  const sim_target *target;
  uv_timer_t timer;
  int phase; /* 0: connecting, 1: open, 2: closing */
  int result;
} sim_conn;

/* The timer's data points at the resource; the close callback completes. */
static void on_closed(uv_handle_t *h) {
  ascope_res *r = h->data;
  sim_conn *c = ascope_res_state(r);
  ascope_res_done(r, c->result, NULL, c->result ? "connect cancelled" : NULL);
}

static void on_timer(uv_timer_t *t) {
  ascope_res *r = t->data;
  sim_conn *c = ascope_res_state(r);
  if (c->phase == 0) {
    tour_say("   %s: connected", c->target->name);
    c->phase = 1;
    uv_timer_stop(t);
    ascope_res_done(r, 0, NULL, NULL); /* keeps the timer for the release */
    return;
  }
  tour_say("   %s: closed", c->target->name);
  c->result = 0;
  uv_close((uv_handle_t *)t, on_closed);
}

static void sim_acquire(ascope_res *r, const void *arg, const char *options) {
  (void)options;
  sim_conn *c = ascope_res_state(r);
  c->target = arg;
  tour_say("   %s: connecting (%u ms)", c->target->name, c->target->connect_ms);
  uv_timer_init(ascope_rt_loop(ascope_res_rt(r)), &c->timer);
  c->timer.data = r;
  uv_timer_start(&c->timer, on_timer, c->target->connect_ms, 0);
}

static void sim_cancel(ascope_res *r) {
  sim_conn *c = ascope_res_state(r);
  tour_say("   %s: connect cancelled", c->target->name);
  uv_timer_stop(&c->timer);
  c->result = ASCOPE_ECANCELED; /* a failed acquire cleans up after itself */
  uv_close((uv_handle_t *)&c->timer, on_closed);
}

static void sim_release(ascope_res *r, int outcome) {
  sim_conn *c = ascope_res_state(r);
  tour_say("   %s: release, told the outcome: %s", c->target->name, tour_outcome(outcome));
  c->phase = 2;
  uv_timer_start(&c->timer, on_timer, c->target->close_ms, 0);
}

static void sim_abort(ascope_res *r) {
  sim_conn *c = ascope_res_state(r);
  tour_say("   %s: aborted", c->target->name);
  uv_timer_stop(&c->timer);
  /* The core holds the state until this late completion arrives. */
  c->result = 0;
  uv_close((uv_handle_t *)&c->timer, on_closed);
}

const ascope_driver sim_driver = {
    .abi = ASCOPE_DRIVER_ABI,
    .name = "sim",
    .state_size = sizeof(sim_conn),
    .acquire = sim_acquire,
    .release = sim_release,
    .cancel = sim_cancel,
    .abort = sim_abort,
};

int sim_use(ascope *s, const sim_target *t) {
  return ascope_use(s, &sim_driver, t, NULL);
}

/* ---- an operation ---------------------------------------------------------- */

typedef struct sim_op {
  uv_timer_t timer;
  ascope_op *op;
  ascope *scope;
  const char *what;
  int status;
  int (*cb)(ascope *s, int status, void *unused, void *ud);
  void *ud;
} sim_op;

static void op_closed(uv_handle_t *h) {
  sim_op *o = h->data;
  int rc = o->status;
  if (o->cb) rc = o->cb(o->scope, o->status, NULL, o->ud);
  ascope_op *op = o->op;
  free(o);
  ascope_op_end(op, rc, NULL, rc ? "the simulated operation failed" : NULL);
}

static void op_fire(uv_timer_t *t) {
  sim_op *o = t->data;
  tour_say("   %s: %s", o->what, o->status ? "failed" : "done");
  uv_close((uv_handle_t *)t, op_closed);
}

static void op_cancel(ascope_op *op) {
  sim_op *o = ascope_op_data(op);
  tour_say("   %s: cancelled", o->what);
  uv_timer_stop(&o->timer);
  o->status = ASCOPE_ECANCELED;
  uv_close((uv_handle_t *)&o->timer, op_closed);
}

int sim_sleep(ascope *s, const char *what, unsigned ms, int status,
              int (*cb)(ascope *s, int status, void *unused, void *ud), void *ud) {
  sim_op *o = calloc(1, sizeof *o);
  if (o == NULL) return UV_ENOMEM;
  o->op = ascope_op_begin(s, &sim_driver, op_cancel, o);
  if (o->op == NULL) {
    free(o);
    return ASCOPE_ECANCELED;
  }
  o->scope = s;
  o->what = what;
  o->status = status;
  o->cb = cb;
  o->ud = ud;
  uv_timer_init(ascope_rt_loop(ascope_scope_rt(s)), &o->timer);
  o->timer.data = o;
  tour_say("   %s: started (%u ms)", what, ms);
  uv_timer_start(&o->timer, op_fire, ms, 0);
  return 0;
}
