/* A transfer: the easy handle's options, libcurl's write, header and read
 * callbacks, and the verdict once libcurl is done.
 *
 * The callbacks run inside libcurl. They may call user code (stream items,
 * body callbacks), but never libcurl (curl_easy_getinfo aside, which only
 * reads the transfer's state): flow control is expressed through
 * their return values (CURL_WRITEFUNC_PAUSE, CURL_READFUNC_PAUSE, an error
 * to abort), and anything else is applied by http_settle() afterwards. */
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define MAX_HEADER_BYTES (256 * 1024) /* of all responses of a request, redirects included */

static void set_method(ascope_http_req *q, CURL *e) {
  const char *m = q->method;
  bool post = !strcmp(m, "POST");
  if (q->body || q->read) {
    /* libcurl sends a body with POST; any other method is a custom request
     * with POST's mechanics. "Expect:" turns off 100-continue, whose
     * round trip a client rarely wants (aiohttp does not send it either). */
    struct curl_slist *l = curl_slist_append(q->headers, "Expect:");
    if (l) q->headers = l;
    if (q->body) {
      curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)q->body_len);
      curl_easy_setopt(e, CURLOPT_POSTFIELDS, q->body);
    } else {
      curl_easy_setopt(e, CURLOPT_POST, 1L);
      curl_easy_setopt(e, CURLOPT_READFUNCTION, http_on_read);
      curl_easy_setopt(e, CURLOPT_READDATA, q);
      curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)q->read_total);
    }
    if (!post) curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, m);
  } else if (post || !strcmp(m, "PUT") || !strcmp(m, "PATCH")) {
    /* An empty body, announced as such: servers refuse a length-less PUT. */
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)0);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, "");
    if (!post) curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, m);
  } else if (!strcmp(m, "HEAD")) {
    curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
  } else if (strcmp(m, "GET")) {
    curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, m);
  }
}

static void set_limits(ascope_http_req *q, CURL *e) {
  const http_opts *o = &q->opts;
  curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, o->max_redirects > 0 ? 1L : 0L);
  curl_easy_setopt(e, CURLOPT_MAXREDIRS, o->max_redirects);
  curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, o->connect_timeout_ms);
  curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, o->timeout_ms);
  curl_easy_setopt(e, CURLOPT_LOW_SPEED_LIMIT, o->low_speed_limit);
  curl_easy_setopt(e, CURLOPT_LOW_SPEED_TIME, o->low_speed_time);
  /* Refuses up front a body announced too large; the write callback
   * enforces the limit on bodies of unknown length. */
  if (o->max_response_bytes)
    curl_easy_setopt(e, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)o->max_response_bytes);
}

