/* Scopes: the `async with` state machine.
 *
 * A scope moves NEW -> QUEUED -> ACQUIRE -> BODY -> RELEASE -> DONE. Every
 * event that may let it move (an acquire or release completing, an operation
 * ending, a child finishing, a deadline) only records what happened and
 * queues the scope; scope_step() is the one place that moves it. Because the
 * outermost entry into the core drains that queue, a driver may complete from
 * inside the call that started it, and a chain of 1,000 nested scopes or
 * 100,000 lock waiters finishes without the C stack growing with it.
 */
#include "internal.h"

#include <stdio.h>

static void scope_init(ascope *s, ascope_rt *rt, ascope *parent) {
  /* Keep what a recycled scope grew: the timer handle, the message buffer. */
  s->rt = rt;
  s->parent = parent;
  aq_init(&s->child_node);
  aq_init(&s->children);
  aq_init(&s->uses);
  aq_init(&s->ops);
  aq_init(&s->ops_cancelled);
  s->runq_next = NULL;
  s->nuses = s->nacquired = s->nchildren = s->nops = 0;
  s->cur = NULL;
  s->state = S_NEW;
  s->status = 0;
  s->mode = ASCOPE_FAIL_FAST;
  s->timeout_ms = 0;
  s->body = NULL;
  s->done = NULL;
  s->ud = NULL;
  s->value = NULL;
  s->value_free = NULL;
  s->err.next = NULL;
  s->err_tail = &s->err;
  s->queued = s->inflight = s->in_done = s->value_taken = false;
  s->cancel_self = s->cancel_parent = false;
  s->id = 0; /* given by the first event that needs it: tracing costs nothing when off */
  s->phase_ts = 0;
  s->name[0] = '\0';
  s->gen = ++rt->next_gen;
}

void scope_fini(void *obj) {
  err_fini(&((ascope *)obj)->err);
}

static void scope_recycle(ascope *s) {
  ascope_rt *rt = s->rt;
  while (!aq_empty(&s->uses)) {
    ascope_res *r = aq_data(s->uses.next, ascope_res, node);
    aq_remove(&r->node);
    r->scope = NULL;
    /* An aborted resource stays with its driver until the late completion. */
    if (r->phase != RES_ORPHAN) cache_put(&rt->res, r);
  }
  struct ascope_err *e = s->err.next;
  while (e) {
    struct ascope_err *next = e->next;
    cache_put(&rt->errs, e);
    e = next;
  }
  s->err.next = NULL;
  s->state = S_DONE;
  cache_put(&rt->scopes, s);
}

/* ---- public: building a scope ------------------------------------------- */

ascope *ascope_new(ascope_rt *rt) {
  if (rt == NULL || rt->freeing) return NULL;
  ascope *s = cache_get(&rt->scopes);
  if (s) scope_init(s, rt, NULL);
  return s;
}

ascope *ascope_child(ascope *parent) {
  /* Like a TaskGroup that is shutting down, a failing parent takes no new
   * children: whatever they would do is already cancelled. */
  if (parent == NULL || parent->state != S_BODY || parent->status) return NULL;
  ascope *s = cache_get(&parent->rt->scopes);
  if (s == NULL) return NULL;
  scope_init(s, parent->rt, parent);
  aq_push(&parent->children, &s->child_node);
  parent->nchildren++;
  return s;
}

/* Appends a use. options, and target when given, are copied into one
 * buffer the resource keeps for reuse: the steady state allocates
 * nothing. With a target, arg is ignored and the copy is the driver's arg. */
static int use_add(ascope *s, const ascope_driver *drv, const void *arg, const char *options,
                   const char *target) {
  if (s == NULL || drv == NULL) return UV_EINVAL;
  if (s->state != S_NEW) return ASCOPE_EBUSY;
  if (drv->abi < ASCOPE_DRIVER_ABI_MIN || drv->name == NULL || drv->acquire == NULL ||
      drv->release == NULL)
    return UV_EINVAL;
  ascope_res *r = res_new(s->rt, drv, arg);
  if (r == NULL) return UV_ENOMEM;
  size_t olen = options ? strlen(options) + 1 : 0, tlen = target ? strlen(target) + 1 : 0;
  if (olen + tlen > r->optbuf_cap) {
    char *p = ascope__realloc(r->optbuf, olen + tlen);
    if (p == NULL) goto nomem;
    r->optbuf = p;
    r->optbuf_cap = olen + tlen;
  }
  r->options = NULL;
  if (options) {
    memcpy(r->optbuf, options, olen);
    r->options = r->optbuf;
  }
  if (target) {
    memcpy(r->optbuf + olen, target, tlen);
    arg = r->optbuf + olen;
  }
  r->scope = s;
  r->arg = arg;
  aq_push(&s->uses, &r->node);
  s->nuses++;
  return 0;
nomem:
  cache_put(&s->rt->res, r);
  return UV_ENOMEM;
}

