/* The pool: resources of one driver kept open between scopes.
 *
 * A pool is itself a driver: ascope_use_pool() appends a use whose acquire
 * waits for one of the pool's resources (its members) and whose release
 * gives it back, so a pooled connection is one more use in a scope's list
 * and is released in order with the others. The use's table is the pool's
 * own copy carrying the pooled driver's name, so an error reads
 * "[postgres] 08001 ..." whether the scope connected itself or through a
 * pool, and ascope_resource() of the use is the member's state, which the
 * driver's own calls (ascope_sql_resource(), ascope_redis_resource())
 * recognise as theirs.
 *
 * Members go through: CONNECTING (the driver's acquire in flight), IDLE (on
 * the idle list, most recently returned first, so the ones at the tail can
 * idle out), LENT (to one scope), RESETTING (the driver's reset in flight)
 * and CLOSING (the driver's release in flight). A member is counted in the
 * pool's size from its connect until its close begins, so a replacement can
 * start at once.
 *
 * Waiters queue FIFO, and every waiter has the same acquire timeout, so
 * their deadlines come in queue order: one timer, armed for the head's
 * deadline, serves them all. A waiter that leaves (cancelled, timed out,
 * its scope's deadline) is off the queue before its acquire completes, and
 * a member is only ever handed to a waiter still on the queue, so no one
 * receives a resource after giving up on it.
 *
 * Everything here runs on the loop thread. */
#include "internal.h"

#include <stdio.h>

#define POOL_OPT_CAP 512 /* the driver's share of the options string */

enum member_state { M_CONNECTING, M_IDLE, M_LENT, M_RESETTING, M_CLOSING };

struct pool_member {
  struct aq node; /* in the pool's idle or busy list */
  ascope_pool *pool;
  ascope_res *res; /* the driver's resource; res->member points back */
  enum member_state state;
  uint64_t idle_since; /* loop time (ms) it went idle */
  uint64_t expires;    /* loop time (ms) it is past max_lifetime; 0: never */
  uint64_t abort_at;   /* M_CLOSING: loop time (ms) its release is aborted at; 0: never */
  bool held_loop;      /* a reset that did not complete inside the call holds the runtime */
  /* mode=shared */
  unsigned lends; /* scopes holding it now */
  bool solo;      /* lent to one scope for itself (a transaction) */
  bool draining;  /* kept for a scope that needs it to itself: no new shared lends */
  bool doomed;    /* a scope found it broken: closed when the others are done */
};

struct pool_wait { /* the state of a pool use */
  struct aq node;  /* in the pool's waiters while waiting */
  ascope_res *res; /* the use */
  ascope_pool *pool;
  struct pool_member *m; /* while lent */
  uint64_t since_ns;     /* uv_hrtime() when it began to wait */
  uint64_t deadline;     /* loop time (ms); 0: waits as long as it takes */
  bool exclusive;        /* mode=shared: wants a member to itself (ascope_pool_use_exclusive) */
};

struct pool_stats {
  uint64_t created, discarded, timeouts, acquired, waits, wait_ns, connect_errors, aborted;
};

struct ascope_pool {
  ascope_rt *rt;
  const ascope_driver *drv;
  const void *arg;
  char *target;  /* the copy ascope_pool_new_str() made: arg points at it */
  char *options; /* the keys the pool did not take, for the driver; NULL: none */
  ascope_driver use_drv;
  uint64_t min, max, acquire_timeout_ms, idle_timeout_ms, max_lifetime_ms;
  uint64_t depth; /* mode=shared: scopes on a member before the next one gets any */
  struct aq idle, busy, waiters;
  unsigned size, nidle, in_use, nwaiting, connecting, resetting, closing_members;
  uv_timer_t wait_timer;  /* the head waiter's deadline */
  uv_timer_t sweep_timer; /* idle_timeout, max_lifetime and min */
  uv_timer_t stats_timer;
  uv_timer_t release_timer; /* the first closing member's abort_at */
  unsigned open_handles;
  struct pool_stats stats;
  void (*stats_cb)(ascope_pool *p, void *ud);
  void *stats_ud;
  bool closing, serving, refill_hold;
  bool shared;                   /* mode=shared: members are lent to many scopes at once */
  unsigned ndraining;            /* members kept for exclusive waiters */
  struct pool_member *reset_now; /* the member whose reset call is on the stack */
  struct pool_member *aborting;  /* the member whose abort call is on the stack */
  void (*closed)(void *ud);
  void *closed_ud;
};

