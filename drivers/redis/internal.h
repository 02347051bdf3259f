/* Internal structures of the Redis driver.
 *
 * Everything runs on the loop thread. A connection (struct ascope_redis) is
 * the core's resource state itself: the core keeps that memory until the
 * release completes, even after an abort, and the release completes only
 * once hiredis's context is freed and both libuv handles have closed.
 *
 * hiredis may not be freed from inside its own calls (a reply callback, the
 * connect callback): a guard (`hiredis`, core/guard.h) counts how deep the
 * loop is inside hiredis, and a close asked for meanwhile is deferred until
 * the outermost call returns.
 */
#ifndef ASCOPE_REDIS_INTERNAL_H
#define ASCOPE_REDIS_INTERNAL_H

#include "ascope/redis.h"

#include "../../core/counters.h"
#include "../../core/guard.h"

#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <stdatomic.h>
#include <stdbool.h>

/* ---- target and options (target.c) ------------------------------------------ */
struct rd_target {
  char *host, *path, *user, *password;
  int port;
  unsigned db;
  uint64_t connect_ms;
};
int rd_target_parse(struct rd_target *t, const char *target, const char *options, char *err,
                    size_t errlen);
void rd_target_free(struct rd_target *t); /* wipes the password */

struct rd_sub;
struct rd_cmd;

struct ascope_redis {
  ascope_res *res;
  uv_loop_t *loop;
  struct acount *stats;  /* the runtime's counters: the driver's state there */
  redisAsyncContext *ac; /* NULL once hiredis freed it */
  struct rd_target t;
  uv_poll_t poll;     /* hiredis's socket */
  uv_timer_t timer;   /* the connect deadline */
  uv_prepare_t flush; /* writes commands sent outside on_poll, before the loop blocks */
  unsigned open_handles;
  int events;         /* what hiredis asked to watch */
  int applied;        /* what the poll watches */
  bool read_paused;   /* a paused subscription: the socket is not read */
  bool in_poll;       /* on_poll runs: it writes what its callbacks sent */
  bool write_blocked; /* the socket took less than hiredis had: watch for writable */
  /* calls into hiredis on the stack; its deferred flag: a close waits for them */
  struct aguard hiredis;
  unsigned handshake; /* AUTH / SELECT / PING replies still to come */
  bool acquired, closing, done;
  size_t inflight;         /* commands awaiting replies */
  struct rd_cmd *cmd_pool; /* command records to reuse (command.c) */
  unsigned cmd_pooled;
  struct rd_sub *sub;
  int fail_status;
  char fail_code[32];
  char fail_msg[256];
};

/* ---- the socket (adapter.c) ---------------------------------------------------- */
/* Watches ac's socket for hiredis: its event hooks on a uv_poll. */
int rd_attach(ascope_redis *c);
void rd_update_poll(ascope_redis *c);
void rd_flush_init(ascope_redis *c); /* the prepare handle, unstarted */

/* ---- the connection (conn.c) ----------------------------------------------------- */
extern const ascope_driver rd_driver;
void rd_context_gone(ascope_redis *c); /* hiredis freed the context */
void rd_handle_closed(uv_handle_t *h);
void rd_after_hiredis(ascope_redis *c); /* a call into hiredis returned */
/* Sends a command; fn(ac, reply, priv) runs with the reply, or NULL when the
 * context goes. 0 or ASCOPE_ECLOSED / UV_ENOMEM. */
int rd_send(ascope_redis *c, redisCallbackFn *fn, void *priv, int argc, const char **argv,
            const size_t *lens);
int rd_usable(ascope_redis *c); /* 0, ASCOPE_ECLOSED or ASCOPE_EBUSY */

/* ---- commands (command.c) --------------------------------------------------------- */
void rd_cmd_pool_free(ascope_redis *c); /* when no command of c is left */

/* ---- replies (reply.c) ------------------------------------------------------------- */
redisReply *rd_reply_dup(const redisReply *r); /* a deep copy; NULL: no memory */
void rd_reply_free(redisReply *r);
/* The reader's reply objects, one allocation each (a connection's reader
 * uses them from its connect on). */
extern redisReplyObjectFunctions rd_reply_fns;
/* An error reply's code (its first word, when upper case; else "ERR"). */
void rd_error_code(const redisReply *r, char *code, size_t cap);
/* Ends op with rc, adding the reply's error when it is one. */
void rd_op_end(ascope_op *op, int rc, const redisReply *reply);

/* ---- counters: "redis.<name>" per runtime, ascope_redis_stat for the process -------- */
enum {
  RDS_CONNECTIONS,
  RDS_OPENED,
  RDS_CLOSED,
  RDS_ABORTED,
  RDS_COMMANDS,
  RDS_CANCELLED,
  RDS_DROPPED,
  RDS_MAX_PIPELINE,
  RDS_NSTATS
};
extern struct acount rd_stats; /* the process's */
/* Counts n on counter k of a runtime's set (NULL: the process's only) and the process's. */
#define RD_COUNT(stats, k, n) acount_add((stats), &rd_stats, (k), (n))

#endif
