/* countdown: the driver. Each part is what a real driver has, in order:
 * options, the resource's life (acquire, cancel, release, abort), a pool's
 * check and reset, the operation, and the table with its registration.
 * Everything runs on the loop thread. */
#include "countdown.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

/* ---- the resource --------------------------------------------------------------------- */

/* What the core hands back as the resource state is only a pointer: the
 * real state lives on the heap, because it must outlive the core's copy
 * while its timer handle closes (uv_close completes on a later loop turn),
 * and after an abort, until that close. A driver holding a socket or a
 * library handle has the same reason. */
struct countdown_state {
  ascope_countdown *c;
};

struct ascope_countdown {
  ascope_res *res;
  uv_timer_t timer; /* stands in for the library's socket or handle */
  uint64_t connect_ms, tick_ms;
  unsigned left;
  bool open;         /* the acquire completed */
  bool closing;      /* release or abort began: the handle is closing */
  struct tick *tick; /* the operation in flight, if any */
};

struct tick {
  ascope_op *op;
  ascope_countdown *c;
  ascope_countdown_cb cb;
  void *ud;
};

/* ---- options: the shared grammar, keys checked, a clear message ------------------------- */

static int parse_options(ascope_countdown *c, const char *options, char *why, size_t len) {
  char buf[64], *key, *value;
  c->connect_ms = c->tick_ms = 1;
  for (const char *s = options; (s = ascope_opt_next(s, buf, sizeof buf, &key, &value));) {
    uint64_t *slot = !strcmp(key, "connect_ms") ? &c->connect_ms
                     : !strcmp(key, "tick_ms")  ? &c->tick_ms
                                                : NULL;
    if (slot == NULL || ascope_opt_uint(value, 60000, slot) != 0) {
      snprintf(why, len, "bad countdown option \"%s\"", key);
      return UV_EINVAL;
    }
  }
  return 0;
}

/* ---- acquire, cancel, release, abort -------------------------------------------------- */

static void opened(uv_timer_t *t) {
  ascope_countdown *c = t->data;
  c->open = true;
  ascope_res_done(c->res, 0, NULL, NULL);
}

static void countdown_acquire(ascope_res *r, const void *arg, const char *options) {
  struct countdown_state *st = ascope_res_state(r);
  unsigned start = (unsigned)(uintptr_t)arg;
  char why[128];
  ascope_countdown *c = ascope_calloc(1, sizeof *c); /* the allocator hook reaches drivers too */
  if (c == NULL) {
    ascope_res_done(r, UV_ENOMEM, NULL, "out of memory");
    return;
  }
  int rc = parse_options(c, options, why, sizeof why);
  if (rc == 0 && (start == 0 || start > 1000000)) {
    snprintf(why, sizeof why, "a countdown starts at 1 to 1000000, not %u", start);
    rc = UV_EINVAL;
  }
  if (rc) {
    ascope_free(c);
    ascope_res_done(r, rc, NULL, why); /* a failed acquire cleans up after itself */
    return;
  }
  c->res = r;
  c->left = start;
  uv_timer_init(ascope_rt_loop(ascope_res_rt(r)), &c->timer);
  c->timer.data = c;
  st->c = c;
  uv_timer_start(&c->timer, opened, c->connect_ms, 0); /* never complete inline from a start */
}

/* The release completes here. After an abort the core has already counted
 * the release as done: this late completion only lets it recycle the
 * resource, and must still come. */
static void closed(uv_handle_t *h) {
  ascope_countdown *c = h->data;
  ascope_res *r = c->res;
  ascope_free(c);
  ascope_res_done(r, 0, NULL, NULL);
}

static void freed(uv_handle_t *h) {
  ascope_free(h->data);
}

static void close_now(ascope_countdown *c) {
  if (c->closing) return;
  c->closing = true;
  uv_close((uv_handle_t *)&c->timer, closed);
}

/* Cancelled while opening: the acquire completes now, cancelled, and the
 * handle's close frees the rest. (A failed or cancelled acquire is never
 * released: it cleans up after itself.) */
static void countdown_cancel(ascope_res *r) {
  ascope_countdown *c = ((struct countdown_state *)ascope_res_state(r))->c;
  if (c->open || c->closing) return;
  uv_timer_stop(&c->timer);
  c->closing = true;
  uv_close((uv_handle_t *)&c->timer, freed);
  ascope_res_done(r, ASCOPE_ECANCELED, NULL, "cancelled while opening");
}

/* The outcome would pick COMMIT or ROLLBACK for a transaction; a counter
 * closes the same way whatever happened. The release completes when the
 * handle has closed, like a socket's. */