static void pool_serve(ascope_pool *p);
static void pool_maybe_closed(ascope_pool *p);
static void on_wait_timer(uv_timer_t *t);
static void release_timer_arm(ascope_pool *p);

/* ---- members ------------------------------------------------------------ */

static uint64_t now_ms(ascope_pool *p) {
  return uv_now(p->rt->loop);
}

/* max_lifetime less up to a tenth of it, at random, so the members of a
 * pool opened at once are not all replaced at once. */
static uint64_t expiry(ascope_pool *p) {
  if (p->max_lifetime_ms == 0) return 0;
  uint64_t span = p->max_lifetime_ms / 10;
  uint64_t jitter = span ? (uv_hrtime() * 2654435761u) % span : 0;
  return now_ms(p) + p->max_lifetime_ms - jitter;
}

static void member_free(struct pool_member *m) {
  aq_remove(&m->node);
  m->res->member = NULL;
  cache_put(&m->res->rt->res, m->res);
  ascope__free(m);
}

/* Starts one member's connect; false when out of memory. */
static bool member_connect(ascope_pool *p) {
  struct pool_member *m = ascope__malloc(sizeof *m);
  ascope_res *r = m ? res_new(p->rt, p->drv, p->arg) : NULL;
  if (r == NULL) {
    ascope__free(m);
    return false;
  }
  r->options = p->options;
  r->phase = RES_ACQUIRING;
  r->member = m;
  m->pool = p;
  m->res = r;
  m->state = M_CONNECTING;
  m->expires = 0;
  m->lends = 0;
  m->solo = m->draining = m->doomed = m->held_loop = false;
  aq_push(&p->busy, &m->node);
  p->size++;
  p->connecting++;
  p->drv->acquire(r, p->arg, p->options);
  return true;
}

/* The driver's release closes the member; its done frees it. */
static void member_close(struct pool_member *m, int outcome) {
  ascope_pool *p = m->pool;
  if (m->draining) {
    m->draining = false;
    p->ndraining--;
  }
  if (m->state == M_IDLE) p->nidle--;
  aq_remove(&m->node);
  aq_push(&p->busy, &m->node);
  m->state = M_CLOSING;
  m->res->scope = NULL;
  m->res->phase = RES_RELEASING;
  p->size--;
  p->closing_members++;
  rt_pending(p->rt, +1); /* ascope_rt_run() returns once it is closed */
  /* A release that never completes must not hold the pool's close (and
   * ascope_rt_run) for ever: past the runtime's release timeout it is
   * aborted, as a scope's would be. */
  uint64_t limit = p->rt->release_timeout_ms;
  m->abort_at = limit ? now_ms(p) + limit : 0;
  release_timer_arm(p);
  p->drv->release(m->res, outcome);
}

/* Past its release timeout: the driver's abort force-closes it. If that
 * does not complete the release, the driver keeps the resource until its
 * late ascope_res_done(), which the core then takes as an orphan's (as for
 * a scope's aborted resource); the pool stops waiting for it now. */
static void member_abort(struct pool_member *m) {
  ascope_pool *p = m->pool;
  p->stats.aborted++;
  p->rt->stats.aborted++;
  p->aborting = m;
  if (p->drv->abort) p->drv->abort(m->res);
  if (p->aborting != m) return; /* the release completed inside the abort: m is gone */
  p->aborting = NULL;
  ascope_res *r = m->res;
  r->member = NULL;
  r->scope = NULL;
  r->phase = RES_ORPHAN;
  aq_remove(&m->node);
  ascope__free(m);
  p->closing_members--;
  rt_pending(p->rt, -1);
}

static void on_release_timer(uv_timer_t *t) {
  ascope_pool *p = t->data;
  rt_enter(p->rt);
  uint64_t now = now_ms(p);
  for (struct aq *q = p->busy.next; q != &p->busy;) {
    struct pool_member *m = aq_data(q, struct pool_member, node);
    q = q->next;
    if (m->state == M_CLOSING && m->abort_at && m->abort_at <= now) member_abort(m);
  }
  release_timer_arm(p);
  pool_maybe_closed(p);
  rt_leave(p->rt);
}

/* Arms the timer for the first closing member's abort, unless it is armed
 * already (members start closing in time order, so for an earlier one). */
