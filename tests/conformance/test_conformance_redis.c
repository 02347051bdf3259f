/* The conformance kit on the Redis driver, against the server
 * scripts/redis-start runs (ASCOPE_REDIS_URL). */
#include <ascope/redis.h>
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "kit.h"

TestSuite(conformance_redis, .timeout = 600);

static char key[64];

static int on_reply(ascope *s, int status, const ascope_redis_reply *reply, void *ud) {
  (void)s;
  /* a reply that is not INCR's would be a pipelining bug: another
   * command's reply delivered to this one */
  if (status == 0 && ascope_redis_reply_type(reply) != ASCOPE_REDIS_INTEGER)
    status = ASCOPE_EDRIVER;
  return ascope_kit_op_done(ud, status);
}

static int incr_op(ascope *s, void *res, ascope_kit_op *k) {
  return ascope_redis_call(s, res, on_reply, k, "INCR", key, NULL);
}

static int on_del(ascope *s, int status, const ascope_redis_reply *reply, void *ud) {
  (void)s, (void)reply, (void)ud;
  return status;
}

static void del_body(ascope *s, void *ud) {
  (void)ud;
  ascope_redis_call(s, ascope_redis_resource(s, 0), on_del, NULL, "DEL", key, NULL);
}

static void del_done(ascope *s, int status, void *ud) {
  (void)s;
  *(int *)ud = status;
}

/* The kit's runs on d, then the key they incremented deleted. */
static void run_kit(ascope_kit_driver *d) {
  const char *url = getenv("ASCOPE_REDIS_URL");
  cr_assert(url && *url, "ASCOPE_REDIS_URL is not set: start the server with scripts/redis-start "
                         "and export the line it prints (scripts/test does both)");
  snprintf(key, sizeof key, "kit:conformance:%ld", (long)getpid());
  d->name = "redis";
  d->driver = ascope_redis_driver();
  d->target = url;
  /* the same server, a database it does not have: SELECT's error reply
   * fails the acquire */
  d->bad_target = url;
  d->bad_options = "db=999999";
  d->op = incr_op;
  int broken = ascope_kit_run(d);
  ascope_rt *rt = ascope_rt_new(NULL);
  cr_assert(rt);
  ascope *s = ascope_new(rt);
  cr_assert(s && ascope_use_redis(s, url, NULL) == 0);
  int del_status = 1;
  cr_assert_eq(ascope_start(s, del_body, del_done, &del_status), 0);
  ascope_rt_run(rt);
  cr_assert_eq(ascope_rt_free(rt), 0);
  cr_assert_eq(del_status, 0, "DEL of the kit's key failed: %s", ascope_err_name(del_status));
  cr_assert_eq(broken, 0, "the Redis driver broke rules: see above");
}

/* Each command sent from the previous one's callback. */
Test(conformance_redis, incr) {
  ascope_kit_driver d = {.nops = 2};
  run_kit(&d);
}

/* Four commands in flight on the connection at once: each injection also
 * finds the commands behind its step waiting for their replies. */
Test(conformance_redis, incr_pipelined) {
  ascope_kit_driver d = {.nops = 4, .flags = ASCOPE_KIT_OPS_PIPELINED};
  run_kit(&d);
}
