/* Requests: building one, sending it as an operation of a scope, and
 * ending it — exactly once, whichever way it ends (response, error,
 * timeout, cancel, the session closing). */
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* RFC 9110 token characters: what a method or a header name may hold. */
static bool is_token(const char *s) {
  if (s == NULL || *s == '\0') return false;
  for (; *s; s++) {
    unsigned char c = (unsigned char)*s;
    if (c <= 0x20 || c >= 0x7f || strchr("\"(),/:;<=>?@[\\]{}", c)) return false;
  }
  return true;
}

static bool has_crlf(const char *s) {
  return strpbrk(s, "\r\n") != NULL;
}

ascope_http_req *ascope_http_req_new(ascope_http *h, const char *method, const char *url) {
  if (h == NULL || method == NULL || url == NULL) return NULL;
  ascope_http_req *q = ascope_calloc(1, sizeof *q);
  if (q == NULL) return NULL;
  aq_init(&q->node);
  aq_init(&q->deferred);
  q->h = h;
  q->opts = h->opts;
  q->read_total = -1;
  /* A bad method or URL is remembered and refused by the send, so that
   * NULL here always means "no memory". */
  if (!is_token(method)) q->error = UV_EINVAL;
  q->method = ascope_strdup(method);
  if (q->method == NULL) goto nomem;
  if (q->error == 0) {
    /* The slot key is needed only when slots are counted per host. */
    char **key = h->conf.max_host_connections ? &q->host_key : NULL;
    int rc = http_url_resolve(h->conf.base_url, url, &q->url, key);
    if (rc == UV_ENOMEM) goto nomem;
    q->error = rc;
  }
  return q;
nomem:
  http_req_free(q);
  return NULL;
}

void http_req_free(ascope_http_req *q) {
  if (q == NULL) return;
  aq_remove(&q->deferred);
  if (q->easy) http_easy_put(q->h, q->easy);
  curl_slist_free_all(q->headers);
  ascope_free(q->method);
  ascope_free(q->url);
  ascope_free(q->host_key);
  ascope_free(q->resp.hdr);
  ascope_free(q->resp.url);
  ascope_free(q->resp.body);
  ascope_free(q);
}

void ascope_http_req_free(ascope_http_req *q) {
  if (q && q->state == REQ_NEW) http_req_free(q);
}

static int req_fail(ascope_http_req *q, int status) {
  if (q->error == 0) q->error = status;
  return status;
}

int ascope_http_req_header(ascope_http_req *q, const char *name, const char *value) {
  if (q == NULL) return UV_EINVAL;
  if (q->state != REQ_NEW) return ASCOPE_EBUSY;
  if (!is_token(name) || value == NULL || has_crlf(value)) return req_fail(q, UV_EINVAL);
  size_t n = strlen(name) + strlen(value) + 3;
  char *line = ascope_malloc(n);
  if (line == NULL) return req_fail(q, UV_ENOMEM);
  /* "Name;" is libcurl's way of sending a header with an empty value. */
  if (*value)
    snprintf(line, n, "%s: %s", name, value);
  else
    snprintf(line, n, "%s;", name);
  struct curl_slist *l = curl_slist_append(q->headers, line);
  ascope_free(line);
  if (l == NULL) return req_fail(q, UV_ENOMEM);
  q->headers = l;
  return 0;
}

int ascope_http_req_body(ascope_http_req *q, const void *data, size_t len) {
  if (q == NULL || (data == NULL && len)) return UV_EINVAL;
  if (q->state != REQ_NEW) return ASCOPE_EBUSY;
  q->body = data ? data : "";
  q->body_len = len;
  q->read = NULL;
  return 0;
}

int ascope_http_req_body_cb(ascope_http_req *q, int64_t total, ascope_http_read_fn read, void *ud) {
  if (q == NULL || read == NULL || total < -1) return UV_EINVAL;
  if (q->state != REQ_NEW) return ASCOPE_EBUSY;
  q->read = read;
  q->read_ud = ud;
  q->read_total = total;
  q->body = NULL;
  return 0;
}

