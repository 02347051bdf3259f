/* The conformance kit on the HTTP driver, against the nginx that
 * scripts/http-start runs (ASCOPE_HTTP_URL). */
#include <ascope/http.h>
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>

#include "kit.h"

TestSuite(conformance_http, .timeout = 600);

static int on_resp(ascope *s, int status, ascope_http_resp *resp, void *ud) {
  (void)s, (void)resp;
  return ascope_kit_op_done(ud, status);
}

static int get_op(ascope *s, void *res, ascope_kit_op *k) {
  return ascope_http_get(s, res, "/static/1k.bin", on_resp, k);
}

Test(conformance_http, get) {
  const char *url = getenv("ASCOPE_HTTP_URL");
  cr_assert(url && *url, "ASCOPE_HTTP_URL is not set: start the servers with scripts/http-start "
                         "<build dir> and export the lines it prints (scripts/test does both)");
  char opts[512];
  snprintf(opts, sizeof opts, "base_url=%s", url);
  ascope_kit_driver d = {.name = "http",
                         .driver = ascope_http_driver(),
                         .options = opts,
                         /* an unknown option fails the acquire */
                         .bad_options = "no_such_option=1",
                         .op = get_op,
                         .nops = 2};
  cr_assert_eq(ascope_kit_run(&d), 0, "the HTTP driver broke rules: see above");
}