int ascope_use(ascope *s, const ascope_driver *drv, const void *arg, const char *options) {
  return use_add(s, drv, arg, options, NULL);
}

int ascope_use_str(ascope *s, const ascope_driver *drv, const char *target, const char *options) {
  if (target == NULL) return UV_EINVAL;
  return use_add(s, drv, NULL, options, target);
}

size_t ascope_use_count(ascope *s) {
  return s ? s->nuses : 0;
}

int ascope_set_name(ascope *s, const char *name) {
  if (s == NULL) return UV_EINVAL;
  if (s->state == S_DONE) return ASCOPE_EBUSY;
  size_t n = name ? strlen(name) : 0;
  if (n >= sizeof s->name) n = sizeof s->name - 1;
  memcpy(s->name, name ? name : "", n);
  s->name[n] = '\0';
  return 0;
}

int ascope_set_timeout(ascope *s, uint64_t ms) {
  if (s == NULL) return UV_EINVAL;
  if (s->state != S_NEW) return ASCOPE_EBUSY;
  s->timeout_ms = ms;
  return 0;
}

int ascope_set_mode(ascope *s, int mode) {
  if (s == NULL || (mode != ASCOPE_FAIL_FAST && mode != ASCOPE_COLLECT_ALL)) return UV_EINVAL;
  if (s->state != S_NEW) return ASCOPE_EBUSY;
  s->mode = mode;
  return 0;
}

static void on_deadline(uv_timer_t *t) {
  ascope *s = t->data;
  char msg[96];
  snprintf(msg, sizeof msg, "the scope's deadline of %llu ms passed",
           (unsigned long long)s->timeout_ms);
  rt_enter(s->rt);
  s->rt->stats.timed_out++;
  if (OBSERVED(s->rt)) trace_scope(s, ASCOPE_TRACE_DEADLINE, 0, s->timeout_ms, NULL, NULL, msg);
  scope_fail(s, ASCOPE_ETIMEDOUT, NULL, NULL, msg);
  rt_leave(s->rt);
}

static void scope_timer(ascope *s, uv_timer_cb cb, uint64_t ms) {
  if (!s->timer_inited) {
    uv_timer_init(s->rt->loop, &s->timer); /* cannot fail for a timer */
    s->timer.data = s;
    s->timer_inited = true;
  }
  /* libuv counts from the loop's cached time, which lags by however long
   * the program (or this loop turn: a long body, a long drain) has been
   * busy; a deadline is "ms from now", so read the clock. */
  uv_update_time(s->rt->loop);
  uv_timer_start(&s->timer, cb, ms, 0);
}

static void scope_timer_stop(ascope *s) {
  if (s->timer_inited) uv_timer_stop(&s->timer);
}

int ascope_start(ascope *s, ascope_body_fn body, ascope_done_fn done, void *ud) {
  if (s == NULL) return UV_EINVAL;
  if (s->state != S_NEW) return ASCOPE_EBUSY;
  s->body = body;
  s->done = done;
  s->ud = ud;
  s->state = S_QUEUED;
  rt_pending(s->rt, +1);
  s->rt->stats.scopes++;
  if (OBSERVED(s->rt)) trace_scope(s, ASCOPE_TRACE_SCOPE_BEGIN, 0, 0, NULL, NULL, NULL);
  /* A scope cancelled before it started completes without a deadline. */
  if (s->timeout_ms && s->status == 0) scope_timer(s, on_deadline, s->timeout_ms);
  rt_enqueue(s->rt, s);
  return 0;
}

void ascope_discard(ascope *s) {
  if (s == NULL || s->state != S_NEW) return;
  ascope *p = s->parent;
  ascope_rt *rt = s->rt;
  rt_enter(rt);
  if (p) {
    aq_remove(&s->child_node);
    p->nchildren--;
    scope_kick(p);
  }
  scope_recycle(s);
  rt_leave_user(rt);
}

