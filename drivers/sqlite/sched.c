/* Scheduling connections onto libuv's threadpool.
 *
 * A connection's statements run in "hops": one uv_queue_work that drains
 * everything queued for the connection, so a burst of small statements pays
 * for one thread hand-off, not one each, and a connection is never on two
 * threads at once. The pool is shared with file I/O and DNS (4 threads by
 * default), and a SQLite statement can hold its thread for seconds, so at
 * most `max_running` connections per loop (2 by default) are on the pool at
 * a time; the others wait in a FIFO ready list, and a hop that ran long
 * steps aside (HOP_NS) so they all move.
 *
 * The scheduler is per loop because uv_queue_work must be called on the
 * loop's thread. A small registry finds a loop's scheduler; it lives while
 * connections on that loop do.
 */
#include "internal.h"

#include <stdlib.h>

#define HOP_NS (5 * 1000 * 1000) /* a hop longer than this lets waiting connections in */

struct sq_sched {
  uv_loop_t *loop;
  struct sq_sched *next; /* registry */
  unsigned refs;         /* connections */
  unsigned running;      /* hops in flight */
  struct sq_conn *rhead, *rtail;
  atomic_uint waiting; /* ready connections; read by busy handlers on pool threads */
};

static uv_once_t reg_once = UV_ONCE_INIT;
static uv_mutex_t reg_mu;
static struct sq_sched *registry;
static atomic_uint max_running = 2;

static void reg_init(void) {
  if (uv_mutex_init(&reg_mu) != 0) abort();
}

struct sq_sched *sq_sched_get(uv_loop_t *loop) {
  uv_once(&reg_once, reg_init);
  uv_mutex_lock(&reg_mu);
  struct sq_sched *s = registry;
  while (s && s->loop != loop) s = s->next;
  if (s == NULL && (s = calloc(1, sizeof *s)) != NULL) {
    s->loop = loop;
    s->next = registry;
    registry = s;
  }
  if (s) s->refs++;
  uv_mutex_unlock(&reg_mu);
  return s;
}

void sq_sched_put(struct sq_sched *s) {
  uv_mutex_lock(&reg_mu);
  if (--s->refs == 0) {
    struct sq_sched **pp = &registry;
    while (*pp != s) pp = &(*pp)->next;
    *pp = s->next;
    free(s);
  }
  uv_mutex_unlock(&reg_mu);
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

/* Answers are queued under the mutex as jobs finish. When the hop goes on
 * to another job the loop is woken for them at once: a quick statement
 * queued before a slow one completes (and a failure can cancel the slow
 * one) without waiting for the hop to end. */
static void answer(struct sq_conn *c, struct sq_job *j) {
  j->dnext = NULL;
  if (c->atail)
    c->atail->dnext = j;
  else
    c->ahead = j;
  c->atail = j;
}

static void hop_work(uv_work_t *w) {
  struct sq_conn *c = w->data;
  uint64_t t0 = uv_hrtime();
  unsigned n = 0;
  atomic_fetch_add(&sq_stat_hops, 1);
  uv_mutex_lock(&c->mu);
  while (!c->aborted && sq_runnable(c)) {
    struct sq_job *j = c->head;
    c->running = j;
    uv_mutex_unlock(&c->mu);
    sq_run(c, j);
    uv_mutex_lock(&c->mu);
    c->running = NULL;   /* from here no interrupt can reach this connection */
    if (j->retry) break; /* stays first in the queue; others get the thread */
    if (j->batch && !j->last)
      j->parked = true;
    else
      sq_remove(c, j);
    bool wake = c->ahead == NULL;
    answer(c, j);
    if (++n % 32 == 0 && uv_hrtime() - t0 > HOP_NS && sq_sched_waiting(c->sched)) break;
    if (wake && !c->aborted && sq_runnable(c)) uv_async_send(&c->async);
  }
  bool close = c->aborted && c->db;
  uv_mutex_unlock(&c->mu);
  if (close) sq_close_db(c); /* abort found us running: closing is ours */
}

/* ---- the loop side ---------------------------------------------------------------- */

static void hop_after(uv_work_t *w, int status);

static void pump(struct sq_sched *s) {
  while (s->running < atomic_load(&max_running) && s->rhead) {
    struct sq_conn *c = s->rhead;
    sq_unready(c);
    c->where = W_RUNNING;
    s->running++;
    atomic_fetch_add(&sq_stat_running, 1);
    uv_queue_work(s->loop, &c->work, hop_work, hop_after);
  }
}

void sq_unready(struct sq_conn *c) {
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

void sq_wake(struct sq_conn *c) {
  if (c->where != W_IDLE || c->dead) return; /* a running hop re-checks when it ends */
  uv_mutex_lock(&c->mu);
  bool go = !c->aborted && sq_runnable(c);
  uv_mutex_unlock(&c->mu);
  if (!go) return;
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
  free(msg);
}

static void hop_after(uv_work_t *w, int status) {
  (void)status; /* work is never cancelled with uv_cancel */
  struct sq_conn *c = w->data;
  struct sq_sched *s = c->sched;
  s->running--;
  atomic_fetch_sub(&sq_stat_running, 1);
  sq_answers(c); /* may run user code that queues more: it waits for the next hop */
  uv_mutex_lock(&c->mu);
  bool aborted = c->aborted;
  uv_mutex_unlock(&c->mu);
  if (aborted) {
    sq_flush(c, ASCOPE_ECLOSED);
    c->dead = true;
  }
  if (c->dead) {
    c->where = W_IDLE;
    pump(s); /* before conn_finish, which may free the scheduler with the last connection */
    conn_finish(c);
    return;
  }
  c->where = W_IDLE;
  sq_wake(c);
  pump(s);
}
