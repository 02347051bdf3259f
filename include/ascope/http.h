/* ascope — the HTTP driver: `async with aiohttp.ClientSession() as session`.
 *
 * A session is a use of a scope: it owns a libcurl multi handle driven by the
 * scope's libuv loop, so every request made through it shares kept-alive
 * connections, the DNS cache and TLS sessions. Requests are operations of a
 * scope: their response is either buffered (status, headers, body) or
 * streamed chunk by chunk with back-pressure, the `async for`.
 *
 *   ascope *s = ascope_new(rt);
 *   ascope_use_http(s, "base_url=https://api.example.org timeout_ms=5000");
 *   ascope_start(s, body, done, NULL);
 *   ...
 *   static void body(ascope *s, void *ud) {
 *     ascope_http *h = ascope_resource(s, 0);
 *     ascope_http_get(s, h, "/users/1", on_user, NULL);
 *   }
 *
 * Every call is made on the loop thread. docs/drivers/http.md describes each
 * function and every option.
 */
#ifndef ASCOPE_HTTP_H
#define ASCOPE_HTTP_H

#include "ascope.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ascope_http ascope_http;           /* a session: ascope_resource(s, i) */
typedef struct ascope_http_req ascope_http_req;   /* a request being built */
typedef struct ascope_http_resp ascope_http_resp; /* a response, valid inside its callback */

/* Appends a session to the scope. options: "key=value ..." (values may be
 * single-quoted), copied; see docs/drivers/http.md. A bad option fails the
 * acquire with UV_EINVAL. */
ASCOPE_EXTERN int ascope_use_http(ascope *s, const char *options);
ASCOPE_EXTERN const struct ascope_driver *ascope_http_driver(void);
/* The index-th use as a session, once acquired; NULL if that use is not an
 * HTTP session (or not held). */
static inline ascope_http *ascope_http_resource(ascope *s, size_t index) {
  return (ascope_http *)ascope_resource_of(s, index, ascope_http_driver());
}

/* A session's counters: "requests" (completed), "connects" (new connections
 * made, the sum of CURLINFO_NUM_CONNECTS), "active" (requests holding a
 * connection slot), "waiting" (requests queued for a slot), "active_peak".
 * Negative (UV_EINVAL) for an unknown name. Every session of a runtime
 * together: ascope_rt_stat(rt, "http.<name>"). */
ASCOPE_EXTERN int64_t ascope_http_stat(ascope_http *h, const char *name);

/* ---- building a request ---------------------------------------------------- */

/* method: any token ("GET", "POST", "PROPFIND"…); url: absolute, or relative
 * to the session's base_url. Both are copied. NULL on a bad argument or no
 * memory. The request belongs to the caller until it is sent or freed. */
ASCOPE_EXTERN ascope_http_req *ascope_http_req_new(ascope_http *h, const char *method,
                                                   const char *url);
ASCOPE_EXTERN void ascope_http_req_free(ascope_http_req *q); /* one never sent */

/* Adds a header (copied). A name that is not a token or a value holding CR,
 * LF or NUL is refused with UV_EINVAL, and the request then refuses to be
 * sent: nothing of it reaches the network. */
ASCOPE_EXTERN int ascope_http_req_header(ascope_http_req *q, const char *name, const char *value);

/* The body from memory: not copied, it must stay valid until the request's
 * callback has returned. */
ASCOPE_EXTERN int ascope_http_req_body(ascope_http_req *q, const void *data, size_t len);

/* The body from a callback, called on the loop thread whenever the socket
 * can take more: it writes up to `cap` bytes to buf, sets *len (0 = the end)
 * and returns ASCOPE_CONTINUE; or returns ASCOPE_PAUSE (nothing now: call
 * ascope_op_resume() when there is more); or a negative status, which fails
 * the request. total: the body's length, or -1 when unknown (chunked). */
typedef int (*ascope_http_read_fn)(ascope *s, void *buf, size_t cap, size_t *len, void *ud);
ASCOPE_EXTERN int ascope_http_req_body_cb(ascope_http_req *q, int64_t total,
                                          ascope_http_read_fn read, void *ud);

/* Per-request options, overriding the session's: "timeout_ms=
 * connect_timeout_ms= wait_timeout_ms= low_speed_limit= low_speed_time=
 * max_redirects= max_response_bytes= raise_for_status=". UV_EINVAL on a bad
 * one (and the request then refuses to be sent). */
ASCOPE_EXTERN int ascope_http_req_setopt(ascope_http_req *q, const char *options);

