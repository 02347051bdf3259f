/* Cancel requests, and keeping one from stopping the wrong statement.
 *
 * A statement already sent can only be stopped by a cancel request: a new
 * connection to the server carrying the backend's key, on which the server
 * signals the backend to cancel whatever it runs *when the signal lands*.
 * PQcancel does that with blocking calls, so it runs on libuv's threadpool
 * with its own PGcancel copy.
 *
 * The statement may finish before the signal lands, and then the signal
 * stops whatever the backend runs next. If that were another scope's
 * statement, it would fail (or, sent again, run after statements started
 * later than it): either way the connection would no longer run its
 * statements in the order they were started. So a cancel request is sent
 * only when it cannot hit anything that matters:
 *   - the target is the statement the backend runs (the head of the
 *     pipeline, its results not yet all in), and
 *   - everything in flight behind it is unwanted too (cancelled or stopped;
 *     never a COMMIT or ROLLBACK, never the driver's own DEALLOCATE).
 * A cancelled statement with wanted work behind it is abandoned instead
 * (driver.c): its scope hears ASCOPE_ECANCELED at once, and the statement
 * runs to its end on the server, its answer drained and dropped. A
 * cancelled statement with nothing wanted behind it holds the sending of
 * anything new until it is the head and can be stopped safely.
 *
 * From the moment a cancel request is sent the connection is held: nothing
 * more is sent until the request has been delivered (PQcancel returned, so
 * the server has signalled) and every statement in flight has come back
 * (the backend is idle, where a cancel signal is ignored). If the
 * connection is not back to idle within cancel_timeout, or the cancel
 * request cannot be delivered, the connection is closed instead. A request
 * that landed while the backend was between statements is dropped by the
 * server, so one whose target still runs 100 ms after it was delivered is
 * sent again (under the same conditions as the first).
 */
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct pg_cancel_job {
  uv_work_t work;
  PGcancel *pc;
  struct pg_conn *c; /* NULL once the connection let go (abort) */
  int ok;
  char err[256];
};

static void cancel_work(uv_work_t *w) {
  struct pg_cancel_job *j = w->data;
  j->ok = PQcancel(j->pc, j->err, sizeof j->err);
}

static void drain_expired(uv_timer_t *t) {
  struct pg_conn *c = t->data;
  c->draining = false;
  char msg[160];
  snprintf(msg, sizeof msg,
           "the connection did not come back to idle within %llu ms of a cancel request; "
           "it was closed",
           (unsigned long long)c->opt.cancel_ms);
  pg_break(c, ASCOPE_ECLOSED, "57014", msg);
}

#define RETRY_MS 100 /* a target still running this long after its cancel landed */

static struct pg_req *unwanted_head(struct pg_conn *c);

/* The server drops a cancel signal that lands while the backend is between
 * statements (reading the next one): a target that had not started yet
 * then runs on as if nothing was asked. So while it is still the one the
 * backend runs, with nothing wanted behind it, the request goes again.
 * That is as safe as the first: nothing that matters can be hit. */
static void cancel_retry(uv_timer_t *t) {
  struct pg_conn *c = t->data;
  struct pg_req *r = c->cancel_target;
  if (r == NULL || c->cancel_job || c->state != PG_READY || c->pg == NULL) return;
  if (unwanted_head(c) != r || (c->solo == NULL && !PQisBusy(c->pg))) return;
  if (c->solo == NULL && pg_wanted_behind(c, r)) return;
  if (pg_cancel_fire(c, r) != 0)
    pg_break(c, ASCOPE_ECLOSED, "57014", "could not start a cancel request");
}

static void cancel_done(uv_work_t *w, int status) {
  struct pg_cancel_job *j = w->data;
  struct pg_conn *c = j->c;
  PQfreeCancel(j->pc);
  if (c == NULL) { /* aborted meanwhile: nobody waits */
    ascope_free(j);
    return;
  }
  c->cancel_job = NULL;
  bool ok = status == 0 && j->ok;
  char err[300];
  snprintf(err, sizeof err, "the cancel request could not be delivered: %s",
           status ? uv_strerror(status) : j->err);
  ascope_free(j);
  if (c->state == PG_CLOSING) {
    pg_maybe_done(c);
    return;
  }
  if (!ok && c->state == PG_READY) {
    char *m = pg_scrub(err, c->secret);
    pg_break(c, ASCOPE_ECLOSED, "57014", m ? m : "the cancel request could not be delivered");
    ascope_free(m);
  }
  if (ok && c->state == PG_READY && c->cancel_target)
    uv_timer_start(&c->retry, cancel_retry, RETRY_MS, 0);
  pg_kick(c);
}

int pg_cancel_fire(struct pg_conn *c, struct pg_req *target) {
  if (c->cancel_job || c->pg == NULL) return 0;
  struct pg_cancel_job *j = ascope_calloc(1, sizeof *j);
  if (j == NULL) return UV_ENOMEM;
  if ((j->pc = PQgetCancel(c->pg)) == NULL) {
    ascope_free(j);
    return UV_ENOMEM;
  }
  j->c = c;
  j->work.data = j;
  int rc = uv_queue_work(c->loop, &j->work, cancel_work, cancel_done);
  if (rc) {
    PQfreeCancel(j->pc);
    ascope_free(j);
    return rc;
  }
  c->cancel_job = j;
  c->hold = true;
  PG_COUNT(c, PGS_CANCELS, 1);
  /* The target must come back within cancel_timeout; what else is in
   * flight is other scopes' work, and takes the time it takes. */
  c->cancel_target = target;
  if (target && c->state == PG_READY && !c->draining) { /* a retry keeps the first deadline */
    c->draining = true;
    uv_timer_start(&c->timer, drain_expired, c->opt.cancel_ms, 0);
  }
  return 0;
}