static void release_timer_arm(ascope_pool *p) {
  uv_timer_t *t = &p->release_timer;
  if (uv_is_active((uv_handle_t *)t) || uv_is_closing((uv_handle_t *)t)) return;
  uint64_t first = 0;
  for (struct aq *q = p->busy.next; q != &p->busy; q = q->next) {
    struct pool_member *m = aq_data(q, struct pool_member, node);
    if (m->state == M_CLOSING && m->abort_at && (first == 0 || m->abort_at < first))
      first = m->abort_at;
  }
  if (first == 0) return;
  uint64_t now = now_ms(p);
  uv_timer_start(t, on_release_timer, first > now ? first - now : 0, 0);
}

static void member_discard(struct pool_member *m, int outcome) {
  m->pool->stats.discarded++;
  member_close(m, outcome);
}

static void member_idle(struct pool_member *m) {
  ascope_pool *p = m->pool;
  aq_remove(&m->node);
  m->state = M_IDLE;
  m->res->scope = NULL;
  m->res->phase = RES_HELD;
  m->idle_since = now_ms(p);
  /* Most recently used first: the busy part of the pool stays warm and
   * the tail is what idle_timeout trims. */
  struct aq *head = &p->idle;
  m->node.next = head->next;
  m->node.prev = head;
  head->next->prev = &m->node;
  head->next = &m->node;
  p->nidle++;
}

/* A member the pool may hand out: not past its lifetime, and good by the
 * driver's check. */
static bool member_good(struct pool_member *m) {
  ascope_pool *p = m->pool;
  if (m->expires && now_ms(p) >= m->expires) return false;
  return p->drv->check == NULL || p->drv->check(m->res) == 0;
}

/* ---- waiters ------------------------------------------------------------ */

static void wait_timer_arm(ascope_pool *p) {
  if (aq_empty(&p->waiters)) {
    uv_timer_stop(&p->wait_timer);
    return;
  }
  struct pool_wait *w = aq_data(p->waiters.next, struct pool_wait, node);
  if (w->deadline == 0) return;
  uint64_t now = now_ms(p);
  uv_timer_start(&p->wait_timer, on_wait_timer, w->deadline > now ? w->deadline - now : 0, 0);
}

static void wait_leave(struct pool_wait *w) {
  ascope_pool *p = w->pool;
  bool head = p->waiters.next == &w->node;
  aq_remove(&w->node);
  p->nwaiting--;
  p->stats.wait_ns += uv_hrtime() - w->since_ns;
  if (head) wait_timer_arm(p);
}

static void lend(ascope_pool *p, struct pool_member *m, struct pool_wait *w) {
  if (m->state == M_IDLE) {
    p->nidle--;
    aq_remove(&m->node);
    aq_push(&p->busy, &m->node);
  }
  if (m->draining) {
    m->draining = false;
    p->ndraining--;
  }
  m->state = M_LENT;
  m->res->phase = RES_HELD;
  m->lends++;
  m->solo = !p->shared || w->exclusive;
  /* The scope using it, for the driver; none while several share it. */
  m->res->scope = m->lends == 1 ? ascope_res_scope(w->res) : NULL;
  w->m = m;
  w->res->lent = m->res;
  p->in_use++;
  p->stats.acquired++;
  ascope_res_done(w->res, 0, NULL, NULL);
}

static void on_wait_timer(uv_timer_t *t) {
  ascope_pool *p = t->data;
  rt_enter(p->rt);
  uint64_t now = now_ms(p);
  while (!aq_empty(&p->waiters)) {
    struct pool_wait *w = aq_data(p->waiters.next, struct pool_wait, node);
    if (w->deadline == 0 || w->deadline > now) break;
    wait_leave(w);
    p->stats.timeouts++;
    char msg[160];
    snprintf(msg, sizeof msg,
             "no %s resource came free from the pool within %llu ms (%u in use, %u opening, %u "
             "waiting)",
             p->drv->name, (unsigned long long)p->acquire_timeout_ms, p->in_use, p->connecting,
             p->nwaiting);
    ascope_res_done(w->res, ASCOPE_ETIMEDOUT, "POOL_TIMEOUT", msg);
  }
  wait_timer_arm(p);
  rt_leave(p->rt);
}

/* Hands idle members to waiters in queue order, and opens members for the
 * waiters left while the pool may grow. */
/* mode=shared: the member a scope that can share should get — an idle one
 * (most recently used first), else the least loaded of those lent to
 * sharing scopes; NULL when there is none. */
