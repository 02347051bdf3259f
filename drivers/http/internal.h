/* The HTTP driver's insides: a session (the resource state), its requests,
 * and the small pieces they share. Nothing here crosses the public ABI. */
#ifndef ASCOPE_HTTP_INTERNAL_H
#define ASCOPE_HTTP_INTERNAL_H

#include <ascope/driver.h>
#include <ascope/http.h>
#include <curl/curl.h>
#include <stdbool.h>

/* The core's intrusive lists (struct aq) and re-entrancy guard (struct
 * aguard), shared by the in-tree drivers. */
#include "../../core/guard.h"
#include "../../core/queue.h"

/* ---- options ------------------------------------------------------------------ */

/* What a request may override; the session holds the defaults. */
typedef struct http_opts {
  long timeout_ms;            /* total, from the moment the request holds a slot; 0: none */
  long connect_timeout_ms;    /* connect + TLS handshake; 0: libcurl's (300 s) */
  long wait_timeout_ms;       /* waiting for a connection slot; 0: none */
  long low_speed_limit;       /* bytes/s ... */
  long low_speed_time;        /* ... for this many seconds fails the request; 0: off */
  long max_redirects;         /* followed; 0: redirects are results, not followed */
  int64_t max_response_bytes; /* body size limit; 0: none */
  bool raise_for_status;      /* HTTP status >= 400 is an error */
} http_opts;

/* The session's own settings, fixed at acquire. */
typedef struct http_conf {
  char *base_url, *user_agent, *ca_file, *proxy;
  long max_connections;      /* requests holding a slot, in all; 0: no limit */
  long max_host_connections; /* per scheme://host:port; 0: no limit */
  long http_version;         /* CURL_HTTP_VERSION_* */
  bool tls_verify;
} http_conf;

void http_opts_default(http_opts *o);
void http_conf_default(http_conf *c);
void http_conf_free(http_conf *c);
/* Parses "key=value ..." into o (and c when not NULL: session keys are then
 * allowed). 0, or UV_EINVAL with a message in err. */
int http_parse_options(const char *options, http_opts *o, http_conf *c, char *err, size_t errlen);

/* ---- a session ------------------------------------------------------------------- */

struct http_sock; /* a uv_poll for one of libcurl's sockets (sockets.c) */
struct http_host; /* slots taken per scheme://host:port */

/* The driver's state in a runtime (ascope_rt_driver_state): its sessions'
 * counters summed, "http.<name>" of ascope_rt_stat. The loop thread only. */
enum { HTS_REQUESTS, HTS_CONNECTS, HTS_ACTIVE, HTS_WAITING, HTS_ACTIVE_PEAK, HTS_NSTATS };
struct http_rt {
  int64_t v[HTS_NSTATS];
};

struct ascope_http {
  ascope_res *res;
  uv_loop_t *loop;
  struct http_rt *rts; /* the runtime's counters */
  CURLM *multi;
  CURLSH *share;
  http_conf conf;
  http_opts opts;
  uv_timer_t curl_timer;    /* CURLMOPT_TIMERFUNCTION */
  uv_timer_t wait_timer;    /* the earliest wait_timeout_ms of the queue */
  struct http_sock **socks; /* by file descriptor */
  size_t nsocks;
  struct http_host *hosts;
  struct aq waiting;  /* requests queued for a slot, FIFO */
  struct aq active;   /* requests added to the multi handle */
  struct aq deferred; /* requests with a cancel or resume to apply after libcurl returns */
  CURL **easy_free;   /* easy handles kept for reuse */
  size_t neasy_free, easy_free_cap;
  struct aguard curl;   /* inside libcurl: it must not be called back into */
  struct aguard settle; /* inside http_settle(): it loops until nothing is left */
  bool closing;         /* released or aborted: no new requests */
  bool torn_down;       /* libcurl's handles are gone */
  int open_handles;     /* libuv handles not yet closed; the release completes at 0 */
  int64_t n_requests, n_connects, n_active, n_waiting, active_peak;
  int64_t n_deadlines; /* waiting requests with a wait_timeout_ms */
  /* the failure of the request whose callback runs (ascope_http_errcode) */
  const char *cb_code, *cb_msg;
};

/* Counts n on counter k of h's runtime (the session keeps its own). */
static inline void http_count(ascope_http *h, int k, int64_t n) {
  int64_t *v = h->rts->v;
  v[k] += n;
  if (k == HTS_ACTIVE && v[k] > v[HTS_ACTIVE_PEAK]) v[HTS_ACTIVE_PEAK] = v[k];
}

/* Calls curl_multi_socket_action and then settles. */
void http_action(ascope_http *h, curl_socket_t fd, int flags);
/* Runs what had to wait until libcurl returned: finished transfers, cancels,
 * resumes, queued requests that may now take a slot, a pending teardown. */
void http_settle(ascope_http *h);
/* Starts the queued requests that a slot is free for. */
void http_promote(ascope_http *h);
void http_wait_arm(ascope_http *h);
void http_wait_add(ascope_http *h, ascope_http_req *q);    /* queue for a slot */
void http_wait_remove(ascope_http *h, ascope_http_req *q); /* leave the queue */
CURL *http_easy_get(ascope_http *h);
void http_easy_put(ascope_http *h, CURL *easy);
int http_socket_cb(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp);
int http_timer_cb(CURLM *multi, long timeout_ms, void *userp);
void http_socks_close(ascope_http *h);
curl_socket_t http_open_socket(void *clientp, curlsocktype purpose, struct curl_sockaddr *a);
int http_close_socket(void *clientp, curl_socket_t fd);
void http_handle_closed(uv_handle_t *handle); /* a close callback: counts down open_handles */
void http_handle_gone(ascope_http *h);        /* the same, for a handle already freed */

