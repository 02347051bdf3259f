/* The HTTP driver's options grammar (http_parse_options): "key=value" with
 * single-quoted values and backslash escapes, for requests and sessions.
 *
 * Input: the options string. */
#include "../../drivers/http/internal.h"

#include "fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char *s = fz_whole(data, size);
  http_opts o;
  http_conf c;
  char err[160];

  http_opts_default(&o);
  if (http_parse_options(s, &o, NULL, err, sizeof err) == 0) {
    FZ_CHECK(o.timeout_ms >= 0 && o.connect_timeout_ms >= 0 && o.wait_timeout_ms >= 0);
    FZ_CHECK(o.low_speed_limit >= 0 && o.low_speed_time >= 0 && o.max_redirects >= 0);
    FZ_CHECK(o.max_response_bytes >= 0);
  } else {
    FZ_CHECK(memchr(err, '\0', sizeof err) != NULL);
  }

  http_opts_default(&o);
  http_conf_default(&c);
  if (http_parse_options(s, &o, &c, err, sizeof err) == 0) {
    FZ_CHECK(c.max_connections >= 0 && c.max_host_connections >= 0);
    if (c.base_url) fz_sink += strlen(c.base_url);
    if (c.proxy) fz_sink += strlen(c.proxy);
  }
  http_conf_free(&c); /* also after a failure: values set before it are owned */
  free(s);
  return 0;
}
