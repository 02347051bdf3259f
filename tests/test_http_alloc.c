/* The HTTP driver under allocation failure, against the real nginx of
 * scripts/http-start (ASCOPE_HTTP_URL): each allocation of a session (its
 * options, libcurl's handles aside), a GET with a header and its response
 * (head, body, the host's slot) fails in turn, and every time the scope
 * ends once, cleanly, with no block left; the next run, with nothing
 * failing, succeeds. libcurl's own memory is not ascope's to fail. */
#include <ascope/http.h>

#include "alloc_fail.h"

TestSuite(http_alloc, .timeout = 900);

static char session_opts[512];

static int on_resp(ascope *s, int status, ascope_http_resp *resp, void *ud) {
  (void)s;
  af_run *r = ud;
  r->ended++;
  if (status == 0 && ascope_http_resp_status(resp) != 200) status = ASCOPE_EDRIVER;
  af_saw(r, status);
  return status;
}

static int uses(ascope *s, af_run *r) {
  (void)r;
  return ascope_use_http(s, session_opts);
}

static void body(ascope *s, void *ud) {
  af_run *r = ud;
  ascope_http *h = ascope_http_resource(s, 0);
  int rc = ascope_http_get(s, h, "/static/1k.bin", on_resp, r);
  if (rc == 0)
    r->started++;
  else
    af_saw(r, rc);
  rc = ascope_http_get(s, h, "/static/1k.bin?again", on_resp, r);
  if (rc == 0)
    r->started++;
  else
    af_saw(r, rc);
}

static void scenario(af_run *r) {
  af_scope(r, uses, body);
}

Test(http_alloc, get) {
  const char *url = getenv("ASCOPE_HTTP_URL");
  cr_assert(url && *url, "ASCOPE_HTTP_URL is not set: start the servers with scripts/http-start "
                         "<build dir> and export the lines it prints (scripts/test does both)");
  /* a per-host limit: the host's slot record is allocated too */
  snprintf(session_opts, sizeof session_opts,
           "base_url=%s max_host_connections=1 user_agent='ascope alloc test'", url);
  af_sweep("http", scenario, NULL);
}