static void set_session(ascope_http_req *q, CURL *e) {
  const http_conf *c = &q->h->conf;
  curl_easy_setopt(e, CURLOPT_SHARE, q->h->share);
  curl_easy_setopt(e, CURLOPT_OPENSOCKETFUNCTION, http_open_socket);
  curl_easy_setopt(e, CURLOPT_OPENSOCKETDATA, q->h);
  curl_easy_setopt(e, CURLOPT_CLOSESOCKETFUNCTION, http_close_socket);
  curl_easy_setopt(e, CURLOPT_CLOSESOCKETDATA, q->h);
#if LIBCURL_VERSION_NUM >= 0x075500
  curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(e, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
#else
  curl_easy_setopt(e, CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
  curl_easy_setopt(e, CURLOPT_REDIR_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
  curl_easy_setopt(e, CURLOPT_USERAGENT, c->user_agent ? c->user_agent : "ascope/0.1");
  if (c->ca_file) curl_easy_setopt(e, CURLOPT_CAINFO, c->ca_file);
  curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, c->tls_verify ? 1L : 0L);
  curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, c->tls_verify ? 2L : 0L);
  if (c->proxy) curl_easy_setopt(e, CURLOPT_PROXY, c->proxy);
  curl_easy_setopt(e, CURLOPT_HTTP_VERSION, c->http_version);
  /* With HTTP/2, wait for a connection that can multiplex rather than open
   * another one. */
  curl_easy_setopt(e, CURLOPT_PIPEWAIT, 1L);
}

/* What libcurl adds to the head besides the request line, the user's
 * headers and the User-Agent: Host, Accept, Content-Length, Expect, the
 * protocol version and the final CRLF, with room to spare. */
#define HEAD_RESERVE 512

int http_req_check_size(const ascope_http_req *q, char *msg, size_t cap) {
  const char *ua = q->h->conf.user_agent ? q->h->conf.user_agent : "ascope/0.1";
  size_t url = strlen(q->url), headers = 0, largest = 0;
  const char *largest_name = "";
  size_t largest_name_len = 0;
  for (const struct curl_slist *l = q->headers; l; l = l->next) {
    size_t n = strlen(l->data) + 2;
    headers += n;
    if (n > largest) {
      largest = n;
      largest_name = l->data;
      largest_name_len = strcspn(l->data, ":;");
    }
  }
  size_t total = strlen(q->method) + 1 + url + headers + strlen(ua) + 14 + HEAD_RESERVE;
  if (total <= HTTP_MAX_REQUEST_HEAD) return 0;
  char what[128];
  if (url >= headers)
    snprintf(what, sizeof what, "the URL is %zu bytes", url);
  else if (largest > headers / 2)
    snprintf(what, sizeof what, "the request header \"%.*s\" is %zu bytes",
             (int)(largest_name_len < 48 ? largest_name_len : 48), largest_name, largest);
  else
    snprintf(what, sizeof what, "the request headers are %zu bytes", headers);
  snprintf(msg, cap,
           "%s: the request line and headers together are limited to %d bytes (libcurl's limit)",
           what, HTTP_MAX_REQUEST_HEAD);
  return UV_E2BIG;
}

int http_req_setup(ascope_http_req *q) {
  CURL *e = q->easy ? q->easy : http_easy_get(q->h);
  if (e == NULL) return UV_ENOMEM;
  q->easy = e;
  q->errbuf[0] = '\0';
  q->head_open = true;
  curl_easy_setopt(e, CURLOPT_PRIVATE, q);
  curl_easy_setopt(e, CURLOPT_URL, q->url);
  curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(e, CURLOPT_ERRORBUFFER, q->errbuf);
  curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, http_on_write);
  curl_easy_setopt(e, CURLOPT_WRITEDATA, q);
  curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, http_on_header);
  curl_easy_setopt(e, CURLOPT_HEADERDATA, q);
  set_session(q, e);
  set_limits(q, e);
  set_method(q, e);
  if (q->headers) curl_easy_setopt(e, CURLOPT_HTTPHEADER, q->headers);
  return 0;
}

/* ---- libcurl's callbacks ------------------------------------------------------------ */

static void set_local(ascope_http_req *q, int status, const char *code, const char *msg) {
  if (q->local_status) return;
  q->local_status = status;
  q->local_code = code;
  snprintf(q->local_msg, sizeof q->local_msg, "%s", msg);
}

static bool http_status_error(ascope_http_req *q) {
  if (!q->opts.raise_for_status || q->resp.status < 400) return false;
  q->http_error = true;
  return true;
}

/* A stream's item: the response with view as its body. */
static int deliver(ascope_http_req *q, const char *data, size_t len) {
  q->resp.view = data;
  q->resp.view_len = len;
  int rc = q->cb ? q->cb(q->scope, 0, &q->resp, q->ud) : ASCOPE_CONTINUE;
  q->resp.view = NULL;
  q->resp.view_len = 0;
  if (rc < 0) q->user_status = rc;
  if (rc == ASCOPE_STOP) q->stopped = true;
  if (rc == ASCOPE_PAUSE) q->recv_paused = true;
  return rc;
}

static bool halted(const ascope_http_req *q) {
  return q->want_cancel || q->stopped || q->user_status || q->local_status || q->http_error;
}

