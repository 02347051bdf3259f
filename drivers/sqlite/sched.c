/* Scheduling connections onto libuv's threadpool.
 *
 * A connection's statements run in "hops": one uv_queue_work that drains
 * everything queued for the connection, so a burst of small statements pays
 * for one thread hand-off, not one each, and a connection is never on two
 * threads at once. The pool is shared with file I/O and DNS (4 threads by
 * default), and a SQLite statement can hold its thread for seconds, so at
 * most `max_running` connections per runtime (2 by default) are on the pool
 * at a time; the others wait in a FIFO ready list, and a hop that ran long
 * steps aside (HOP_NS) so they all move. A connection whose one queued
 * statement is known to be short is listed for the loop thread instead
 * (loop.c), and comes back here if it turns out not to be.
 *
 * The scheduler is per runtime (uv_queue_work must be called on the loop's
 * thread), in the driver's state of ascope_rt_driver_state with the
 * runtime's counters. It lives while connections on that runtime do: its
 * handles never outlast them, so the runtime's end has nothing to close.
 */
#include "internal.h"

#include <stdlib.h>

#define HOP_NS (5 * 1000 * 1000) /* a hop longer than this lets waiting connections in */

static atomic_uint max_running = 2;
extern const ascope_sql_driver sq_driver;

static void on_prepare(uv_prepare_t *h);

/* Called on the loop's thread (an acquire), so the prepare handle can be
 * made here; nothing else touches the runtime's state but counters. */
struct sq_rt *sq_rt_get(ascope_rt *rt, struct sq_sched **sched) {
  struct sq_rt *r = ascope_rt_driver_state(rt, &sq_driver.base, sizeof *r, NULL);
  if (r == NULL) return NULL;
  struct sq_sched *s = r->sched;
  if (s == NULL && (s = ascope_calloc(1, sizeof *s)) != NULL) {
    uv_loop_t *loop = ascope_rt_loop(rt);
    s->loop = loop;
    uv_prepare_init(loop, &s->prepare);
    s->prepare.data = s;
    uv_prepare_start(&s->prepare, on_prepare);
    uv_unref((uv_handle_t *)&s->prepare); /* it never keeps the loop alive */
    uv_timer_init(loop, &s->poll);
    s->poll.data = s;
    uv_unref((uv_handle_t *)&s->poll); /* nor this: hops in flight do */
    s->handles = 2;
    sq_loop_init(s);
    sq_gate_init(s);
    s->owner = r;
    r->sched = s;
  }
  if (s == NULL) return NULL;
  s->refs++;
  *sched = s;
  return r;
}

static void sched_closed(uv_handle_t *h) {
  struct sq_sched *s = h->data;
  if (--s->handles == 0) {
    sq_gate_fini(s);
    ascope_free(s);
  }
}

/* The last connection gone, the next one makes a new scheduler: this one's
 * memory goes with its handles' close callbacks. */
void sq_sched_put(struct sq_sched *s) {
  if (--s->refs == 0) {
    s->owner->sched = NULL;
    uv_close((uv_handle_t *)&s->prepare, sched_closed);
    uv_close((uv_handle_t *)&s->poll, sched_closed);
    uv_close((uv_handle_t *)&s->idle, sched_closed);
  }
}

/* ---- stages ---------------------------------------------------------------------- */

void sq_stage_list(struct sq_conn *c) {
  if (c->listed) return;
  struct sq_sched *s = c->sched;
  c->sprev = NULL;
  c->snext = s->shead;
  if (s->shead) s->shead->sprev = c;
  s->shead = c;
  c->listed = true;
}

void sq_stage_unlist(struct sq_conn *c) {
  if (!c->listed) return;
  if (c->sprev)
    c->sprev->snext = c->snext;
  else
    c->sched->shead = c->snext;
  if (c->snext) c->snext->sprev = c->sprev;
  c->sprev = c->snext = NULL;
  c->listed = false;
}

/* The loop is about to sleep: whatever was staged this iteration goes to
 * its hop now, rather than after the hop ends. Each connection is taken off
 * the list before it is published, so the pass ends whatever its stage
 * holds: a connection left listed with an empty stage once made this loop
 * spin forever, starving every timer (deadlines included). */
static void on_prepare(uv_prepare_t *h) {
  struct sq_sched *s = h->data;
  for (struct sq_conn *c; (c = s->shead) != NULL;) {
    sq_stage_unlist(c);
    sq_publish(c);
  }
}

