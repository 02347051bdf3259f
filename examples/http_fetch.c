/* http_fetch URL...: fetches every URL at once on one session.
 *
 *   async with aiohttp.ClientSession() as http:
 *       async with asyncio.timeout(5):
 *           await asyncio.gather(*(http.get(u) for u in urls))
 *
 * Connections are kept alive and shared; TLS is verified. A URL that
 * fails fails the whole scope (fail-fast), which cancels the others. */
#include <ascope/http.h>

#include <stdio.h>

static int result;

static int on_response(ascope *s, int status, ascope_http_resp *r, void *ud) {
  (void)s;
  if (status) return status; /* a transport error or the deadline */
  size_t len;
  ascope_http_resp_body(r, &len);
  printf("%3d %8zu bytes  %s\n", ascope_http_resp_status(r), len, (const char *)ud);
  return 0;
}

struct urls {
  size_t http;
  int n;
  char **url;
};

static void body(ascope *s, void *ud) {
  struct urls *u = ud;
  ascope_http *http = ascope_http_resource(s, u->http);
  for (int i = 0; i < u->n; i++) ascope_http_get(s, http, u->url[i], on_response, u->url[i]);
}

static void done(ascope *s, int status, void *ud) {
  (void)ud;
  char err[512];
  result = status;
  ascope_err_format(ascope_error(s), err, sizeof err);
  if (status) fprintf(stderr, "%s\n", err);
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: http_fetch URL...\n");
    return 2;
  }
  struct urls u = {.n = argc - 1, .url = argv + 1};
  ascope_rt *rt = ascope_rt_new(NULL);
  ascope *s = ascope_new(rt);
  u.http = ascope_use_count(s);
  ascope_use_http(s, "max_response_bytes=16777216");
  ascope_set_timeout(s, 5000);
  int rc = ascope_start(s, body, done, &u);
  if (rc == 0) rc = ascope_rt_run(rt);
  ascope_rt_free(rt);
  return rc || result ? 1 : 0;
}