static ascope_res *use_at(ascope *s, size_t index) {
  if (s == NULL || index >= s->nuses) return NULL;
  size_t i = 0;
  for (struct aq *q = s->uses.next; q != &s->uses; q = q->next, i++)
    if (i == index) return aq_data(q, ascope_res, node);
  return NULL;
}

void *ascope_resource(ascope *s, size_t index) {
  ascope_res *r = use_at(s, index);
  if (r == NULL || (r->phase != RES_HELD && r->phase != RES_RELEASING)) return NULL;
  return r->lent ? r->lent->state : r->state; /* a pool use: the member it was lent */
}

void *ascope_resource_of(ascope *s, size_t index, const ascope_driver *drv) {
  ascope_res *r = use_at(s, index);
  /* The table itself identifies the driver: names are shared (a SQL
   * driver's transaction use carries the driver's name). */
  if (r == NULL || (r->lent ? r->lent->drv : r->drv) != drv) return NULL;
  return ascope_resource(s, index);
}

ascope *ascope_parent(ascope *s) {
  return s ? s->parent : NULL;
}

ascope_rt *ascope_scope_rt(ascope *s) {
  return s ? s->rt : NULL;
}

uint64_t ascope_gen(ascope *s) {
  return s ? s->gen : 0;
}

/* Reading a stale s is safe: a scope's memory stays in its runtime's cache
 * until ascope_rt_free, and a new scope there has a new generation. */
ascope *ascope_check(ascope *s, uint64_t gen) {
  if (s == NULL || gen == 0 || s->gen != gen || s->state == S_DONE) return NULL;
  return s;
}

void ascope_return(ascope *s, void *value, void (*free_fn)(void *value)) {
  if (s == NULL || s->state >= S_DONE) {
    if (free_fn && value) free_fn(value);
    return;
  }
  if (s->value_free && s->value && s->value != value) s->value_free(s->value);
  s->value = value;
  s->value_free = free_fn;
}

void *ascope_value(ascope *s) {
  if (s == NULL || !s->in_done || s->status) return NULL;
  s->value_taken = true;
  return s->value;
}

const ascope_err *ascope_error(ascope *s) {
  if (s == NULL || !s->in_done || s->status == 0) return NULL;
  return &s->err;
}

/* ---- failing and cancelling --------------------------------------------- */

static void chain_error(ascope *s, int status, const char *driver, const char *code,
                        const char *message) {
  struct ascope_err *e = cache_get(&s->rt->errs);
  if (e == NULL) return; /* the first error stands; a secondary one is lost */
  err_set(e, status, driver, code, message);
  s->err_tail->next = e;
  s->err_tail = e;
}

static void cancel_child(ascope *c) {
  if (c->status || c->state >= S_RELEASE) return;
  c->cancel_parent = true;
  c->rt->stats.cancelled++;
  if (OBSERVED(c->rt))
    trace_scope(c, ASCOPE_TRACE_CANCEL, 0, 1, NULL, NULL, "its parent scope stopped");
  scope_fail(c, ASCOPE_ECANCELED, NULL, NULL, "cancelled because its parent scope stopped");
}

/* Tells everything in flight to stop. Each list is first moved aside, then
 * taken one entry at a time, because a cancel may complete synchronously and
 * run user code that ends or discards other entries. */
static void cancel_work(ascope *s) {
  if (s->state == S_ACQUIRE && s->inflight) {
    ascope_res *r = s->cur;
    if (!r->cancel_called && r->drv->cancel) {
      r->cancel_called = true;
      r->drv->cancel(r);
    }
  }
  while (!aq_empty(&s->ops)) {
    ascope_op *op = aq_data(s->ops.next, ascope_op, node);
    aq_remove(&op->node);
    aq_push(&s->ops_cancelled, &op->node);
    void (*cancel)(ascope_op *) = op->cancel;
    op->cancel = NULL; /* once: ascope_op_cancel may have come first, or come later */
    if (cancel) cancel(op);
  }
  struct aq todo;
  aq_init(&todo);
  if (!aq_empty(&s->children)) {
    todo.next = s->children.next;
    todo.prev = s->children.prev;
    todo.next->prev = &todo;
    todo.prev->next = &todo;
    aq_init(&s->children);
  }
  while (!aq_empty(&todo)) {
    ascope *c = aq_data(todo.next, ascope, child_node);
    aq_remove(&c->child_node);
    aq_push(&s->children, &c->child_node);
    cancel_child(c);
  }
}