static void countdown_release(ascope_res *r, int outcome) {
  (void)outcome;
  close_now(((struct countdown_state *)ascope_res_state(r))->c);
}

/* The release overran the runtime's release timeout: close by force, now.
 * Nothing here can wait; the close's callback comes later and completes
 * what the core left open. */
static void countdown_abort(ascope_res *r) {
  close_now(((struct countdown_state *)ascope_res_state(r))->c);
}

/* ---- pools: check and reset --------------------------------------------------------------- */

static int countdown_check(ascope_res *r) {
  ascope_countdown *c = ((struct countdown_state *)ascope_res_state(r))->c;
  return c->open && !c->closing && c->left > 0 ? 0 : ASCOPE_ECLOSED;
}

/* Nothing a scope leaves behind needs undoing: complete inside the call,
 * the cheap case a pool is built for. */
static void countdown_reset(ascope_res *r) {
  ascope_res_done(r, 0, NULL, NULL);
}

/* ---- the operation ------------------------------------------------------------------------ */

static void tick_end(struct tick *t, int status, const char *code, const char *msg) {
  ascope_countdown *c = t->c;
  ascope_op *op = t->op;
  int seen = status;
  c->tick = NULL;
  if (t->cb && status != ASCOPE_ECANCELED) /* a cancelled operation's callback is not called */
    seen = t->cb(ascope_op_scope(op), status, c->left, t->ud);
  ascope_free(t);
  /* exactly once, and nothing of ours touched after it */
  ascope_op_end(op, seen < 0 ? seen : 0, seen == status ? code : NULL, seen == status ? msg : NULL);
}

static void ticked(uv_timer_t *timer) {
  ascope_countdown *c = timer->data;
  struct tick *t = c->tick;
  if (c->left == 0) {
    tick_end(t, ASCOPE_EDRIVER, "CD01", "the countdown is at zero");
    return;
  }
  c->left--;
  tick_end(t, 0, NULL, NULL);
}

/* The scope was cancelled or its deadline passed: stop the timer (a real
 * driver sends its library's cancel) and end the operation, cancelled. */
static void tick_cancel(ascope_op *op) {
  struct tick *t = ascope_op_data(op);
  uv_timer_stop(&t->c->timer);
  tick_end(t, ASCOPE_ECANCELED, NULL, "cancelled");
}

int ascope_countdown_tick(ascope *s, ascope_countdown *c, ascope_countdown_cb cb, void *ud) {
  if (s == NULL || c == NULL) return UV_EINVAL;
  if (!c->open || c->closing) return ASCOPE_ECLOSED;
  if (c->tick) return ASCOPE_EBUSY; /* one at a time: a library without pipelining */
  struct tick *t = ascope_malloc(sizeof *t);
  if (t == NULL) return UV_ENOMEM;
  t->c = c;
  t->cb = cb;
  t->ud = ud;
  t->op = ascope_op_begin(s, ascope_countdown_driver(), tick_cancel, t);
  if (t->op == NULL) { /* the scope is failing or over */
    ascope_free(t);
    return ASCOPE_ECANCELED;
  }
  c->tick = t;
  uv_timer_start(&c->timer, ticked, c->tick_ms, 0);
  return 0;
}

/* ---- the table, its getter, the use, registration ------------------------------------------ */

static const ascope_driver countdown_driver = {
    .abi = ASCOPE_DRIVER_ABI,
    .name = "countdown",
    .state_size = sizeof(struct countdown_state),
    .acquire = countdown_acquire,
    .release = countdown_release,
    .cancel = countdown_cancel,
    .abort = countdown_abort,
    .check = countdown_check,
    .reset = countdown_reset,
};

const ascope_driver *ascope_countdown_driver(void) {
  return &countdown_driver;
}

int ascope_use_countdown(ascope *s, unsigned start, const char *options) {
  return ascope_use(s, &countdown_driver, (const void *)(uintptr_t)start, options);
}

ascope_countdown *ascope_countdown_resource(ascope *s, size_t index) {
  struct countdown_state *st = ascope_resource_of(s, index, &countdown_driver);
  return st ? st->c : NULL;
}

/* Found by name (ascope_driver_find("countdown")) once the library is
 * loaded, and as a plugin (ascope-countdown.so) without linking it. */
__attribute__((constructor)) static void countdown_register(void) {
  ascope_driver_register(&countdown_driver);
}

ASCOPE_EXTERN const ascope_driver *ascope_driver_entry(void) {
  return &countdown_driver;
}
