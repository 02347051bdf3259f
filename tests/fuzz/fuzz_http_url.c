/* The HTTP driver's URLs: joining a request's URL to the session's base
 * (http_url_resolve, libcurl's URL API underneath) with the per-host slot
 * key, scrubbing "user:password@" out of text bound for a message
 * (http_scrub), and stripping it from a response's URL
 * (http_url_strip_userinfo).
 *
 * Input: one byte of flags and the size of the scrub buffer, the base URL,
 * a NUL, the URL. */
#include "../../drivers/http/internal.h"

#include "fuzz_util.h"

#include <ctype.h>

/* What http_scrub must never let through: a "://" followed, within the
 * word (a password not percent-encoded may hold '/', '?' or '#'), by an
 * '@'. */
static bool has_userinfo(const char *s) {
  for (const char *p = s; (p = strstr(p, "://")) != NULL;) {
    p += 3;
    size_t auth = strcspn(p, " \t\r\n\"'");
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

/* A response's URL: src less one run of bytes, the userinfo: after the
 * "scheme://" (or at the start without one), ending in '@', inside the
 * authority; no '@' is left there. A URL libcurl made (canonical) is
 * checked by libcurl too: it finds no user and no password in it. */
static size_t scheme_len(const char *s) {
  size_t n = strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+-.");
  return n && isalpha((unsigned char)s[0]) && !strncmp(s + n, "://", 3) ? n + 3 : 0;
}

static void check_strip(const char *src, bool canonical) {
  size_t n = strlen(src);
  char *dst = fz_xmalloc(n + 1);
  http_url_strip_userinfo(dst, src);
  size_t m = strlen(dst), head = scheme_len(src);
  FZ_CHECK(m <= n && head <= m);
  FZ_CHECK(memcmp(dst, src, head) == 0);
  FZ_CHECK(strcmp(dst + head, src + head + (n - m)) == 0);
  if (m < n) {
    FZ_CHECK(src[head + (n - m) - 1] == '@');
    FZ_CHECK(strcspn(src + head, "/?#") >= n - m);
  }
  FZ_CHECK(memchr(dst + head, '@', strcspn(dst + head, "/?#")) == NULL);
  if (canonical) {
    CURLU *u = curl_url();
    char *part = NULL;
    if (u && curl_url_set(u, CURLUPART_URL, dst, CURLU_NON_SUPPORT_SCHEME) == CURLUE_OK) {
      FZ_CHECK(curl_url_get(u, CURLUPART_USER, &part, 0) == CURLUE_NO_USER);
      FZ_CHECK(curl_url_get(u, CURLUPART_PASSWORD, &part, 0) == CURLUE_NO_PASSWORD);
    }
    curl_url_cleanup(u);
  }
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
    /* libcurl made out when it joined a base or took the host's key */
    check_strip(out, (flags & 2) || (!(flags & 1) && *base));
  } else {
    FZ_CHECK(rc == UV_EINVAL || rc == UV_ENOMEM);
  }
  ascope_free(out);
  ascope_free(key);
  check_scrub(url, 1 + (flags >> 2));
  check_scrub(url, 4096);
  check_strip(url, false);
  free(url);
  free(base);
  return 0;
}
