/* URLs: joining a request's URL to the session's base, the key a
 * connection slot is counted under, scrubbing credentials out of any
 * text that may reach a message, and stripping them from a response's
 * URL. libcurl's URL API does the parsing: an HTTP client is not written
 * here, only joined to the loop. */
#include "internal.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uv_once_t global_once = UV_ONCE_INIT;

static void global_init(void) {
  /* Once per process, before any handle: curl_global_init is not
   * thread-safe against itself, uv_once makes it so. */
  curl_global_init(CURL_GLOBAL_DEFAULT);
}

void http_global_init(void) {
  uv_once(&global_once, global_init);
}

void http_scrub(char *dst, size_t cap, const char *src) {
  size_t n = 0;
  while (*src && n + 1 < cap) {
    const char *sep = strstr(src, "://");
    if (sep == NULL) break;
    /* Copy through "scheme://", then skip a userinfo ending in its last
     * '@'. A password not percent-encoded may hold '/', '?' or '#' (the URL
     * is then malformed, and its error quotes it), so the userinfo is
     * looked for up to the word's end, not the authority's: an '@' in a
     * path masks the host too, which only costs the message some words. */
    for (const char *s = src; s < sep + 3 && n + 1 < cap; s++) dst[n++] = *s;
    src = sep + 3;
    size_t auth = strcspn(src, " \t\r\n\"'");
    const char *at = memchr(src, '@', auth);
    if (at) {
      const char *last = at;
      while ((at = memchr(last + 1, '@', auth - (size_t)(last + 1 - src)))) last = at;
      src = last + 1;
      if (n + 4 < cap) {
        memcpy(dst + n, "***@", 4);
        n += 4;
      }
    }
  }
  while (*src && n + 1 < cap) dst[n++] = *src++;
  dst[n] = '\0';
}

void http_url_strip_userinfo(char *dst, const char *src) {
  /* The authority follows "scheme://" (RFC 3986: a letter, then letters,
   * digits, '+', '-', '.'), or starts the string when there is no scheme;
   * it ends at the path, query or fragment. The userinfo is taken to end
   * at its last '@', so that none of a password holding a raw '@' stays. */
  static const char scheme_chars[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                     "0123456789+-.";
  const char *auth = src;
  size_t scheme = strspn(src, scheme_chars);
  if (scheme && isalpha((unsigned char)src[0]) && !strncmp(src + scheme, "://", 3))
    auth = src + scheme + 3;
  size_t alen = strcspn(auth, "/?#");
  const char *at = NULL;
  for (const char *p = auth; p < auth + alen; p++)
    if (*p == '@') at = p;
  size_t head = (size_t)(auth - src);
  memcpy(dst, src, head);
  const char *rest = at ? at + 1 : auth;
  memcpy(dst + head, rest, strlen(rest) + 1);
}

static bool has_ctl(const char *s) {
  for (; *s; s++)
    if ((unsigned char)*s < 0x20 || *s == 0x7f) return true;
  return false;
}

static char *host_key(CURLU *u) {
  char *scheme = NULL, *host = NULL, *port = NULL, *key = NULL;
  if (curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) == CURLUE_OK &&
      curl_url_get(u, CURLUPART_HOST, &host, 0) == CURLUE_OK &&
      curl_url_get(u, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT) == CURLUE_OK) {
    size_t n = strlen(scheme) + strlen(host) + strlen(port) + 5;
    key = ascope_malloc(n);
    if (key) snprintf(key, n, "%s://%s:%s", scheme, host, port);
  }
  curl_free(scheme);
  curl_free(host);
  curl_free(port);
  return key;
}

int http_url_resolve(const char *base, const char *url, char **out, char **key) {
  if (url == NULL || has_ctl(url) || (base && has_ctl(base))) return UV_EINVAL;
  if ((base == NULL || *base == '\0') && key == NULL) {
    /* Nothing to join and no host to count: libcurl parses it when it
     * starts, and a malformed URL fails the request there. */
    *out = ascope_strdup(url);
    return *out ? 0 : UV_ENOMEM;
  }
  CURLU *u = curl_url();
  if (u == NULL) return UV_ENOMEM;
  int rc = UV_EINVAL;
  /* With a base set, curl_url_set() resolves url against it (RFC 3986). */
  if (base && *base && curl_url_set(u, CURLUPART_URL, base, 0) != CURLUE_OK) goto out;
  if (curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK) goto out;
  char *full = NULL;
  if (curl_url_get(u, CURLUPART_URL, &full, 0) != CURLUE_OK) goto out;
  *out = ascope_strdup(full);
  curl_free(full);
  char *k = key ? host_key(u) : NULL;
  if (*out == NULL || (key && k == NULL)) {
    ascope_free(*out);
    ascope_free(k);
    *out = NULL;
    rc = UV_ENOMEM;
    goto out;
  }
  if (key) *key = k;
  rc = 0;
out:
  curl_url_cleanup(u);
  return rc;
}
