/* The Redis driver: connecting (refused, wrong password, a listener that
 * never answers, cancelled), commands with binary arguments and every
 * reply type, error replies, cancel and deadlines mid-command, pipelining
 * from many scopes, MULTI/EXEC by the scope's outcome, and a release cut
 * short. Against the real server of scripts/redis-start. */
#include "redis_support.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

TestSuite(redis, .init = t_init, .fini = t_fini);

static ascope_redis *conn(ascope *s) {
  ascope_redis *r = ascope_redis_resource(s, 0);
  cr_assert_not_null(r);
  return r;
}

/* ---- commands and replies ---------------------------------------------------------------- */

static const char bin[] = {'a', 0, 'b', '\r', '\n', 0, (char)0xff};

struct basic {
  t_scope t;
  t_cb set, get, incr, nil;
  int list_checked;
};

static int list_cb(ascope *s, int status, const ascope_redis_reply *r, void *ud) {
  (void)s;
  struct basic *b = ud;
  cr_assert_eq(status, 0);
  cr_assert_eq(ascope_redis_reply_type(r), ASCOPE_REDIS_ARRAY);
  cr_assert_eq(ascope_redis_reply_elements(r), 3);
  cr_assert_str_eq(ascope_redis_reply_str(ascope_redis_reply_element(r, 0), NULL), "x");
  cr_assert_str_eq(ascope_redis_reply_str(ascope_redis_reply_element(r, 2), NULL), "z");
  cr_assert_null(ascope_redis_reply_element(r, 3));
  b->list_checked++;
  return 0;
}

static void basic_body(ascope *s, t_scope *t) {
  struct basic *b = (struct basic *)t;
  ascope_redis *r = conn(s);
  const char *key = t_key("bin");
  const char *argv[] = {"SET", key, bin};
  size_t lens[] = {3, strlen(key), sizeof bin};
  cr_assert_eq(ascope_redis_command(s, r, 3, argv, lens, t_cb_fn, &b->set), 0);
  cr_assert_eq(ascope_redis_call(s, r, t_cb_fn, &b->get, "GET", key, NULL), 0);
  ascope_redis_call(s, r, NULL, NULL, "DEL", t_key("n"), t_key("l"), NULL);
  ascope_redis_call(s, r, t_cb_fn, &b->incr, "INCRBY", t_key("n"), "41", NULL);
  ascope_redis_call(s, r, t_cb_fn, &b->nil, "GET", t_key("missing"), NULL);
  ascope_redis_call(s, r, NULL, NULL, "RPUSH", t_key("l"), "x", "y", "z", NULL);
  ascope_redis_call(s, r, list_cb, b, "LRANGE", t_key("l"), "0", "-1", NULL);
}

Test(redis, commands_and_replies) {
  struct basic b = {.t.body = basic_body};
  cr_assert_eq(t_run_redis(&b.t, NULL), 0, "%s", b.t.msg);
  cr_assert_eq(b.set.calls, 1);
  cr_assert_eq(b.set.type, ASCOPE_REDIS_STATUS);
  cr_assert_str_eq(b.set.str, "OK");
  cr_assert_eq(b.get.type, ASCOPE_REDIS_STRING);
  cr_assert_eq(b.get.len, sizeof bin);
  cr_assert_eq(memcmp(b.get.str, bin, sizeof bin), 0, "binary-safe both ways");
  cr_assert_eq(b.incr.type, ASCOPE_REDIS_INTEGER);
  cr_assert_eq(b.incr.integer, 41);
  cr_assert_eq(b.nil.type, ASCOPE_REDIS_NIL);
  cr_assert_eq(b.list_checked, 1);
  cr_assert_eq(t_raw_int("STRLEN %s", t_key("bin")), (long long)sizeof bin);
  cr_assert_eq(ascope_redis_stat("opened"), 1);
}

/* db= selects, on top of AUTH */
static void db_body(ascope *s, t_scope *t) {
  ascope_redis_call(s, conn(s), t_cb_fn, t + 1, "CLIENT", "INFO", NULL);
}

Test(redis, options_select_a_database) {
  struct {
    t_scope t;
    t_cb info;
  } d = {.t.body = db_body};
  cr_assert_eq(t_run_redis(&d.t, "db=3 connect_timeout=2000"), 0, "%s", d.t.msg);
  cr_assert(strstr(d.info.str, " db=3 ") != NULL, "%s", d.info.str);
}

