/* The HTTP driver's URLs: joining a request's URL to the session's base
 * (http_url_resolve, libcurl's URL API underneath) with the per-host slot
 * key, and scrubbing "user:password@" out of text bound for a message
 * (http_scrub).
 *
 * Input: one byte of flags and the size of the scrub buffer, the base URL,
 * a NUL, the URL. */
#include "../../drivers/http/internal.h"

#include "fuzz_util.h"

/* What http_scrub must never let through: a "://" followed, within the
 * authority, by an '@'. */
static bool has_userinfo(const char *s) {
  for (const char *p = s; (p = strstr(p, "://")) != NULL;) {
    p += 3;
    size_t auth = strcspn(p, "/?# \t\r\n\"'");
    const char *at = memchr(p, '@', auth);
    if (at && !(at - p == 3 && memcmp(p, "***", 3) == 0)) return true;
  }
  return false;
}

static void check_scrub(const char *src, size_t cap) {
  char *dst = fz_xmalloc(cap);
  http_scrub(dst, cap, src);
  FZ_CHECK(strlen(dst) < cap);
  FZ_CHECK(!has_userinfo(dst));
  free(dst);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  struct fz f = {data, size};
  uint8_t flags = fz_byte(&f);
  char *base = fz_str(&f, NULL);
  char *url = fz_str(&f, NULL);

  char *out = NULL, *key = NULL;
  int rc = http_url_resolve(flags & 1 ? NULL : base, url, &out, flags & 2 ? &key : NULL);
  if (rc == 0) {
    FZ_CHECK(out != NULL);
    if (flags & 2) FZ_CHECK(key != NULL && strstr(key, "://") != NULL);
    check_scrub(out, 1 + (flags >> 2));
    check_scrub(out, 4096);
  } else {
    FZ_CHECK(rc == UV_EINVAL || rc == UV_ENOMEM);
  }
  ascope_free(out);
  ascope_free(key);
  check_scrub(url, 1 + (flags >> 2));
  check_scrub(url, 4096);
  free(url);
  free(base);
  return 0;
}
