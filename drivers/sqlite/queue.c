/* A connection's queue and its answers.
 *
 * Every job for a connection — its open, each statement, each transaction
 * step, its close — waits in one FIFO, so they run in the order they were
 * asked for: a COMMIT can never overtake the body's INSERT, a close never
 * overtakes anything. The loop pushes (and removes what is cancelled before
 * it ran); the hop takes from the front. A stream whose batch is out stays
 * first, "parked", and holds everything behind it until the user asks for
 * more or stops.
 */
#include "internal.h"

#include <stdlib.h>

void sq_push(struct sq_conn *c, struct sq_job *j) {
  j->next = NULL;
  j->prev = c->tail;
  if (c->tail)
    c->tail->next = j;
  else
    c->head = j;
  c->tail = j;
  j->queued = true;
}

void sq_remove(struct sq_conn *c, struct sq_job *j) {
  if (!j->queued) return;
  if (j->prev)
    j->prev->next = j->next;
  else
    c->head = j->next;
  if (j->next)
    j->next->prev = j->prev;
  else
    c->tail = j->prev;
  j->next = j->prev = NULL;
  j->queued = false;
}

/* ---- the stage ------------------------------------------------------------------------
 *
 * While a hop runs, the loop and the pool thread would meet on the mutex for
 * every statement: one pushing, one taking. Jobs started then wait in a stage
 * only the loop touches, and go into the queue in batches — every
 * STAGE_BATCH jobs, before the loop next sleeps (sq_stage_list), and when the
 * hop ends — so a burst costs one lock per batch. Order is kept: once
 * anything is staged, everything after it is staged too. */
#define STAGE_BATCH 64

static void stage_push(struct sq_conn *c, struct sq_job *j) {
  j->next = NULL;
  j->prev = c->stail;
  if (c->stail)
    c->stail->next = j;
  else
    c->shead = j;
  c->stail = j;
  j->staged = true;
  c->nstaged++;
}

bool sq_unstage(struct sq_conn *c, struct sq_job *j) {
  if (!j->staged) return false;
  if (j->prev)
    j->prev->next = j->next;
  else
    c->shead = j->next;
  if (j->next)
    j->next->prev = j->prev;
  else
    c->stail = j->prev;
  j->next = j->prev = NULL;
  j->staged = false;
  c->nstaged--;
  /* A connection is listed exactly while its stage holds something: when
   * the last staged job is cancelled, nothing is left to publish. */
  if (c->shead == NULL) sq_stage_unlist(c);
  return true;
}

/* Always takes c off the scheduler's list, even with nothing staged: the
 * loop's publishing pass relies on each call shortening the list. */
void sq_publish(struct sq_conn *c) {
  if (c->shead == NULL) {
    sq_stage_unlist(c);
    return;
  }
  uv_mutex_lock(&c->mu);
  for (struct sq_job *j = c->shead; j; j = j->next) {
    j->staged = false;
    j->queued = true;
  }
  c->shead->prev = c->tail;
  if (c->tail)
    c->tail->next = c->shead;
  else
    c->head = c->shead;
  c->tail = c->stail;
  uv_mutex_unlock(&c->mu);
  c->shead = c->stail = NULL;
  c->nstaged = 0;
  sq_stage_unlist(c);
  sq_wake(c);
}

int sq_enqueue(struct sq_conn *c, struct sq_job *j) {
  if (c->dead || c->aborted) return ASCOPE_ECLOSED; /* aborted: the loop's own write */
  if (c->where == W_RUNNING || c->shead) {
    stage_push(c, j);
    if (c->nstaged >= STAGE_BATCH)
      sq_publish(c);
    else
      sq_stage_list(c);
    return 0;
  }
  uv_mutex_lock(&c->mu); /* no hop: nobody to meet on the mutex */
  sq_push(c, j);
  uv_mutex_unlock(&c->mu);
  sq_wake(c);
  return 0;
}