/* ---- error replies ----------------------------------------------------------------------------
 */

static void wrongtype_body(ascope *s, t_scope *t) {
  t_cb *cb = (t_cb *)(t + 1);
  ascope_redis *r = conn(s);
  ascope_redis_call(s, r, NULL, NULL, "SET", t_key("str"), "v", NULL);
  ascope_redis_call(s, r, t_cb_fn, cb, "LPUSH", t_key("str"), "x", NULL);
}

Test(redis, error_reply_handled_or_failing) {
  struct {
    t_scope t;
    t_cb cb;
  } a = {.t.body = wrongtype_body}, b = {.t.body = wrongtype_body, .cb.pass = true};
  cr_assert_eq(t_run_redis(&a.t, NULL), 0, "a callback returning 0 handles the error");
  cr_assert_eq(a.cb.status, ASCOPE_EDRIVER);
  cr_assert_eq(a.cb.type, ASCOPE_REDIS_ERROR);
  cr_assert(strncmp(a.cb.str, "WRONGTYPE", 9) == 0, "%s", a.cb.str);
  cr_assert_eq(t_run_redis(&b.t, NULL), ASCOPE_EDRIVER);
  cr_assert_str_eq(b.t.driver, "redis");
  cr_assert_str_eq(b.t.code, "WRONGTYPE");
  cr_assert(strstr(b.t.msg, "wrong kind of value") != NULL, "%s", b.t.msg);
}

/* ---- acquiring fails
 * ------------------------------------------------------------------------------ */

static int run_target(t_scope *t, const char *target, const char *options, uint64_t cancel_ms) {
  ascope *s = ascope_new(T_rt);
  cr_assert_eq(ascope_use_redis(s, target, options), 0);
  if (cancel_ms) t_after(cancel_ms, t_cancel_cb, s);
  return t_run(s, t);
}

Test(redis, acquire_refused) {
  int port = t_blackhole(); /* a free port: close the listener, nothing listens there */
  t_fini();
  t_init();
  char target[64];
  snprintf(target, sizeof target, "host=127.0.0.1 port=%d", port);
  t_scope t = {0};
  cr_assert_eq(run_target(&t, target, NULL, 0), UV_ECONNREFUSED, "%s", t.msg);
  cr_assert_eq(t.body_calls, 0);
  cr_assert_str_eq(t.driver, "redis");
  cr_assert_str_eq(t.code, "ECONNREFUSED");
  cr_assert_eq(ascope_redis_stat("opened"), 1);
}

Test(redis, auth_wrong_password_never_in_messages) {
  char target[256];
  const char *at = strrchr(t_url(), '@');
  snprintf(target, sizeof target, "redis://:s3cr3t-wrong%s", at);
  t_scope t = {0};
  cr_assert_eq(run_target(&t, target, NULL, 0), ASCOPE_EDRIVER);
  cr_assert_eq(t.body_calls, 0);
  cr_assert(strcmp(t.code, "WRONGPASS") == 0 || strcmp(t.code, "ERR") == 0, "%s", t.code);
  cr_assert_null(strstr(t.msg, "s3cr3t"), "%s", t.msg);
}

Test(redis, connect_timeout_on_a_silent_listener) {
  char target[64];
  snprintf(target, sizeof target, "redis://127.0.0.1:%d", t_blackhole());
  t_scope t = {0};
  cr_assert_eq(run_target(&t, target, "connect_timeout=200", 0), ASCOPE_ETIMEDOUT, "%s", t.msg);
  uint64_t took = t.t_done - t.t_start;
  cr_assert(took >= 190 && took < 2000, "took %llu ms", (unsigned long long)took);
  cr_assert_eq(t.body_calls, 0);
}

Test(redis, acquire_cancelled) {
  char target[64];
  snprintf(target, sizeof target, "redis://127.0.0.1:%d", t_blackhole());
  t_scope t = {0};
  cr_assert_eq(run_target(&t, target, NULL, 100), ASCOPE_ECANCELED, "%s", t.msg);
  cr_assert_eq(t.body_calls, 0);
}

