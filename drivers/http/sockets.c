/* libcurl's sockets, watched with uv_poll.
 *
 * libcurl says which sockets to watch (CURLMOPT_SOCKETFUNCTION) and the
 * loop calls curl_multi_socket_action when one is ready. A uv_poll handle
 * knows its socket only by descriptor number, and every stop, start or close
 * of it issues an epoll_ctl on that number. So one rule keeps the loop
 * sound: a handle is stopped and closed while its number still names the
 * socket it watches. Kept past that, it either makes libuv abort (an
 * epoll_ctl on a closed descriptor fails inside uv_run) or, once the number
 * is reused by another watcher of the loop (a PostgreSQL connection, another
 * session's socket), takes that one out of epoll.
 *
 * libcurl closes its sockets through CURLOPT_CLOSESOCKETFUNCTION, and the
 * watch ends there, before the close. Not always, though: libcurl 7.88.0 to
 * 8.1.2 close a socket whose connect has not completed (a transfer cancelled
 * or failed while connecting) with a plain close(), and announce only
 * afterwards, with CURL_POLL_REMOVE, that it is gone; or, if it opened a
 * new socket meanwhile that got the same number, not at all. Hence:
 *   - a handle exists only for a socket libcurl has asked us to watch, and
 *     is created then (a socket libcurl opens is only recorded as ours);
 *   - on CURL_POLL_REMOVE the handle is closed, unless the socket is one
 *     libcurl opened through us and is provably the same open socket (its
 *     inode): a kept-alive connection is withdrawn and announced again
 *     around every request, and keeping it watched saves two epoll_ctl per
 *     request. If it turns readable while idle (the server closed it), the
 *     watch stops then; its close comes through the close callback, as it
 *     is connected;
 *   - a socket opened with the number of a handle still open means the old
 *     socket was closed behind our back: the handle is re-registered for
 *     the new one, with what libcurl believes it watches on that number.
 * Every REMOVE and close arrives inside a call into libcurl, before the loop
 * runs again, so no other watcher of the loop can have taken the number in
 * between. */
#include "internal.h"

#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

struct http_sock {
  uv_poll_t poll;
  ascope_http *h;
  curl_socket_t fd;
  int events;   /* what uv_poll watches now: 0 when stopped */
  bool polled;  /* poll is initialized: it has to be closed */
  bool owned;   /* opened through http_open_socket: its close is seen, mostly */
  bool removed; /* libcurl does not watch it now */
  dev_t dev;    /* the socket's identity, when owned */
  ino_t ino;
};

static void sock_closed(uv_handle_t *handle) {
  struct http_sock *k = aq_data(handle, struct http_sock, poll);
  ascope_http *h = k->h;
  ascope_free(k);
  http_handle_gone(h);
}

/* Forgets the socket; called while fd is still its number (see above). */
static void sock_close(ascope_http *h, struct http_sock *k) {
  h->socks[k->fd] = NULL;
  if (!k->polled) {
    ascope_free(k);
    return;
  }
  /* uv_close takes the descriptor out of epoll now, before it is closed. */
  uv_close((uv_handle_t *)&k->poll, sock_closed);
}

void http_socks_close(ascope_http *h) {
  for (size_t i = 0; i < h->nsocks; i++)
    if (h->socks[i]) sock_close(h, h->socks[i]);
}

static void sock_stop(struct http_sock *k) {
  uv_poll_stop(&k->poll);
  k->events = 0;
}

static void on_poll(uv_poll_t *p, int status, int events) {
  struct http_sock *k = p->data;
  if (k->removed) {
    sock_stop(k); /* an idle connection stirred: libcurl sees to it when reusing it */
    return;
  }
  int flags = 0;
  if (status < 0) flags = CURL_CSELECT_ERR;
  if (events & UV_READABLE) flags |= CURL_CSELECT_IN;
  if (events & UV_WRITABLE) flags |= CURL_CSELECT_OUT;
  http_action(k->h, k->fd, flags);
}

