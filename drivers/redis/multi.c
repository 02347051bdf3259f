/* MULTI / EXEC as a use: `async with conn.multi():`.
 *
 * Acquiring sends MULTI; releasing sends EXEC when the scope's outcome is 0
 * and DISCARD otherwise, down the connection's pipeline behind everything
 * the scope sent, so EXEC always follows the body's last command. The
 * MULTI, EXEC or DISCARD in flight is a small request of its own: a cancel
 * (of the acquire) detaches it, and its reply is dropped.
 */
#include "internal.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct rd_mreq;

struct rd_multi { /* the use's state */
  ascope_res *res;
  ascope_redis *c;
  struct rd_mreq *q; /* in flight */
  bool committing;
};

struct rd_mreq {
  struct rd_multi *m;   /* NULL: detached */
  struct acount *stats; /* the runtime's counters, for a reply dropped once detached */
  bool release;
};

static void on_reply(redisAsyncContext *ac, void *reply, void *priv);

static int send_one(struct rd_multi *m, const char *cmd, bool release) {
  struct rd_mreq *q = ascope_malloc(sizeof *q);
  if (q == NULL) return UV_ENOMEM;
  *q = (struct rd_mreq){.m = m, .stats = m->c->stats, .release = release};
  const char *argv[1] = {cmd};
  int rc = rd_send(m->c, on_reply, q, 1, argv, NULL);
  if (rc) {
    ascope_free(q);
    return rc;
  }
  m->q = q;
  return 0;
}

/* EXEC's answer: nil when a WATCHed key changed; else one reply per
 * command, of which the first error fails the release. */
static void exec_result(struct rd_multi *m, const redisReply *r) {
  char code[32];
  if (r->type == REDIS_REPLY_NIL) {
    ascope_res_done(m->res, ASCOPE_EDRIVER, "EXECABORT",
                    "the transaction was aborted: a watched key changed");
    return;
  }
  if (r->type == REDIS_REPLY_ERROR) {
    rd_error_code(r, code, sizeof code);
    ascope_res_done(m->res, ASCOPE_EDRIVER, code, r->str);
    return;
  }
  for (size_t i = 0; r->type == REDIS_REPLY_ARRAY && i < r->elements; i++) {
    const redisReply *e = r->element[i];
    if (e->type == REDIS_REPLY_ERROR) {
      char msg[300];
      rd_error_code(e, code, sizeof code);
      snprintf(msg, sizeof msg, "command %zu of the transaction failed: %s", i + 1, e->str);
      ascope_res_done(m->res, ASCOPE_EDRIVER, code, msg);
      return;
    }
  }
  ascope_res_done(m->res, 0, NULL, NULL);
}

static void on_reply(redisAsyncContext *ac, void *reply, void *priv) {
  struct rd_mreq *q = priv;
  struct rd_multi *m = q->m;
  bool release = q->release;
  redisReply *r = reply;
  (void)ac;
  ascope_free(q);
  if (m == NULL) {
    if (r) RD_COUNT(q->stats, RDS_DROPPED, 1);
    return;
  }
  m->q = NULL;
  if (r && m->c->inflight) m->c->inflight--;
  if (r == NULL) { /* the connection went: the server discarded the transaction */
    int st = !release || m->committing ? ASCOPE_ECLOSED : 0;
    ascope_res_done(m->res, st, NULL, st ? "the connection was closed in the transaction" : NULL);
    return;
  }
  if (release && m->committing) {
    exec_result(m, r);
    return;
  }
  if (r->type == REDIS_REPLY_ERROR) {
    char code[32];
    rd_error_code(r, code, sizeof code);
    ascope_res_done(m->res, ASCOPE_EDRIVER, code, r->str);
    return;
  }
  ascope_res_done(m->res, 0, NULL, NULL);
}

