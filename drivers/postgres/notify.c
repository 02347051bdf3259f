/* LISTEN / NOTIFY: notifications as a stream on a connection.
 *
 * A listen stream is a statement (LISTEN "channel") that, once answered,
 * stays on the connection as a listener instead of completing. libpq parses
 * notifications as the socket is read; after each read they are handed to
 * the listeners of their channel as rows (channel, payload, pid), in
 * batches with the stream's usual flow control. Stopping the stream, or
 * cancelling it, sends UNLISTEN (unless another listener of this connection
 * still wants the channel) and completes it when that is answered.
 */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

static bool wants(const struct pg_req *r) {
  return !r->stopped && !r->cancelled && r->status == 0;
}

static void unlink_listener(struct pg_conn *c, struct pg_req *r) {
  for (struct pg_req **pp = &c->listeners; *pp; pp = &(*pp)->next) {
    if (*pp == r) {
      *pp = r->next;
      r->next = NULL;
      return;
    }
  }
}

void pg_listen_ready(struct pg_conn *c, struct pg_req *r) {
  ascope_rows *rows = ascope_sql_req_rows(r->req);
  int rc = rows ? ascope_rows_set_columns(rows, 3) : UV_ENOMEM;
  if (rc == 0) rc = ascope_rows_set_column(rows, 0, "channel", "text", ASCOPE_SQL_TEXT);
  if (rc == 0) rc = ascope_rows_set_column(rows, 1, "payload", "text", ASCOPE_SQL_TEXT);
  if (rc == 0) rc = ascope_rows_set_column(rows, 2, "pid", "int4", ASCOPE_SQL_INT64);
  if (rc != 0) {
    pg_req_fail(r, UV_ENOMEM, NULL, "out of memory");
    pg_listen_end(c, r);
    return;
  }
  r->where = R_LISTENING;
  r->next = c->listeners;
  c->listeners = r;
}

static bool channel_wanted(struct pg_conn *c, const char *channel) {
  for (struct pg_req *l = c->listeners; l; l = l->next)
    if (strcmp(l->channel, channel) == 0) return true;
  return false;
}

/* The listener goes: UNLISTEN if no other listener wants the channel,
 * then the answer. */
void pg_listen_end(struct pg_conn *c, struct pg_req *r) {
  if (r->where == R_LISTENING) unlink_listener(c, r);
  r->batch_out = false;
  if (c->state != PG_READY || channel_wanted(c, r->channel)) {
    pg_answer(c, r);
    return;
  }
  char *q = PQescapeIdentifier(c->pg, r->channel, strlen(r->channel));
  size_t n = q ? strlen(q) + 10 : 0;
  if (q == NULL || (r->sqlbuf = ascope_malloc(n)) == NULL) {
    PQfreemem(q);
    pg_answer(c, r); /* the channel stays listened to; nothing reads it */
    return;
  }
  memcpy(r->sqlbuf, "UNLISTEN ", 9);
  memcpy(r->sqlbuf + 9, q, n - 9);
  PQfreemem(q);
  r->unlisten = true;
  r->syncs = 0;
  pg_queue(c, r);
  pg_sched_flush(c);
}

static void add_one(struct pg_req *r, const PGnotify *n) {
  ascope_rows *rows = ascope_sql_req_rows(r->req);
  int rc = ascope_rows_add_row(rows);
  if (rc == 0) rc = ascope_rows_put_text(rows, 0, n->relname, ASCOPE_SQL_NTS);
  if (rc == 0) rc = ascope_rows_put_text(rows, 1, n->extra ? n->extra : "", ASCOPE_SQL_NTS);
  if (rc == 0) ascope_rows_put_int64(rows, 2, n->be_pid);
  if (rc) pg_req_fail(r, UV_ENOMEM, NULL, "out of memory keeping a notification");
}

/* A listener with notifications waiting and no batch out. */
static struct pg_req *ready_listener(struct pg_conn *c) {
  for (struct pg_req *l = c->listeners; l; l = l->next)
    if (wants(l) && !l->batch_out && ascope_rows_count(ascope_sql_req_rows(l->req)) > 0) return l;
  return NULL;
}

void pg_notifies(struct pg_conn *c) {
  PGnotify *n;
  while (c->pg && (n = PQnotifies(c->pg)) != NULL) {
    for (struct pg_req *l = c->listeners; l; l = l->next)
      if (wants(l) && strcmp(l->channel, n->relname) == 0) add_one(l, n);
    PQfreemem(n);
  }
  /* A delivery runs user code, which may end listeners: look again each time. */
  struct pg_req *l;
  while (c->state == PG_READY && !c->closing && (l = ready_listener(c)) != NULL)
    pg_deliver_batch(c, l);
  for (l = c->listeners; l; l = l->next) {
    if (l->status) { /* out of memory keeping one: the stream ends with it */
      pg_listen_end(c, l);
      return;
    }
  }
}

bool pg_listeners_paused(struct pg_conn *c) {
  for (struct pg_req *l = c->listeners; l; l = l->next)
    if (l->batch_out) return true;
  return false;
}

void pg_listeners_fail(struct pg_conn *c, int status, const char *code, const char *msg) {
  while (c->listeners) {
    struct pg_req *l = c->listeners;
    c->listeners = l->next;
    l->next = NULL;
    pg_req_fail(l, status, code, msg);
    pg_answer(c, l);
  }
}
