/* ascope — the Redis driver: a connection as a use of a scope.
 *
 * hiredis's asynchronous API runs on the loop (its socket watched with a
 * uv_poll). Commands from any number of scopes sharing a connection are
 * pipelined: each is written as soon as the socket takes it, and replies
 * come back in the order the commands went. docs/drivers/redis.md.
 *
 * Target: "redis://[[user]:password@]host[:port][/db]", or key=value pairs
 * "host=... port=... user=... password=... db=... path=..." (path: a Unix
 * socket). Options, "key=value" separated by spaces or commas:
 *   connect_timeout=ms  the connect and its handshake (AUTH, SELECT),
 *                       default 10000
 *   db=n                the database to SELECT (overrides the target's)
 *
 * Errors: ascope_err_driver() is "redis". An error reply is ASCOPE_EDRIVER
 * with its first word as the code ("ERR", "WRONGTYPE", "WRONGPASS") and
 * its text as the message; a connection that cannot be made is the socket's
 * libuv status (UV_ECONNREFUSED...), ASCOPE_ETIMEDOUT past connect_timeout;
 * commands on a connection lost complete with ASCOPE_ECLOSED. Passwords
 * never appear in messages.
 */
#ifndef ASCOPE_REDIS_H
#define ASCOPE_REDIS_H

#include "driver.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ascope_redis ascope_redis;             /* a connection */
typedef struct ascope_redis_reply ascope_redis_reply; /* valid during the callback */

/* Reply types (RESP2). */
#define ASCOPE_REDIS_STRING 1
#define ASCOPE_REDIS_ARRAY 2
#define ASCOPE_REDIS_INTEGER 3
#define ASCOPE_REDIS_NIL 4
#define ASCOPE_REDIS_STATUS 5
#define ASCOPE_REDIS_ERROR 6

ASCOPE_EXTERN const ascope_driver *ascope_redis_driver(void);
ASCOPE_EXTERN int ascope_use_redis(ascope *s, const char *target, const char *options);
/* The index-th use as a connection: NULL unless it is a Redis one, held. */
ASCOPE_EXTERN ascope_redis *ascope_redis_resource(ascope *s, size_t index);

/* ---- commands -------------------------------------------------------------- */
/* cb runs once: status 0 with the reply; ASCOPE_EDRIVER with an error
 * reply; or, with reply NULL, ASCOPE_ECANCELED (the scope stopped: a
 * command already written cannot be recalled, its reply is dropped when it
 * comes) or ASCOPE_ECLOSED (the connection was lost). What cb returns ends
 * the operation: negative fails the scope. A NULL cb fails the scope on
 * any error. The reply, and everything reached from it, is valid until cb
 * returns. */
typedef int (*ascope_redis_cb)(ascope *s, int status, const ascope_redis_reply *reply, void *ud);

/* argv[i] is lens[i] bytes, any bytes (lens NULL: NUL-terminated); copied. */
ASCOPE_EXTERN int ascope_redis_command(ascope *s, ascope_redis *r, int argc, const char **argv,
                                       const size_t *lens, ascope_redis_cb cb, void *ud);
/* The same with NUL-terminated arguments, the list ended by NULL:
 * ascope_redis_call(s, r, cb, ud, "SET", key, value, NULL). At most 64. */
ASCOPE_EXTERN int ascope_redis_call(ascope *s, ascope_redis *r, ascope_redis_cb cb, void *ud, ...)
#if defined(__GNUC__)
    __attribute__((sentinel))
#endif
    ;

/* ---- replies ------------------------------------------------------------------ */
ASCOPE_EXTERN int ascope_redis_reply_type(const ascope_redis_reply *reply); /* 0 for NULL */
ASCOPE_EXTERN long long ascope_redis_reply_integer(const ascope_redis_reply *reply);
/* The bytes of a STRING, STATUS or ERROR reply (NUL-terminated, len may be
 * NULL); NULL for other types. */
ASCOPE_EXTERN const char *ascope_redis_reply_str(const ascope_redis_reply *reply, size_t *len);
ASCOPE_EXTERN size_t ascope_redis_reply_elements(const ascope_redis_reply *reply); /* ARRAY */
ASCOPE_EXTERN const ascope_redis_reply *ascope_redis_reply_element(const ascope_redis_reply *reply,
                                                                   size_t i); /* NULL past */

/* ---- MULTI / EXEC --------------------------------------------------------------- */
/* A use that sends MULTI when acquired and, when released, EXEC if the
 * scope succeeded, DISCARD otherwise. Everything sent on the connection
 * meanwhile is in the transaction: commands answer "QUEUED" (a STATUS
 * reply). A release reports EXEC's failures: an aborted transaction (a
 * WATCHed key changed: code "EXECABORT") or the first command that failed
 * in it. index: the connection's use in the same scope, appended before. */
ASCOPE_EXTERN int ascope_use_redis_multi(ascope *s, size_t index);
/* The same on a connection already held, by a parent scope. */
ASCOPE_EXTERN int ascope_use_redis_multi_on(ascope *s, ascope_redis *r);

/* ---- streams ----------------------------------------------------------------------- */
/* Stream callbacks get each item with status 0 and return ASCOPE_CONTINUE,
 * ASCOPE_PAUSE (until ascope_op_resume(*op)) or ASCOPE_STOP; then one final
 * call with reply NULL carries the end status (0 at the end or after a
 * stop). op (may be NULL) receives the operation, valid until then. */

/* SCAN: each key as a STRING reply. match (NULL: all) and count (0: the
 * server's default) are SCAN's. Paused, it sends no next SCAN. */
ASCOPE_EXTERN int ascope_redis_scan(ascope *s, ascope_redis *r, const char *match, size_t count,
                                    ascope_redis_cb cb, void *ud, ascope_op **op);
/* SUBSCRIBE channel (PSUBSCRIBE with pattern = 1): each message as its
 * ARRAY reply, ["message", channel, payload] or ["pmessage", pattern,
 * channel, payload]. It never ends by itself; a stop or a cancel sends
 * UNSUBSCRIBE. While a subscription is on a connection, nothing else can
 * be sent on it (ASCOPE_EBUSY): give it a connection of its own. Paused,
 * the socket is not read: messages wait in the server. */
ASCOPE_EXTERN int ascope_redis_subscribe(ascope *s, ascope_redis *r, const char *channel,
                                         int pattern, ascope_redis_cb cb, void *ud, ascope_op **op);

/* Process-wide counters, every runtime's summed (per runtime:
 * ascope_rt_stat(rt, "redis.<name>")): "connections" (alive), "opened" (hiredis contexts
 * made), "closed", "aborted", "commands" (sent), "cancelled" (commands
 * cancelled after they were sent), "dropped" (their replies, dropped when
 * they came), "max_pipeline" (the most commands ever awaiting replies on
 * one connection). UV_EINVAL for another name. */
ASCOPE_EXTERN int64_t ascope_redis_stat(const char *name);

#ifdef __cplusplus
}
#endif
#endif /* ASCOPE_REDIS_H */
