/* Short statements on the loop thread.
 *
 * A primary-key SELECT takes a few microseconds; handing it to a pool
 * thread and its answer back costs two thread wake-ups, several times that.
 * For a caller awaiting one statement after another that hand-off is the
 * whole cost, so a statement known to be short runs on the loop thread
 * instead, when all of these hold:
 *   - it is first in its connection's queue and no hop is in flight (the
 *     connection is on no other thread, and FIFO order is kept), and it is
 *     alone there or the pool's threads are all taken: a queue of several
 *     goes to a hop, which drains it in one hand-off and leaves the loop
 *     thread free, unless it would wait for a thread (behind long queries,
 *     perhaps for seconds) while the loop thread could run it now;
 *   - it is a plain exec or query (not a stream, a transaction step or a
 *     script), already prepared, read-only and returning rows (cache.c);
 *   - its last runs, wherever they ran, took few VM steps and little time
 *     (sq_stmt_loop_ok), and it did not overrun here since.
 * Its run has a budget (the progress handler, every 1000 VM steps: a count
 * and a clock). When the budget runs out, or the statement meets a lock
 * (the busy handler never naps here), it is interrupted — a read-only
 * statement rolls nothing back, even inside a transaction — its rows are
 * dropped, and it runs again from the start on the pool, still first in
 * its queue: nothing of the first try was seen. The pool stays the home of
 * everything else, and of everything that may take long.
 *
 * Statements are not run inside the call that submits them: a connection
 * with a candidate is listed, and an idle handle (which also keeps the loop
 * from sleeping) runs the list. An answer's callback that submits the next
 * statement lists the connection again, and the same pass runs it, so a
 * chain of awaited statements needs no loop iteration each; the pass gives
 * the loop back after RUN_NS, so timers, I/O and deadlines still run. A
 * cancel cannot meet a statement running here (the loop thread is busy
 * running it): it finds the job queued, or answered.
 */
#include "internal.h"

#define RUN_NS (500 * 1000) /* statements run in one pass before the loop turns */

static void on_idle(uv_idle_t *h);

void sq_loop_init(struct sq_sched *s) {
  uv_idle_init(s->loop, &s->idle);
  s->idle.data = s;
  s->handles++;
}

bool sq_loop_candidate(struct sq_conn *c) {
  struct sq_job *j = c->head;
  /* tx_lost, sp_lost: the pool refuses it, with the reason */
  if (j == NULL || j->kind != JOB_REQ || !c->opened || c->tx_lost || c->sp_lost) return false;
  if (j->next != NULL && !sq_pool_full(c->sched)) return false;
  int kind = ascope_sql_req_kind(j->req);
  if ((kind != ASCOPE_SQL_QUERY && kind != ASCOPE_SQL_EXEC) || atomic_load(&j->cancelled))
    return false;
  /* Asked here too, not only when its turn comes, so that what the pool
   * will run anyway (an INSERT awaited alone) goes there at once. */
  const struct sq_stmt *st = sq_cache_peek(c, ascope_sql_req_text(j->req));
  return st && sq_stmt_loop_ok(st, c->sched);
}

/* Short lately: one long run in a row may be a preemption, or a page from
 * the disk once, so it takes two. With every pool thread taken, a statement
 * that has not overrun here is tried even after long runs: the pool would
 * make it wait (behind long queries, perhaps for seconds), and the budget
 * bounds what the try costs the loop. */
bool sq_stmt_loop_ok(const struct sq_stmt *st, struct sq_sched *s) {
  return st->loop_kind && !st->overran && (st->long_runs < 2 || sq_pool_full(s));
}

void sq_loop_list(struct sq_conn *c) {
  struct sq_sched *s = c->sched;
  c->rprev = s->ltail;
  c->rnext = NULL;
  if (s->ltail)
    s->ltail->rnext = c;
  else {
    s->lhead = c;
    uv_idle_start(&s->idle, on_idle);
  }
  s->ltail = c;
  c->where = W_LOOP;
}

void sq_loop_unlist(struct sq_conn *c) {
  if (c->where != W_LOOP) return;
  struct sq_sched *s = c->sched;
  if (c->rprev)
    c->rprev->rnext = c->rnext;
  else
    s->lhead = c->rnext;
  if (c->rnext)
    c->rnext->rprev = c->rprev;
  else
    s->ltail = c->rprev;
  c->rprev = c->rnext = NULL;
  c->where = W_IDLE;
  if (s->lhead == NULL) uv_idle_stop(&s->idle);
}

/* c's first job, on the loop thread or, failing that, on the pool. */
static void run_one(struct sq_conn *c) {
  uv_mutex_lock(&c->mu);
  bool ok = !c->aborted && sq_runnable(c) && sq_loop_candidate(c);
  struct sq_job *j = c->head;
  uv_mutex_unlock(&c->mu);
  if (!ok) { /* more was queued, or it was cancelled, meanwhile */
    sq_wake_pool(c);
    return;
  }
  struct sq_stmt *st = sq_cache_find(c, ascope_sql_req_text(j->req));
  if (st == NULL || !sq_stmt_loop_ok(st, c->sched)) {
    if (st) sq_cache_put(c, st);
    sq_wake_pool(c);
    return;
  }
  SQ_COUNT(c->rts, SQ_LOOP_RUNS, 1);
  if (!sq_run_on_loop(c, j, st)) {
    SQ_COUNT(c->rts, SQ_LOOP_OVERRUNS, 1);
    sq_wake_pool(c);
    return;
  }
  uv_mutex_lock(&c->mu);
  sq_remove(c, j);
  uv_mutex_unlock(&c->mu);
  sq_answer_one(c, j); /* user code: what it queues lists c again */
  sq_wake(c);          /* what was queued behind j while c was listed */
}

/* One statement per connection in turn, in the order they were listed,
 * until the list is empty or the pass has run RUN_NS; the idle handle,
 * still started while anything is listed, brings the next pass. */
static void on_idle(uv_idle_t *h) {
  struct sq_sched *s = h->data;
  uint64_t t0 = uv_hrtime();
  for (struct sq_conn *c; (c = s->lhead) != NULL;) {
    sq_loop_unlist(c);
    run_one(c);
    if (uv_hrtime() - t0 >= RUN_NS) break;
    /* A hop ended: its thread waits for the loop to take its answers and
     * start the next hop, so the loop turns now rather than after RUN_NS. */
    if (atomic_load(&s->hops_ended) != s->hops_after) break;
  }
}
