/* libcurl's sockets, watched with uv_poll.
 *
 * libcurl says which sockets to watch (CURLMOPT_SOCKETFUNCTION) and the
 * loop calls curl_multi_socket_action when one is ready. A kept-alive
 * connection is announced (POLL_IN) and withdrawn (POLL_REMOVE) around every
 * request; taking it out of epoll and putting it back each time would cost
 * two system calls per request. So a connection socket that libcurl opened
 * through us stays watched when withdrawn: if it turns readable while idle
 * (the server closed it), the watch stops then; and since libcurl closes it
 * through us too (CURLOPT_CLOSESOCKETFUNCTION), the watch always ends before
 * the descriptor does, so a reused descriptor number is never mistaken for
 * the old socket. Sockets opened elsewhere (the resolver's) are unwatched at
 * once when withdrawn. */
#include "internal.h"

#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

struct http_sock {
  uv_poll_t poll;
  ascope_http *h;
  curl_socket_t fd;
  int events;   /* what uv_poll watches now: 0 when stopped */
  bool owned;   /* opened through http_open_socket: its close is seen */
  bool removed; /* libcurl does not watch it now */
};

static void sock_closed(uv_handle_t *handle) {
  struct http_sock *k = hq_data(handle, struct http_sock, poll);
  ascope_http *h = k->h;
  free(k);
  http_handle_gone(h);
}

static void sock_close(ascope_http *h, struct http_sock *k) {
  h->socks[k->fd] = NULL;
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

static struct http_sock *sock_get(ascope_http *h, curl_socket_t fd) {
  if ((size_t)fd >= h->nsocks) {
    size_t n = h->nsocks ? h->nsocks : 64;
    while (n <= (size_t)fd) n *= 2;
    struct http_sock **p = realloc(h->socks, n * sizeof *p);
    if (p == NULL) return NULL;
    memset(p + h->nsocks, 0, (n - h->nsocks) * sizeof *p);
    h->socks = p;
    h->nsocks = n;
  }
  if (h->socks[fd]) return h->socks[fd];
  struct http_sock *k = calloc(1, sizeof *k);
  if (k == NULL) return NULL;
  if (uv_poll_init_socket(h->loop, &k->poll, fd) != 0) {
    free(k);
    return NULL;
  }
  k->h = h;
  k->fd = fd;
  k->poll.data = k;
  h->open_handles++;
  h->socks[fd] = k;
  return k;
}

/* Called by libcurl: records what to watch, never calls libcurl. */
int http_socket_cb(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp) {
  (void)easy;
  (void)socketp;
  ascope_http *h = userp;
  struct http_sock *k = fd >= 0 && (size_t)fd < h->nsocks ? h->socks[fd] : NULL;
  if (what == CURL_POLL_REMOVE) {
    if (k && k->owned)
      k->removed = true;
    else if (k)
      sock_close(h, k);
    return 0;
  }
  if (h->torn_down || fd < 0) return 0;
  if (k == NULL && (k = sock_get(h, fd)) == NULL) return -1; /* fails its transfers */
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
  if (k) k->owned = true; /* else it is watched the plain way */
  return fd;
}

/* CURLOPT_CLOSESOCKETFUNCTION: the watch ends, then the descriptor. */
int http_close_socket(void *clientp, curl_socket_t fd) {
  ascope_http *h = clientp;
  if (fd >= 0 && (size_t)fd < h->nsocks && h->socks[fd]) sock_close(h, h->socks[fd]);
  return close(fd);
}