Test(redis, bad_targets_and_options) {
  t_scope a = {0}, b = {0}, c = {0};
  cr_assert_eq(run_target(&a, "redis://h:notaport/0", NULL, 0), UV_EINVAL);
  cr_assert_eq(run_target(&b, t_url(), "nonsense=1", 0), UV_EINVAL);
  cr_assert_eq(run_target(&c, "host=127.0.0.1 password=hunter2 colour=red", NULL, 0), UV_EINVAL);
  cr_assert_null(strstr(c.msg, "hunter2"));
  cr_assert_eq(ascope_redis_stat("opened"), 0);
}

/* ---- cancel and deadlines mid-command -----------------------------------------------------------
 */

/* The deadline is a child scope's, started once the connection is open:
 * counted from before the connect, a slow one (a loaded machine, a
 * sanitizer build) could use it all and the BLPOP would never be sent. */
struct mid_command {
  t_scope t, kid;
  t_cb cb;
  ascope_redis *r;
};

static void blpop_kid(ascope *s, t_scope *t) {
  struct mid_command *m = (struct mid_command *)((char *)t - offsetof(struct mid_command, kid));
  ascope_redis_call(s, m->r, t_cb_fn, &m->cb, "BLPOP", t_key("never"), "0", NULL);
}

static void blpop_body(ascope *s, t_scope *t) {
  struct mid_command *m = (struct mid_command *)t;
  m->r = conn(s);
  m->kid.body = blpop_kid;
  ascope *c = ascope_child(s);
  ascope_set_timeout(c, 200);
  m->kid.t_start = t_now_ms();
  ascope_start(c, t_body, t_done, &m->kid);
}

Test(redis, deadline_mid_command) {
  struct mid_command m = {.t.body = blpop_body, .cb.pass = true};
  ascope *s = ascope_new(T_rt);
  ascope_set_mode(s, ASCOPE_COLLECT_ALL); /* the child's timeout is not the parent's */
  ascope_use_redis(s, t_url(), NULL);
  cr_assert_eq(t_run(s, &m.t), 0, "%s", m.t.msg);
  cr_assert_eq(m.kid.status, ASCOPE_ETIMEDOUT);
  cr_assert_eq(m.kid.done_calls, 1);
  cr_assert_eq(m.cb.calls, 1);
  cr_assert_eq(m.cb.status, ASCOPE_ECANCELED);
  cr_assert_eq(m.cb.type, 0, "no reply");
  cr_assert_eq(ascope_redis_stat("cancelled"), 1);
  cr_assert_geq(m.kid.t_done - m.kid.t_start, 190); /* libuv's clock is read per turn */
  cr_assert_lt(m.kid.t_done - m.kid.t_start, 2000);
}

/* A cancelled command's reply is dropped when it comes, and the next
 * command on the connection still gets its own reply. */
struct order {
  t_scope t;
  t_cb blpop, get;
  ascope *parent;
};

static void push_later(void *ud) {
  (void)ud;
  t_raw_ok("RPUSH %s late", t_key("q"));
}

static void order_child1(ascope *s, void *ud) {
  struct order *o = ud;
  ascope_redis_call(s, ascope_redis_resource(o->parent, 0), t_cb_fn, &o->blpop, "BLPOP", t_key("q"),
                    "5", NULL);
}

static void order_child2(ascope *s, void *ud) {
  struct order *o = ud;
  ascope_redis_call(s, ascope_redis_resource(o->parent, 0), t_cb_fn, &o->get, "GET", t_key("after"),
                    NULL);
}

static void order_body(ascope *s, t_scope *t) {
  struct order *o = (struct order *)t;
  ascope_redis *r = conn(s);
  o->parent = s;
  ascope_redis_call(s, r, NULL, NULL, "DEL", t_key("q"), NULL);
  ascope_redis_call(s, r, NULL, NULL, "SET", t_key("after"), "mine", NULL);
  ascope *c1 = ascope_child(s), *c2 = ascope_child(s);
  ascope_start(c1, order_child1, NULL, o);
  ascope_start(c2, order_child2, NULL, o);
  t_after(100, t_cancel_cb, c1);
  t_after(200, push_later, NULL);
}

Test(redis, cancelled_reply_dropped_order_kept) {
  struct order o = {.t.body = order_body};
  cr_assert_eq(t_run_redis(&o.t, NULL), 0, "%s", o.t.msg);
  cr_assert_eq(o.blpop.calls, 1);
  cr_assert_eq(o.blpop.status, ASCOPE_ECANCELED);
  cr_assert_eq(o.get.calls, 1);
  cr_assert_str_eq(o.get.str, "mine");
  cr_assert_eq(ascope_redis_stat("dropped"), 1, "BLPOP's reply came and was dropped");
  uint64_t took = o.t.t_done - o.t.t_start;
  cr_assert(took < 2000, "GET waited for the BLPOP (%llu ms), not for its 5 s",
            (unsigned long long)took);
}

