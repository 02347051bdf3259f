/* The connection: acquire (connect, then AUTH / SELECT or a PING), release,
 * cancel, abort, and the driver's table and counters.
 *
 * Every way out — release, abort, a failed or cancelled acquire, a lost
 * connection — goes through one close: hiredis's context is freed (which
 * answers whatever is still pending with a NULL reply), then the poll, the
 * timer and the flush handle close, and only when their close callbacks have
 * run does
 * ascope_res_done complete: the core reuses the state's memory at once.
 */
#include "internal.h"

#include <errno.h>
#include <hiredis/sds.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

struct acount rd_stats;

/* ---- the end ---------------------------------------------------------------------- */

static void maybe_done(ascope_redis *c) {
  if (c->open_handles || c->ac || !c->closing || c->done) return;
  c->done = true;
  rd_target_free(&c->t);
  rd_cmd_pool_free(c); /* hiredis answered every command with its context */
  RD_COUNT(c->stats, RDS_CONNECTIONS, -1);
  int status = c->fail_status;
  char code[sizeof c->fail_code], msg[sizeof c->fail_msg];
  memcpy(code, c->fail_code, sizeof code);
  memcpy(msg, c->fail_msg, sizeof msg);
  /* the state is the core's again after this call: nothing of c after it */
  ascope_res_done(c->res, status, code[0] ? code : NULL, msg[0] ? msg : NULL);
}

void rd_handle_closed(uv_handle_t *h) {
  ascope_redis *c = h->data;
  c->open_handles--;
  maybe_done(c);
}

static void finish_close(ascope_redis *c) {
  aguard_take(&c->hiredis); /* no close pending now */
  uv_timer_stop(&c->timer);
  if (c->ac) { /* answers what is pending with NULL, then cleanup() */
    aguard_enter(&c->hiredis);
    redisAsyncFree(c->ac);
    aguard_leave(&c->hiredis);
  }
  if (!uv_is_closing((uv_handle_t *)&c->timer)) {
    uv_close((uv_handle_t *)&c->timer, rd_handle_closed);
    uv_close((uv_handle_t *)&c->flush, rd_handle_closed);
  }
  maybe_done(c);
}

static void rd_close(ascope_redis *c) {
  c->closing = true;
  if (aguard_busy(&c->hiredis) && c->ac) { /* hiredis is on the stack: free it once it returns */
    aguard_defer(&c->hiredis);
    return;
  }
  finish_close(c);
}

void rd_after_hiredis(ascope_redis *c) {
  if (!aguard_busy(&c->hiredis) && aguard_deferred(&c->hiredis)) finish_close(c);
}

static void acquire_fail(ascope_redis *c, int status, const char *code, const char *msg) {
  if (c->acquired || c->closing) return;
  c->fail_status = status;
  snprintf(c->fail_code, sizeof c->fail_code, "%s", code ? code : "");
  snprintf(c->fail_msg, sizeof c->fail_msg, "%s", msg ? msg : "");
  rd_close(c);
}

static const char *where(ascope_redis *c, char *buf, size_t cap) {
  if (c->t.path)
    snprintf(buf, cap, "%s", c->t.path);
  else
    snprintf(buf, cap, "%s:%d", c->t.host, c->t.port);
  return buf;
}

/* hiredis freed the context: on its own (a lost connection, a failed
 * connect) or because we asked. */
void rd_context_gone(ascope_redis *c) {
  RD_COUNT(c->stats, RDS_CLOSED, 1);
  c->inflight = 0;
  if (!c->acquired) {
    char w[128], m[192];
    snprintf(m, sizeof m, "the connection to %s was closed while connecting",
             where(c, w, sizeof w));
    acquire_fail(c, ASCOPE_ECLOSED, NULL, m);
  }
}

/* ---- connecting --------------------------------------------------------------------- */

static void acquired(ascope_redis *c) {
  uv_timer_stop(&c->timer);
  c->acquired = true;
  ascope_res_done(c->res, 0, NULL, NULL);
}

static void on_handshake(redisAsyncContext *ac, void *reply, void *priv) {
  ascope_redis *c = priv;
  redisReply *r = reply;
  (void)ac;
  if (c->closing || r == NULL) return; /* the close reports it */
  if (r->type == REDIS_REPLY_ERROR) {
    char code[32], m[256];
    rd_error_code(r, code, sizeof code);
    snprintf(m, sizeof m, "connecting: %s", r->str);
    acquire_fail(c, ASCOPE_EDRIVER, code, m);
    return;
  }
  if (--c->handshake == 0) acquired(c);
}