static struct pool_member *least_loaded(ascope_pool *p) {
  for (struct aq *q = p->idle.next; q != &p->idle;) {
    struct pool_member *m = aq_data(q, struct pool_member, node);
    q = q->next; /* a discard takes m off the list */
    if (m->draining) continue;
    if (member_good(m)) return m;
    member_discard(m, ASCOPE_ECLOSED);
  }
  struct pool_member *best = NULL;
  for (struct aq *q = p->busy.next; q != &p->busy; q = q->next) {
    struct pool_member *m = aq_data(q, struct pool_member, node);
    if (m->state == M_LENT && !m->solo && !m->draining && !m->doomed &&
        (best == NULL || m->lends < best->lends))
      best = m;
  }
  return best;
}

/* mode=shared: the member a scope that can share goes to. Scopes fill a
 * connection up to `depth` before the next one takes any: a pipeline
 * carries many statements per write and per server wake-up, so a few
 * well-filled connections do more than many thin ones (eight connections
 * each holding eight statements ran at a third of the speed of two holding
 * thirty-two on a two-core server). Past that depth everywhere, the least
 * loaded, and the pool grows. */
static struct pool_member *shared_pick(ascope_pool *p) {
  struct pool_member *fullest = NULL, *least = NULL;
  for (struct aq *q = p->busy.next; q != &p->busy; q = q->next) {
    struct pool_member *m = aq_data(q, struct pool_member, node);
    if (m->state != M_LENT || m->solo || m->draining || m->doomed) continue;
    if (m->lends < p->depth && (fullest == NULL || m->lends > fullest->lends)) fullest = m;
    if (least == NULL || m->lends < least->lends) least = m;
  }
  if (fullest) return fullest;
  struct pool_member *idle = least_loaded(p); /* an idle one first, when there is */
  return idle ? idle : least;
}

/* mode=shared: an exclusive waiter gets an idle member (one kept for it
 * first); with none and the pool full, a shared member is kept for it, so
 * that it comes free however busy the pool is. */
static bool serve_exclusive(ascope_pool *p, struct pool_wait *w, unsigned *unserved) {
  struct pool_member *pick = NULL;
  for (struct aq *q = p->idle.next; q != &p->idle && pick == NULL; q = q->next) {
    struct pool_member *m = aq_data(q, struct pool_member, node);
    if (m->draining) pick = m;
  }
  if (pick == NULL && !aq_empty(&p->idle)) pick = aq_data(p->idle.next, struct pool_member, node);
  if (pick && member_good(pick)) {
    wait_leave(w);
    lend(p, pick, w);
    return true;
  }
  if (pick) {
    if (pick->draining) p->ndraining--;
    pick->draining = false;
    member_discard(pick, ASCOPE_ECLOSED);
    return true; /* look again */
  }
  (*unserved)++;
  if (p->size < p->max && p->connecting < *unserved) return member_connect(p), false;
  if (p->ndraining < *unserved) {
    struct pool_member *m = least_loaded(p);
    if (m && m->state == M_LENT) {
      m->draining = true;
      p->ndraining++;
    }
  }
  return false;
}

/* Members kept for exclusive waiters that have left go back to sharing. */
static void release_kept(ascope_pool *p) {
  unsigned want = 0;
  for (struct aq *q = p->waiters.next; q != &p->waiters; q = q->next)
    want += aq_data(q, struct pool_wait, node)->exclusive;
  for (int pass = 0; pass < 2 && p->ndraining > want; pass++) {
    struct aq *list = pass == 0 ? &p->idle : &p->busy;
    for (struct aq *q = list->next; q != list && p->ndraining > want; q = q->next) {
      struct pool_member *m = aq_data(q, struct pool_member, node);
      if (m->draining) {
        m->draining = false;
        p->ndraining--;
      }
    }
  }
}

static void serve_shared(ascope_pool *p) {
  unsigned unserved = 0;
  if (p->ndraining) release_kept(p);
  struct aq *q = p->waiters.next;
  while (q != &p->waiters && !p->closing) {
    struct pool_wait *w = aq_data(q, struct pool_wait, node);
    struct aq *next = q->next;
    if (w->exclusive) {
      if (serve_exclusive(p, w, &unserved)) next = p->waiters.next; /* the queue changed */
      q = next;
      continue;
    }
    struct pool_member *m = shared_pick(p);
    if (m == NULL) {
      if (p->size < p->max && p->connecting == 0) member_connect(p);
      break; /* the members are opening: the next connect serves them all */
    }
    /* Spread the load: while the pool may grow, a member filled to depth
     * is shared further only until another one is open. */
    if (m->lends >= p->depth && p->size < p->max && p->connecting == 0) member_connect(p);
    wait_leave(w);
    lend(p, m, w);
    q = p->waiters.next;
  }
}

