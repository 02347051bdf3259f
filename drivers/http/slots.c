/* Connection slots: the queue in front of the multi handle.
 *
 * libcurl can queue transfers itself when a connection limit is reached,
 * but its timeouts start when the transfer is added, so a request that waits
 * long for a free connection would lose its time limit to the wait. Here a
 * request only reaches libcurl once it holds a slot; the wait is its own
 * phase, bounded by wait_timeout_ms, and timeout_ms starts afterwards. */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

struct http_host {
  struct http_host *next;
  long active;
  char key[];
};

struct http_host *http_host_get(ascope_http *h, const char *key) {
  if (h->conf.max_host_connections == 0) return NULL;
  for (struct http_host *x = h->hosts; x; x = x->next)
    if (!strcmp(x->key, key)) return x;
  size_t n = strlen(key) + 1;
  struct http_host *x = ascope_malloc(sizeof *x + n);
  if (x == NULL) return NULL; /* then the host is simply not limited */
  memcpy(x->key, key, n);
  x->active = 0;
  x->next = h->hosts;
  h->hosts = x;
  return x;
}

bool http_host_full(ascope_http *h, struct http_host *host) {
  return host && host->active >= h->conf.max_host_connections;
}

void http_host_take(struct http_host *host) {
  if (host) host->active++;
}

void http_host_put(ascope_http *h, struct http_host *host) {
  if (host == NULL || --host->active > 0) return;
  for (struct http_host **p = &h->hosts; *p; p = &(*p)->next) {
    if (*p == host) {
      *p = host->next;
      ascope_free(host);
      return;
    }
  }
}

void http_hosts_free(ascope_http *h) {
  while (h->hosts) {
    struct http_host *x = h->hosts;
    h->hosts = x->next;
    ascope_free(x);
  }
}

static bool total_full(ascope_http *h) {
  return h->conf.max_connections && h->n_active >= h->conf.max_connections;
}

void http_wait_add(ascope_http *h, ascope_http_req *q) {
  q->state = REQ_WAITING;
  q->wait_deadline = 0;
  if (q->opts.wait_timeout_ms) {
    q->wait_deadline = uv_now(h->loop) + (uint64_t)q->opts.wait_timeout_ms;
    h->n_deadlines++;
  }
  aq_push(&h->waiting, &q->node);
  h->n_waiting++;
  http_count(h, HTS_WAITING, 1);
}

void http_wait_remove(ascope_http *h, ascope_http_req *q) {
  aq_remove(&q->node);
  h->n_waiting--;
  http_count(h, HTS_WAITING, -1);
  if (q->wait_deadline) h->n_deadlines--;
  q->wait_deadline = 0;
}

/* Returns true when the start failed: user code ran, the queue may differ. */
static bool start_one(ascope_http *h, ascope_http_req *q) {
  http_wait_remove(h, q);
  int rc = http_req_setup(q);
  if (rc == 0) {
    CURLMcode mc = curl_multi_add_handle(h->multi, q->easy);
    if (mc != CURLM_OK) rc = mc == CURLM_OUT_OF_MEMORY ? UV_ENOMEM : ASCOPE_EDRIVER;
  }
  if (rc) {
    http_req_end(q, rc, NULL, "the request could not be handed to libcurl");
    return true;
  }
  q->state = REQ_ACTIVE;
  aq_push(&h->active, &q->node);
  http_host_take(q->host);
  if (++h->n_active > h->active_peak) h->active_peak = h->n_active;
  http_count(h, HTS_ACTIVE, 1);
  return false;
}

void http_promote(ascope_http *h) {
  /* Inside libcurl's callbacks a handle cannot be added: http_settle()
   * calls again once libcurl has returned. */
  if (aguard_busy(&h->curl) || h->torn_down) return;
  struct aq *n = h->waiting.next;
  while (n != &h->waiting && !total_full(h)) {
    ascope_http_req *q = aq_data(n, ascope_http_req, node);
    n = n->next;
    /* Looked up each time, and kept by the request only once it starts: a
     * host's record lives while requests hold its slots, and the last to
     * finish frees it, under any request still waiting that kept it. */
    struct http_host *host = h->conf.max_host_connections ? http_host_get(h, q->host_key) : NULL;
    if (http_host_full(h, host)) continue; /* FIFO among the hosts that have room */
    q->host = host;
    if (start_one(h, q)) n = h->waiting.next; /* user code ran: the queue may differ */
  }
  http_wait_arm(h);
}

static void on_wait_timer(uv_timer_t *t) {
  ascope_http *h = t->data;
  uint64_t now = uv_now(h->loop);
  struct aq *n = h->waiting.next;
  while (n != &h->waiting) {
    ascope_http_req *q = aq_data(n, ascope_http_req, node);
    n = n->next;
    if (q->wait_deadline == 0 || q->wait_deadline > now) continue;
    char msg[128];
    snprintf(msg, sizeof msg, "no connection slot became free within %ld ms",
             q->opts.wait_timeout_ms);
    http_wait_remove(h, q);
    http_req_end(q, ASCOPE_ETIMEDOUT, "WAIT_TIMEDOUT", msg);
    n = h->waiting.next; /* user code ran */
  }
  http_settle(h);
}

void http_wait_arm(ascope_http *h) {
  if (h->torn_down) return;
  if (h->n_deadlines == 0) {
    uv_timer_stop(&h->wait_timer);
    return;
  }
  uint64_t first = 0;
  for (struct aq *n = h->waiting.next; n != &h->waiting; n = n->next) {
    ascope_http_req *q = aq_data(n, ascope_http_req, node);
    if (q->wait_deadline && (first == 0 || q->wait_deadline < first)) first = q->wait_deadline;
  }
  if (first == 0) {
    uv_timer_stop(&h->wait_timer);
    return;
  }
  uint64_t now = uv_now(h->loop);
  uv_timer_start(&h->wait_timer, on_wait_timer, first > now ? first - now : 0, 0);
}
