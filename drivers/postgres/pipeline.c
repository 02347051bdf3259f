/* The two queues of a connection: requests not yet sent, and the steps of
 * those sent.
 *
 * The send queue is a plain FIFO of requests: the order they were asked in
 * is the order they go out, so a COMMIT never overtakes the body's INSERT.
 * A request sent becomes a few steps in a ring — an optional Prepare, the
 * Execute, and the Sync that closes its own pipeline segment — in exactly
 * the order libpq will return their results, which is how a result finds
 * its request without any lookup.
 */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

void pg_queue(struct pg_conn *c, struct pg_req *r) {
  r->next = NULL;
  r->prev = c->send_tail;
  if (c->send_tail)
    c->send_tail->next = r;
  else
    c->send_head = r;
  c->send_tail = r;
  r->where = R_QUEUED;
}

void pg_queue_front(struct pg_conn *c, struct pg_req *r) {
  r->prev = NULL;
  r->next = c->send_head;
  if (c->send_head)
    c->send_head->prev = r;
  else
    c->send_tail = r;
  c->send_head = r;
  r->where = R_QUEUED;
}

void pg_unqueue(struct pg_conn *c, struct pg_req *r) {
  if (r->prev)
    r->prev->next = r->next;
  else
    c->send_head = r->next;
  if (r->next)
    r->next->prev = r->prev;
  else
    c->send_tail = r->prev;
  r->next = r->prev = NULL;
  r->where = R_NEW;
}

/* Made before a statement is handed to libpq: once it is out, a step that
 * could not be recorded would leave the pipeline without its place, and
 * only breaking the connection would be left. */
int pg_steps_reserve(struct pg_conn *c, size_t n) {
  if (c->nsteps + n <= c->step_cap) return 0;
  size_t cap = c->step_cap ? c->step_cap * 2 : 64;
  while (cap < c->nsteps + n) cap *= 2;
  struct pg_step *s = ascope_malloc(cap * sizeof *s);
  if (s == NULL) return UV_ENOMEM;
  for (size_t i = 0; i < c->nsteps; i++) s[i] = c->steps[(c->step_head + i) % c->step_cap];
  ascope_free(c->steps);
  c->steps = s;
  c->step_head = 0;
  c->step_cap = cap;
  return 0;
}

struct pg_step *pg_step_push(struct pg_conn *c, uint8_t kind, struct pg_req *r,
                             struct pg_stmt *st) {
  if (pg_steps_reserve(c, 1) != 0) return NULL;
  struct pg_step *s = &c->steps[(c->step_head + c->nsteps) % c->step_cap];
  s->kind = kind;
  s->fresh = true;
  s->named = false;
  s->ends_round = false;
  s->r = r;
  s->st = st;
  s->after = NULL;
  if (st) st->refs++;
  c->nsteps++;
  if (kind != ST_EXEC) return s; /* statements in flight: one Execute each */
  acount_max(c->stats, &pg_stats, PGS_MAX_PIPELINE, (long long)++c->inflight);
  return s;
}

struct pg_step *pg_step_head(struct pg_conn *c) {
  return c->nsteps ? &c->steps[c->step_head] : NULL;
}

bool pg_step_holds(struct pg_conn *c, const struct pg_req *r) {
  for (size_t i = 0; i < c->nsteps; i++)
    if (c->steps[(c->step_head + i) % c->step_cap].r == r) return true;
  return false;
}

static void append(struct pg_req **list, struct pg_req *more) {
  while (*list) list = &(*list)->next;
  *list = more;
}

void pg_step_pop(struct pg_conn *c) {
  struct pg_step *s = &c->steps[c->step_head];
  if (s->after) { /* answered once this step's own answer is given (pg_answer_local) */
    append(&c->local, s->after);
    s->after = NULL;
  }
  if (s->st) pg_cache_unref(c, s->st);
  if (s->kind == ST_EXEC) c->inflight--;
  c->step_head = (c->step_head + 1) % c->step_cap;
  c->nsteps--;
}

/* ---- requests that failed locally ------------------------------------------------------- */
/* A request can fail before any of it is sent (out of memory, LISTEN
 * through a pooler). Answering it then would answer it before statements
 * started ahead of it that are still in the pipeline; it waits instead on
 * the last step in flight, and is answered once that step's own answer has
 * been given. Nothing is allocated for it: a failure for want of memory
 * must be able to wait too. */

void pg_answer_local_later(struct pg_conn *c, struct pg_req *r) {
  r->next = NULL;
  if (c->nsteps == 0 && c->local == NULL) {
    pg_answer(c, r);
    return;
  }
  r->where = R_LOCAL;
  if (c->nsteps)
    append(&c->steps[(c->step_head + c->nsteps - 1) % c->step_cap].after, r);
  else
    append(&c->local, r);
}

void pg_answer_local(struct pg_conn *c) {
  while (c->local) {
    struct pg_req *r = c->local;
    c->local = r->next;
    r->next = NULL;
    pg_answer(c, r);
  }
}

static bool unlink_from(struct pg_req **list, struct pg_req *r) {
  for (; *list; list = &(*list)->next)
    if (*list == r) {
      *list = r->next;
      r->next = NULL;
      return true;
    }
  return false;
}

bool pg_unlocal(struct pg_conn *c, struct pg_req *r) {
  if (unlink_from(&c->local, r)) return true;
  for (size_t i = 0; i < c->nsteps; i++)
    if (unlink_from(&c->steps[(c->step_head + i) % c->step_cap].after, r)) return true;
  return false;
}