static int send_handshake(ascope_redis *c) {
  const char *argv[3];
  int rc = 0;
  char db[16];
  if (c->t.password) {
    int n = 0;
    argv[n++] = "AUTH";
    if (c->t.user) argv[n++] = c->t.user;
    argv[n++] = c->t.password;
    rc = redisAsyncCommandArgv(c->ac, on_handshake, c, n, argv, NULL);
    c->handshake++;
    /* hiredis holds the command now; the password is needed no more */
    memset(c->t.password, 0, strlen(c->t.password));
  }
  if (rc == REDIS_OK && c->t.db) {
    snprintf(db, sizeof db, "%u", c->t.db);
    argv[0] = "SELECT";
    argv[1] = db;
    rc = redisAsyncCommandArgv(c->ac, on_handshake, c, 2, argv, NULL);
    c->handshake++;
  }
  if (rc == REDIS_OK && c->handshake == 0) { /* a server that answers, not just a listener */
    argv[0] = "PING";
    rc = redisAsyncCommandArgv(c->ac, on_handshake, c, 1, argv, NULL);
    c->handshake++;
  }
  return rc == REDIS_OK ? 0 : UV_ENOMEM;
}

static void on_connect(const redisAsyncContext *ac, int status) {
  int e = errno; /* hiredis set it from the socket's error */
  ascope_redis *c = ac->data;
  if (status == REDIS_OK || c->closing) return; /* the handshake's replies decide */
  /* hiredis frees the context right after this returns: rd_close waits */
  char w[128], m[256];
  int st = e > 0 ? -e : ASCOPE_EDRIVER;
  snprintf(m, sizeof m, "cannot connect to %s: %s", where(c, w, sizeof w),
           e > 0 ? uv_strerror(st) : ac->errstr);
  acquire_fail(c, st, e > 0 ? uv_err_name(st) : NULL, m);
}

static void on_connect_timeout(uv_timer_t *t) {
  ascope_redis *c = t->data;
  char w[128], m[192];
  snprintf(m, sizeof m, "connecting to %s timed out after %llu ms", where(c, w, sizeof w),
           (unsigned long long)c->t.connect_ms);
  acquire_fail(c, ASCOPE_ETIMEDOUT, NULL, m);
}

static int connect_start(ascope_redis *c, char *err, size_t errlen) {
  c->ac = c->t.path ? redisAsyncConnectUnix(c->t.path) : redisAsyncConnect(c->t.host, c->t.port);
  if (c->ac == NULL) {
    snprintf(err, errlen, "out of memory");
    return UV_ENOMEM;
  }
  RD_COUNT(c->stats, RDS_OPENED, 1);
  if (c->ac->err) { /* before any hook is set: freed at once, quietly */
    char w[128];
    snprintf(err, errlen, "cannot connect to %s: %s", where(c, w, sizeof w), c->ac->errstr);
    redisAsyncFree(c->ac);
    c->ac = NULL;
    RD_COUNT(c->stats, RDS_CLOSED, 1);
    return ASCOPE_EDRIVER;
  }
  c->ac->data = c;
  c->ac->c.reader->fn = &rd_reply_fns; /* before any reply is read */
  int rc = rd_attach(c);
  if (rc) {
    snprintf(err, errlen, "cannot watch the socket: %s", uv_strerror(rc));
    redisAsyncFree(c->ac);
    c->ac = NULL;
    RD_COUNT(c->stats, RDS_CLOSED, 1);
    return rc;
  }
  /* after the hooks: setting it asks for the first write event */
  redisAsyncSetConnectCallback(c->ac, on_connect);
  if (send_handshake(c)) {
    snprintf(err, errlen, "out of memory");
    return UV_ENOMEM;
  }
  if (c->t.connect_ms) uv_timer_start(&c->timer, on_connect_timeout, c->t.connect_ms, 0);
  return 0;
}

static void rd_acquire(ascope_res *res, const void *arg, const char *options) {
  ascope_redis *c = ascope_res_state(res);
  c->res = res;
  c->loop = ascope_rt_loop(ascope_res_rt(res));
  uv_timer_init(c->loop, &c->timer); /* cannot fail */
  c->timer.data = c;
  uv_unref((uv_handle_t *)&c->timer);
  rd_flush_init(c);
  c->open_handles = 2;
  /* NULL when out of memory: counted for the process only, then failed */
  c->stats = ascope_rt_driver_state(ascope_res_rt(res), &rd_driver, sizeof *c->stats, NULL);
  RD_COUNT(c->stats, RDS_CONNECTIONS, 1);
  char err[256] = "out of memory";
  int rc = c->stats ? rd_target_parse(&c->t, arg, options, err, sizeof err) : UV_ENOMEM;
  if (rc == 0) rc = connect_start(c, err, sizeof err);
  if (rc) acquire_fail(c, rc, NULL, err);
}

