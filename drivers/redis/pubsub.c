/* SUBSCRIBE / PSUBSCRIBE as a stream.
 *
 * hiredis reads what the socket holds (up to 16 KiB a read) and hands every
 * message parsed from it to the subscription's callback at once; it has no
 * way to stop in the middle. So back-pressure works in two steps: when the
 * consumer pauses, the messages already parsed are kept (copied) in a queue,
 * and the socket is not read any more (read_paused holds the poll's
 * readable event, whatever hiredis asks for). Further messages wait in the
 * kernel's socket buffer, then in the server's output buffer for the client
 * (bounded by the server's client-output-buffer-limit for pubsub: a
 * subscriber paused too long is disconnected by the server, and the stream
 * ends with ASCOPE_ECLOSED). Resuming delivers the queue, then reads again.
 *
 * A stop or cancel ends the operation at once and sends UNSUBSCRIBE; the
 * request lives until hiredis's last call for it (the unsubscribe reply, or
 * NULL when the context goes), and the connection accepts commands again
 * after that.
 */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

struct rd_msg {
  struct rd_msg *next;
  redisReply *r;
};

struct rd_sub {
  ascope_redis *c;
  ascope_op *op; /* NULL once ended */
  ascope *s;
  ascope_redis_cb cb;
  void *ud;
  char *channel;
  bool pattern, confirmed, paused, delivering, cancelled;
  struct rd_msg *head, *tail;
};

static void set_reading(struct rd_sub *q, bool on) {
  q->c->read_paused = !on;
  rd_update_poll(q->c);
}

static void drop_queue(struct rd_sub *q) {
  while (q->head) {
    struct rd_msg *m = q->head;
    q->head = m->next;
    rd_reply_free(m->r);
    ascope_free(m);
  }
  q->tail = NULL;
}

/* unsub: the server still holds the subscription */
static void sub_end(struct rd_sub *q, int status, const redisReply *err, bool unsub) {
  ascope_op *op = q->op;
  q->op = NULL;
  drop_queue(q);
  set_reading(q, true); /* the unsubscribe reply must be read */
  if (unsub && q->c->ac) {
    const char *argv[2] = {q->pattern ? "PUNSUBSCRIBE" : "UNSUBSCRIBE", q->channel};
    redisAsyncCommandArgv(q->c->ac, NULL, NULL, 2, argv, NULL);
  }
  int rc = q->cb(q->s, status, NULL, q->ud);
  rd_op_end(op, rc, err);
}

/* One message to the consumer; false when the stream ended or paused. */
static bool give(struct rd_sub *q, const redisReply *r) {
  q->delivering = true;
  int rc = q->cb(q->s, 0, (const ascope_redis_reply *)r, q->ud);
  q->delivering = false;
  if (q->cancelled && rc >= 0) rc = ASCOPE_ECANCELED;
  if (rc < 0 || rc == ASCOPE_STOP) {
    sub_end(q, rc < 0 ? rc : 0, NULL, true);
    return false;
  }
  if (rc == ASCOPE_PAUSE) {
    q->paused = true;
    set_reading(q, false);
    return false;
  }
  return true;
}

static void drain(struct rd_sub *q) {
  while (q->op && !q->paused && q->head) {
    struct rd_msg *m = q->head;
    q->head = m->next;
    if (q->head == NULL) q->tail = NULL;
    give(q, m->r);
    rd_reply_free(m->r);
    ascope_free(m);
  }
}

static void keep(struct rd_sub *q, const redisReply *r) {
  struct rd_msg *m = ascope_malloc(sizeof *m);
  if (m == NULL || (m->r = rd_reply_dup(r)) == NULL) {
    ascope_free(m);
    sub_end(q, UV_ENOMEM, NULL, true);
    return;
  }
  m->next = NULL;
  if (q->tail)
    q->tail->next = m;
  else
    q->head = m;
  q->tail = m;
}

static bool is(const redisReply *r, const char *kind) {
  const char *k = r->element[0]->str;
  return strcmp(k, kind) == 0 || (k[0] == 'p' && strcmp(k + 1, kind) == 0);
}

static void on_message(redisAsyncContext *ac, void *reply, void *priv) {
  struct rd_sub *q = priv;
  redisReply *r = reply;
  (void)ac;
  /* hiredis's last call for this request: the unsubscribe reply, or NULL */
  bool last = r == NULL || (r->type == REDIS_REPLY_ARRAY && r->elements >= 3 &&
                            r->element[0]->type == REDIS_REPLY_STRING && is(r, "unsubscribe"));
  if (q->op && last) sub_end(q, r ? 0 : ASCOPE_ECLOSED, NULL, false);
  if (last) {
    q->c->sub = NULL;
    ascope_free(q->channel);
    ascope_free(q);
    return;
  }
  if (q->op == NULL) return; /* ended: what comes before the unsubscribe reply is dropped */
  if (r->type == REDIS_REPLY_ERROR) {
    sub_end(q, ASCOPE_EDRIVER, r, true);
    return;
  }
  if (r->type != REDIS_REPLY_ARRAY || r->elements < 3 || r->element[0]->type != REDIS_REPLY_STRING)
    return;
  if (is(r, "subscribe")) {
    if (!q->confirmed && q->c->inflight) q->c->inflight--;
    q->confirmed = true;
    return;
  }
  if (q->paused || q->head)
    keep(q, r);
  else
    give(q, r);
}

static void on_cancel(ascope_op *op) {
  struct rd_sub *q = ascope_op_data(op);
  /* from the final callback (op already taken): the stream is ending */
  if (q->op == NULL) return;
  q->cancelled = true;
  if (!q->delivering) sub_end(q, ASCOPE_ECANCELED, NULL, true);
}

static void on_resume(ascope_op *op) {
  struct rd_sub *q = ascope_op_data(op);
  if (!q->paused || q->op == NULL) return;
  q->paused = false;
  if (!q->delivering) drain(q);
  if (q->op && !q->paused) set_reading(q, true);
}

int ascope_redis_subscribe(ascope *s, ascope_redis *c, const char *channel, int pattern,
                           ascope_redis_cb cb, void *ud, ascope_op **op) {
  if (op) *op = NULL;
  if (s == NULL || cb == NULL || channel == NULL || *channel == '\0') return UV_EINVAL;
  int rc = rd_usable(c);
  if (rc) return rc;
  struct rd_sub *q = ascope_calloc(1, sizeof *q);
  if (q == NULL || (q->channel = ascope_strdup(channel)) == NULL) {
    ascope_free(q);
    return UV_ENOMEM;
  }
  *q = (struct rd_sub){
      .c = c, .s = s, .cb = cb, .ud = ud, .channel = q->channel, .pattern = pattern != 0};
  q->op = ascope_op_begin(s, &rd_driver, on_cancel, q);
  if (q->op == NULL) {
    ascope_free(q->channel);
    ascope_free(q);
    return ASCOPE_ECANCELED;
  }
  const char *argv[2] = {pattern ? "PSUBSCRIBE" : "SUBSCRIBE", channel};
  if ((rc = rd_send(c, on_message, q, 2, argv, NULL)) != 0) {
    ascope_op_end(q->op, 0, NULL, NULL);
    ascope_free(q->channel);
    ascope_free(q);
    return rc;
  }
  ascope_op_set_resume(q->op, on_resume);
  c->sub = q;
  if (op) *op = q->op;
  return 0;
}
