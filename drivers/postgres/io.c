/* The socket, the pump, and the end of a connection.
 *
 * One uv_poll watches libpq's socket. Readable: PQconsumeInput, then every
 * complete result goes to its request (recv.c). Writable: only while libpq
 * holds output it could not write (PQflush returned 1), or a COPY waits for
 * room. The socket is not read while a stream's consumer holds a batch or
 * paused: then the server blocks on a full socket, and memory holds one
 * batch, whatever the result's size.
 *
 * The pump is the one place that takes results and answers requests; it
 * runs user callbacks, which may call back into the driver (queue a
 * statement, cancel one, end the scope and so release the connection).
 * Those calls made during the pump only record what they want; the pump
 * loops until nothing changed and then does it: a connection is never
 * closed under the pump's feet.
 *
 * libpq closes its socket by itself when the connection fails. A watch on
 * a closed descriptor could end up watching another file that reuses its
 * number, so after every libpq call that can fail this way the watch is
 * stopped at once, before the loop polls again.
 */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

/* ---- handles --------------------------------------------------------------------- */

static void conn_free(struct pg_conn *c) {
  pg_cache_clear(c);
  pg_dsn_free(c);
  if (c->secret) {
    memset(c->secret, 0, strlen(c->secret));
    ascope_free(c->secret);
  }
  ascope_free(c->fail_msg);
  ascope_free(c->steps);
  ascope_free(c->pvals);
  ascope_free(c->plens);
  ascope_free(c->pfmts);
  ascope_free(c->ptypes);
  ascope_free(c->pbin);
  PG_COUNT(c, PGS_CONNECTIONS, -1);
  ascope_free(c);
}

/* The last handle is closed and no cancel request refers to the
 * connection: the release (or failed acquire) completes, and the memory
 * goes. */
void pg_maybe_done(struct pg_conn *c) {
  if (c->open_handles || c->cancel_job || c->dns || c->state != PG_CLOSING) return;
  ascope_res *r = c->res;
  int status = c->fail_status;
  const char *code = c->fail_code;
  char *msg = c->fail_msg;
  c->fail_msg = NULL;
  conn_free(c);
  ascope_res_done(r, status, code, msg);
  ascope_free(msg);
}

void pg_handle_closed(uv_handle_t *h) {
  struct pg_conn *c = h->data;
  c->open_handles--;
  pg_maybe_done(c);
}

static void watch_closed(uv_handle_t *h) {
  struct pg_watch *w = (struct pg_watch *)h;
  struct pg_conn *c = w->c;
  ascope_free(w);
  c->open_handles--;
  pg_maybe_done(c);
}

void pg_unwatch(struct pg_conn *c) {
  struct pg_watch *w = c->watch;
  if (w == NULL) return;
  c->watch = NULL;
  uv_poll_stop(&w->poll);
  uv_close((uv_handle_t *)&w->poll, watch_closed);
}

static void on_poll(uv_poll_t *p, int status, int events);

/* Watches libpq's socket for events; a new socket gets a new watch. */
int pg_watch(struct pg_conn *c, int events) {
  int fd = c->pg ? PQsocket(c->pg) : -1;
  if (c->watch && c->watch->fd != fd) pg_unwatch(c);
  if (fd < 0) return UV_EBADF;
  struct pg_watch *w = c->watch;
  if (w == NULL) {
    if ((w = ascope_calloc(1, sizeof *w)) == NULL) return UV_ENOMEM;
    int rc = uv_poll_init_socket(c->loop, &w->poll, fd);
    if (rc) {
      ascope_free(w);
      return rc;
    }
    w->poll.data = w;
    w->c = c;
    w->fd = fd;
    c->watch = w;
    c->open_handles++;
  }
  if (w->events != events) {
    w->events = events;
    if (events)
      uv_poll_start(&w->poll, events, on_poll);
    else
      uv_poll_stop(&w->poll);
  }
  return 0;
}

/* ---- what to watch ------------------------------------------------------------------ */

static bool read_paused(struct pg_conn *c) {
  struct pg_step *s = pg_step_head(c);
  if (s && s->kind == ST_EXEC && s->r && s->r->kind == K_STREAM && s->r->batch_out) return true;
  if (c->solo && c->solo->kind == K_COPY_OUT && c->solo->batch_out) return true;
  /* a paused listener holds the socket only when nothing else needs it */
  return pg_listeners_paused(c) && c->nsteps == 0 && c->solo == NULL;
}

static void lost(struct pg_conn *c) {
  char *msg = pg_conn_error(c, "the connection to the server was lost");
  pg_break(c, ASCOPE_ECLOSED, "08006", msg);
  ascope_free(msg);
}