void scope_fail(ascope *s, int status, const char *driver, const char *code, const char *message) {
  if (s->state == S_DONE) return;
  if (s->state == S_RELEASE) {
    /* A release's failure: it becomes the status if all was well, as an
     * exception raised by __aexit__ would; otherwise it rides behind. */
    if (s->status == 0) {
      s->status = status;
      err_set(&s->err, status, driver, code, message);
      if (OBSERVED(s->rt)) trace_scope(s, ASCOPE_TRACE_ERROR, status, 0, driver, code, message);
    } else {
      chain_error(s, status, driver, code, message);
    }
    return;
  }
  if (s->status) return; /* the first error stands; what follows is its consequence */
  s->status = status;
  err_set(&s->err, status, driver, code, message);
  if (OBSERVED(s->rt)) trace_scope(s, ASCOPE_TRACE_ERROR, status, 0, driver, code, message);
  scope_timer_stop(s);
  cancel_work(s);
  scope_kick(s);
}

void ascope_fail(ascope *s, int status, const char *message) {
  if (s == NULL || s->state >= S_RELEASE) return;
  if (status >= 0) status = UV_EINVAL; /* a failure must carry a failure status */
  rt_enter(s->rt);
  scope_fail(s, status, NULL, NULL, message ? message : "failed by ascope_fail()");
  rt_leave_user(s->rt);
}

void ascope_cancel(ascope *s) {
  if (s == NULL || s->state >= S_RELEASE || s->status) return;
  s->cancel_self = true;
  rt_enter(s->rt);
  s->rt->stats.cancelled++;
  if (OBSERVED(s->rt)) trace_scope(s, ASCOPE_TRACE_CANCEL, 0, 0, NULL, NULL, "ascope_cancel()");
  scope_fail(s, ASCOPE_ECANCELED, NULL, NULL, "cancelled");
  rt_leave_user(s->rt);
}

/* ---- the state machine -------------------------------------------------- */

void scope_kick(ascope *s) {
  if (s->state == S_NEW || s->state == S_DONE) return;
  if (s->rt->stepping == s) return; /* scope_step() re-checks after every action */
  rt_enqueue(s->rt, s);
}

static void acquire_next(ascope *s) {
  struct aq *q = s->cur ? s->cur->node.next : s->uses.next;
  ascope_res *r = aq_data(q, ascope_res, node);
  s->cur = r;
  r->phase = RES_ACQUIRING;
  s->inflight = true;
  if (OBSERVED(s->rt)) trace_res(r, ASCOPE_TRACE_ACQUIRE_BEGIN, 0);
  r->drv->acquire(r, r->arg, r->options);
}

static void on_release_timeout(uv_timer_t *t) {
  ascope *s = t->data;
  ascope_res *r = s->cur;
  rt_enter(s->rt);
  s->rt->stats.aborted++;
  if (OBSERVED(s->rt)) trace_res(r, ASCOPE_TRACE_ABORT, ASCOPE_ETIMEDOUT);
  r->phase = RES_ABORTING;
  if (r->drv->abort) r->drv->abort(r);
  /* If abort completed the release itself, the resource is free to reuse;
   * otherwise it is the driver's until its late ascope_res_done(). */
  r->phase = r->phase == RES_ABORTING ? RES_ORPHAN : RES_RELEASED;
  s->inflight = false;
  s->nacquired--;
  if (OBSERVED(s->rt)) trace_res(r, ASCOPE_TRACE_RELEASE_END, ASCOPE_ETIMEDOUT);
  char msg[128];
  snprintf(msg, sizeof msg, "release did not complete within %llu ms; the resource was aborted",
           (unsigned long long)s->rt->release_timeout_ms);
  scope_fail(s, ASCOPE_ETIMEDOUT, r->drv->name, NULL, msg);
  scope_kick(s);
  rt_leave(s->rt);
}

