/* The Redis driver's streams: SCAN over 10,000 keys (to the end, stopped,
 * paused and resumed, cancelled) and pub/sub with a publisher on another
 * connection (pause and resume, stop, cancel). */
#include "redis_support.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

TestSuite(redis_streams, .init = t_init, .fini = t_fini);

#define NKEYS 10000

static void fill_keys(void) {
  redisContext *c = t_raw_conn();
  for (int i = 0; i < NKEYS; i++) redisAppendCommand(c, "SET %s:%d x", t_key("scan"), i);
  for (int i = 0; i < NKEYS; i++) {
    redisReply *r;
    cr_assert_eq(redisGetReply(c, (void **)&r), REDIS_OK);
    freeReplyObject(r);
  }
}

/* The keys go with the test that made them: a server kept between runs
 * would otherwise fill up, and every SCAN walks all its keys. */
static void drop_keys(void) {
  redisContext *c = t_raw_conn();
  for (int i = 0; i < NKEYS; i++) redisAppendCommand(c, "UNLINK %s:%d", t_key("scan"), i);
  for (int i = 0; i < NKEYS; i++) {
    redisReply *r;
    cr_assert_eq(redisGetReply(c, (void **)&r), REDIS_OK);
    freeReplyObject(r);
  }
}

/* ---- SCAN -------------------------------------------------------------------------------------
 */

struct scan {
  t_scope t;
  int keys, finals, final_status;
  /* SCAN returns every key that stays at least once, and may return one
   * more than once (other tests' keys come and go while it runs, and the
   * server's table is resized): distinct counts each key once. */
  int distinct;
  bool seen[NKEYS];
  int stop_at, pause_every, pauses;
  bool cancel_at_pause;
  ascope_op *op;
  ascope *s;
  long long commands_at_pause;
};

static void resume_cb(void *ud) {
  struct scan *x = ud;
  cr_assert_eq(ascope_redis_stat("commands"), x->commands_at_pause, "a paused SCAN sends nothing");
  ascope_op_resume(x->op);
}

static int scan_cb(ascope *s, int status, const ascope_redis_reply *r, void *ud) {
  (void)s;
  struct scan *x = ud;
  if (r == NULL) {
    x->finals++;
    x->final_status = status;
    return status;
  }
  cr_assert_eq(status, 0);
  cr_assert_eq(ascope_redis_reply_type(r), ASCOPE_REDIS_STRING);
  const char *k = ascope_redis_reply_str(r, NULL);
  cr_assert_eq(strncmp(k, "scan:", 5), 0);
  int i = atoi(strrchr(k, ':') + 1);
  cr_assert(i >= 0 && i < NKEYS, "%s", k);
  if (!x->seen[i]) x->seen[i] = true, x->distinct++;
  x->keys++;
  if (x->stop_at && x->keys == x->stop_at) return ASCOPE_STOP;
  if (x->pause_every && x->keys % x->pause_every == 0) {
    x->pauses++;
    x->commands_at_pause = ascope_redis_stat("commands");
    if (x->cancel_at_pause)
      t_after(50, t_cancel_cb, x->s);
    else
      t_after(20, resume_cb, x);
    return ASCOPE_PAUSE;
  }
  return ASCOPE_CONTINUE;
}

static void scan_body(ascope *s, t_scope *t) {
  struct scan *x = (struct scan *)t;
  char match[64];
  snprintf(match, sizeof match, "%s:*", t_key("scan"));
  x->s = s;
  cr_assert_eq(ascope_redis_scan(s, ascope_redis_resource(s, 0), match, 500, scan_cb, x, &x->op),
               0);
  cr_assert_not_null(x->op);
}

Test(redis_streams, scan_every_key) {
  fill_keys();
  struct scan x = {.t.body = scan_body};
  cr_assert_eq(t_run_redis(&x.t, NULL), 0, "%s", x.t.msg);
  cr_assert_eq(x.distinct, NKEYS);
  cr_assert_geq(x.keys, NKEYS);
  cr_assert_eq(x.finals, 1);
  cr_assert_eq(x.final_status, 0);
  drop_keys();
}

Test(redis_streams, scan_stopped) {
  fill_keys();
  struct scan x = {.t.body = scan_body, .stop_at = 1234};
  cr_assert_eq(t_run_redis(&x.t, NULL), 0, "%s", x.t.msg);
  cr_assert_eq(x.keys, 1234);
  cr_assert_eq(x.finals, 1);
  cr_assert_eq(x.final_status, 0);
  drop_keys();
}