void pg_update_poll(struct pg_conn *c) {
  if (c->state != PG_READY || c->pg == NULL) return;
  if (c->io_failed && PQstatus(c->pg) != CONNECTION_BAD) { /* libpq did not notice */
    pg_break(c, ASCOPE_ECLOSED, "08006", uv_strerror(c->io_failed));
    return;
  }
  int events = read_paused(c) ? 0 : UV_READABLE;
  int out = PQstatus(c->pg) == CONNECTION_BAD ? -1 : PQflush(c->pg); /* 1: output is waiting */
  if (out < 0) {
    lost(c);
    return;
  }
  if (out == 1) events |= UV_WRITABLE;
  if (c->solo && c->solo->kind == K_COPY_IN && !c->solo->copy_ended && !c->solo->fill_paused)
    events |= UV_WRITABLE;
  if (pg_watch(c, events) != 0) pg_break(c, ASCOPE_ECLOSED, "08006", "cannot watch the socket");
}

/* ---- the pump ---------------------------------------------------------------------------- */

static void finish_close(struct pg_conn *c);

static void pump(struct pg_conn *c) {
  aguard_enter(&c->pump);
  do {
    aguard_take(&c->pump); /* this turn does what was asked so far */
    if (c->state == PG_READY) pg_take_results(c);
    if (c->state == PG_READY) pg_notifies(c);
    if (c->state == PG_READY) pg_cancel_maybe(c);
    pg_hold_check(c);
    pg_reset_check(c);
    pg_probe_check(c);
  } while (aguard_deferred(&c->pump) && !c->closing);
  aguard_leave(&c->pump);
  if (c->closing) {
    finish_close(c);
    return;
  }
  if (c->send_head && c->state == PG_READY) pg_sched_flush(c);
  pg_update_poll(c);
}

void pg_kick(struct pg_conn *c) {
  if (aguard_ask(&c->pump)) pump(c);
}

/* A connection that ends may leave the server's last words (57P01 for a
 * terminated backend) in the socket or in libpq's buffer: on a socket
 * error, a failed write or a read that meets the end, libpq is still made
 * to read, the pump takes what it parsed, and only then does
 * pg_update_poll() see the loss and break the connection. */
static void io_ready(struct pg_conn *c, int status, int events) {
  if (status < 0) { /* POLLERR: libuv stopped the watch */
    c->io_failed = status;
    if (c->watch) c->watch->events = 0;
    events = UV_READABLE;
  }
  if ((events & UV_WRITABLE) && PQflush(c->pg) < 0) events |= UV_READABLE;
  if ((events & UV_WRITABLE) && c->solo && c->solo->kind == K_COPY_IN) pg_copy_feed(c);
  if (events & UV_READABLE) PQconsumeInput(c->pg);
}

static void on_poll(uv_poll_t *p, int status, int events) {
  struct pg_watch *w = (struct pg_watch *)p;
  struct pg_conn *c = w->c;
  if (c->state == PG_CONNECTING) {
    pg_connect_poll(c);
    return;
  }
  if (c->state != PG_READY) return;
  aguard_enter(&c->pump);
  io_ready(c, status, events);
  aguard_leave(&c->pump);
  pg_kick(c);
}

/* ---- sending at the iteration's end ---------------------------------------------------------- */

static void on_check(uv_check_t *h) {
  struct pg_conn *c = h->data;
  uv_check_stop(&c->check);
  uv_prepare_stop(&c->prepare);
  c->flush_armed = false;
  pg_flush_sends(c);
}

static void on_prepare(uv_prepare_t *h) {
  on_check((uv_check_t *)&((struct pg_conn *)h->data)->check);
}

void pg_sched_flush(struct pg_conn *c) {
  if (c->flush_armed || c->state != PG_READY) return;
  c->flush_armed = true;
  uv_check_start(&c->check, on_check);
  uv_prepare_start(&c->prepare, on_prepare);
}

/* ---- the end ----------------------------------------------------------------------------------
 */

/* Takes every request off the connection, in order: the pipeline's, the
 * solo one, the victims, the queue. Listeners are answered apart. */