/* The server drops the connection in the middle of a command. */
static int client_id(ascope *s, int status, const ascope_redis_reply *r, void *ud) {
  (void)s;
  cr_assert_eq(status, 0);
  *(long long *)ud = ascope_redis_reply_integer(r);
  return 0;
}

static void kill_it(void *ud) {
  t_raw_ok("CLIENT KILL ID %lld", *(long long *)ud);
}

struct lost {
  t_scope t;
  t_cb blpop;
  long long id;
};

static void lost_body(ascope *s, t_scope *t) {
  struct lost *l = (struct lost *)t;
  ascope_redis_call(s, conn(s), client_id, &l->id, "CLIENT", "ID", NULL);
  ascope_redis_call(s, conn(s), t_cb_fn, &l->blpop, "BLPOP", t_key("never"), "0", NULL);
  t_after(150, kill_it, &l->id);
}

Test(redis, connection_lost_mid_command) {
  struct lost l = {.t.body = lost_body, .blpop.pass = true};
  cr_assert_eq(t_run_redis(&l.t, NULL), ASCOPE_ECLOSED, "%s", l.t.msg);
  cr_assert_eq(l.blpop.calls, 1);
  cr_assert_eq(l.blpop.status, ASCOPE_ECLOSED);
  cr_assert_str_eq(l.t.driver, "redis");
}

/* ---- 64 scopes pipelined on one connection
 * --------------------------------------------------------- */

#define NPIPE 64

struct pipe_ctx {
  t_scope t;
  ascope_redis *r;
  int checked, children_done;
  char val[NPIPE][32];
};

struct child {
  struct pipe_ctx *p;
  int i;
};

static int own_reply(ascope *s, int status, const ascope_redis_reply *r, void *ud) {
  (void)s;
  struct child *c = ud;
  cr_assert_eq(status, 0);
  size_t len;
  const char *v = ascope_redis_reply_str(r, &len);
  cr_assert_not_null(v);
  cr_assert_str_eq(v, c->p->val[c->i], "scope %d got another's reply", c->i);
  c->p->checked++;
  return 0;
}

static void child_body(ascope *s, void *ud) {
  struct child *c = ud;
  const char *k = t_key(c->p->val[c->i]);
  ascope_redis_call(s, c->p->r, NULL, NULL, "SET", k, c->p->val[c->i], NULL);
  ascope_redis_call(s, c->p->r, own_reply, c, "GET", k, NULL);
}

static void child_done(ascope *s, int status, void *ud) {
  (void)s;
  struct child *c = ud;
  cr_assert_eq(status, 0);
  c->p->children_done++;
}

static void pipe_body(ascope *s, t_scope *t) {
  struct pipe_ctx *p = (struct pipe_ctx *)t;
  static struct child kids[NPIPE];
  p->r = conn(s);
  for (int i = 0; i < NPIPE; i++) {
    snprintf(p->val[i], sizeof p->val[i], "v%d", i);
    kids[i] = (struct child){p, i};
    ascope *c = ascope_child(s);
    cr_assert_not_null(c);
    cr_assert_eq(ascope_start(c, child_body, child_done, &kids[i]), 0);
  }
}

Test(redis, pipelined_64_scopes) {
  struct pipe_ctx p = {.t.body = pipe_body};
  cr_assert_eq(t_run_redis(&p.t, NULL), 0, "%s", p.t.msg);
  cr_assert_eq(p.children_done, NPIPE);
  cr_assert_eq(p.checked, NPIPE);
  cr_assert_geq(ascope_redis_stat("max_pipeline"), NPIPE, "in flight together: %lld",
                (long long)ascope_redis_stat("max_pipeline"));
  cr_assert_eq(ascope_redis_stat("opened"), 1);
}

/* ---- MULTI / EXEC
 * ---------------------------------------------------------------------------------------- */

struct tx {
  t_scope t;
  t_cb queued;
  bool fail;
};

