/* hiredis's event hooks on a libuv poll handle.
 *
 * This is hiredis's own libuv adapter (hiredis/adapters/libuv.h) with three
 * differences the driver needs and the adapter of hiredis 0.14 lacks:
 *   - a poll error (POLLERR: a refused connect, a reset connection) is
 *     handed to hiredis as readiness, so hiredis reads the socket error and
 *     fails the connect or the connection; the stock adapter drops it and
 *     the connection then hangs, libuv having stopped the watch;
 *   - the handle closes with a callback the driver sees (rd_handle_closed):
 *     the release completes only after it, since the core reuses the
 *     state's memory at once, and the stock adapter closes it silently;
 *   - reading can be held (read_paused) whatever hiredis asks for: that is
 *     how a paused subscription stops reading its socket.
 * The poll handle lives in the connection itself, not in a separate
 * allocation.
 */
#include "internal.h"

/* Replies read often make callbacks send the next commands: they are
 * written at once, in the same turn, instead of waiting a loop iteration
 * (and two epoll_ctl calls) for the writable event; a connected socket
 * with replies coming in almost always has room. */
static void on_poll(uv_poll_t *p, int status, int events) {
  ascope_redis *c = p->data;
  if (status < 0) { /* libuv stopped the watch: let hiredis see why */
    c->applied = 0;
    events = c->events;
  }
  c->depth++;
  if (c->ac && (events & UV_READABLE)) redisAsyncHandleRead(c->ac);
  bool more = c->ac && (c->events & UV_WRITABLE) && c->acquired;
  if (c->ac && ((events & UV_WRITABLE) || more)) redisAsyncHandleWrite(c->ac);
  c->depth--;
  rd_after_hiredis(c);
}

/* hiredis asks to read again after every read: only a change reaches
 * libuv, as uv_poll_start re-registers the descriptor each time. */
void rd_update_poll(ascope_redis *c) {
  if (c->ac == NULL) return; /* closed with the context */
  int ev = c->events & ~(c->read_paused ? UV_READABLE : 0);
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
  rd_update_poll(c);
}

static void del_write(void *priv) {
  ascope_redis *c = priv;
  c->events &= ~UV_WRITABLE;
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