static struct pg_req *take_all(struct pg_conn *c) {
  /* Failed locally behind a step already done: their turn had come. */
  struct pg_req *list = c->local, **tail = &list;
  c->local = NULL;
  while (*tail) tail = &(*tail)->next;
  *tail = c->seg_head;
  for (struct pg_req *r = list; r; r = r->next) r->where = R_NEW;
  while (*tail) tail = &(*tail)->next;
  c->seg_head = c->seg_tail = NULL;
  c->seg_open = 0;
  c->rounds_out = 0;
  c->victims_stale = false;
  c->cancel_seen = false;
  while (c->nsteps) {
    struct pg_req *r = pg_step_head(c)->r;
    pg_step_pop(c); /* what failed locally behind the step is in c->local now */
    if (r != NULL && r->where != R_NEW) { /* else already taken */
      r->where = R_NEW;
      r->next = NULL;
      *tail = r;
      tail = &r->next;
    }
    for (*tail = c->local, c->local = NULL; *tail; tail = &(*tail)->next) (*tail)->where = R_NEW;
  }
  c->inflight = 0;
  if (c->solo) {
    c->solo->next = NULL;
    *tail = c->solo;
    tail = &c->solo->next;
    c->solo = NULL;
  }
  *tail = c->victims;
  c->victims = NULL;
  while (*tail) tail = &(*tail)->next;
  while (c->send_head) {
    struct pg_req *r = c->send_head;
    pg_unqueue(c, r);
    r->next = NULL;
    *tail = r;
    tail = &r->next;
  }
  c->barrier = NULL;
  return list;
}

static void fail_all(struct pg_conn *c, int status, const char *code, const char *msg) {
  struct pg_req *list = take_all(c);
  bool first = true;
  while (list) {
    struct pg_req *r = list;
    list = r->next;
    /* The one the server was running keeps the server's own error. */
    if (first && status != ASCOPE_ECLOSED)
      pg_req_fail(r, status, code, msg);
    else
      pg_req_fail(r, ASCOPE_ECLOSED, "08006", first ? msg : "the connection was lost");
    first = false;
    pg_answer(c, r);
  }
  pg_listeners_fail(c, ASCOPE_ECLOSED, "08006", msg);
}

void pg_break(struct pg_conn *c, int status, const char *code, const char *msg) {
  if (c->state != PG_READY) return;
  if (c->probing) { /* still connecting, as far as the scope knows */
    c->probing = false;
    pg_acquire_fail(c, ASCOPE_EDRIVER, "08001", msg);
    return;
  }
  c->state = PG_BROKEN;
  PG_COUNT(c, PGS_BROKEN, 1);
  pg_unwatch(c);       /* libpq may have closed the socket already */
  pg_cancel_detach(c); /* a cancel request still out concerns nothing now */
  aguard_enter(&c->pump);
  fail_all(c, status, code, msg);
  if (aguard_leave(&c->pump)) pg_kick(c); /* a release asked for meanwhile */
}

/* Release or abort: fail what is left, let the server go, close the
 * handles; the release completes when the last one has closed. */
static void finish_close(struct pg_conn *c) {
  if (c->state == PG_CLOSING) return;
  bool busy = c->state == PG_READY && (c->nsteps || c->solo);
  c->state = PG_CLOSING;
  aguard_enter(&c->pump); /* answers below run user code; nothing may re-enter, ever */
  /* Something still runs on the server (a stopped stream, a statement of
   * a failed scope): a cancel request stops it there, so the backend does
   * not run on for a client that is gone. */
  if (busy && c->cancel_job == NULL && !c->aborting) pg_cancel_fire(c, NULL);
  if (c->aborting) pg_cancel_detach(c);
  fail_all(c, ASCOPE_ECLOSED, "08006", "the connection was closed");
  pg_unwatch(c);
  if (c->pg) {
    PQfinish(c->pg);
    c->pg = NULL;
    PG_COUNT(c, PGS_CLOSED, 1);
  }
  pg_close_handles(c);
}

void pg_close_handles(struct pg_conn *c) {
  uv_handle_t *hs[] = {(uv_handle_t *)&c->timer, (uv_handle_t *)&c->check,
                       (uv_handle_t *)&c->prepare, (uv_handle_t *)&c->retry};
  for (size_t i = 0; i < sizeof hs / sizeof hs[0]; i++)
    if (!uv_is_closing(hs[i])) uv_close(hs[i], pg_handle_closed);
  pg_unwatch(c);
  pg_maybe_done(c);
}

void pg_close(struct pg_conn *c, bool abort) {
  c->closing = true;
  c->aborting = c->aborting || abort;
  if (c->state == PG_CLOSING) { /* an abort of a release under way: stop waiting */
    if (abort) pg_cancel_detach(c);
    pg_maybe_done(c);
    return;
  }
  if (aguard_busy(&c->pump)) return; /* the pump finishes it */
  finish_close(c);
}