void pg_cancel_answered(struct pg_conn *c, struct pg_req *r) {
  if (c->cancel_target != r) return;
  c->cancel_target = NULL;
  uv_timer_stop(&c->retry);
  if (c->draining) {
    c->draining = false;
    uv_timer_stop(&c->timer);
  }
}

void pg_cancel_detach(struct pg_conn *c) {
  if (c->cancel_job) c->cancel_job->c = NULL; /* it frees itself when PQcancel returns */
  c->cancel_job = NULL;
}

/* Someone still waits for this step's outcome: a cancel request must never
 * hit it. A transaction's COMMIT or ROLLBACK ends the transaction whatever
 * its scope wants, and the driver's own DEALLOCATE keeps the server's
 * statements in step with the cache. */
static bool step_wanted(const struct pg_step *s) {
  const struct pg_req *r = s->r;
  if (r == NULL) return s->kind != ST_SYNC;
  if (r->kind == K_TX && r->tx_action != ASCOPE_SQL_TX_BEGIN) return true;
  return !(r->cancelled || r->stopped);
}

static struct pg_step *step_at(struct pg_conn *c, size_t i) {
  return &c->steps[(c->step_head + i) % c->step_cap];
}

bool pg_wanted_behind(struct pg_conn *c, const struct pg_req *r) {
  bool past = false;
  for (size_t i = 0; i < c->nsteps; i++) {
    struct pg_step *s = step_at(c, i);
    if (s->r == r)
      past = true;
    else if (past && step_wanted(s))
      return true;
  }
  return false;
}

bool pg_wanted_ahead(struct pg_conn *c, const struct pg_req *r) {
  for (size_t i = 0; i < c->nsteps; i++) {
    struct pg_step *s = step_at(c, i);
    if (s->r == r) return false;
    if (s->r != NULL && step_wanted(s)) return true;
  }
  return false;
}

bool pg_cancel_awaited(struct pg_conn *c) {
  if (!c->cancel_seen) return false;
  for (size_t i = 0; i < c->nsteps; i++) {
    struct pg_req *r = step_at(c, i)->r;
    if (r && !step_wanted(step_at(c, i)) && !r->abandoned && !r->aimed) return true;
  }
  c->cancel_seen = false; /* none left: no need to look again */
  return false;
}

/* The statement the backend runs now is one nobody wants any more: a
 * cancelled one, a stream stopped, a COPY out given up. */
static struct pg_req *unwanted_head(struct pg_conn *c) {
  if (c->solo) {
    struct pg_req *r = c->solo;
    return (r->kind == K_COPY_OUT || r->kind == K_SCRIPT) && (r->cancelled || r->stopped) ? r
                                                                                          : NULL;
  }
  struct pg_step *s = pg_step_head(c);
  if (s == NULL || s->r == NULL || s->kind == ST_SYNC) return NULL;
  struct pg_req *r = s->r;
  if (r->kind == K_TX && r->tx_action != ASCOPE_SQL_TX_BEGIN) return NULL; /* COMMIT/ROLLBACK run */
  return r->cancelled || r->stopped ? r : NULL;
}

/* Called when the pump waits for input: if the backend is busy with an
 * unwanted statement, ask the server to stop it. */
void pg_cancel_maybe(struct pg_conn *c) {
  if (c->cancel_job || c->pg == NULL || c->state != PG_READY) return;
  struct pg_req *r = unwanted_head(c);
  if (r == NULL || r->aimed) return;
  if (c->solo == NULL && !PQisBusy(c->pg)) return;       /* its results are here: no need */
  if (c->solo == NULL && pg_wanted_behind(c, r)) return; /* it could land on that */
  r->aimed = true;
  if (pg_cancel_fire(c, r) != 0)
    pg_break(c, ASCOPE_ECLOSED, "57014", "could not start a cancel request");
}

/* Victims that cannot go again without overtaking a statement that ran
 * after them are answered with the failure that made them victims. */
static void fail_victims(struct pg_conn *c) {
  struct pg_req *v = c->victims;
  c->victims = NULL;
  c->victims_stale = false;
  while (v) {
    struct pg_req *next = v->next;
    v->next = NULL;
    if (v->status == 0)
      pg_req_fail(v, ASCOPE_EDRIVER, NULL,
                  "its round of statements failed, and it could not run again in its order");
    pg_answer(c, v);
    v = next;
  }
}

/* The hold ends when the request was delivered and nothing is in flight;
 * the statements sent again (victims) go first, before anything queued. */
void pg_hold_check(struct pg_conn *c) {
  if (c->cancel_job || c->nsteps || c->solo || c->state != PG_READY) return;
  if (!c->hold && !c->victims) return;
  c->hold = false;
  if (c->victims_stale) fail_victims(c);
  struct pg_req *v = c->victims, *last = NULL;
  c->victims = NULL;
  while (v) { /* in their order, ahead of everything queued */
    struct pg_req *next = v->next;
    pg_req_reset(v);
    v->retried = true;
    if (last == NULL) {
      pg_queue_front(c, v);
    } else { /* after the previous victim */
      v->prev = last;
      v->next = last->next;
      if (last->next)
        last->next->prev = v;
      else
        c->send_tail = v;
      last->next = v;
      v->where = R_QUEUED;
    }
    last = v;
    v = next;
  }
  if (c->send_head) pg_sched_flush(c);
}