static void release_last(ascope *s) {
  ascope_res *r = s->cur;
  while (r->phase != RES_HELD) r = aq_data(r->node.prev, ascope_res, node);
  s->cur = r;
  r->phase = RES_RELEASING;
  s->inflight = true;
  if (OBSERVED(s->rt)) trace_res(r, ASCOPE_TRACE_RELEASE_BEGIN, 0);
  r->drv->release(r, s->status);
  /* Most releases complete inside the call: only one still in flight needs
   * its bound, and the common case pays for no timer. */
  if (s->inflight && r->phase == RES_RELEASING && s->rt->release_timeout_ms)
    scope_timer(s, on_release_timeout, s->rt->release_timeout_ms);
}

static void notify_parent(ascope *s) {
  ascope *p = s->parent;
  aq_remove(&s->child_node);
  p->nchildren--;
  bool on_purpose = s->cancel_self && s->status == ASCOPE_ECANCELED;
  if (s->status && p->mode == ASCOPE_FAIL_FAST && !s->cancel_parent && !on_purpose)
    scope_fail(p, s->status, s->err.driver, s->err.code, s->err.message);
  scope_kick(p);
}

static void finish(ascope *s) {
  s->state = S_DONE;
  scope_timer_stop(s);
  if (s->status) stat_scope_end(s->rt, s->status);
  if (OBSERVED(s->rt))
    trace_scope(s, ASCOPE_TRACE_SCOPE_END, s->status, 0, s->status ? s->err.driver : NULL,
                s->status ? s->err.code : NULL, s->status ? s->err.message : NULL);
  if (s->done) {
    s->in_done = true;
    s->done(s, s->status, s->ud);
    s->in_done = false;
  }
  if (s->value && s->value_free && !s->value_taken) s->value_free(s->value);
  if (s->parent) notify_parent(s);
  rt_pending(s->rt, -1);
  scope_recycle(s);
}

static void run_body(ascope *s) {
  s->state = S_BODY;
  if (OBSERVED(s->rt)) trace_scope(s, ASCOPE_TRACE_BODY_BEGIN, 0, 0, NULL, NULL, NULL);
  if (s->body) s->body(s, s->ud);
}

void scope_step(ascope *s) {
  ascope_rt *rt = s->rt;
  rt->stepping = s;
  for (;;) {
    switch (s->state) {
    case S_QUEUED:
      s->state = S_ACQUIRE;
      continue;
    case S_ACQUIRE:
      if (s->inflight) goto out;
      if (s->status) {
        scope_timer_stop(s);
        s->state = S_RELEASE;
      } else if (s->nacquired < s->nuses) {
        acquire_next(s);
      } else {
        run_body(s);
      }
      continue;
    case S_BODY:
      if (s->nops || s->nchildren) goto out;
      scope_timer_stop(s); /* the deadline covers acquire, body and release-start */
      s->state = S_RELEASE;
      if (OBSERVED(rt)) trace_scope(s, ASCOPE_TRACE_BODY_END, s->status, 0, NULL, NULL, NULL);
      continue;
    case S_RELEASE:
      if (s->inflight) goto out;
      if (s->nacquired == 0) {
        rt->stepping = NULL;
        finish(s);
        return;
      }
      release_last(s);
      continue;
    case S_NEW:
    case S_DONE:
      goto out;
    }
  }
out:
  rt->stepping = NULL;
}

/* ---- completions from drivers ------------------------------------------- */

void scope_res_done(ascope_res *r, int status, const char *code, const char *message) {
  ascope *s = r->scope;
  if (OBSERVED(r->rt)) trace_res_done(r, status); /* one test for every case below */
  switch (r->phase) {
  case RES_ACQUIRING:
    s->inflight = false;
    if (status == 0) {
      r->phase = RES_HELD;
      s->nacquired++;
    } else {
      r->phase = RES_IDLE; /* a failed acquire cleaned up after itself */
      scope_fail(s, status, r->drv->name, code, message);
    }
    scope_kick(s);
    break;
  case RES_RELEASING:
    scope_timer_stop(s);
    r->phase = RES_RELEASED;
    s->inflight = false;
    s->nacquired--;
    if (status < 0) scope_fail(s, status, r->drv->name, code, message);
    scope_kick(s);
    break;
  case RES_ABORTING:
    r->phase = RES_RELEASED; /* on_release_timeout() does the accounting */
    break;
  case RES_ORPHAN:
    if (r->scope)
      r->phase = RES_RELEASED;
    else
      cache_put(&r->rt->res, r);
    break;
  default:
    break; /* a completion nothing waits for: a driver bug, ignored */
  }
}
