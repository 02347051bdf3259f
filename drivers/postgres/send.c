/* Sending: what the scopes queued goes out at the end of the loop iteration.
 *
 * Requests are only queued when asked for. The connection's check handle
 * (after the loop's I/O callbacks, where results lead the scopes to ask for
 * more) and prepare handle (before the loop blocks, for what bodies and
 * timers asked) send the whole queue in one go, so what 64 scopes ask for
 * in one iteration is one round of sends, however it was asked.
 *
 * Each statement is followed by its own sync point. In pipeline mode
 * everything up to a sync runs as one implicit transaction and an error
 * skips the rest of it: one sync per statement is what keeps each scope's
 * statement apart from its neighbours', so a failure or rollback of one
 * never takes another with it. (libpq 17's PQsendPipelineSync queues the
 * sync without writing; libpq 15's PQpipelineSync writes at each one.)
 * With sync=batch the plain statements of a round share one sync point
 * instead, and recv.c sends a failed round's other statements again.
 *
 * Nothing goes out while a stream is in flight (it holds the connection
 * until it ends), while a COPY or script runs outside the pipeline, or
 * while a cancel request may still land (see cancel.c).
 */
#include "internal.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#define SEGMENT_MAX 256 /* sync=batch: statements sharing one sync point at most */

static int send_sync(struct pg_conn *c) {
#ifdef LIBPQ_HAS_SEND_PIPELINE_SYNC
  return PQsendPipelineSync(c->pg);
#else
  return PQpipelineSync(c->pg);
#endif
}

static void send_failed(struct pg_conn *c) {
  char *msg = pg_conn_error(c, "could not send to the server");
  pg_break(c, ASCOPE_ECLOSED, "08006", msg);
  ascope_free(msg);
}

/* The statement, then its sync point. -1: the connection broke. */
static int sync_point(struct pg_conn *c, struct pg_req *r) {
  struct pg_step *s = send_sync(c) ? pg_step_push(c, ST_SYNC, r, NULL) : NULL;
  if (s == NULL) return -1;
  s->ends_round = c->seg_open > 0;
  c->rounds_out += s->ends_round;
  if (r) r->syncs++;
  PG_COUNT(c, PGS_SYNCS, 1);
  c->seg_open = 0; /* a sync point ends whatever segment was open */
  return 0;
}

/* sync=batch: the statements sent since the last sync point get theirs. */
static int close_segment(struct pg_conn *c) {
  if (c->seg_open == 0 || c->state != PG_READY) return 0;
  return sync_point(c, NULL);
}

/* A statement of the driver's own, in its own round: its result is read
 * and dropped, and its failure fails nothing behind it. 1: no room for its
 * steps, not sent; -1: the connection broke. */
int pg_send_own(struct pg_conn *c, const char *sql, int kind) {
  if (c->pg == NULL || c->state != PG_READY) return -1;
  if (pg_steps_reserve(c, 2) != 0) return 1;
  if (!PQsendQueryParams(c->pg, sql, 0, NULL, NULL, NULL, NULL, 0) ||
      pg_step_push(c, (uint8_t)kind, NULL, NULL) == NULL || sync_point(c, NULL) != 0)
    return -1; /* the caller's next send finds the connection broken */
  return 0;
}

int pg_send_internal(struct pg_conn *c, const char *sql) {
  return pg_send_own(c, sql, ST_EXEC);
}

int pg_send_deallocate(struct pg_conn *c, struct pg_stmt *st) {
  if (c->pg == NULL || c->state != PG_READY) return 0;
  char sql[48];
  snprintf(sql, sizeof sql, "DEALLOCATE %s", st->name);
  /* Without room for its steps it is not sent: the name is never used
   * again, and the server drops the statement with the connection. */
  int rc = pg_send_internal(c, sql);
  if (rc == 0) PG_COUNT(c, PGS_DEALLOCATED, 1);
  return rc < 0 ? -1 : 0;
}

/* One statement of r, through the cache: a text seen before is prepared
 * (Prepare and Execute in one segment), one prepared is only executed, one
 * new or whose Prepare is still on its way goes unnamed. 1: not sent, r
 * failed locally; -1: the connection broke. */