static void pool_serve(ascope_pool *p) {
  if (p->serving) return; /* a done below re-enters: the loop here goes on */
  p->serving = true;
  if (p->shared) {
    serve_shared(p);
    goto refill;
  }
  while (!aq_empty(&p->waiters) && !p->closing) {
    if (!aq_empty(&p->idle)) {
      struct pool_member *m = aq_data(p->idle.next, struct pool_member, node);
      if (!member_good(m)) {
        member_discard(m, ASCOPE_ECLOSED);
        continue;
      }
      struct pool_wait *w = aq_data(p->waiters.next, struct pool_wait, node);
      wait_leave(w);
      lend(p, m, w);
      continue;
    }
    if (p->size < p->max && p->connecting < p->nwaiting) {
      if (!member_connect(p)) {
        struct pool_wait *w = aq_data(p->waiters.next, struct pool_wait, node);
        wait_leave(w);
        ascope_res_done(w->res, UV_ENOMEM, NULL, "out of memory opening a pool member");
      }
      continue;
    }
    break;
  }
refill:
  /* Up to min in the background; after a failed connect only from the
   * sweep, so a server that is down is not retried in a tight loop. */
  while (!p->closing && !p->refill_hold && p->size < p->min && member_connect(p)) {
  }
  p->serving = false;
}

/* ---- the driver's completions for a member ------------------------------- */

void pool_member_done(ascope_res *r, int status, const char *code, const char *message) {
  struct pool_member *m = r->member;
  ascope_pool *p = m->pool;
  switch (m->state) {
  case M_CONNECTING:
    p->connecting--;
    if (status == 0) {
      p->stats.created++;
      m->expires = expiry(p);
      member_idle(m);
      if (p->closing) member_close(m, 0);
      break;
    }
    p->size--;
    p->stats.connect_errors++;
    p->refill_hold = true;
    member_free(m);
    /* The waiter this connect was for learns why, rather than waiting for
     * its timeout: a server that is down fails acquires at once. */
    if (!aq_empty(&p->waiters) && p->connecting < p->nwaiting) {
      struct pool_wait *w = aq_data(p->waiters.next, struct pool_wait, node);
      wait_leave(w);
      ascope_res_done(w->res, status ? status : ASCOPE_EDRIVER, code, message);
    }
    break;
  case M_RESETTING:
    p->resetting--;
    if (p->reset_now == m) p->reset_now = NULL; /* inside the driver's reset call */
    if (m->held_loop) rt_pending(p->rt, -1);
    if (status == 0 && !p->closing) {
      member_idle(m);
    } else {
      member_discard(m, status ? status : ASCOPE_ECLOSED);
    }
    break;
  case M_CLOSING:
    if (p->aborting == m) p->aborting = NULL; /* completed inside the driver's abort */
    p->closing_members--;
    rt_pending(p->rt, -1);
    member_free(m);
    break;
  default:
    return; /* a completion nothing waits for: a driver bug, ignored */
  }
  pool_serve(p);
  pool_maybe_closed(p);
}

/* ---- the use: acquire, cancel, release ---------------------------------- */

static void use_acquire(ascope_res *r, const void *arg, const char *options) {
  (void)options;
  ascope_pool *p = (ascope_pool *)arg;
  struct pool_wait *w = ascope_res_state(r);
  w->res = r;
  w->pool = p;
  w->m = NULL;
  aq_init(&w->node);
  if (p->closing) {
    ascope_res_done(r, ASCOPE_ECLOSED, "POOL_CLOSED", "the pool is closed");
    return;
  }
  /* The common case: nobody waits and a member is idle. It is handed over
   * here without queueing, timing or arming anything. */
  while (!p->shared && aq_empty(&p->waiters) && !aq_empty(&p->idle)) {
    struct pool_member *m = aq_data(p->idle.next, struct pool_member, node);
    if (member_good(m)) {
      lend(p, m, w);
      return;
    }
    member_discard(m, ASCOPE_ECLOSED);
  }
  w->since_ns = uv_hrtime();
  /* The loop's clock is the time its turn began, which on a busy machine
   * may be many milliseconds ago: counted from it, the wait would end
   * early. Only a waiter pays for the refresh. */
  uv_update_time(p->rt->loop);
  w->deadline = p->acquire_timeout_ms ? now_ms(p) + p->acquire_timeout_ms : 0;
  aq_push(&p->waiters, &w->node);
  p->nwaiting++;
  p->stats.waits++;
  if (p->nwaiting == 1) wait_timer_arm(p);
  pool_serve(p);
}

