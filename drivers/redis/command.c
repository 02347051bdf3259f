/* Commands: one operation each, pipelined on the connection.
 *
 * hiredis writes a command into its output buffer at once and sends the
 * buffer when the socket is writable, so commands from many scopes issued
 * in one loop iteration leave in one write, and their replies come back in
 * the same order. A command cannot be taken back once it is in that
 * buffer: cancelling one ends its operation at once (ASCOPE_ECANCELED), and
 * the request stays, detached, until its reply arrives and is dropped.
 */
#include "internal.h"

#include <stdarg.h>
#include <stdlib.h>

struct rd_cmd {
  ascope_redis *c;
  ascope_op *op; /* NULL once the operation ended: the reply is dropped */
  ascope *s;
  ascope_redis_cb cb;
  void *ud;
  bool answering;      /* its callback is running */
  struct rd_cmd *next; /* in the connection's pool */
};

/* Command records are recycled on their connection: with many commands
 * pipelined, an allocation and a free each showed in the profile. The pool
 * keeps at most POOL_MAX and goes with the connection (rd_cmd_pool_free,
 * once hiredis answered every command it held). */
#define POOL_MAX 256

static struct rd_cmd *cmd_get(ascope_redis *c) {
  struct rd_cmd *q = c->cmd_pool;
  if (q == NULL) return ascope_malloc(sizeof *q);
  c->cmd_pool = q->next;
  c->cmd_pooled--;
  return q;
}

static void cmd_put(struct rd_cmd *q) {
  ascope_redis *c = q->c;
  if (c->cmd_pooled >= POOL_MAX) {
    ascope_free(q);
    return;
  }
  q->next = c->cmd_pool;
  c->cmd_pool = q;
  c->cmd_pooled++;
}

void rd_cmd_pool_free(ascope_redis *c) {
  while (c->cmd_pool) {
    struct rd_cmd *q = c->cmd_pool;
    c->cmd_pool = q->next;
    ascope_free(q);
  }
  c->cmd_pooled = 0;
}

static void on_reply(redisAsyncContext *ac, void *reply, void *priv) {
  struct rd_cmd *q = priv;
  redisReply *r = reply;
  (void)ac;
  if (r && q->c->inflight) q->c->inflight--;
  if (q->op == NULL) {
    if (r) RD_COUNT(q->c->stats, RDS_DROPPED, 1);
    cmd_put(q);
    return;
  }
  int status = r == NULL ? ASCOPE_ECLOSED : r->type == REDIS_REPLY_ERROR ? ASCOPE_EDRIVER : 0;
  q->answering = true;
  int rc = q->cb ? q->cb(q->s, status, (const ascope_redis_reply *)r, q->ud) : status;
  ascope_op *op = q->op;
  cmd_put(q);
  if (r == NULL && rc < 0)
    ascope_op_end(op, rc, NULL, "the connection was closed before the reply came");
  else
    rd_op_end(op, rc, r);
}

static void on_cancel(ascope_op *op) {
  struct rd_cmd *q = ascope_op_data(op);
  /* Cancelled from its own callback (which failed or cancelled the scope):
   * the reply is already delivered, and the operation ends with what the
   * callback returns. Ending it here too would call the callback twice. */
  if (q->answering) return;
  q->op = NULL; /* on_reply frees it */
  RD_COUNT(q->c->stats, RDS_CANCELLED, 1);
  int rc = q->cb ? q->cb(q->s, ASCOPE_ECANCELED, NULL, q->ud) : ASCOPE_ECANCELED;
  ascope_op_end(op, rc, NULL, "cancelled after it was sent: its reply will be dropped");
}

int ascope_redis_command(ascope *s, ascope_redis *c, int argc, const char **argv,
                         const size_t *lens, ascope_redis_cb cb, void *ud) {
  if (s == NULL || argc <= 0 || argv == NULL) return UV_EINVAL;
  for (int i = 0; i < argc; i++)
    if (argv[i] == NULL) return UV_EINVAL;
  int rc = rd_usable(c);
  if (rc) return rc;
  struct rd_cmd *q = cmd_get(c);
  if (q == NULL) return UV_ENOMEM;
  *q = (struct rd_cmd){.c = c, .s = s, .cb = cb, .ud = ud};
  q->op = ascope_op_begin(s, &rd_driver, on_cancel, q);
  if (q->op == NULL) {
    cmd_put(q);
    return ASCOPE_ECANCELED;
  }
  rc = rd_send(c, on_reply, q, argc, argv, lens);
  if (rc) {
    ascope_op_end(q->op, 0, NULL, NULL); /* nothing happened: the scope is not failed */
    cmd_put(q);
  }
  return rc;
}

int ascope_redis_call(ascope *s, ascope_redis *r, ascope_redis_cb cb, void *ud, ...) {
  const char *argv[64];
  int argc = 0;
  va_list ap;
  va_start(ap, ud);
  const char *a;
  while ((a = va_arg(ap, const char *)) != NULL) {
    if (argc == 64) {
      va_end(ap);
      return UV_E2BIG;
    }
    argv[argc++] = a;
  }
  va_end(ap);
  return ascope_redis_command(s, r, argc, argv, NULL, cb, ud);
}