bool sq_pool_full(struct sq_sched *s) {
  return s->running >= atomic_load(&max_running);
}

unsigned sq_sched_waiting(struct sq_sched *s) {
  return atomic_load(&s->waiting);
}

int ascope_sqlite_set_concurrency(unsigned n) {
  if (n == 0 || n > 1024) return UV_EINVAL;
  atomic_store(&max_running, n);
  return 0;
}

/* ---- the hop, on a pool thread ------------------------------------------------ */

/* Answers are queued under the mutex as jobs finish. The loop collects them
 * while the hop goes on (on_poll), so a quick statement queued before a slow
 * one completes — and a failure can cancel the slow one — without waiting
 * for the hop to end. The hop never wakes the loop per answer: for a burst
 * that would cost a system call and a loop wake-up per statement. */
static void answer(struct sq_conn *c, struct sq_job *j) {
  j->dnext = NULL;
  if (c->atail)
    c->atail->dnext = j;
  else
    c->ahead = j;
  c->atail = j;
}

/* The loop thread wrote the next job's request (the request, the job, the
 * parameters and the text: one allocation, about 8 cache lines), so its
 * lines sit in the other core's cache. Asking for them now, for writing
 * (the hop writes the answer into them), overlaps their transfer with the
 * current statement instead of stalling the next one on each line. */
#define PF_BEFORE 192 /* the request's header, before the job */
#define PF_AFTER 320  /* the job, the parameters, the text */
static void prefetch_job(const struct sq_job *j) {
  for (int off = -PF_BEFORE; off < PF_AFTER; off += 64)
    __builtin_prefetch((const char *)j + off, 1, 3);
}

static void hop_work(uv_work_t *w) {
  struct sq_conn *c = w->data;
  uint64_t t0 = c->hop_t0 = uv_hrtime();
  unsigned n = 0;
  SQ_COUNT(c->rts, SQ_HOPS, 1);
  uv_mutex_lock(&c->mu);
  while (!c->aborted && sq_runnable(c)) {
    struct sq_job *j = c->head;
    if (j->next) prefetch_job(j->next);
    c->running = j;
    uv_mutex_unlock(&c->mu);
    sq_run(c, j);
    uv_mutex_lock(&c->mu);
    c->running = NULL;   /* from here no interrupt can reach this connection */
    if (j->retry) break; /* stays first in the queue; others get the thread */
    /* A batch parks its stream until the user asks for more, unless the
     * stream was cancelled while the batch was being made: that cancel
     * found nothing parked to let go, so the job must not park now, or it
     * would wait for a "more" that never comes. It runs once more, when
     * its batch has been delivered, to end cancelled. */
    if (j->batch && !j->last) {
      j->parked = !atomic_load(&j->cancelled);
      j->delivering = true;
    } else
      sq_remove(c, j);
    answer(c, j);
    /* A cancelled job ends the hop: its scope's other statements, queued
     * behind it, are being cancelled on the loop thread right now (one
     * ascope_cancel cancels them in turn), and must be dropped there, not
     * run here first. The next hop starts from the loop, after that. */
    if (atomic_load(&j->cancelled)) break;
    if (++n % 32 == 0) {
      if (uv_hrtime() - t0 > HOP_NS && sq_sched_waiting(c->sched)) break;
      uv_mutex_unlock(&c->mu);
      sq_gate(c); /* a hop of many short jobs is long too */
      uv_mutex_lock(&c->mu);
    }
  }
  bool close = c->aborted && c->db;
  uv_mutex_unlock(&c->mu);
  sq_gate_release(c);
  atomic_fetch_add(&c->sched->hops_ended, 1); /* the loop thread's pass gives way (loop.c) */
  if (close) sq_close_db(c);                  /* abort found us running: closing is ours */
}

/* ---- the loop side ---------------------------------------------------------------- */

static void hop_after(uv_work_t *w, int status);

#define POLL_MS 1 /* how often answers are collected while hops run */

static void on_poll(uv_timer_t *t) {
  struct sq_sched *s = t->data;
  for (struct sq_conn *c = s->xhead, *next; c; c = next) {
    next = c->rnext; /* answers run user code; only hop_after takes c off the list */
    sq_answers(c);
  }
}

/* The running list reuses the ready list's links: a connection is on one
 * or the other. */
static void running_add(struct sq_sched *s, struct sq_conn *c) {
  c->rprev = NULL;
  c->rnext = s->xhead;
  if (s->xhead) s->xhead->rprev = c;
  s->xhead = c;
  if (s->running++ == 0) uv_timer_start(&s->poll, on_poll, POLL_MS, POLL_MS);
  SQ_COUNT(c->rts, SQ_RUNNING, 1);
}

