/* The HTTP driver's checks on what a caller puts in a request, and its
 * parse of the response headers a server sends:
 *  - ascope_http_req_new: the method must be a token, the URL is joined to
 *    the session's base_url;
 *  - ascope_http_req_header: the name must be a token and the value free
 *    of CR and LF, or nothing of the request may reach the network
 *    (header injection);
 *  - ascope_http_req_setopt: the per-request options;
 *  - http_resp_add_header and the lookups by name and by index.
 * The session is a bare struct: nothing here needs its loop or libcurl's
 * multi handle.
 *
 * Input: flags, then NUL-separated fields: base URL, method, URL, request
 * options, then header names and values in turn; the same fields are also
 * fed, as raw lines, to the response header parser. */
#include "../../drivers/http/internal.h"

#include "fuzz_util.h"

/* RFC 9110's token, written out again here to check the driver's. */
static bool token(const char *s) {
  static const char tchar[] = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyz"
                              "ABCDEFGHIJKLMNOPQRSTUVWXYZ";
  return *s && strspn(s, tchar) == strlen(s);
}

static void response(struct fz f) {
  ascope_http_resp r;
  memset(&r, 0, sizeof r);
  size_t added = 0;
  while (f.n) {
    size_t len;
    char *line = fz_bytes(&f, &len);
    const char *colon = memchr(line, ':', len);
    FZ_CHECK(http_resp_add_header(&r, line, len) == 0);
    added += colon && colon != line;
    FZ_CHECK(r.nhdr == added);
    free(line);
  }
  for (size_t i = 0; i < r.nhdr; i++) {
    const char *name, *value;
    FZ_CHECK(ascope_http_resp_header_at(&r, i, &name, &value) == 0);
    FZ_CHECK(name + strlen(name) + 1 == value && value + strlen(value) < r.hdr + r.hdr_len);
    const char *first = ascope_http_resp_header(&r, name);
    FZ_CHECK(first != NULL);
  }
  FZ_CHECK(ascope_http_resp_header_at(&r, r.nhdr, NULL, NULL) == UV_ENOENT);
  ascope_free(r.hdr);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  struct fz f = {data, size};
  uint8_t flags = fz_byte(&f);
  struct fz rest = f;
  char *base = fz_str(&f, NULL);
  char *method = fz_str(&f, NULL);
  char *url = fz_str(&f, NULL);
  char *opts = fz_str(&f, NULL);

  ascope_http h;
  memset(&h, 0, sizeof h);
  http_opts_default(&h.opts);
  http_conf_default(&h.conf);
  h.conf.base_url = flags & 1 ? base : NULL;
  h.conf.max_host_connections = flags & 2 ? 4 : 0;

  ascope_http_req *q = ascope_http_req_new(&h, method, url);
  FZ_CHECK(q != NULL);
  if (!token(method)) FZ_CHECK(q->error == UV_EINVAL);
  if (q->error == 0) FZ_CHECK(q->url != NULL && (!(flags & 2) || q->host_key != NULL));
  int bad = q->error;
  if (*opts) {
    int rc = ascope_http_req_setopt(q, opts);
    if (rc && !bad) bad = rc;
  }
  while (f.n) {
    char *name = fz_str(&f, NULL);
    char *value = fz_str(&f, NULL);
    int rc = ascope_http_req_header(q, name, value);
    bool ok = token(name) && strpbrk(value, "\r\n") == NULL;
    FZ_CHECK(ok ? rc == 0 : rc == UV_EINVAL);
    if (ok) {
      struct curl_slist *l = q->headers;
      while (l->next) l = l->next;
      FZ_CHECK(strpbrk(l->data, "\r\n") == NULL);
      FZ_CHECK(strncmp(l->data, name, strlen(name)) == 0);
    } else if (!bad) {
      bad = rc;
    }
    free(value);
    free(name);
  }
  FZ_CHECK(q->error == bad); /* any refusal sticks: the request will not be sent */
  ascope_http_req_free(q);

  response(rest);
  free(opts);
  free(url);
  free(method);
  free(base);
  return 0;
}