/* The connection the MULTI is on: handed over (ascope_use_redis_multi_on),
 * or, with the "at" vtable, the one acquired by use number index of the
 * same scope, the index travelling as the use's argument (index + 1, so 0
 * stays "none"): the connection does not exist yet when the use is added,
 * and uses are acquired in order. */
static struct ascope_redis *find_conn(ascope_res *res, const void *arg, bool at) {
  if (!at) return (ascope_redis *)arg;
  return ascope_redis_resource(ascope_res_scope(res), (size_t)(uintptr_t)arg - 1);
}

static void multi_start(ascope_res *res, const void *arg, bool at) {
  struct rd_multi *m = ascope_res_state(res);
  m->res = res;
  m->c = find_conn(res, arg, at);
  if (m->c == NULL) {
    ascope_res_done(res, UV_EINVAL, NULL, "MULTI: no redis connection held at that use");
    return;
  }
  int rc = rd_usable(m->c);
  if (rc == 0) rc = send_one(m, "MULTI", false);
  if (rc) ascope_res_done(res, rc, NULL, "MULTI: the connection cannot take it");
}

static void multi_acquire(ascope_res *res, const void *arg, const char *options) {
  (void)options;
  multi_start(res, arg, false);
}

static void multi_acquire_at(ascope_res *res, const void *arg, const char *options) {
  (void)options;
  multi_start(res, arg, true);
}

/* MULTI is on its way: DISCARD follows it, so the connection leaves the
 * transaction state; MULTI's reply is dropped. */
static void multi_cancel(ascope_res *res) {
  struct rd_multi *m = ascope_res_state(res);
  if (m->q) m->q->m = NULL;
  m->q = NULL;
  const char *argv[1] = {"DISCARD"};
  rd_send(m->c, NULL, NULL, 1, argv, NULL);
  ascope_res_done(res, ASCOPE_ECANCELED, NULL, "cancelled while starting the transaction");
}

static void multi_release(ascope_res *res, int outcome) {
  struct rd_multi *m = ascope_res_state(res);
  m->committing = outcome == 0;
  int rc = rd_usable(m->c);
  if (rc == ASCOPE_ECLOSED) { /* the server dropped the transaction with the connection */
    ascope_res_done(res, m->committing ? ASCOPE_ECLOSED : 0, NULL,
                    m->committing ? "the connection was lost: nothing was committed" : NULL);
    return;
  }
  rc = send_one(m, m->committing ? "EXEC" : "DISCARD", true);
  if (rc) ascope_res_done(res, rc, NULL, "cannot send EXEC or DISCARD");
}

/* EXEC or DISCARD is written and cannot be recalled: its reply (or the
 * connection's close) completes the release late, as the core allows. */
static void multi_abort(ascope_res *res) {
  struct rd_multi *m = ascope_res_state(res);
  RD_COUNT(m->c ? m->c->stats : NULL, RDS_ABORTED, 1);
}

static const ascope_driver multi_driver = {
    .abi = ASCOPE_DRIVER_ABI,
    .name = "redis-multi",
    .state_size = sizeof(struct rd_multi),
    .acquire = multi_acquire,
    .release = multi_release,
    .cancel = multi_cancel,
    .abort = multi_abort,
};

static const ascope_driver multi_at_driver = {
    .abi = ASCOPE_DRIVER_ABI,
    .name = "redis-multi",
    .state_size = sizeof(struct rd_multi),
    .acquire = multi_acquire_at,
    .release = multi_release,
    .cancel = multi_cancel,
    .abort = multi_abort,
};

int ascope_use_redis_multi(ascope *s, size_t index) {
  if (index == SIZE_MAX) return UV_EINVAL;
  return ascope_use(s, &multi_at_driver, (const void *)(uintptr_t)(index + 1), NULL);
}

int ascope_use_redis_multi_on(ascope *s, ascope_redis *r) {
  if (r == NULL) return UV_EINVAL;
  return ascope_use(s, &multi_driver, r, NULL);
}
