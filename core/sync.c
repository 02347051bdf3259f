/* Async lock and counting semaphore, as drivers: `async with lock:` is one
 * more use in a scope's list.
 *
 * Waiters queue FIFO. A release hands its permit straight to the first
 * waiter rather than putting it back, so a newcomer can never overtake the
 * queue (fairness) and a permit is never lost between a release and a
 * wake-up. A waiter that is cancelled, or whose scope times out, leaves the
 * queue before its acquire completes. */
#include "internal.h"

struct ascope_sem {
  ascope_rt *rt;
  unsigned permits; /* free now */
  unsigned held;    /* taken by scopes */
  struct aq waiters;
  bool closing; /* freed by the user; memory goes with the last holder */
};

struct ascope_lock {
  struct ascope_sem sem;
};

struct sem_waiter { /* the per-resource state */
  struct aq node;
  ascope_res *res;
  struct ascope_sem *sem;
};

static void sem_wake(struct ascope_sem *sem) {
  while (sem->permits > 0 && !aq_empty(&sem->waiters)) {
    struct sem_waiter *w = aq_data(sem->waiters.next, struct sem_waiter, node);
    aq_remove(&w->node);
    sem->permits--;
    sem->held++;
    ascope_res_done(w->res, 0, NULL, NULL);
  }
}

static void sem_acquire(ascope_res *r, const void *arg, const char *options) {
  (void)options;
  struct sem_waiter *w = ascope_res_state(r);
  struct ascope_sem *sem = (struct ascope_sem *)arg;
  w->res = r;
  w->sem = sem;
  aq_init(&w->node);
  if (sem->closing) {
    ascope_res_done(r, ASCOPE_ECLOSED, NULL, "the lock or semaphore was freed");
    return;
  }
  if (sem->permits > 0 && aq_empty(&sem->waiters)) {
    sem->permits--;
    sem->held++;
    ascope_res_done(r, 0, NULL, NULL);
    return;
  }
  aq_push(&sem->waiters, &w->node);
}

static void sem_cancel(ascope_res *r) {
  struct sem_waiter *w = ascope_res_state(r);
  if (aq_empty(&w->node)) return; /* already granted: the release returns it */
  aq_remove(&w->node);
  ascope_res_done(r, ASCOPE_ECANCELED, NULL, "cancelled while waiting");
}

static void sem_put(struct ascope_sem *sem) {
  sem->held--;
  sem->permits++;
  if (sem->closing) {
    if (sem->held == 0) ascope__free(sem);
    return;
  }
  sem_wake(sem);
}

static void sem_release(ascope_res *r, int outcome) {
  (void)outcome;
  struct sem_waiter *w = ascope_res_state(r);
  sem_put(w->sem);
  ascope_res_done(r, 0, NULL, NULL);
}

static void sem_abort(ascope_res *r) {
  (void)r; /* release is synchronous: there is never anything to abort */
}

static const ascope_driver sem_driver = {
    .abi = ASCOPE_DRIVER_ABI,
    .name = "semaphore",
    .state_size = sizeof(struct sem_waiter),
    .acquire = sem_acquire,
    .release = sem_release,
    .cancel = sem_cancel,
    .abort = sem_abort,
};

static const ascope_driver lock_driver = {
    .abi = ASCOPE_DRIVER_ABI,
    .name = "lock",
    .state_size = sizeof(struct sem_waiter),
    .acquire = sem_acquire,
    .release = sem_release,
    .cancel = sem_cancel,
    .abort = sem_abort,
};

static void semaphore_init(struct ascope_sem *sem, ascope_rt *rt, unsigned permits) {
  sem->rt = rt;
  sem->permits = permits;
  sem->held = 0;
  sem->closing = false;
  aq_init(&sem->waiters);
}

/* Waiters are failed with ASCOPE_ECLOSED; the memory lives on until the last
 * holder releases, so freeing a lock in use is safe. */
static void semaphore_close(struct ascope_sem *sem) {
  ascope_rt *rt = sem->rt;
  sem->closing = true;
  rt_enter(rt);
  while (!aq_empty(&sem->waiters)) {
    struct sem_waiter *w = aq_data(sem->waiters.next, struct sem_waiter, node);
    aq_remove(&w->node);
    ascope_res_done(w->res, ASCOPE_ECLOSED, NULL, "the lock or semaphore was freed");
  }
  if (sem->held == 0) ascope__free(sem);
  rt_leave_user(rt);
}

ascope_sem *ascope_sem_new(ascope_rt *rt, unsigned permits) {
  if (rt == NULL) return NULL;
  ascope_sem *sem = ascope__malloc(sizeof *sem);
  if (sem) semaphore_init(sem, rt, permits);
  return sem;
}

void ascope_sem_free(ascope_sem *sem) {
  if (sem) semaphore_close(sem);
}

int ascope_use_sem(ascope *s, ascope_sem *sem) {
  if (sem == NULL) return UV_EINVAL;
  return ascope_use(s, &sem_driver, sem, NULL);
}

ascope_lock *ascope_lock_new(ascope_rt *rt) {
  if (rt == NULL) return NULL;
  ascope_lock *l = ascope__malloc(sizeof *l);
  if (l) semaphore_init(&l->sem, rt, 1);
  return l;
}

void ascope_lock_free(ascope_lock *l) {
  if (l) semaphore_close(&l->sem);
}

int ascope_use_lock(ascope *s, ascope_lock *l) {
  if (l == NULL) return UV_EINVAL;
  return ascope_use(s, &lock_driver, &l->sem, NULL);
}
