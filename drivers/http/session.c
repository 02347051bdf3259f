/* A session: the resource. It owns a libcurl multi handle and a share
 * handle (DNS cache, connections, TLS sessions), and joins the multi handle
 * to the loop: libcurl says which sockets to watch (CURLMOPT_SOCKETFUNCTION
 * → uv_poll) and when to wake it (CURLMOPT_TIMERFUNCTION → uv_timer), and
 * the loop calls curl_multi_socket_action back.
 *
 * libcurl must not be called back into from inside its own callbacks. The
 * write and read callbacks run user code, which may start, cancel or resume
 * requests; so every call into libcurl goes through a guard (h->curl), and
 * what user code asks for meanwhile is recorded and applied by
 * http_settle() as soon as libcurl has returned. */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

/* ---- libuv handles ------------------------------------------------------------- */

static void maybe_released(ascope_http *h);

void http_handle_gone(ascope_http *h) {
  h->open_handles--;
  maybe_released(h);
}

void http_handle_closed(uv_handle_t *handle) {
  http_handle_gone(handle->data);
}

static void on_curl_timer(uv_timer_t *t) {
  http_action(t->data, CURL_SOCKET_TIMEOUT, 0);
}

/* Called by libcurl: a 0 ms timeout fires on the next loop iteration, not
 * from here, so libcurl is never re-entered. */
int http_timer_cb(CURLM *multi, long timeout_ms, void *userp) {
  (void)multi;
  ascope_http *h = userp;
  if (h->torn_down) return 0;
  if (timeout_ms < 0)
    uv_timer_stop(&h->curl_timer);
  else
    uv_timer_start(&h->curl_timer, on_curl_timer, (uint64_t)timeout_ms, 0);
  return 0;
}

/* ---- driving libcurl ---------------------------------------------------------- */

void http_action(ascope_http *h, curl_socket_t fd, int flags) {
  if (h->torn_down) return;
  int running;
  aguard_enter(&h->curl);
  curl_multi_socket_action(h->multi, fd, flags, &running);
  aguard_leave(&h->curl);
  http_settle(h);
}

static void read_done(ascope_http *h) {
  CURLMsg *m;
  int left;
  while (!h->torn_down && (m = curl_multi_info_read(h->multi, &left))) {
    if (m->msg != CURLMSG_DONE) continue;
    ascope_http_req *q = NULL;
    curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&q);
    /* http_req_finish() removes the handle, which frees m: copy first. */
    CURLcode rc = m->data.result;
    if (q && q->state == REQ_ACTIVE) http_req_finish(q, rc);
  }
}

static void teardown(ascope_http *h);

void http_settle(ascope_http *h) {
  if (aguard_busy(&h->curl) || aguard_busy(&h->settle)) return;
  aguard_enter(&h->settle);
  bool again = true;
  while (again && !h->torn_down) {
    read_done(h);
    again = false;
    while (!aq_empty(&h->deferred) && !h->torn_down) {
      ascope_http_req *q = aq_data(h->deferred.next, ascope_http_req, deferred);
      aq_remove(&q->deferred);
      http_req_apply_deferred(q); /* may run user code, and so defer more */
      again = true;
    }
    int64_t waiting = h->n_waiting;
    http_promote(h);
    if (h->n_waiting != waiting) again = true;
  }
  aguard_leave(&h->settle);
  if (h->closing && !h->torn_down) teardown(h);
}

/* ---- easy handles, kept for reuse ----------------------------------------------- */

CURL *http_easy_get(ascope_http *h) {
  if (h->neasy_free) {
    CURL *e = h->easy_free[--h->neasy_free];
    curl_easy_reset(e);
    return e;
  }
  return curl_easy_init();
}

void http_easy_put(ascope_http *h, CURL *easy) {
  if (easy == NULL) return;
  if (h->closing || h->neasy_free == h->easy_free_cap) {
    size_t cap = h->easy_free_cap ? h->easy_free_cap * 2 : 16;
    CURL **p = h->closing ? NULL : ascope_realloc(h->easy_free, cap * sizeof *p);
    if (p == NULL) {
      curl_easy_cleanup(easy);
      return;
    }
    h->easy_free = p;
    h->easy_free_cap = cap;
  }
  h->easy_free[h->neasy_free++] = easy;
}

/* ---- acquire, release, abort ---------------------------------------------------- */

static int multi_setup(ascope_http *h) {
  h->multi = curl_multi_init();
  h->share = curl_share_init();
  if (h->multi == NULL || h->share == NULL) return UV_ENOMEM;
  curl_share_setopt(h->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS);
  curl_share_setopt(h->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION);
  curl_share_setopt(h->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_CONNECT);
  curl_multi_setopt(h->multi, CURLMOPT_SOCKETFUNCTION, http_socket_cb);
  curl_multi_setopt(h->multi, CURLMOPT_SOCKETDATA, h);
  curl_multi_setopt(h->multi, CURLMOPT_TIMERFUNCTION, http_timer_cb);
  curl_multi_setopt(h->multi, CURLMOPT_TIMERDATA, h);
  curl_multi_setopt(h->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, h->conf.max_connections);
  curl_multi_setopt(h->multi, CURLMOPT_MAX_HOST_CONNECTIONS, h->conf.max_host_connections);
  if (h->conf.max_connections)
    curl_multi_setopt(h->multi, CURLMOPT_MAXCONNECTS, h->conf.max_connections);
  return 0;
}

static void curl_free_all(ascope_http *h) {
  if (h->multi) curl_multi_cleanup(h->multi);
  if (h->share) curl_share_cleanup(h->share);
  h->multi = NULL;
  h->share = NULL;
}

