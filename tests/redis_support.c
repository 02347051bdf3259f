#include "redis_support.h"

#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

ascope_rt *T_rt;
static redisContext *raw;
static int blackhole_fd = -1;

const char *t_url(void) {
  const char *u = getenv("ASCOPE_REDIS_URL");
  if (u == NULL || *u == '\0')
    cr_assert_fail("ASCOPE_REDIS_URL is not set: these tests need a Redis server. Start one "
                   "with `out=$(scripts/redis-start) && export \"$out\"` (scripts/test does it).");
  return u;
}

void t_init(void) {
  t_url();
  T_rt = ascope_rt_new(NULL);
  cr_assert_not_null(T_rt);
}

void t_fini(void) {
  if (T_rt) cr_assert_eq(ascope_rt_free(T_rt), 0);
  T_rt = NULL;
  t_check_clean();
  if (raw) redisFree(raw);
  raw = NULL;
  if (blackhole_fd >= 0) close(blackhole_fd);
  blackhole_fd = -1;
}

void t_check_clean(void) {
  cr_assert_eq(ascope_redis_stat("connections"), 0, "a connection was leaked");
  cr_assert_eq(ascope_redis_stat("opened"), ascope_redis_stat("closed"),
               "opened %lld and closed %lld contexts differ",
               (long long)ascope_redis_stat("opened"), (long long)ascope_redis_stat("closed"));
}

const char *t_key(const char *base) {
  static char bufs[8][96];
  static int k;
  char *b = bufs[k++ & 7];
  snprintf(b, sizeof bufs[0], "%s:%d", base, (int)getpid());
  return b;
}

int t_run_redis(t_scope *t, const char *options) {
  ascope *s = ascope_new(T_rt);
  cr_assert_eq(ascope_use_redis(s, t_url(), options), 0);
  return t_run(s, t);
}

/* ---- the raw oracle ------------------------------------------------------------------ */

/* redis://:password@host:port/db, as scripts/redis-start prints it */
redisContext *t_raw_conn(void) {
  if (raw) return raw;
  char pw[128] = "", host[64] = "";
  int port = 0;
  const char *u = t_url() + strlen("redis://:");
  const char *at = strrchr(u, '@');
  cr_assert_not_null(at);
  snprintf(pw, sizeof pw, "%.*s", (int)(at - u), u);
  cr_assert_eq(sscanf(at + 1, "%63[^:]:%d", host, &port), 2);
  raw = redisConnect(host, port);
  cr_assert(raw && !raw->err, "oracle: cannot connect");
  redisReply *r = redisCommand(raw, "AUTH %s", pw);
  cr_assert(r && r->type == REDIS_REPLY_STATUS, "oracle: AUTH failed");
  freeReplyObject(r);
  return raw;
}

static redisReply *vraw(const char *fmt, va_list ap) {
  redisReply *r = redisvCommand(t_raw_conn(), fmt, ap);
  cr_assert_not_null(r, "oracle: %s", raw->errstr);
  return r;
}

redisReply *t_raw(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  redisReply *r = vraw(fmt, ap);
  va_end(ap);
  return r;
}

void t_raw_ok(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  redisReply *r = vraw(fmt, ap);
  va_end(ap);
  cr_assert_neq(r->type, REDIS_REPLY_ERROR, "oracle: %s: %s", fmt, r->str);
  freeReplyObject(r);
}

long long t_raw_int(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  redisReply *r = vraw(fmt, ap);
  va_end(ap);
  cr_assert_eq(r->type, REDIS_REPLY_INTEGER, "oracle: %s: not an integer", fmt);
  long long v = r->integer;
  freeReplyObject(r);
  return v;
}

/* ---- timers, a blackhole ------------------------------------------------------------------- */

/* t_after and t_cancel_cb: tests/support/scope_record.c */

int t_blackhole(void) {
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t len = sizeof a;
  blackhole_fd = socket(AF_INET, SOCK_STREAM, 0);
  cr_assert_geq(blackhole_fd, 0);
  cr_assert_eq(bind(blackhole_fd, (struct sockaddr *)&a, sizeof a), 0);
  cr_assert_eq(listen(blackhole_fd, 16), 0);
  cr_assert_eq(getsockname(blackhole_fd, (struct sockaddr *)&a, &len), 0);
  return ntohs(a.sin_port);
}

/* ---- a recording callback ---------------------------------------------------------------- */

int t_cb_fn(ascope *s, int status, const ascope_redis_reply *reply, void *ud) {
  (void)s;
  t_cb *c = ud;
  c->calls++;
  c->status = status;
  c->type = ascope_redis_reply_type(reply);
  c->integer = ascope_redis_reply_integer(reply);
  size_t len = 0;
  const char *str = ascope_redis_reply_str(reply, &len);
  c->len = len;
  if (str) memcpy(c->str, str, len < sizeof c->str ? len : sizeof c->str - 1);
  return c->pass ? status : c->ret;
}
