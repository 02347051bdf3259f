/* hiredis's event hooks on a libuv poll handle.
 *
 * This is hiredis's own libuv adapter (hiredis/adapters/libuv.h) with four
 * differences the driver needs and the adapter of hiredis 0.14 lacks:
 *   - a poll error (POLLERR: a refused connect, a reset connection) is
 *     handed to hiredis as readiness, so hiredis reads the socket error and
 *     fails the connect or the connection; the stock adapter drops it and
 *     the connection then hangs, libuv having stopped the watch;
 *   - the handle closes with a callback the driver sees (rd_handle_closed):
 *     the release completes only after it, since the core reuses the
 *     state's memory at once, and the stock adapter closes it silently;
 *   - reading can be held (read_paused) whatever hiredis asks for: that is
 *     how a paused subscription stops reading its socket;
 *   - a connected socket is written without a writable watch (below).
 * The poll handle lives in the connection itself, not in a separate
 * allocation.
 */
#include "internal.h"

/* A write hiredis asks for is not a writable watch: uv_poll_start
 * re-registers the descriptor with epoll each time (libuv deletes it and
 * adds it again), three epoll_ctl calls per round of commands when the
 * watch went on and off around every write. The socket of a connection
 * with room is written instead at the end of on_poll (commands sent by
 * reply callbacks) or by the flush prepare handle (commands sent from
 * anywhere else: a body, a timer), which runs before the loop blocks, so
 * every command sent in one loop iteration still leaves in one write. Only
 * a socket that took less than hiredis had (write_blocked), or a connect
 * in progress, is watched for writable. */
static bool poll_for_write(ascope_redis *c) {
  return c->write_blocked || !(c->ac->c.flags & REDIS_CONNECTED);
}

/* After hiredis wrote: what it could not write waits for the socket. */
static void after_write(ascope_redis *c) {
  if (c->ac && (c->events & UV_WRITABLE) && !c->write_blocked) {
    c->write_blocked = true;
    rd_update_poll(c);
  }
}

static void on_flush(uv_prepare_t *h);

static void schedule_flush(ascope_redis *c) {
  if (!poll_for_write(c) && !uv_is_active((uv_handle_t *)&c->flush))
    uv_prepare_start(&c->flush, on_flush);
}

static void on_poll(uv_poll_t *p, int status, int events) {
  ascope_redis *c = p->data;
  if (status < 0) { /* libuv stopped the watch: let hiredis see why */
    c->applied = 0;
    events = c->events;
  }
  aguard_enter(&c->hiredis);
  c->in_poll = true;
  if (c->ac && (events & UV_READABLE)) redisAsyncHandleRead(c->ac);
  c->in_poll = false;
  bool more = c->ac && (c->events & UV_WRITABLE) && c->acquired;
  if (c->ac && ((events & UV_WRITABLE) || more)) {
    redisAsyncHandleWrite(c->ac);
    after_write(c);
  } else if (c->ac && (c->events & UV_WRITABLE)) {
    schedule_flush(c);
  }
  aguard_leave(&c->hiredis);
  rd_after_hiredis(c);
}

static void on_flush(uv_prepare_t *h) {
  ascope_redis *c = h->data;
  uv_prepare_stop(h);
  if (c->ac == NULL || !(c->events & UV_WRITABLE) || c->write_blocked || c->closing) return;
  aguard_enter(&c->hiredis);
  redisAsyncHandleWrite(c->ac);
  after_write(c);
  aguard_leave(&c->hiredis);
  rd_after_hiredis(c);
}

void rd_flush_init(ascope_redis *c) {
  uv_prepare_init(c->loop, &c->flush); /* cannot fail */
  c->flush.data = c;
  uv_unref((uv_handle_t *)&c->flush);
}

/* hiredis asks to read again after every read: only a change reaches
 * libuv, as uv_poll_start re-registers the descriptor each time. */
void rd_update_poll(ascope_redis *c) {
  if (c->ac == NULL) return; /* closed with the context */
  int ev = c->events & ~(c->read_paused ? UV_READABLE : 0);
  if (!poll_for_write(c)) ev &= ~UV_WRITABLE;
  if (ev == c->applied) return;
  c->applied = ev;
  if (ev)
    uv_poll_start(&c->poll, ev, on_poll);
  else
    uv_poll_stop(&c->poll);
}

static void add_read(void *priv) {
  ascope_redis *c = priv;
  c->events |= UV_READABLE;
  rd_update_poll(c);
}

static void del_read(void *priv) {
  ascope_redis *c = priv;
  c->events &= ~UV_READABLE;
  rd_update_poll(c);
}

static void add_write(void *priv) {
  ascope_redis *c = priv;
  c->events |= UV_WRITABLE;
  if (poll_for_write(c))
    rd_update_poll(c);
  else if (!c->in_poll)
    schedule_flush(c);
}

static void del_write(void *priv) {
  ascope_redis *c = priv;
  c->events &= ~UV_WRITABLE;
  c->write_blocked = false;
  rd_update_poll(c);
}

/* hiredis frees the context: stop watching before it closes the socket
 * (it does so right after), and close the handle. */
static void cleanup(void *priv) {
  ascope_redis *c = priv;
  uv_poll_stop(&c->poll);
  uv_close((uv_handle_t *)&c->poll, rd_handle_closed);
  c->ac = NULL;
  rd_context_gone(c);
}

int rd_attach(ascope_redis *c) {
  int rc = uv_poll_init_socket(c->loop, &c->poll, c->ac->c.fd);
  if (rc) return rc;
  c->poll.data = c;
  uv_unref((uv_handle_t *)&c->poll); /* the scopes keep the loop alive, not a connection */
  c->open_handles++;
  c->ac->ev.data = c;
  c->ac->ev.addRead = add_read;
  c->ac->ev.delRead = del_read;
  c->ac->ev.addWrite = add_write;
  c->ac->ev.delWrite = del_write;
  c->ac->ev.cleanup = cleanup;
  return 0;
}