static void use_cancel(ascope_res *r) {
  struct pool_wait *w = ascope_res_state(r);
  if (aq_empty(&w->node)) return; /* already served: the release gives it back */
  wait_leave(w);
  ascope_res_done(r, ASCOPE_ECANCELED, NULL, "cancelled while waiting for the pool");
}

/* The member comes back: reset by the driver when it has a reset, kept
 * when the scope succeeded otherwise, discarded when the outcome says the
 * resource is closed or its driver's check finds it broken. */
static void member_return(struct pool_member *m, int outcome) {
  ascope_pool *p = m->pool;
  p->in_use--;
  if (outcome == ASCOPE_ECLOSED) m->doomed = true;
  if (--m->lends > 0) { /* others share it still */
    m->res->scope = NULL;
    pool_serve(p);
    return;
  }
  m->solo = false; /* a member kept (draining) for an exclusive waiter stays kept */
  if (m->doomed) outcome = ASCOPE_ECLOSED;
  m->res->scope = NULL;
  bool expired = m->expires && now_ms(p) >= m->expires;
  if (p->closing || expired || outcome == ASCOPE_ECLOSED) {
    if (p->closing)
      member_close(m, outcome);
    else
      member_discard(m, outcome);
  } else if (p->drv->reset) {
    m->state = M_RESETTING;
    m->res->phase = RES_RELEASING;
    m->held_loop = false;
    p->resetting++;
    p->reset_now = m;
    p->drv->reset(m->res);
    /* Still out: ascope_rt_run() returns once it is back. (Most resets
     * complete inside the call, and pay for no reference; m may be gone
     * then, which is why the pool, not m, says whether it is.) */
    if (p->reset_now == m) {
      p->reset_now = NULL;
      m->held_loop = true;
      rt_pending(p->rt, +1);
    }
    return; /* its done decided, or will */
  } else if (outcome != 0 || (p->drv->check && p->drv->check(m->res) != 0)) {
    member_discard(m, outcome ? outcome : ASCOPE_ECLOSED);
  } else {
    member_idle(m);
  }
  pool_serve(p);
  pool_maybe_closed(p);
}

static void use_release(ascope_res *r, int outcome) {
  struct pool_wait *w = ascope_res_state(r);
  struct pool_member *m = w->m;
  ascope_pool *p = w->pool;
  w->m = NULL;
  r->lent = NULL;
  /* The scope goes on at once; the reset runs behind it. */
  ascope_res_done(r, 0, NULL, NULL);
  rt_enter(p->rt);
  member_return(m, outcome);
  rt_leave(p->rt);
}

static void use_abort(ascope_res *r) {
  (void)r; /* the release completes inside the call: nothing to abort */
}

/* ---- options ------------------------------------------------------------ */

struct pool_key {
  const char *name, *alias;
  size_t offset;
  uint64_t max;
};
static const struct pool_key pool_keys[] = {
    {"min", NULL, offsetof(ascope_pool, min), 100000},
    {"max", NULL, offsetof(ascope_pool, max), 100000},
    {"acquire_timeout_ms", "acquire_timeout", offsetof(ascope_pool, acquire_timeout_ms), 1u << 31},
    {"idle_timeout_ms", "idle_timeout", offsetof(ascope_pool, idle_timeout_ms), 1u << 31},
    {"max_lifetime_ms", "max_lifetime", offsetof(ascope_pool, max_lifetime_ms), 1u << 31},
    {"depth", NULL, offsetof(ascope_pool, depth), 1u << 20},
};

static const struct pool_key *pool_key(const char *name) {
  for (size_t i = 0; i < sizeof pool_keys / sizeof *pool_keys; i++)
    if (!strcmp(name, pool_keys[i].name) ||
        (pool_keys[i].alias && !strcmp(name, pool_keys[i].alias)))
      return &pool_keys[i];
  return NULL;
}

/* Takes the pool's keys; copies every other pair to the driver's options. */
static int pool_options(ascope_pool *p, const char *options) {
  char buf[256], rest[POOL_OPT_CAP];
  size_t len = 0;
  char *key, *value;
  for (const char *s = options; (s = ascope_opt_next(s, buf, sizeof buf, &key, &value));) {
    if (!strcmp(key, "mode")) {
      if (value && !strcmp(value, "shared"))
        p->shared = true;
      else if (value && !strcmp(value, "exclusive"))
        p->shared = false;
      else
        return UV_EINVAL;
      continue;
    }
    const struct pool_key *k = pool_key(key);
    if (k == NULL) {
      /* not the pool's: the driver's, and the driver judges it */
      int n = snprintf(rest + len, sizeof rest - len, "%s%s%s%s", len ? " " : "", key,
                       value ? "=" : "", value ? value : "");
      if (n < 0 || (size_t)n >= sizeof rest - len) return UV_EINVAL;
      len += (size_t)n;
      continue;
    }
    if (ascope_opt_uint(value, k->max, (uint64_t *)((char *)p + k->offset)) != 0) return UV_EINVAL;
  }
  if (p->max == 0 || p->min > p->max || p->depth == 0) return UV_EINVAL;
  if (len && (p->options = ascope__strdup(rest)) == NULL) return UV_ENOMEM;
  return 0;
}