int ascope_http_req_setopt(ascope_http_req *q, const char *options) {
  if (q == NULL) return UV_EINVAL;
  if (q->state != REQ_NEW) return ASCOPE_EBUSY;
  char err[160];
  int rc = http_parse_options(options, &q->opts, NULL, err, sizeof err);
  return rc ? req_fail(q, rc) : 0;
}

/* ---- the operation -------------------------------------------------------------- */

static void op_cancel(ascope_op *op) {
  ascope_http_req *q = ascope_op_data(op);
  if (q->state == REQ_FINISHING) return; /* its callback runs: nothing left to stop */
  ascope_http *h = q->h;
  if (aguard_busy(&h->curl)) {
    /* Inside libcurl: the write callback refuses further data, and the
     * transfer is removed as soon as libcurl returns. */
    q->want_cancel = true;
    aq_remove(&q->deferred);
    aq_push(&h->deferred, &q->deferred);
    return;
  }
  http_req_drop(q, ASCOPE_ECANCELED, NULL, "the request was cancelled");
  http_settle(h); /* a slot is free */
}

static void op_resume(ascope_op *op) {
  ascope_http_req *q = ascope_op_data(op);
  if (q->state != REQ_ACTIVE && q->state != REQ_WAITING) return;
  q->recv_paused = q->send_paused = false;
  if (!q->curl_paused) return; /* libcurl was not told: nothing to undo */
  q->want_resume = true;
  aq_remove(&q->deferred);
  aq_push(&q->h->deferred, &q->deferred);
  http_settle(q->h); /* applies it now unless inside libcurl */
}

void http_req_apply_deferred(ascope_http_req *q) {
  ascope_http *h = q->h;
  if (q->state != REQ_ACTIVE && q->state != REQ_WAITING) return;
  if (q->want_cancel) {
    http_req_drop(q, ASCOPE_ECANCELED, NULL, "the request was cancelled");
    return;
  }
  if (!q->want_resume || q->state != REQ_ACTIVE) return;
  q->want_resume = false;
  if (q->recv_paused || q->send_paused) return; /* paused again meanwhile */
  q->curl_paused = false;
  aguard_enter(&h->curl);
  /* Unpausing delivers what libcurl held back, from inside this call. */
  CURLcode rc = curl_easy_pause(q->easy, CURLPAUSE_CONT);
  aguard_leave(&h->curl);
  if (rc != CURLE_OK && q->state == REQ_ACTIVE && !q->want_cancel) http_req_finish(q, rc);
}

static int start(ascope *s, ascope_http_req *q, ascope_http_resp_cb cb, void *ud, bool stream,
                 ascope_op **opout) {
  if (opout) *opout = NULL;
  if (q == NULL) return UV_EINVAL;
  if (s == NULL || q->state != REQ_NEW) {
    if (q->state == REQ_NEW) http_req_free(q);
    return UV_EINVAL;
  }
  int rc = q->error;
  if (rc == 0 && q->h->closing) rc = ASCOPE_ECLOSED;
  if (rc) {
    http_req_free(q);
    return rc;
  }
  q->op = ascope_op_begin(s, ascope_http_driver(), op_cancel, q);
  if (q->op == NULL) {
    http_req_free(q);
    return ASCOPE_ECANCELED;
  }
  q->scope = s;
  q->cb = cb;
  q->ud = ud;
  q->streaming = stream;
  ascope_op_set_resume(q->op, op_resume);
  if (opout) *opout = q->op;
  ascope_http *h = q->h;
  char msg[200];
  if (http_req_check_size(q, msg, sizeof msg)) {
    /* Refused before it queues: libcurl would only say "Out of memory". */
    http_req_end(q, UV_E2BIG, HTTP_TOO_LARGE_CODE, msg);
    return 0;
  }
  http_wait_add(h, q);
  /* Started now if a slot is free and we are not inside libcurl; else by
   * the settle that follows. The callback may run before this returns. */
  if (aguard_busy(&h->settle))
    http_promote(h);
  else
    http_settle(h);
  return 0;
}