static size_t buffer_body(ascope_http_req *q, const char *ptr, size_t len) {
  ascope_http_resp *r = &q->resp;
  if (r->body_len + len > r->body_cap) {
    /* The first allocation takes the announced length, bounded by the limit
     * (MAXFILESIZE refused larger ones already); then the buffer doubles. */
    size_t cap = r->body_cap ? r->body_cap * 2 : 16384;
    const char *cl = ascope_http_resp_header(r, "Content-Length");
    if (r->body_cap == 0 && cl) {
      unsigned long long n = strtoull(cl, NULL, 10);
      if (q->opts.max_response_bytes && n > (unsigned long long)q->opts.max_response_bytes)
        n = (unsigned long long)q->opts.max_response_bytes;
      if (n > cap) cap = (size_t)n;
    }
    while (cap < r->body_len + len) cap *= 2;
    char *p = ascope_realloc(r->body, cap);
    if (p == NULL) {
      set_local(q, UV_ENOMEM, "CURLE_OUT_OF_MEMORY", "no memory for the response body");
      return 0;
    }
    r->body = p;
    r->body_cap = cap;
  }
  memcpy(r->body + r->body_len, ptr, len);
  r->body_len += len;
  return len;
}

size_t http_on_write(char *ptr, size_t size, size_t n, void *ud) {
  ascope_http_req *q = ud;
  size_t len = size * n;
  if (halted(q)) return 0; /* 0 for a non-empty write aborts the transfer */
  if (q->recv_paused) {
    q->curl_paused = true; /* libcurl keeps this chunk until unpaused */
    return CURL_WRITEFUNC_PAUSE;
  }
  if (q->opts.max_response_bytes && q->received + (int64_t)len > q->opts.max_response_bytes) {
    char msg[96];
    snprintf(msg, sizeof msg, "the response body exceeds max_response_bytes (%lld)",
             (long long)q->opts.max_response_bytes);
    set_local(q, ASCOPE_EDRIVER, "CURLE_FILESIZE_EXCEEDED", msg);
    return 0;
  }
  if (!q->streaming) {
    q->received += (int64_t)len;
    return buffer_body(q, ptr, len);
  }
  if (!q->head_sent) {
    if (http_status_error(q)) return 0;
    q->head_sent = true;
    int rc = deliver(q, ptr, 0);
    if (halted(q)) return 0;
    if (rc == ASCOPE_PAUSE) {
      q->curl_paused = true;
      return CURL_WRITEFUNC_PAUSE; /* this chunk comes again after the resume */
    }
  }
  q->received += (int64_t)len;
  deliver(q, ptr, len);
  return halted(q) ? 0 : len;
}

size_t http_on_header(char *ptr, size_t size, size_t n, void *ud) {
  ascope_http_req *q = ud;
  size_t len = size * n;
  if (q->want_cancel) return 0;
  q->hdr_bytes += len;
  if (q->hdr_bytes > MAX_HEADER_BYTES) {
    char msg[128];
    snprintf(msg, sizeof msg,
             "the response headers are over the limit of %d bytes (all responses of the "
             "request, redirects included)",
             MAX_HEADER_BYTES);
    set_local(q, UV_E2BIG, HTTP_TOO_LARGE_CODE, msg);
    return 0;
  }
  if ((len == 2 && ptr[0] == '\r') || (len == 1 && ptr[0] == '\n')) {
    q->head_open = false; /* the blank line: this response's head is complete */
    return len;
  }
  if (len >= 5 && !memcmp(ptr, "HTTP/", 5)) {
    /* A new response (after a redirect, a 100 Continue, a proxy's CONNECT):
     * only the final one's headers are kept, and its URL: libcurl moved
     * CURLINFO_EFFECTIVE_URL to a redirect's target before requesting it. */
    q->head_open = true;
    http_resp_reset(&q->resp);
    const char *sp = memchr(ptr, ' ', len);
    if (sp && (size_t)(sp - ptr) + 4 <= len) q->resp.status = atoi(sp + 1);
    char *url = NULL;
    if (curl_easy_getinfo(q->easy, CURLINFO_EFFECTIVE_URL, &url) != CURLE_OK || url == NULL)
      url = q->url;
    if (http_resp_set_url(&q->resp, url)) {
      set_local(q, UV_ENOMEM, "CURLE_OUT_OF_MEMORY", "no memory for the response URL");
      return 0;
    }
    return len;
  }
  if (ptr[0] == ' ' || ptr[0] == '\t') return len; /* an obsolete folded line */
  if (http_resp_add_header(&q->resp, ptr, len)) {
    set_local(q, UV_ENOMEM, "CURLE_OUT_OF_MEMORY", "no memory for the response headers");
    return 0;
  }
  return len;
}

