/* The tour's HTTP part: `async with aiohttp.ClientSession() as session`.
 *
 * Three scenes against $ASCOPE_HTTP_URL (scripts/http-start serves it):
 * a GET whose response is buffered; a download streamed chunk by chunk with
 * back-pressure (`async for chunk in resp.content`); and a slow consumer
 * under a deadline, cut off cleanly by it. */
#include "tour.h"

#include <ascope/http.h>

#include <stdio.h>
#include <stdlib.h>

static const char *base(void) {
  return getenv("ASCOPE_HTTP_URL");
}

static int failures;

static void expect(int status, int want, const char *scene) {
  if (status == want) return;
  printf("!! %s: expected %s, got %s\n", scene, tour_outcome(want), tour_outcome(status));
  failures++;
}

/* ---- a GET ------------------------------------------------------------------------ */

static int on_page(ascope *s, int status, ascope_http_resp *r, void *ud) {
  (void)s;
  (void)ud;
  if (status) return status; /* not handled here: the scope fails with it */
  size_t len;
  ascope_http_resp_body(r, &len);
  const char *type = ascope_http_resp_header(r, "Content-Type");
  tour_say("   response: HTTP %d, %zu bytes, Content-Type %s", ascope_http_resp_status(r), len,
           type ? type : "(none)");
  return 0;
}

static void get_body(ascope *s, void *ud) {
  (void)ud;
  ascope_http *session = ascope_resource(s, 0);
  tour_say("body: GET /static/1k.bin and /missing, side by side on one session");
  ascope_http_get(s, session, "/static/1k.bin", on_page, NULL);
  ascope_http_get(s, session, "/missing", on_page, NULL); /* a 404 is a result */
}

static void get_done(ascope *s, int status, void *ud) {
  (void)ud;
  tour_say("done: %s (the session was released after both responses)", tour_outcome(status));
  tour_print_error(s);
  expect(status, 0, "http get");
}

/* ---- a streamed download ---------------------------------------------------------- */

typedef struct download {
  ascope_op *op;
  uv_timer_t timer;
  size_t bytes, chunks;
  unsigned pause_ms; /* the consumer's pace: a pause after every chunk */
  int pauses;
} download;

static void on_resume(uv_timer_t *t) {
  download *d = t->data;
  ascope_op_resume(d->op);
}

static int on_chunk(ascope *s, int status, ascope_http_resp *r, void *ud) {
  (void)s;
  download *d = ud;
  if (r == NULL) { /* the end of the `async for`: status says how it ended */
    tour_say("   stream ended: %s after %zu chunks, %zu bytes, %d pauses", tour_outcome(status),
             d->chunks, d->bytes, d->pauses);
    uv_close((uv_handle_t *)&d->timer, NULL);
    return status;
  }
  size_t len;
  ascope_http_resp_body(r, &len);
  if (len == 0 && d->chunks == 0) {
    tour_say("   head: HTTP %d, Content-Length %s", ascope_http_resp_status(r),
             ascope_http_resp_header(r, "Content-Length"));
    return ASCOPE_CONTINUE;
  }
  d->chunks++;
  d->bytes += len;
  /* Back-pressure: hold the stream, as a consumer writing somewhere slower
   * would; libcurl stops reading the socket until the resume. */
  if (d->pause_ms || d->chunks % 16 == 0) {
    d->pauses++;
    uv_timer_start(&d->timer, on_resume, d->pause_ms ? d->pause_ms : 1, 0);
    return ASCOPE_PAUSE;
  }
  return ASCOPE_CONTINUE;
}

static void stream_body(ascope *s, void *ud) {
  download *d = ud;
  uv_timer_init(ascope_rt_loop(ascope_scope_rt(s)), &d->timer);
  d->timer.data = d;
  const char *path = d->pause_ms ? "/static/64m.bin" : "/static/1m.bin";
  tour_say("body: streaming %s%s", path, d->pause_ms ? ", slowly" : ", pausing every 16 chunks");
  ascope_http_req *q = ascope_http_req_new(ascope_resource(s, 0), "GET", path);
  ascope_http_stream(s, q, on_chunk, d, &d->op);
}

static void stream_done(ascope *s, int status, void *ud) {
  download *d = ud;
  tour_say("done: %s", tour_outcome(status));
  tour_print_error(s);
  expect(status, d->pause_ms ? ASCOPE_ETIMEDOUT : 0, "http stream");
}

static void run(ascope_rt *rt, ascope_body_fn body, ascope_done_fn done, void *ud,
                uint64_t timeout_ms) {
  char opts[600];
  snprintf(opts, sizeof opts, "base_url=%s max_connections=8", base());
  ascope *s = ascope_new(rt);
  ascope_use_http(s, opts);
  if (timeout_ms) ascope_set_timeout(s, timeout_ms);
  ascope_start(s, body, done, ud);
  ascope_rt_run(rt);
}

int tour_http(ascope_rt *rt) {
  failures = 0;
  tour_say("async with ClientSession(base_url=%s) as session:", base());
  run(rt, get_body, get_done, NULL, 0);

  tour_say("async for chunk in (await session.get(...)).content:");
  download fast = {0};
  run(rt, stream_body, stream_done, &fast, 0);

  tour_say("async with asyncio.timeout(0.2): a slow consumer of 64 MiB");
  download slow = {.pause_ms = 20};
  run(rt, stream_body, stream_done, &slow, 200);
  return failures;
}
