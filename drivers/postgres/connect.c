/* Connecting without blocking: PQconnectStartParams, then PQconnectPoll
 * each time the socket is ready the way libpq asked.
 *
 * libpq may close its socket and open another during a connect (the next
 * host of a list, a retry without TLS), so the watch is stopped before each
 * PQconnectPoll call and set again on whatever socket libpq has after it:
 * a stopped watch never sees a descriptor libpq closed. A uv_timer bounds
 * the whole connect, resolution included (libpq's own connect_timeout only
 * works in its blocking loop).
 *
 * Once connected the connection goes into pipeline mode and non-blocking
 * for good. A failed acquire closes everything it opened before it
 * completes: the core never releases it.
 */
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void pg_acquire_fail(struct pg_conn *c, int status, const char *code, const char *msg) {
  if (c->state == PG_CLOSING) return;
  c->state = PG_CLOSING;
  c->probing = false;
  c->fail_status = status;
  c->fail_code = code;
  c->fail_msg = pg_scrub(msg, c->secret);
  uv_timer_stop(&c->timer);
  pg_unwatch(c);
  if (c->pg) {
    PQfinish(c->pg);
    c->pg = NULL;
  }
  pg_dsn_cancel(c); /* lookups still out answer cancelled; the conn waits for them */
  pg_close_handles(c);
}

static void connect_expired(uv_timer_t *t) {
  struct pg_conn *c = t->data;
  char msg[96];
  snprintf(msg, sizeof msg, "timeout expired after %llu ms connecting to the server",
           (unsigned long long)c->connect_ms);
  pg_acquire_fail(c, ASCOPE_ETIMEDOUT, "08001", msg);
}

void pg_connect_arm(struct pg_conn *c, uint64_t ms) {
  c->connect_ms = ms;
  uv_timer_start(&c->timer, connect_expired, ms, 0);
}

static void connect_failed(struct pg_conn *c) {
  char *msg = pg_conn_error(c, "could not connect to the server");
  pg_acquire_fail(c, ASCOPE_EDRIVER, "08001", msg);
  ascope_free(msg);
}

/* A watch that could not be made is the driver's failure, not the server's:
 * out of memory says so, rather than an EDRIVER with libpq's empty message. */
static void watch_failed(struct pg_conn *c, int rc) {
  if (rc == UV_ENOMEM)
    pg_acquire_fail(c, UV_ENOMEM, NULL, "out of memory watching the connection");
  else
    connect_failed(c);
}

static void connected(struct pg_conn *c) {
  uv_timer_stop(&c->timer);
  if (PQsetnonblocking(c->pg, 1) != 0 || !PQenterPipelineMode(c->pg)) {
    connect_failed(c);
    return;
  }
  c->pid = PQbackendPID(c->pg);
  /* read from now on: a notification, or the server going away */
  int rc = pg_watch(c, UV_READABLE);
  if (rc != 0) {
    watch_failed(c, rc);
    return;
  }
  c->state = PG_READY;
  c->names_off = c->opt.names == NAMES_OFF;
  if (c->opt.names == NAMES_AUTO) {
    /* One round trip more: is the session this connection's own? (pooler.c)
     * The connect timeout bounds it too. */
    int rc = pg_probe_start(c);
    if (rc > 0) {
      pg_acquire_fail(c, UV_ENOMEM, NULL, "out of memory");
      return;
    }
    if (rc < 0) {
      connect_failed(c);
      return;
    }
    pg_connect_arm(c, c->connect_ms);
    return;
  }
  pg_connect_done(c);
}

void pg_connect_done(struct pg_conn *c) {
  uv_timer_stop(&c->timer);
  c->acquired = true;
  PG_COUNT(c, PGS_OPENED, 1);
  ascope_res_done(c->res, 0, NULL, NULL);
}

static void follow(struct pg_conn *c, PostgresPollingStatusType st) {
  switch (st) {
  case PGRES_POLLING_READING:
  case PGRES_POLLING_WRITING: {
    int rc = pg_watch(c, st == PGRES_POLLING_READING ? UV_READABLE : UV_WRITABLE);
    if (rc != 0) watch_failed(c, rc);
    break;
  }
  case PGRES_POLLING_OK:
    connected(c);
    break;
  default:
    connect_failed(c);
    break;
  }
}

void pg_connect_poll(struct pg_conn *c) {
  if (c->watch) { /* libpq may close this socket inside the call */
    uv_poll_stop(&c->watch->poll);
    c->watch->events = 0;
  }
  follow(c, PQconnectPoll(c->pg));
}

/* libpq's default notice processor writes the server's notices, and the
 * FATAL it sends before it drops a connection, to stderr: a library must not
 * write to its host's stderr. What matters reaches the scope as an error
 * (a terminated backend's 57P01, a lost connection's 08006). */
static void quiet_notice(void *arg, const char *message) {
  (void)arg, (void)message;
}

void pg_connect_start(struct pg_conn *c, const char *const *keys, const char *const *vals) {
  c->pg = PQconnectStartParams(keys, vals, 0);
  if (c->pg == NULL) {
    pg_acquire_fail(c, UV_ENOMEM, NULL, "out of memory connecting");
    return;
  }
  PQsetNoticeProcessor(c->pg, quiet_notice, NULL);
  if (PQstatus(c->pg) == CONNECTION_BAD) {
    connect_failed(c);
    return;
  }
  c->state = PG_CONNECTING;
  /* As if PQconnectPoll had last answered "writing", as libpq's docs say. */
  follow(c, PGRES_POLLING_WRITING);
}