Test(redis_streams, scan_paused_and_resumed) {
  fill_keys();
  struct scan x = {.t.body = scan_body, .pause_every = 777};
  cr_assert_eq(t_run_redis(&x.t, NULL), 0, "%s", x.t.msg);
  cr_assert_eq(x.distinct, NKEYS);
  cr_assert_geq(x.keys, NKEYS);
  cr_assert_eq(x.pauses, x.keys / 777);
  cr_assert_eq(x.finals, 1);
  drop_keys();
}

Test(redis_streams, scan_cancelled_while_paused) {
  fill_keys();
  struct scan x = {.t.body = scan_body, .pause_every = 100, .cancel_at_pause = true};
  cr_assert_eq(t_run_redis(&x.t, NULL), ASCOPE_ECANCELED, "%s", x.t.msg);
  cr_assert_eq(x.keys, 100);
  cr_assert_eq(x.finals, 1);
  cr_assert_eq(x.final_status, ASCOPE_ECANCELED);
  drop_keys();
}

/* ---- pub/sub
 * ------------------------------------------------------------------------------------------- */

#define NMSG 300

struct sub {
  t_scope t;
  ascope *s;
  ascope_redis *pub;
  ascope_op *op;
  int got, finals, final_status, pings;
  bool publishing, paused, cancel_at_end, stop_at_end;
  int during_pause;
  long long receivers;
};

static void publish_all(struct sub *x);

static int published(ascope *s, int status, const ascope_redis_reply *r, void *ud) {
  (void)s;
  struct sub *x = ud;
  cr_assert_eq(status, 0);
  x->receivers = ascope_redis_reply_integer(r);
  return 0;
}

/* PUBLISH "ping" until the subscription counts: SUBSCRIBE went on another
 * connection, nothing orders it with the publisher's commands. */
static void ping_or_go(void *ud);

static int pinged(ascope *s, int status, const ascope_redis_reply *r, void *ud) {
  (void)s;
  struct sub *x = ud;
  cr_assert_eq(status, 0);
  if (ascope_redis_reply_integer(r) == 1)
    publish_all(x);
  else
    t_after(10, ping_or_go, x);
  return 0;
}

static void ping_or_go(void *ud) {
  struct sub *x = ud;
  ascope_redis_call(x->s, x->pub, pinged, x, "PUBLISH", t_key("ch"), "ping", NULL);
}

static void publish_all(struct sub *x) {
  char m[32];
  for (int i = 0; i < NMSG; i++) {
    snprintf(m, sizeof m, "m%d", i);
    ascope_redis_call(x->s, x->pub, published, x, "PUBLISH", t_key("ch"), m, NULL);
  }
}

static void unpause(void *ud) {
  struct sub *x = ud;
  cr_assert_eq(x->during_pause, 0, "nothing is delivered while paused");
  x->paused = false;
  ascope_op_resume(x->op);
}

static int sub_cb(ascope *s, int status, const ascope_redis_reply *r, void *ud) {
  (void)s;
  struct sub *x = ud;
  if (r == NULL) {
    x->finals++;
    x->final_status = status;
    return status;
  }
  cr_assert_eq(status, 0);
  cr_assert_eq(ascope_redis_reply_elements(r), 3);
  cr_assert_str_eq(ascope_redis_reply_str(ascope_redis_reply_element(r, 0), NULL), "message");
  cr_assert_str_eq(ascope_redis_reply_str(ascope_redis_reply_element(r, 1), NULL), t_key("ch"));
  const char *p = ascope_redis_reply_str(ascope_redis_reply_element(r, 2), NULL);
  if (strcmp(p, "ping") == 0) {
    x->pings++;
    return ASCOPE_CONTINUE;
  }
  if (x->paused) x->during_pause++;
  char want[32];
  snprintf(want, sizeof want, "m%d", x->got);
  cr_assert_str_eq(p, want, "in order");
  x->got++;
  if (x->got == NMSG) {
    if (x->cancel_at_end) {
      ascope_cancel(x->s);
      return ASCOPE_CONTINUE;
    }
    return ASCOPE_STOP;
  }
  if (x->got % 100 == 10) { /* pause mid-flood: the rest waits in the socket and the server */
    x->paused = true;
    t_after(100, unpause, x);
    return ASCOPE_PAUSE;
  }
  return ASCOPE_CONTINUE;
}