int ascope_http_send(ascope *s, ascope_http_req *q, ascope_http_resp_cb cb, void *ud,
                     ascope_op **op) {
  return start(s, q, cb, ud, false, op);
}

int ascope_http_stream(ascope *s, ascope_http_req *q, ascope_http_resp_cb cb, void *ud,
                       ascope_op **op) {
  return start(s, q, cb, ud, true, op);
}

int ascope_http_request(ascope *s, ascope_http *h, const char *method, const char *url,
                        const void *body, size_t len, ascope_http_resp_cb cb, void *ud) {
  ascope_http_req *q = ascope_http_req_new(h, method, url);
  if (q == NULL) return h && method && url ? UV_ENOMEM : UV_EINVAL;
  if (body) ascope_http_req_body(q, body, len);
  return ascope_http_send(s, q, cb, ud, NULL);
}

int ascope_http_get(ascope *s, ascope_http *h, const char *url, ascope_http_resp_cb cb, void *ud) {
  return ascope_http_request(s, h, "GET", url, NULL, 0, cb, ud);
}

/* ---- ending --------------------------------------------------------------------------- */

void http_req_drop(ascope_http_req *q, int status, const char *code, const char *msg) {
  ascope_http *h = q->h;
  if (q->state == REQ_WAITING) {
    http_wait_remove(h, q);
  } else if (q->state == REQ_ACTIVE) {
    long connects = 0;
    curl_easy_getinfo(q->easy, CURLINFO_NUM_CONNECTS, &connects);
    h->n_connects += connects;
    aq_remove(&q->node);
    curl_multi_remove_handle(h->multi, q->easy);
    h->n_active--;
    http_count(h, HTS_CONNECTS, connects);
    http_count(h, HTS_ACTIVE, -1);
    http_host_put(h, q->host);
    q->host = NULL;
  }
  http_req_end(q, status, code, msg);
}

void http_req_end(ascope_http_req *q, int status, const char *code, const char *msg) {
  q->state = REQ_FINISHING;
  aq_remove(&q->deferred);
  /* The message names the request; made before the callback, which may
   * read it (ascope_http_errmsg), and copied before the request is freed. */
  char text[512];
  if (status && msg) {
    /* A long URL is shortened: the reason after it must survive. */
    char what[512];
    const char *url = q->url ? q->url : "(bad URL)";
    int n = (int)strlen(url);
    snprintf(what, sizeof what, "%s %.*s%s: %s", q->method, n > 160 ? 160 : n, url,
             n > 160 ? "..." : "", msg);
    http_scrub(text, sizeof text, what);
  }
  const char *ecode = status ? code : NULL, *emsg = status && msg ? text : NULL;
  int rc = status;
  if (q->cb) {
    /* A buffered response goes with success, and with an HTTP status the
     * caller asked to be an error; a stream's final call has none. */
    ascope_http_resp *r = NULL;
    if (!q->streaming && (status == 0 || q->http_error) && q->resp.status > 0) {
      r = &q->resp;
      r->view = r->body;
      r->view_len = r->body_len;
    }
    ascope_http *h = q->h;
    const char *outer_code = h->cb_code, *outer_msg = h->cb_msg; /* a request ended inside */
    h->cb_code = ecode;
    h->cb_msg = emsg;
    rc = q->cb(q->scope, status, r, q->ud);
    h->cb_code = outer_code;
    h->cb_msg = outer_msg;
  }
  ascope_op *op = q->op;
  http_req_free(q);
  ascope_op_end(op, rc, ecode, emsg);
}

const char *ascope_http_errcode(ascope_http *h) {
  return h ? h->cb_code : NULL;
}

const char *ascope_http_errmsg(ascope_http *h) {
  return h ? h->cb_msg : NULL;
}