static void tx_body(ascope *s, t_scope *t) {
  struct tx *x = (struct tx *)t;
  ascope_redis *r = conn(s);
  ascope_redis_call(s, r, t_cb_fn, &x->queued, "SET", t_key("tx"), "1", NULL);
  ascope_redis_call(s, r, NULL, NULL, "INCR", t_key("tx"), NULL);
  if (x->fail) ascope_fail(s, UV_EINVAL, "the body changed its mind");
}

static int run_tx(struct tx *x) {
  ascope *s = ascope_new(T_rt);
  size_t db = ascope_use_count(s);
  ascope_use_redis(s, t_url(), NULL);
  cr_assert_eq(ascope_use_redis_multi(s, db), 0);
  return t_run(s, &x->t);
}

Test(redis, multi_committed_by_success) {
  t_raw_ok("DEL %s", t_key("tx"));
  struct tx x = {.t.body = tx_body};
  cr_assert_eq(run_tx(&x), 0, "%s", x.t.msg);
  cr_assert_eq(x.queued.type, ASCOPE_REDIS_STATUS);
  cr_assert_str_eq(x.queued.str, "QUEUED");
  redisReply *r = t_raw("GET %s", t_key("tx"));
  cr_assert_str_eq(r->str, "2");
  freeReplyObject(r);
}

Test(redis, multi_discarded_by_failure) {
  t_raw_ok("DEL %s", t_key("tx"));
  struct tx x = {.t.body = tx_body, .fail = true};
  cr_assert_eq(run_tx(&x), UV_EINVAL);
  cr_assert_eq(x.t.nerr, 1, "DISCARD succeeded: no second error");
  cr_assert_eq(t_raw_int("EXISTS %s", t_key("tx")), 0);
}

static void exec_err_body(ascope *s, t_scope *t) {
  ascope_redis *r = conn(s);
  (void)t;
  ascope_redis_call(s, r, NULL, NULL, "SET", t_key("txs"), "str", NULL);
  ascope_redis_call(s, r, NULL, NULL, "LPUSH", t_key("txs"), "x", NULL); /* fails in EXEC */
}

Test(redis, multi_exec_reports_a_failed_command) {
  t_scope t = {.body = exec_err_body};
  ascope *s = ascope_new(T_rt);
  ascope_use_redis(s, t_url(), NULL);
  ascope_use_redis_multi(s, 0);
  cr_assert_eq(t_run(s, &t), ASCOPE_EDRIVER);
  cr_assert_str_eq(t.driver, "redis-multi");
  cr_assert_str_eq(t.code, "WRONGTYPE");
  cr_assert(strstr(t.msg, "command 2") != NULL, "%s", t.msg);
}

Test(redis, multi_on_a_wrong_use) {
  t_scope t = {0};
  ascope *s = ascope_new(T_rt);
  ascope_use_redis(s, t_url(), NULL);
  ascope_use_redis_multi(s, 5);
  cr_assert_eq(t_run(s, &t), UV_EINVAL);
  cr_assert_eq(t.body_calls, 0);
}

/* EXEC stuck behind CLIENT PAUSE WRITE outlives the release timeout: the
 * release is aborted, the connection closes, and the late completion
 * comes when the context goes. */
static int pause_now(ascope *s, int status, const ascope_redis_reply *r, void *ud) {
  (void)s, (void)r, (void)ud;
  cr_assert_eq(status, 0);
  t_raw_ok("CLIENT PAUSE 1500 WRITE"); /* after QUEUED: the write waits at EXEC */
  return 0;
}

static void pause_body(ascope *s, t_scope *t) {
  (void)t;
  ascope_redis_call(s, conn(s), pause_now, NULL, "SET", t_key("paused"), "1", NULL);
}

Test(redis, release_aborted_with_exec_in_flight) {
  t_scope t = {.body = pause_body};
  ascope *s = ascope_new(T_rt);
  ascope_use_redis(s, t_url(), NULL);
  ascope_use_redis_multi(s, 0);
  ascope_rt_set_release_timeout(T_rt, 200);
  int st = t_run(s, &t);
  cr_assert_eq(st, ASCOPE_ETIMEDOUT, "%s %s", ascope_err_name(st), t.msg);
  cr_assert_eq(ascope_rt_stat(T_rt, "aborted"), 1);
  cr_assert_eq(ascope_redis_stat("aborted"), 1);
  uint64_t took = t.t_done - t.t_start;
  cr_assert(took < 1400, "the release did not wait for the pause (%llu ms)",
            (unsigned long long)took);
  t_raw_ok("CLIENT UNPAUSE");
}