size_t http_on_read(char *buf, size_t size, size_t n, void *ud) {
  ascope_http_req *q = ud;
  if (halted(q)) return CURL_READFUNC_ABORT;
  if (q->send_paused) {
    q->curl_paused = true;
    return CURL_READFUNC_PAUSE;
  }
  size_t cap = size * n, len = 0;
  int rc = q->read(q->scope, buf, cap, &len, q->read_ud);
  if (rc < 0) {
    q->user_status = rc;
    return CURL_READFUNC_ABORT;
  }
  if (rc == ASCOPE_PAUSE) {
    q->send_paused = q->curl_paused = true;
    return CURL_READFUNC_PAUSE;
  }
  if (rc == ASCOPE_STOP) return 0; /* the body ends here */
  return len > cap ? cap : len;
}

/* ---- the verdict ----------------------------------------------------------------------- */

static int curl_status(CURLcode rc) {
  switch ((int)rc) {
  case CURLE_OPERATION_TIMEDOUT:
    return ASCOPE_ETIMEDOUT;
  case CURLE_OUT_OF_MEMORY:
    return UV_ENOMEM;
  case HTTP_CURLE_TOO_LARGE:
    return UV_E2BIG;
  default:
    return ASCOPE_EDRIVER;
  }
}

/* libcurl before 8.6 fails a response header line longer than it reads as
 * CURLE_OUT_OF_MEMORY: told apart from a real shortage of memory by when it
 * happens, after the request was sent and inside a response's head. */
static bool header_line_too_large(ascope_http_req *q, CURLcode rc) {
  if (rc != CURLE_OUT_OF_MEMORY && (int)rc != HTTP_CURLE_TOO_LARGE) return false;
  long sent = 0;
  curl_easy_getinfo(q->easy, CURLINFO_REQUEST_SIZE, &sent);
  return sent > 0 && q->head_open;
}

/* A stream whose body was empty still shows its head once. */
static void deliver_head(ascope_http_req *q) {
  if (!q->streaming || q->head_sent || halted(q)) return;
  if (http_status_error(q)) return;
  q->head_sent = true;
  deliver(q, "", 0);
}

void http_req_finish(ascope_http_req *q, CURLcode rc) {
  ascope_http *h = q->h;
  long connects = 0;
  curl_easy_getinfo(q->easy, CURLINFO_NUM_CONNECTS, &connects);
  h->n_connects += connects;
  h->n_requests++;
  http_count(h, HTS_CONNECTS, connects);
  http_count(h, HTS_REQUESTS, 1);
  bool line_too_large = rc != CURLE_OK && header_line_too_large(q, rc);
  aq_remove(&q->node);
  curl_multi_remove_handle(h->multi, q->easy);
  h->n_active--;
  http_count(h, HTS_ACTIVE, -1);
  http_host_put(h, q->host);
  q->host = NULL;
  q->state = REQ_FINISHING;
  if (rc == CURLE_OK) deliver_head(q);

  char msg[160], code[16];
  if (q->want_cancel) {
    http_req_end(q, ASCOPE_ECANCELED, NULL, "the request was cancelled");
  } else if (q->user_status) {
    http_req_end(q, q->user_status, NULL, "a callback failed the request");
  } else if (q->stopped) {
    http_req_end(q, 0, NULL, NULL);
  } else if (q->local_status) {
    http_req_end(q, q->local_status, q->local_code, q->local_msg);
  } else if (q->http_error || (rc == CURLE_OK && http_status_error(q))) {
    snprintf(code, sizeof code, "%d", q->resp.status);
    snprintf(msg, sizeof msg, "HTTP status %d (raise_for_status)", q->resp.status);
    http_req_end(q, ASCOPE_EDRIVER, code, msg);
  } else if (line_too_large) {
    snprintf(msg, sizeof msg, "a response header line is over libcurl's limit of %d bytes",
             CURL_MAX_HTTP_HEADER);
    http_req_end(q, UV_E2BIG, HTTP_TOO_LARGE_CODE, msg);
  } else if (rc != CURLE_OK) {
    const char *why = q->errbuf[0] ? q->errbuf : curl_easy_strerror(rc);
    http_req_end(q, curl_status(rc), http_curl_code_name(rc), why);
  } else {
    http_req_end(q, 0, NULL, NULL);
  }
}