/* A parked stream whose batch is still on its way to the loop must not run
 * again, even cancelled (the cancel unparks it): its next answer would go
 * through the job's one answer slot while the loop still holds the first.
 * A statement failing before the stream, in the same answers, cancelled
 * it so; the hop then answered the stream's end, the loop delivered it,
 * freeing the request, and went on to the batch it still held. */
bool sq_runnable(struct sq_conn *c) {
  return c->head && !c->head->parked && !c->head->delivering;
}

/* Delivers one answer on the loop thread. The job belongs to its request:
 * once the request is answered for good, the job is gone with it. */
void sq_answer_one(struct sq_conn *c, struct sq_job *j) {
  switch (j->kind) {
  case JOB_OPEN:
    if (j->status == 0) {
      c->opened = true;
      SQ_COUNT(c->rts, SQ_OPENED, 1);
      ascope_res_done(c->res, 0, NULL, NULL);
    } else { /* the worker already closed what it opened */
      c->dead = true;
      c->dead_status = j->status;
      c->dead_code = j->code;
      c->dead_msg = j->msg;
      j->msg = NULL;
    }
    return;
  case JOB_CLOSE:
    c->dead = true;
    c->dead_status = j->status;
    return;
  case JOB_RESET: {
    char *why = j->msg;
    j->msg = NULL;
    ascope_res_done(c->res, j->status, j->code, why);
    ascope_free(why);
    return;
  }
  case JOB_REQ:
  case JOB_TX:
    break;
  }
  ascope_sql_req *req = j->req;
  char *msg = j->msg;
  j->msg = NULL;
  if (j->batch && !j->last) { /* the hop may run the job again; hop_after wakes it */
    uv_mutex_lock(&c->mu);
    j->delivering = false;
    uv_mutex_unlock(&c->mu);
  }
  if (j->batch)
    ascope_sql_req_batch(req, j->last);
  else
    ascope_sql_req_done(req, j->status, j->code, msg);
  ascope_free(msg);
}

/* Delivers every answer so far, in order. The list is taken in one go:
 * the loop and the hop meet on this mutex once per batch, not per answer.
 * The jobs taken are out of the queue and not running, so user code run by
 * an answer (a cancel, the scope's end) cannot touch them through it. */
void sq_answers(struct sq_conn *c) {
  for (;;) {
    uv_mutex_lock(&c->mu);
    struct sq_job *j = c->ahead;
    c->ahead = c->atail = NULL;
    uv_mutex_unlock(&c->mu);
    if (j == NULL) return;
    while (j) {
      struct sq_job *next = j->dnext; /* j may be gone once answered */
      sq_answer_one(c, j);
      j = next;
    }
  }
}

/* Answers every queued request with status: the connection is gone. */
void sq_flush(struct sq_conn *c, int status) {
  sq_publish(c); /* the stage goes the same way, after the queue */
  uv_mutex_lock(&c->mu);
  struct sq_job *list = NULL, **tail = &list;
  while (c->head) {
    struct sq_job *j = c->head;
    sq_remove(c, j);
    if (j->kind != JOB_REQ && j->kind != JOB_TX) continue;
    j->dnext = NULL;
    *tail = j;
    tail = &j->dnext;
  }
  uv_mutex_unlock(&c->mu);
  while (list) {
    struct sq_job *j = list;
    list = j->dnext;
    ascope_free(j->msg);
    j->msg = NULL;
    ascope_sql_req_done(j->req, status, NULL, "the connection was closed");
  }
}

void sq_conn_free(struct sq_conn *c) {
  sq_unready(c);
  sq_stage_unlist(c);
  if (c->opened) SQ_COUNT(c->rts, SQ_CLOSED, 1);
  SQ_COUNT(c->rts, SQ_CONNECTIONS, -1);
  ascope_free(c->open_job.msg);
  ascope_free(c->close_job.msg);
  ascope_free(c->dead_msg);
  ascope_free(c->path);
  uv_mutex_destroy(&c->mu);
  sq_sched_put(c->sched);
  ascope_free(c);
}