static void sub_body(ascope *s, t_scope *t) {
  struct sub *x = (struct sub *)t;
  x->s = s;
  x->pub = ascope_redis_resource(s, 1);
  ascope_redis *r = ascope_redis_resource(s, 0);
  cr_assert_eq(ascope_redis_subscribe(s, r, t_key("ch"), 0, sub_cb, x, &x->op), 0);
  cr_assert_eq(ascope_redis_call(s, r, NULL, NULL, "GET", "k", NULL), ASCOPE_EBUSY,
               "a subscribed connection takes nothing else");
  cr_assert_eq(ascope_redis_subscribe(s, r, "other", 0, sub_cb, x, NULL), ASCOPE_EBUSY);
  ping_or_go(x);
}

static int run_sub(struct sub *x) {
  ascope *s = ascope_new(T_rt);
  ascope_use_redis(s, t_url(), NULL);
  ascope_use_redis(s, t_url(), NULL);
  return t_run(s, &x->t);
}

Test(redis_streams, pubsub_pause_resume_stop) {
  struct sub x = {.t.body = sub_body};
  cr_assert_eq(run_sub(&x), 0, "%s", x.t.msg);
  cr_assert_eq(x.got, NMSG);
  cr_assert_eq(x.finals, 1);
  cr_assert_eq(x.final_status, 0);
  cr_assert_geq(x.pings, 1);
  cr_assert_eq(ascope_redis_stat("opened"), 2);
}

Test(redis_streams, pubsub_cancelled) {
  struct sub x = {.t.body = sub_body, .cancel_at_end = true};
  cr_assert_eq(run_sub(&x), ASCOPE_ECANCELED, "%s", x.t.msg);
  cr_assert_eq(x.got, NMSG);
  cr_assert_eq(x.finals, 1);
  cr_assert_eq(x.final_status, ASCOPE_ECANCELED);
}

/* After a stop, the UNSUBSCRIBE's reply frees the connection for commands. */
struct after_stop {
  t_scope t;
  t_cb get;
  ascope_redis *r;
  ascope *s;
};

static int ponged(ascope *s, int status, const ascope_redis_reply *r, void *ud) {
  t_cb_fn(s, status, r, ud);
  t_raw_ok("RPUSH %s x", t_key("wake")); /* ends the BLPOP that kept the scope open */
  return 0;
}

/* Busy until the UNSUBSCRIBE's reply is in: try again a little later. */
static void get_later(void *ud) {
  struct after_stop *a = ud;
  int rc = ascope_redis_call(a->s, a->r, ponged, &a->get, "PING", NULL);
  cr_assert(rc == 0 || rc == ASCOPE_EBUSY, "%s", ascope_err_name(rc));
  if (rc) t_after(10, get_later, a);
}

static int stop_at_once(ascope *s, int status, const ascope_redis_reply *r, void *ud) {
  (void)s, (void)r, (void)ud;
  return r ? ASCOPE_STOP : status;
}

static int published_once(ascope *s, int status, const ascope_redis_reply *r, void *ud) {
  (void)status;
  struct after_stop *a = ud;
  if (ascope_redis_reply_integer(r) == 0)
    ascope_redis_call(s, ascope_redis_resource(s, 1), published_once, a, "PUBLISH", t_key("c2"),
                      "x", NULL);
  else {
    /* keeps the scope open while get_later waits; ponged ends it */
    ascope_redis_call(s, ascope_redis_resource(s, 1), NULL, NULL, "BLPOP", t_key("wake"), "10",
                      NULL);
    get_later(a);
  }
  return 0;
}

static void stop_body(ascope *s, t_scope *t) {
  struct after_stop *a = (struct after_stop *)t;
  a->s = s;
  a->r = ascope_redis_resource(s, 0);
  ascope_redis_subscribe(s, a->r, t_key("c2"), 0, stop_at_once, NULL, NULL);
  ascope_redis_call(s, ascope_redis_resource(s, 1), published_once, a, "PUBLISH", t_key("c2"), "x",
                    NULL);
}

Test(redis_streams, commands_again_after_unsubscribe) {
  t_raw_ok("DEL %s", t_key("wake"));
  struct after_stop a = {.t.body = stop_body, .get.pass = true};
  ascope *s = ascope_new(T_rt);
  ascope_use_redis(s, t_url(), NULL);
  ascope_use_redis(s, t_url(), NULL);
  cr_assert_eq(t_run(s, &a.t), 0, "%s", a.t.msg);
  cr_assert_eq(a.get.calls, 1);
  cr_assert_str_eq(a.get.str, "PONG");
}