/* ---- sending it: operations of the scope ------------------------------------- */

/* The response, buffered. The callback runs once: status 0 and the
 * response; or an error status, with the response when the error is its
 * HTTP status (raise_for_status), else NULL. Its return value is what the
 * scope sees (0: handled); a NULL callback makes any error fail the scope.
 * The request is consumed, whatever the return value. *op (optional)
 * receives the operation, for ascope_op_resume() after a body callback
 * paused. An input over a size limit (the request line and headers over
 * libcurl's 1 MiB, a response header line over 100 KiB, the response
 * headers over 256 KiB) fails the request with UV_E2BIG, code
 * "CURLE_TOO_LARGE", and a message naming it. */
typedef int (*ascope_http_resp_cb)(ascope *s, int status, ascope_http_resp *resp, void *ud);
typedef ascope_http_resp_cb ascope_http_resp_fn; /* its name before 0.2 */
ASCOPE_EXTERN int ascope_http_send(ascope *s, ascope_http_req *q, ascope_http_resp_cb cb, void *ud,
                                   ascope_op **op);

/* The response, streamed: the `async for`. The item callback is called with
 * the response once its head has arrived (status, URL and headers set, an
 * empty body), then once per chunk of body (ascope_http_resp_body() is the
 * chunk), and returns ASCOPE_CONTINUE, ASCOPE_PAUSE (until
 * ascope_op_resume(*op)) or ASCOPE_STOP (the operation ends with 0), or a
 * negative status. The final call, exactly once, has a NULL response and
 * the end status: 0, the error, or what an item call returned. *op
 * (optional) receives the operation. */
ASCOPE_EXTERN int ascope_http_stream(ascope *s, ascope_http_req *q, ascope_http_resp_cb cb,
                                     void *ud, ascope_op **op);

/* Inside a request's callback with status < 0 (a buffered response's
 * call, a stream's final call): the failure's code ("CURLE_OPERATION_TIMEDOUT",
 * "404", "CURLE_TOO_LARGE"…) and its message, naming the request, as the
 * scope's error chain records them when the callback returns the status.
 * NULL elsewhere, and for a failure without one (a cancel has a message,
 * no code). For a callback that handles the failure (returns 0) and must
 * still tell it: bindings that run many requests in one scope. */
ASCOPE_EXTERN const char *ascope_http_errcode(ascope_http *h);
ASCOPE_EXTERN const char *ascope_http_errmsg(ascope_http *h);

/* Shorthands: a request with no header or body, buffered. */
ASCOPE_EXTERN int ascope_http_get(ascope *s, ascope_http *h, const char *url,
                                  ascope_http_resp_cb cb, void *ud);
ASCOPE_EXTERN int ascope_http_request(ascope *s, ascope_http *h, const char *method,
                                      const char *url, const void *body, size_t len,
                                      ascope_http_resp_cb cb, void *ud);

/* ---- reading a response (inside its callback only) ------------------------------ */

ASCOPE_EXTERN int ascope_http_resp_status(const ascope_http_resp *r); /* 200, 404… */
/* The URL the final response came from: after the redirects followed, the
 * last one's (CURLINFO_EFFECTIVE_URL); else the request's, as libcurl
 * normalized it. Any "user:password@" is left out. Set from the head on
 * (a stream's first call), valid as long as the response; NULL for a NULL
 * response. */
ASCOPE_EXTERN const char *ascope_http_resp_url(const ascope_http_resp *r);
/* The first header of that name (case-insensitive) of the final response,
 * after redirects; NULL if none. */
ASCOPE_EXTERN const char *ascope_http_resp_header(const ascope_http_resp *r, const char *name);
/* The index-th header, in arrival order: 0, or UV_ENOENT past the last. */
ASCOPE_EXTERN int ascope_http_resp_header_at(const ascope_http_resp *r, size_t index,
                                             const char **name, const char **value);
/* Every header of the final response at once, in arrival order, as
 * "name\0value\0" pairs, *len bytes in all: 0 and "" when there is none.
 * One call instead of one per header, for bindings. */
ASCOPE_EXTERN const char *ascope_http_resp_headers(const ascope_http_resp *r, size_t *len);
/* The body (buffered) or the current chunk (streamed). Never NULL. */
ASCOPE_EXTERN const void *ascope_http_resp_body(const ascope_http_resp *r, size_t *len);

#ifdef __cplusplus
}
#endif
#endif /* ASCOPE_HTTP_H */