static void http_acquire(ascope_res *r, const void *arg, const char *options) {
  (void)arg;
  ascope_http *h = ascope_res_state(r);
  h->res = r;
  h->loop = ascope_rt_loop(ascope_res_rt(r));
  h->rts = ascope_rt_driver_state(ascope_res_rt(r), ascope_http_driver(), sizeof *h->rts, NULL);
  if (h->rts == NULL) {
    ascope_res_done(r, UV_ENOMEM, NULL, "out of memory");
    return;
  }
  aq_init(&h->waiting);
  aq_init(&h->active);
  aq_init(&h->deferred);
  http_opts_default(&h->opts);
  http_conf_default(&h->conf);
  char err[160];
  int rc = http_parse_options(options, &h->opts, &h->conf, err, sizeof err);
  if (rc) {
    http_conf_free(&h->conf);
    ascope_res_done(r, rc, NULL, err);
    return;
  }
  http_global_init();
  rc = multi_setup(h);
  if (rc) {
    curl_free_all(h);
    http_conf_free(&h->conf);
    ascope_res_done(r, rc, NULL, "cannot create libcurl's multi or share handle");
    return;
  }
  /* Timers last: nothing after them can fail, so a failed acquire never has
   * a handle to close. */
  uv_timer_init(h->loop, &h->curl_timer);
  uv_timer_init(h->loop, &h->wait_timer);
  h->curl_timer.data = h;
  h->wait_timer.data = h;
  h->open_handles = 2;
  ascope_res_done(r, 0, NULL, NULL);
}

/* Ends every request still here: a request of a scope that is not inside
 * the session's (which the structured scopes would have waited for). */
static void end_leftovers(ascope_http *h) {
  while (!aq_empty(&h->waiting)) {
    ascope_http_req *q = aq_data(h->waiting.next, ascope_http_req, node);
    http_req_drop(q, ASCOPE_ECLOSED, NULL, "the HTTP session was closed");
  }
  while (!aq_empty(&h->active)) {
    ascope_http_req *q = aq_data(h->active.next, ascope_http_req, node);
    http_req_drop(q, ASCOPE_ECLOSED, NULL, "the HTTP session was closed");
  }
}

static void teardown(ascope_http *h) {
  end_leftovers(h);
  h->torn_down = true;
  aguard_enter(&h->curl);
  http_socks_close(h); /* before libcurl closes the descriptors they watch */
  while (h->neasy_free) curl_easy_cleanup(h->easy_free[--h->neasy_free]);
  ascope_free(h->easy_free);
  h->easy_free = NULL;
  curl_free_all(h);
  aguard_leave(&h->curl);
  http_socks_close(h); /* any that libcurl announced meanwhile */
  http_hosts_free(h);
  ascope_free(h->socks);
  h->socks = NULL;
  h->nsocks = 0;
  http_conf_free(&h->conf);
  uv_close((uv_handle_t *)&h->curl_timer, http_handle_closed);
  uv_close((uv_handle_t *)&h->wait_timer, http_handle_closed);
}

static void maybe_released(ascope_http *h) {
  /* The core may reuse the state once the release completes: every handle
   * in it must have run its close callback first. */
  if (h->torn_down && h->open_handles == 0) ascope_res_done(h->res, 0, NULL, NULL);
}

static void http_release(ascope_res *r, int outcome) {
  (void)outcome; /* a session has nothing to commit or roll back */
  ascope_http *h = ascope_res_state(r);
  h->closing = true;
  /* From inside libcurl or http_settle(), the teardown waits for them. */
  if (!aguard_busy(&h->curl) && !aguard_busy(&h->settle)) teardown(h);
}

static void http_abort(ascope_res *r) {
  ascope_http *h = ascope_res_state(r);
  h->closing = true;
  if (!h->torn_down) teardown(h);
}

static const ascope_driver http_driver = {
    .abi = ASCOPE_DRIVER_ABI,
    .name = "http",
    .state_size = sizeof(ascope_http),
    .acquire = http_acquire,
    .release = http_release,
    .abort = http_abort,
};

const ascope_driver *ascope_http_driver(void) {
  return &http_driver;
}

int ascope_use_http(ascope *s, const char *options) {
  return ascope_use(s, &http_driver, NULL, options);
}

int64_t ascope_http_stat(ascope_http *h, const char *name) {
  if (h == NULL || name == NULL) return UV_EINVAL;
  if (!strcmp(name, "requests")) return h->n_requests;
  if (!strcmp(name, "connects")) return h->n_connects;
  if (!strcmp(name, "active")) return h->n_active;
  if (!strcmp(name, "waiting")) return h->n_waiting;
  if (!strcmp(name, "active_peak")) return h->active_peak;
  return UV_EINVAL;
}

/* "http.<name>" of ascope_rt_stat: every session of the runtime together
 * (the names of ascope_http_stat; active_peak is the runtime's own peak). */
static int64_t rt_stat(void *state, const char *name) {
  static const char *const names[HTS_NSTATS] = {
      [HTS_REQUESTS] = "requests", [HTS_CONNECTS] = "connects",       [HTS_ACTIVE] = "active",
      [HTS_WAITING] = "waiting",   [HTS_ACTIVE_PEAK] = "active_peak",
  };
  const struct http_rt *rts = state;
  for (int i = 0; name && i < HTS_NSTATS; i++)
    if (strcmp(name, names[i]) == 0) return rts ? rts->v[i] : 0;
  return UV_EINVAL;
}

/* Found by name ("http") once the library is loaded: ascope_driver_find(). */
__attribute__((constructor)) static void http_driver_register(void) {
  ascope_driver_register(&http_driver);
  ascope_driver_set_stats(&http_driver, rt_stat);
}