static int send_stmt(struct pg_conn *c, struct pg_req *r, const char *sql,
                     const ascope_sql_params *p, bool cacheable, bool shared) {
  char err[160];
  int n = p ? pg_params_encode(c, p, err, sizeof err) : 0;
  if (n < 0) {
    pg_req_fail(r, n, NULL, err);
    return 1;
  }
  struct pg_stmt *st = cacheable && !c->names_off ? pg_cache_get(c, sql, c->ptypes, n) : NULL;
  if (c->state != PG_READY) return -1; /* an eviction's DEALLOCATE failed */
  bool named = st && st->state == STMT_READY;
  if (st && st->state == STMT_SEEN && st->seen) {
    if (!PQsendPrepare(c->pg, st->name, sql, n, n ? c->ptypes : NULL) ||
        pg_step_push(c, ST_PREPARE, r, st) == NULL)
      return -1;
    st->state = STMT_PREPARING;
    named = true;
  }
  if (st) st->seen = true;
  int fmt = named && !c->opt.text_only && st->binary == 1;
  r->binary = fmt;
  int ok = named ? PQsendQueryPrepared(c->pg, st->name, n, c->pvals, c->plens, c->pfmts, fmt)
                 : PQsendQueryParams(c->pg, sql, n, n ? c->ptypes : NULL, c->pvals, c->plens,
                                     c->pfmts, fmt);
  struct pg_step *step = ok ? pg_step_push(c, ST_EXEC, r, st) : NULL;
  if (step == NULL) return -1;
  step->named = named;
  PG_COUNT(c, PGS_STATEMENTS, 1);
  if (!shared) return sync_point(c, r);
  r->in_seg = true; /* its segment's sync point answers it (recv.c) */
  c->seg_open++;
  return 0;
}

/* sync=batch shares a sync point between plain statements sent in one
 * round; transaction steps, streams, LISTEN and statements sent again
 * after a failed round keep their own. */
static bool shares_sync(struct pg_conn *c, const struct pg_req *r) {
  return c->opt.batch_sync && (r->kind == K_EXEC || r->kind == K_QUERY) && !r->retried;
}

/* Sends r whole; 0 when it is in the pipeline. */
static int send_req(struct pg_conn *c, struct pg_req *r) {
  bool shared = shares_sync(c, r);
  int rc = shared ? 0 : close_segment(c);
  r->where = R_SENT;
  /* Room for every step r can take (a segment's sync point, then Prepare,
   * Execute and a sync point per statement), or r fails alone, before any
   * of it is sent. */
  if (rc == 0 && pg_steps_reserve(c, 1 + 3 * (size_t)(r->kind == K_TX ? r->nsql : 1)) != 0) {
    pg_req_fail(r, UV_ENOMEM, NULL, "out of memory");
    return 1;
  }
  /* The session that would listen is not the one the next transaction
   * gets: refused, rather than a stream that never hears anything. */
  if (rc == 0 && r->kind == K_LISTEN && !r->unlisten && c->behind_pooler) {
    pg_req_fail(r, ASCOPE_EDRIVER, "0A000",
                "LISTEN does not work through a transaction pooler (such as PgBouncer in "
                "transaction mode): listen on a connection straight to the server");
    return 1;
  }
  if (rc == 0 && r->kind == K_TX) {
    for (unsigned i = 0; rc == 0 && i < r->nsql; i++)
      rc = send_stmt(c, r, r->sql[i], NULL, true, false);
  } else if (rc == 0) {
    const char *sql = ascope_sql_req_text(r->req);
    if (r->kind == K_LISTEN && r->unlisten) sql = r->sqlbuf;
    rc = send_stmt(c, r, sql, ascope_sql_req_params(r->req), r->kind != K_LISTEN, shared);
  }
  if (rc == 0 && c->seg_open >= SEGMENT_MAX) rc = close_segment(c);
  if (rc < 0) {
    /* The connection broke before any part of r reached the pipeline: r is
     * in no list the break goes through (it left the queue to be sent), so
     * it goes back to the queue's front, where the break answers it. One
     * with a step in flight is answered through that step. */
    if (!pg_step_holds(c, r) && !r->in_seg) pg_queue_front(c, r);
    send_failed(c);
  }
  return rc;
}