static void rd_cancel(ascope_res *res) {
  acquire_fail(ascope_res_state(res), ASCOPE_ECANCELED, NULL, "cancelled while connecting");
}

/* The connection closes the same way whatever the outcome: commands
 * cancelled earlier and still awaiting replies are answered NULL by
 * hiredis and dropped. */
static void rd_release(ascope_res *res, int outcome) {
  (void)outcome;
  rd_close(ascope_res_state(res));
}

/* Nothing here waits on the server, but a release still under way (its
 * close callbacks to come) completes late, as the core allows. */
static void rd_abort(ascope_res *res) {
  ascope_redis *c = ascope_res_state(res);
  RD_COUNT(c->stats, RDS_ABORTED, 1);
  rd_close(c);
}

static int rd_check(ascope_res *res) {
  ascope_redis *c = ascope_res_state(res);
  return c->ac && !c->closing && c->inflight == 0 && c->sub == NULL ? 0 : ASCOPE_ECLOSED;
}

const ascope_driver rd_driver = {
    .abi = ASCOPE_DRIVER_ABI,
    .name = "redis",
    .state_size = sizeof(ascope_redis),
    .acquire = rd_acquire,
    .release = rd_release,
    .cancel = rd_cancel,
    .abort = rd_abort,
    .check = rd_check,
};

const ascope_driver *ascope_redis_driver(void) {
  return &rd_driver;
}

int ascope_use_redis(ascope *s, const char *target, const char *options) {
  return ascope_use_str(s, &rd_driver, target ? target : "", options);
}

ascope_redis *ascope_redis_resource(ascope *s, size_t index) {
  return ascope_resource_of(s, index, &rd_driver);
}

/* ---- sending ------------------------------------------------------------------------------ */

int rd_usable(ascope_redis *c) {
  if (c == NULL || c->ac == NULL || c->closing || !c->acquired) return ASCOPE_ECLOSED;
  if (c->sub || (c->ac->c.flags & REDIS_SUBSCRIBED)) return ASCOPE_EBUSY;
  return 0;
}

/* n in decimal at p; returns the end. */
static char *put_uint(char *p, size_t n) {
  if (n < 10) { /* argument counts and short keys and values: most of them */
    *p = (char)('0' + n);
    return p + 1;
  }
  char tmp[24];
  int k = 0;
  do {
    tmp[k++] = (char)('0' + n % 10);
  } while ((n /= 10) != 0);
  while (k) *p++ = tmp[--k];
  return p;
}

/* The command in RESP at p, "*argc\r\n" then "$len\r\n<bytes>\r\n" per
 * argument; returns the end. At most resp_size(...) bytes. */
static char *put_resp(char *p, int argc, const char **argv, const size_t *len) {
  *p++ = '*';
  p = put_uint(p, (size_t)argc);
  *p++ = '\r', *p++ = '\n';
  for (int i = 0; i < argc; i++) {
    *p++ = '$';
    p = put_uint(p, len[i]);
    *p++ = '\r', *p++ = '\n';
    memcpy(p, argv[i], len[i]);
    p += len[i];
    *p++ = '\r', *p++ = '\n';
  }
  return p;
}

#if HIREDIS_MAJOR == 0
/* Whether hiredis must see the command: SUBSCRIBE, UNSUBSCRIBE (P- too) and
 * MONITOR change how it matches replies. */
static bool hiredis_must_parse(const char *name, size_t n) {
  if (n && (name[0] == 'p' || name[0] == 'P')) name++, n--;
  return (n == 9 && strncasecmp(name, "subscribe", 9) == 0) ||
         (n == 11 && strncasecmp(name, "unsubscribe", 11) == 0) ||
         (n == 7 && strncasecmp(name, "monitor", 7) == 0);
}

/* What redisAsyncFormattedCommand does for any other command, without
 * parsing the command back out of its RESP (strchr, strtol and three
 * strncasecmp a command) and without copying it: the command is formatted
 * straight into the context's output buffer, and its callback queued. This
 * uses hiredis 0.14's public structures (async.h, sds.h) as its own
 * __redisAsyncCommand does, which frees the callback record with free()
 * once the reply came; another major version takes the public call. */