/* ---- timers ------------------------------------------------------------- */

/* Closes idle members past idle_timeout (down to min) or past their
 * lifetime, oldest first, and opens members up to min. */
static void on_sweep(uv_timer_t *t) {
  ascope_pool *p = t->data;
  rt_enter(p->rt);
  uint64_t now = now_ms(p);
  for (struct aq *q = p->idle.prev; q != &p->idle;) {
    struct pool_member *m = aq_data(q, struct pool_member, node);
    q = q->prev;
    bool idle_out =
        p->idle_timeout_ms && now - m->idle_since >= p->idle_timeout_ms && p->size > p->min;
    if (idle_out || (m->expires && now >= m->expires)) member_discard(m, 0);
  }
  p->refill_hold = false;
  pool_serve(p);
  rt_leave(p->rt);
}

static void on_stats(uv_timer_t *t) {
  ascope_pool *p = t->data;
  if (p->stats_cb && !p->closing) p->stats_cb(p, p->stats_ud);
}

static void timer_setup(ascope_pool *p, uv_timer_t *t) {
  uv_timer_init(p->rt->loop, t); /* cannot fail */
  t->data = p;
  uv_unref((uv_handle_t *)t); /* idle pools never keep the loop alive */
  p->open_handles++;
}

static void sweep_start(ascope_pool *p) {
  uint64_t every = 0;
  if (p->idle_timeout_ms) every = p->idle_timeout_ms;
  if (p->max_lifetime_ms && (every == 0 || p->max_lifetime_ms / 10 < every))
    every = p->max_lifetime_ms / 10;
  if (p->min && (every == 0 || every > 1000)) every = 1000; /* refill to min after failures */
  if (every == 0) return;
  every = every / 2 ? every / 2 : 1;
  uv_timer_start(&p->sweep_timer, on_sweep, every, every);
}

/* ---- the pool ----------------------------------------------------------- */

static bool pool_driver_ok(const ascope_driver *drv) {
  return drv && drv->abi >= ASCOPE_DRIVER_ABI_MIN && drv->name && drv->acquire && drv->release;
}

ascope_pool *ascope_pool_new(ascope_rt *rt, const ascope_driver *drv, const void *arg,
                             const char *options) {
  if (rt == NULL || rt->freeing || !pool_driver_ok(drv)) return NULL;
  ascope_pool *p = ascope__malloc(sizeof *p);
  if (p == NULL) return NULL;
  memset(p, 0, sizeof *p);
  p->rt = rt;
  p->drv = drv;
  p->arg = arg;
  p->max = 10;
  p->depth = 16;
  p->acquire_timeout_ms = 30000;
  if (pool_options(p, options) != 0) {
    ascope__free(p->options);
    ascope__free(p);
    return NULL;
  }
  p->use_drv = (ascope_driver){
      .abi = ASCOPE_DRIVER_ABI,
      .name = drv->name, /* errors name the pooled driver */
      .state_size = sizeof(struct pool_wait),
      .acquire = use_acquire,
      .release = use_release,
      .cancel = use_cancel,
      .abort = use_abort,
  };
  aq_init(&p->idle);
  aq_init(&p->busy);
  aq_init(&p->waiters);
  timer_setup(p, &p->wait_timer);
  timer_setup(p, &p->sweep_timer);
  timer_setup(p, &p->stats_timer);
  timer_setup(p, &p->release_timer);
  rt->npools++;
  sweep_start(p);
  rt_enter(rt);
  pool_serve(p); /* opens min members */
  rt_leave_user(rt);
  return p;
}

ascope_pool *ascope_pool_new_str(ascope_rt *rt, const ascope_driver *drv, const char *target,
                                 const char *options) {
  char *copy = target ? ascope__strdup(target) : NULL;
  if (target && copy == NULL) return NULL;
  ascope_pool *p = ascope_pool_new(rt, drv, copy, options);
  if (p == NULL)
    ascope__free(copy);
  else
    p->target = copy;
  return p;
}

