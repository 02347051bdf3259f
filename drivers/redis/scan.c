/* SCAN as a stream. Back-pressure comes free: the next SCAN is sent only
 * when every key of the last batch was delivered, so a paused stream sends
 * nothing and holds one batch (COUNT keys, roughly). */
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct rd_scan {
  ascope_redis *c;
  ascope_op *op; /* NULL once ended */
  ascope *s;
  ascope_redis_cb cb;
  void *ud;
  char *match;
  char count[24];
  char cursor[32];
  redisReply *keys; /* the batch being delivered (a copy) */
  size_t next;
  bool in_flight, paused, delivering, cancelled;
};

static void scan_free(struct rd_scan *q) {
  rd_reply_free(q->keys);
  ascope_free(q->match);
  ascope_free(q);
}

/* The final call, then the end. The request stays while a SCAN is out. */
static void scan_end(struct rd_scan *q, int status, const redisReply *err) {
  ascope_op *op = q->op;
  q->op = NULL;
  int rc = q->cb(q->s, status, NULL, q->ud);
  rd_op_end(op, rc, err);
  if (!q->in_flight) scan_free(q);
}

static void on_reply(redisAsyncContext *ac, void *reply, void *priv);

static int send_scan(struct rd_scan *q) {
  const char *argv[6] = {"SCAN", q->cursor};
  int n = 2;
  if (q->match) {
    argv[n++] = "MATCH";
    argv[n++] = q->match;
  }
  if (q->count[0]) {
    argv[n++] = "COUNT";
    argv[n++] = q->count;
  }
  int rc = rd_send(q->c, on_reply, q, n, argv, NULL);
  if (rc == 0) q->in_flight = true;
  return rc;
}

static void deliver(struct rd_scan *q) {
  q->delivering = true;
  while (q->op && !q->paused && !q->cancelled && q->next < q->keys->elements) {
    int rc = q->cb(q->s, 0, (const ascope_redis_reply *)q->keys->element[q->next++], q->ud);
    if (rc < 0 || rc == ASCOPE_STOP) {
      q->delivering = false;
      scan_end(q, rc < 0 ? rc : 0, NULL);
      return;
    }
    if (rc == ASCOPE_PAUSE) q->paused = true;
  }
  q->delivering = false;
  if (q->cancelled) {
    scan_end(q, ASCOPE_ECANCELED, NULL);
    return;
  }
  if (q->paused) return;
  rd_reply_free(q->keys);
  q->keys = NULL;
  int rc = strcmp(q->cursor, "0") == 0 ? 0 : send_scan(q);
  if (rc || !q->in_flight) scan_end(q, rc, NULL);
}

static void on_reply(redisAsyncContext *ac, void *reply, void *priv) {
  struct rd_scan *q = priv;
  redisReply *r = reply;
  (void)ac;
  q->in_flight = false;
  if (r && q->c->inflight) q->c->inflight--;
  if (q->op == NULL) {
    if (r) RD_COUNT(q->c->stats, RDS_DROPPED, 1);
    scan_free(q);
    return;
  }
  if (r == NULL) {
    scan_end(q, ASCOPE_ECLOSED, NULL);
    return;
  }
  if (r->type == REDIS_REPLY_ERROR) {
    scan_end(q, ASCOPE_EDRIVER, r);
    return;
  }
  if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
      r->element[0]->type != REDIS_REPLY_STRING || r->element[1]->type != REDIS_REPLY_ARRAY ||
      r->element[0]->len >= sizeof q->cursor) {
    scan_end(q, ASCOPE_EDRIVER, NULL);
    return;
  }
  memcpy(q->cursor, r->element[0]->str, r->element[0]->len + 1);
  /* kept past this callback, in case the consumer pauses mid-batch */
  if ((q->keys = rd_reply_dup(r->element[1])) == NULL) {
    scan_end(q, UV_ENOMEM, NULL);
    return;
  }
  q->next = 0;
  deliver(q);
}

static void on_cancel(ascope_op *op) {
  struct rd_scan *q = ascope_op_data(op);
  /* from the final callback (op already taken): the stream is ending */
  if (q->op == NULL) return;
  q->cancelled = true;
  if (!q->delivering) scan_end(q, ASCOPE_ECANCELED, NULL);
}

static void on_resume(ascope_op *op) {
  struct rd_scan *q = ascope_op_data(op);
  if (!q->paused) return;
  q->paused = false;
  if (!q->delivering && q->keys) deliver(q);
}

int ascope_redis_scan(ascope *s, ascope_redis *c, const char *match, size_t count,
                      ascope_redis_cb cb, void *ud, ascope_op **op) {
  if (op) *op = NULL;
  if (s == NULL || cb == NULL) return UV_EINVAL;
  int rc = rd_usable(c);
  if (rc) return rc;
  struct rd_scan *q = ascope_calloc(1, sizeof *q);
  if (q == NULL || (match && (q->match = ascope_strdup(match)) == NULL)) {
    ascope_free(q);
    return UV_ENOMEM;
  }
  q->c = c;
  q->s = s;
  q->cb = cb;
  q->ud = ud;
  strcpy(q->cursor, "0");
  if (count) snprintf(q->count, sizeof q->count, "%zu", count);
  q->op = ascope_op_begin(s, &rd_driver, on_cancel, q);
  if (q->op == NULL) {
    scan_free(q);
    return ASCOPE_ECANCELED;
  }
  ascope_op_set_resume(q->op, on_resume);
  if (op) *op = q->op;
  if ((rc = send_scan(q)) != 0) {
    ascope_op_end(q->op, 0, NULL, NULL); /* nothing happened: the scope is not failed */
    scan_free(q);
    if (op) *op = NULL;
  }
  return rc;
}