static void running_remove(struct sq_sched *s, struct sq_conn *c) {
  if (c->rprev)
    c->rprev->rnext = c->rnext;
  else
    s->xhead = c->rnext;
  if (c->rnext) c->rnext->rprev = c->rprev;
  c->rprev = c->rnext = NULL;
  if (--s->running == 0) uv_timer_stop(&s->poll);
  SQ_COUNT(c->rts, SQ_RUNNING, -1);
}

static void pump(struct sq_sched *s) {
  while (s->running < atomic_load(&max_running) && s->rhead) {
    struct sq_conn *c = s->rhead;
    sq_unready(c);
    c->where = W_RUNNING;
    running_add(s, c);
    uv_queue_work(s->loop, &c->work, hop_work, hop_after);
  }
}

void sq_unready(struct sq_conn *c) {
  if (c->where == W_LOOP) sq_loop_unlist(c);
  if (c->where != W_READY) return;
  struct sq_sched *s = c->sched;
  if (c->rprev)
    c->rprev->rnext = c->rnext;
  else
    s->rhead = c->rnext;
  if (c->rnext)
    c->rnext->rprev = c->rprev;
  else
    s->rtail = c->rprev;
  c->rprev = c->rnext = NULL;
  c->where = W_IDLE;
  atomic_fetch_sub(&s->waiting, 1);
}

static void wake(struct sq_conn *c, bool loop_ok) {
  /* a running hop re-checks when it ends; a listed connection when its turn comes */
  if ((c->where != W_IDLE && c->where != W_AFTER) || c->dead) return;
  uv_mutex_lock(&c->mu);
  bool go = !c->aborted && sq_runnable(c);
  bool loop = go && loop_ok && sq_loop_candidate(c);
  uv_mutex_unlock(&c->mu);
  if (!go) return;
  if (loop) {
    sq_loop_list(c);
    return;
  }
  struct sq_sched *s = c->sched;
  c->rprev = s->rtail;
  c->rnext = NULL;
  if (s->rtail)
    s->rtail->rnext = c;
  else
    s->rhead = c;
  s->rtail = c;
  c->where = W_READY;
  atomic_fetch_add(&s->waiting, 1);
  pump(s);
}

void sq_wake(struct sq_conn *c) {
  wake(c, true);
}

void sq_wake_pool(struct sq_conn *c) {
  wake(c, false);
}

/* The connection is finished with: free it, then complete the acquire that
 * failed, the release, or the aborted release (late). Nothing may touch c
 * after sq_conn_free, and the core may reuse the state after ascope_res_done. */
static void conn_finish(struct sq_conn *c) {
  ascope_res *r = c->res;
  int status = c->dead_status;
  const char *code = c->dead_code;
  char *msg = c->dead_msg;
  c->dead_msg = NULL;
  if (c->db) sq_close_db(c);
  sq_conn_free(c);
  ascope_res_done(r, status, code, msg);
  ascope_free(msg);
}

/* A hop ended. Its answers run user code, which may queue more and start
 * the next hop at once (AFTER lets it: the pool thread is done with c), so
 * a body submitting a burst from here overlaps with its execution. Then,
 * unless that happened: an aborted connection is flushed, a finished one
 * freed, and one with work left goes back to the scheduler. */
static void hop_after(uv_work_t *w, int status) {
  (void)status; /* work is never cancelled with uv_cancel */
  struct sq_conn *c = w->data;
  struct sq_sched *s = c->sched;
  running_remove(s, c);
  c->where = W_AFTER;
  s->hops_after++;
  pump(s); /* the thread goes to the next ready connection before the answers run */
  sq_answers(c);
  if (c->where != W_AFTER) {
    /* The next hop is on its way or waiting for a thread — or c was listed
     * for the loop thread, and the thread this hop leaves is another's. */
    pump(s);
    return;
  }
  uv_mutex_lock(&c->mu);
  bool aborted = c->aborted;
  uv_mutex_unlock(&c->mu);
  if (aborted) {
    sq_flush(c, ASCOPE_ECLOSED);
    c->dead = true;
  }
  c->where = W_IDLE;
  if (c->dead) {
    pump(s); /* before conn_finish, which may free the scheduler with the last connection */
    conn_finish(c);
    return;
  }
  sq_publish(c); /* what was staged while the hop ran */
  sq_wake(c);
  pump(s);
}
