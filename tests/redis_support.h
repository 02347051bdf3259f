/* Helpers for the Redis driver's tests, against the real server that
 * scripts/redis-start runs (its URL in ASCOPE_REDIS_URL; without it every
 * test fails and says so: none is skipped). A fresh runtime per test (each
 * Criterion test runs in its own process), a raw hiredis "oracle" on its
 * own blocking connection to set up and check the data independently of
 * the driver, key names unique to the test process, timers, a listener
 * that never answers, and the leak check every test ends with: no
 * connection left, every hiredis context opened closed. */
#ifndef ASCOPE_REDIS_SUPPORT_H
#define ASCOPE_REDIS_SUPPORT_H

#include <ascope/redis.h>
#include <criterion/criterion.h>
#include <hiredis/hiredis.h>
#include <stdbool.h>
#include <stdint.h>

#include "scope_record.h"

void t_init(void); /* TestSuite(name, .init = t_init, .fini = t_fini) */
void t_fini(void); /* frees the runtime, checks for leaks */
const char *t_url(void);
/* "base:<pid>": a key of this test process; 8 rotating buffers. */
const char *t_key(const char *base);

/* A scope on one connection (the test URL, options), body run, run to the end. */
int t_run_redis(t_scope *t, const char *options);

/* The raw oracle, blocking, on its own authenticated connection; the
 * reply is the caller's (freeReplyObject). */
redisReply *t_raw(const char *fmt, ...);
void t_raw_ok(const char *fmt, ...);       /* asserts a non-error reply */
long long t_raw_int(const char *fmt, ...); /* an INTEGER reply */
redisContext *t_raw_conn(void);            /* the oracle's connection */

/* A TCP listener on 127.0.0.1 that accepts nothing and answers nothing:
 * the kernel completes connects into its backlog. Its port. */
int t_blackhole(void);

/* The leak check: call when every scope is done. */
void t_check_clean(void);

/* A callback that counts calls and keeps the status, the reply's type,
 * integer and string, and the error's code; returns the status when pass
 * is set (an error fails the scope), else ret. */
typedef struct t_cb {
  int calls, status, ret, type;
  bool pass;
  long long integer;
  size_t len;
  char str[256];
} t_cb;
int t_cb_fn(ascope *s, int status, const ascope_redis_reply *reply, void *ud);

#endif