int ascope_use_pool(ascope *s, ascope_pool *p) {
  if (p == NULL) return UV_EINVAL;
  if (p->closing) return ASCOPE_ECLOSED;
  return ascope_use(s, &p->use_drv, p, NULL);
}

const ascope_driver *ascope_pool_driver(ascope_pool *p) {
  return p ? p->drv : NULL;
}

static void on_timer_closed(uv_handle_t *h) {
  ascope_pool *p = h->data;
  if (--p->open_handles) return;
  ascope_rt *rt = p->rt;
  void (*closed)(void *) = p->closed;
  void *ud = p->closed_ud;
  ascope__free(p->options);
  ascope__free(p->target);
  ascope__free(p);
  rt->npools--;
  rt_pending(rt, -1);
  if (closed) closed(ud);
}

static void pool_maybe_closed(ascope_pool *p) {
  if (!p->closing || p->size || p->closing_members) return;
  if (uv_is_closing((uv_handle_t *)&p->wait_timer)) return;
  uv_close((uv_handle_t *)&p->wait_timer, on_timer_closed);
  uv_close((uv_handle_t *)&p->sweep_timer, on_timer_closed);
  uv_close((uv_handle_t *)&p->stats_timer, on_timer_closed);
  uv_close((uv_handle_t *)&p->release_timer, on_timer_closed);
}

void ascope_pool_close(ascope_pool *p, void (*closed)(void *ud), void *ud) {
  if (p == NULL || p->closing) return;
  ascope_rt *rt = p->rt;
  p->closing = true;
  p->closed = closed;
  p->closed_ud = ud;
  rt_pending(rt, +1); /* ascope_rt_run() runs until the pool is closed */
  rt_enter(rt);
  uv_timer_stop(&p->sweep_timer);
  uv_timer_stop(&p->stats_timer);
  while (!aq_empty(&p->waiters)) {
    struct pool_wait *w = aq_data(p->waiters.next, struct pool_wait, node);
    wait_leave(w);
    ascope_res_done(w->res, ASCOPE_ECLOSED, "POOL_CLOSED", "the pool was closed");
  }
  while (!aq_empty(&p->idle)) member_close(aq_data(p->idle.next, struct pool_member, node), 0);
  /* Lent members close as they come back; connecting ones when they are
   * open. */
  pool_maybe_closed(p);
  rt_leave_user(rt);
}

int ascope_pool_on_stats(ascope_pool *p, uint64_t every_ms, void (*cb)(ascope_pool *p, void *ud),
                         void *ud) {
  if (p == NULL) return UV_EINVAL;
  if (p->closing) return ASCOPE_ECLOSED;
  p->stats_cb = cb;
  p->stats_ud = ud;
  uv_timer_stop(&p->stats_timer);
  if (cb && every_ms) uv_timer_start(&p->stats_timer, on_stats, every_ms, every_ms);
  return 0;
}

int64_t ascope_pool_stat(ascope_pool *p, const char *name) {
  if (p == NULL || name == NULL) return UV_EINVAL;
  static const char *const names[] = {"size",      "idle",    "in_use",    "waiting",
                                      "opening",   "created", "discarded", "timeouts",
                                      "acquired",  "waits",   "wait_ns",   "connect_errors",
                                      "resetting", "max",     "min",       "aborted"};
  const struct pool_stats *st = &p->stats;
  int64_t values[] = {p->size,       p->nidle,        p->in_use,       p->nwaiting,
                      p->connecting, st->created,     st->discarded,   st->timeouts,
                      st->acquired,  st->waits,       st->wait_ns,     st->connect_errors,
                      p->resetting,  (int64_t)p->max, (int64_t)p->min, st->aborted};
  for (size_t i = 0; i < sizeof names / sizeof *names; i++)
    if (!strcmp(name, names[i])) return values[i];
  return UV_EINVAL;
}

int ascope_pool_use_exclusive(ascope *s, size_t index) {
  if (s == NULL) return UV_EINVAL;
  if (s->state != S_NEW) return ASCOPE_EBUSY;
  size_t i = 0;
  for (struct aq *q = s->uses.next; q != &s->uses; q = q->next, i++) {
    if (i != index) continue;
    ascope_res *r = aq_data(q, ascope_res, node);
    if (r->drv->acquire != use_acquire) return UV_EINVAL;
    ((struct pool_wait *)r->state)->exclusive = true;
    return 0;
  }
  return UV_EINVAL;
}