static int append_direct(ascope_redis *c, redisCallbackFn *fn, void *priv, int argc,
                         const char **argv, const size_t *len, size_t size) {
  redisContext *ctx = &c->ac->c;
  redisCallback *cb = malloc(sizeof *cb);
  sds ob = cb ? sdsMakeRoomFor(ctx->obuf, size) : NULL;
  if (ob == NULL) {
    free(cb);
    return UV_ENOMEM;
  }
  ctx->obuf = ob;
  char *end = put_resp(ob + sdslen(ob), argc, argv, len);
  sdsIncrLen(ob, (int)(end - (ob + sdslen(ob))));
  *cb = (redisCallback){.fn = fn, .privdata = priv, .pending_subs = 1};
  redisCallbackList *l = &c->ac->replies;
  if (l->tail)
    l->tail->next = cb;
  else
    l->head = cb;
  l->tail = cb;
  if (c->ac->ev.addWrite) c->ac->ev.addWrite(c->ac->ev.data);
  return 0;
}
#endif

/* Commands are formatted here rather than by redisAsyncCommandArgv:
 * hiredis builds each in a fresh sds with sdscatfmt, several allocations
 * and a format parse per argument, which was the largest single cost of a
 * pipelined command. */
int rd_send(ascope_redis *c, redisCallbackFn *fn, void *priv, int argc, const char **argv,
            const size_t *lens) {
  if (c->ac == NULL || (c->ac->c.flags & (REDIS_DISCONNECTING | REDIS_FREEING)))
    return ASCOPE_ECLOSED;
  size_t own_small[16], *own = NULL, size = 16; /* "*argc\r\n" */
  const size_t *len = lens;
  if (lens == NULL) {
    own = argc <= 16 ? own_small : ascope_malloc((size_t)argc * sizeof *own);
    if (own == NULL) return UV_ENOMEM;
    for (int i = 0; i < argc; i++) own[i] = strlen(argv[i]);
    len = own;
  }
  for (int i = 0; i < argc; i++) size += len[i] + 26; /* "$" len "\r\n" bytes "\r\n" */
  int rc;
#if HIREDIS_MAJOR == 0
  if (size <= INT_MAX && !hiredis_must_parse(argv[0], len[0])) {
    rc = append_direct(c, fn, priv, argc, argv, len, size);
    goto sent;
  }
#endif
  /* hiredis parses a (P)SUBSCRIBE's channels back out of the command with
   * strchr, past its length up to a NUL: without one it read whatever
   * followed (stack garbage), and a '$' there made a bogus channel or
   * failed its assertion in nextArgument. Hence the terminator, not sent. */
  char small[512], *buf = size < sizeof small ? small : ascope_malloc(size + 1);
  if (buf == NULL) {
    rc = UV_ENOMEM;
    goto sent;
  }
  char *end = put_resp(buf, argc, argv, len);
  *end = '\0';
  rc = redisAsyncFormattedCommand(c->ac, fn, priv, buf, (size_t)(end - buf)) == REDIS_OK
           ? 0
           : UV_ENOMEM;
  if (buf != small) ascope_free(buf);
sent:
  if (own != own_small) ascope_free(own);
  if (rc) return rc;
  RD_COUNT(c->stats, RDS_COMMANDS, 1);
  if (fn) acount_max(c->stats, &rd_stats, RDS_MAX_PIPELINE, (long long)++c->inflight);
  return 0;
}

static const char *const stat_names[RDS_NSTATS] = {
    [RDS_CONNECTIONS] = "connections", [RDS_OPENED] = "opened",
    [RDS_CLOSED] = "closed",           [RDS_ABORTED] = "aborted",
    [RDS_COMMANDS] = "commands",       [RDS_CANCELLED] = "cancelled",
    [RDS_DROPPED] = "dropped",         [RDS_MAX_PIPELINE] = "max_pipeline",
};

int64_t ascope_redis_stat(const char *name) {
  return acount_read(&rd_stats, stat_names, RDS_NSTATS, name);
}

/* "redis.<name>" of ascope_rt_stat: the runtime's own counters. */
static int64_t rt_stat(void *state, const char *name) {
  return acount_read(state, stat_names, RDS_NSTATS, name);
}

/* Found by name ("redis") once the library is loaded: ascope_driver_find(). */
__attribute__((constructor)) static void redis_driver_register(void) {
  ascope_driver_register(&rd_driver);
  ascope_driver_set_stats(&rd_driver, rt_stat);
}