/* A request that failed before anything of it was sent is answered after
 * what went before it. */
static void answer_unsent(struct pg_conn *c, struct pg_req *r) {
  if (r->syncs == 0 && !r->in_seg) {
    /* A round still open ends first, so that r waits for its sync point:
     * the round's statements are answered there. */
    if (c->seg_open && close_segment(c) != 0) {
      pg_queue_front(c, r); /* the break answers it, in order */
      send_failed(c);
      return;
    }
    pg_answer_local_later(c, r);
    return;
  }
  r->where = R_SENT; /* part of it went: its sync points answer it */
}

/* sync=batch: a round is sent only once the one before it is back. If a
 * round fails, its other statements run again, each alone, before
 * anything started after them: a later round already on the server would
 * have run in between. For the same reason a statement with a sync point
 * of its own waits for the round before it. */
static bool round_waits(struct pg_conn *c, const struct pg_req *next) {
  if (!c->opt.batch_sync) return false;
  return c->rounds_out > 0 || (c->seg_open > 0 && !shares_sync(c, next));
}

/* A round of several statements is corked: libpq 15 writes at each sync
 * point, and uncorked each write is a segment of its own, taken through
 * the loopback or the network and woken for on the server, one per
 * statement. Corked, the kernel holds them and sends the round as full
 * segments when it is uncorked at the round's end. Returns the socket
 * corked, or -1. A lone statement is not corked: that would only add two
 * system calls to its round trip. */
static int cork(struct pg_conn *c, int on, int fd) {
  if (c->cork_off) return -1;
  if (on && (c->send_head == NULL || c->send_head->next == NULL)) return -1;
  if (!on && (fd < 0 || c->pg == NULL || PQsocket(c->pg) != fd)) return -1;
  if (on) fd = PQsocket(c->pg);
  if (fd < 0 || setsockopt(fd, IPPROTO_TCP, TCP_CORK, &on, sizeof on) != 0) {
    c->cork_off = on; /* a Unix socket: no cork, and none needed */
    return -1;
  }
  if (on) PG_COUNT(c, PGS_CORKED, 1);
  return fd;
}

void pg_flush_sends(struct pg_conn *c) {
  if (c->state != PG_READY || c->pg == NULL) return;
  bool sent = false;
  int corked = -2;                     /* -2: not tried yet; corked only once something goes */
  aguard_enter(&c->pump);              /* an answer given here runs user code: hold re-entry */
  bool awaited = pg_cancel_awaited(c); /* what is sent now cannot be stopped safely */
  while (c->send_head && !c->barrier && !c->solo && !c->hold && !c->victims && !awaited &&
         c->state == PG_READY && !c->closing) {
    struct pg_req *r = c->send_head;
    if (round_waits(c, r)) break;
    if (pg_is_solo(r)) {
      if (close_segment(c) != 0) {
        send_failed(c);
        break;
      }
      if (c->nsteps) break; /* it waits for the pipeline to drain */
      pg_unqueue(c, r);
      if (pg_solo_start(c, r) != 0) break;
      sent = true;
      break;
    }
    if (corked == -2) corked = cork(c, 1, -1); /* before r leaves the queue: it counts */
    pg_unqueue(c, r);
    int rc = send_req(c, r);
    if (rc < 0) break;
    if (rc > 0) {
      answer_unsent(c, r);
      continue;
    }
    sent = true;
    if (r->kind == K_STREAM) c->barrier = r; /* the stream holds the connection */
  }
  if (close_segment(c) != 0) send_failed(c);
  if (sent && c->state == PG_READY) {
    PG_COUNT(c, PGS_FLUSHES, 1);
    pg_flush_out(c);
  }
  cork(c, 0, corked);
  aguard_leave(&c->pump);
  pg_kick(c); /* results may already be there; and whatever the answers asked for */
}

int pg_flush_out(struct pg_conn *c) {
  if (c->pg == NULL || c->state != PG_READY) return -1;
  int rc = PQflush(c->pg);
  if (rc < 0) {
    send_failed(c);
    return -1;
  }
  pg_update_poll(c);
  return 0;
}