/* The record for fd, created (without a handle) if there is none. */
static struct http_sock *sock_get(ascope_http *h, curl_socket_t fd) {
  if ((size_t)fd >= h->nsocks) {
    size_t n = h->nsocks ? h->nsocks : 64;
    while (n <= (size_t)fd) n *= 2;
    struct http_sock **p = ascope_realloc(h->socks, n * sizeof *p);
    if (p == NULL) return NULL;
    memset(p + h->nsocks, 0, (n - h->nsocks) * sizeof *p);
    h->socks = p;
    h->nsocks = n;
  }
  if (h->socks[fd]) return h->socks[fd];
  struct http_sock *k = ascope_calloc(1, sizeof *k);
  if (k == NULL) return NULL;
  k->h = h;
  k->fd = fd;
  h->socks[fd] = k;
  return k;
}

static int sock_poll_init(ascope_http *h, struct http_sock *k) {
  if (k->polled) return 0;
  if (uv_poll_init_socket(h->loop, &k->poll, k->fd) != 0) return -1;
  k->poll.data = k;
  k->polled = true;
  h->open_handles++;
  return 0;
}

/* Whether fd is still the socket libcurl opened through us: libcurl may
 * have closed it without the close callback. */
static bool sock_same(const struct http_sock *k) {
  struct stat st;
  return k->owned && fstat(k->fd, &st) == 0 && st.st_dev == k->dev && st.st_ino == k->ino;
}

/* Called by libcurl: records what to watch, never calls libcurl. */
int http_socket_cb(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp) {
  (void)easy;
  (void)socketp;
  ascope_http *h = userp;
  struct http_sock *k = fd >= 0 && (size_t)fd < h->nsocks ? h->socks[fd] : NULL;
  if (what == CURL_POLL_REMOVE) {
    if (k && sock_same(k))
      k->removed = true;
    else if (k)
      sock_close(h, k);
    return 0;
  }
  if (h->torn_down || fd < 0) return 0;
  if (k == NULL && (k = sock_get(h, fd)) == NULL) return -1; /* fails its transfers */
  if (sock_poll_init(h, k)) {
    sock_close(h, k);
    return -1;
  }
  k->removed = false;
  int events = 0;
  if (what & CURL_POLL_IN) events |= UV_READABLE;
  if (what & CURL_POLL_OUT) events |= UV_WRITABLE;
  if (events != k->events) {
    uv_poll_start(&k->poll, events, on_poll);
    k->events = events;
  }
  return 0;
}

/* CURLOPT_OPENSOCKETFUNCTION: the socket libcurl would open, marked ours. */
curl_socket_t http_open_socket(void *clientp, curlsocktype purpose, struct curl_sockaddr *a) {
  (void)purpose;
  ascope_http *h = clientp;
  curl_socket_t fd = socket(a->family, a->socktype | SOCK_CLOEXEC, a->protocol);
  if (fd == CURL_SOCKET_BAD || h->torn_down) return fd;
  struct http_sock *k = sock_get(h, fd);
  if (k == NULL) return fd; /* then it is watched the plain way */
  if (k->events) {
    /* The number's old socket was closed without a word, and libcurl may
     * still count it as watched, with these events: the kernel dropped the
     * old registration, so make one for the new socket. (The stop issues an
     * epoll_ctl on a descriptor not in epoll yet, which is harmless.) */
    int events = k->events;
    sock_stop(k);
    if (!k->removed) {
      uv_poll_start(&k->poll, events, on_poll);
      k->events = events;
    }
  }
  struct stat st;
  k->owned = false;
  if (fstat(fd, &st) == 0) {
    k->owned = true;
    k->dev = st.st_dev;
    k->ino = st.st_ino;
  }
  return fd;
}

/* CURLOPT_CLOSESOCKETFUNCTION: the watch ends, then the descriptor. */
int http_close_socket(void *clientp, curl_socket_t fd) {
  ascope_http *h = clientp;
  if (fd >= 0 && (size_t)fd < h->nsocks && h->socks[fd]) sock_close(h, h->socks[fd]);
  return close(fd);
}