/* ---- slots per host ------------------------------------------------------------- */

/* NULL when no per-host limit is set; else the host's record (created). */
struct http_host *http_host_get(ascope_http *h, const char *key);
bool http_host_full(ascope_http *h, struct http_host *host);
void http_host_take(struct http_host *host);
void http_host_put(ascope_http *h, struct http_host *host);
void http_hosts_free(ascope_http *h);

/* ---- a request ------------------------------------------------------------------------ */

enum req_state { REQ_NEW, REQ_WAITING, REQ_ACTIVE, REQ_FINISHING };

struct ascope_http_resp {
  int status;
  char *url; /* the final response's URL (CURLINFO_EFFECTIVE_URL), without userinfo */
  size_t url_cap;
  char *hdr; /* "name\0value\0" entries of the final response */
  size_t hdr_len, hdr_cap, nhdr;
  char *body; /* the buffered body */
  size_t body_len, body_cap;
  const char *view; /* what ascope_http_resp_body() shows: the body, or a chunk */
  size_t view_len;
};

struct ascope_http_req {
  struct aq node;     /* in waiting or active */
  struct aq deferred; /* in the session's deferred list */
  ascope_http *h;
  ascope *scope;
  ascope_op *op;
  CURL *easy;
  enum req_state state;
  char *method, *url, *host_key;
  struct http_host *host;
  struct curl_slist *headers;
  http_opts opts;
  int error;        /* a bad argument: the request refuses to be sent */
  const void *body; /* from memory */
  size_t body_len;
  ascope_http_read_fn read; /* or from a callback */
  void *read_ud;
  int64_t read_total;
  ascope_http_resp_cb cb;
  void *ud;
  bool streaming;
  bool head_sent;   /* the stream's first item was delivered */
  bool recv_paused; /* the user returned ASCOPE_PAUSE from an item */
  bool send_paused; /* the body callback returned ASCOPE_PAUSE */
  bool curl_paused; /* libcurl was told to pause (a write returned PAUSE) */
  bool want_resume; /* apply curl_easy_pause(CONT) once out of libcurl */
  bool want_cancel; /* remove the transfer once out of libcurl */
  bool stopped;     /* ASCOPE_STOP: the transfer ends with 0 */
  bool http_error;  /* raise_for_status turned the HTTP status into the error */
  int user_status;  /* a negative return of a user callback */
  int local_status; /* the driver's own failure (a size limit) */
  const char *local_code;
  char local_msg[128];
  uint64_t wait_deadline; /* uv_now() + wait_timeout_ms, when waiting */
  int64_t received;       /* body bytes so far */
  size_t hdr_bytes;
  bool head_open; /* a response head is being read (or none has come yet) */
  ascope_http_resp resp;
  char errbuf[CURL_ERROR_SIZE];
};

/* libcurl builds a request's line and headers in a buffer of at most 1 MiB
 * (and reads a response header line of at most CURL_MAX_HTTP_HEADER); past
 * that it fails with CURLE_OUT_OF_MEMORY, which the driver reports instead
 * as UV_E2BIG with this code, the name libcurl 8.6 gave the condition. */
#define HTTP_MAX_REQUEST_HEAD (1024 * 1024)
#define HTTP_CURLE_TOO_LARGE 100
#define HTTP_TOO_LARGE_CODE "CURLE_TOO_LARGE"

/* 0, or UV_E2BIG with a message saying what makes the request's head too
 * large for libcurl. */
int http_req_check_size(const ascope_http_req *q, char *msg, size_t cap);
int http_req_setup(ascope_http_req *q);                /* the easy handle's options */
void http_req_finish(ascope_http_req *q, CURLcode rc); /* a transfer ended */
/* Takes the request out of the queue or libcurl (outside libcurl only) and
 * ends it. */
void http_req_drop(ascope_http_req *q, int status, const char *code, const char *msg);
/* Calls the user's callback, ends the operation, frees the request. */
void http_req_end(ascope_http_req *q, int status, const char *code, const char *msg);
void http_req_apply_deferred(ascope_http_req *q);
void http_req_free(ascope_http_req *q);
size_t http_on_write(char *ptr, size_t size, size_t n, void *ud);
size_t http_on_header(char *ptr, size_t size, size_t n, void *ud);
size_t http_on_read(char *buf, size_t size, size_t n, void *ud);
void http_resp_reset(ascope_http_resp *r);
int http_resp_add_header(ascope_http_resp *r, const char *line, size_t len);
/* Copies url, without its userinfo, as the response's URL: 0 or UV_ENOMEM. */
int http_resp_set_url(ascope_http_resp *r, const char *url);

/* ---- small things ------------------------------------------------------------------------ */

const char *http_curl_code_name(int code);
/* Copies src into dst, dropping any "user:password@" after a "://". */
void http_scrub(char *dst, size_t cap, const char *src);
/* Copies the URL src into dst (at least strlen(src) + 1 bytes) without the
 * userinfo ("user:password@") of its authority, if any; the rest as is. */
void http_url_strip_userinfo(char *dst, const char *src);
/* The URL to request (base_url joined with url) and, when key is not NULL,
 * its "scheme://host:port" key. 0 or UV_EINVAL / UV_ENOMEM. */
int http_url_resolve(const char *base, const char *url, char **out, char **host_key);
void http_global_init(void);

#endif
