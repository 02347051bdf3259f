/* A response: the status, the URL and the headers of the final response
 * (after redirects) and the body, or the chunk being streamed. The headers
 * are kept as "name\0value\0" pairs in one buffer, read by name or by
 * index; the URL in a buffer of its own, kept across redirects. */
#include "internal.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

void http_resp_reset(ascope_http_resp *r) {
  r->status = 0;
  r->hdr_len = 0;
  r->nhdr = 0;
  r->body_len = 0;
}

static int reserve(char **buf, size_t *cap, size_t need) {
  if (need <= *cap) return 0;
  size_t n = *cap ? *cap : 256;
  while (n < need) n *= 2;
  char *p = ascope_realloc(*buf, n);
  if (p == NULL) return UV_ENOMEM;
  *buf = p;
  *cap = n;
  return 0;
}

static size_t trim(const char **s, size_t len) {
  while (len && (**s == ' ' || **s == '\t')) (*s)++, len--;
  while (len && ((*s)[len - 1] == ' ' || (*s)[len - 1] == '\t' || (*s)[len - 1] == '\r' ||
                 (*s)[len - 1] == '\n'))
    len--;
  return len;
}

int http_resp_add_header(ascope_http_resp *r, const char *line, size_t len) {
  const char *colon = memchr(line, ':', len);
  if (colon == NULL || colon == line) return 0; /* not a header: ignored */
  const char *name = line, *value = colon + 1;
  size_t nlen = trim(&name, (size_t)(colon - line));
  size_t vlen = trim(&value, len - (size_t)(value - line));
  if (reserve(&r->hdr, &r->hdr_cap, r->hdr_len + nlen + vlen + 2)) return UV_ENOMEM;
  char *p = r->hdr + r->hdr_len;
  memcpy(p, name, nlen);
  p[nlen] = '\0';
  memcpy(p + nlen + 1, value, vlen);
  p[nlen + 1 + vlen] = '\0';
  r->hdr_len += nlen + vlen + 2;
  r->nhdr++;
  return 0;
}

int http_resp_set_url(ascope_http_resp *r, const char *url) {
  /* Stripping the userinfo never lengthens the URL. */
  if (reserve(&r->url, &r->url_cap, strlen(url) + 1)) return UV_ENOMEM;
  http_url_strip_userinfo(r->url, url);
  return 0;
}

int ascope_http_resp_status(const ascope_http_resp *r) {
  return r ? r->status : UV_EINVAL;
}

const char *ascope_http_resp_url(const ascope_http_resp *r) {
  return r ? r->url : NULL;
}

int ascope_http_resp_header_at(const ascope_http_resp *r, size_t index, const char **name,
                               const char **value) {
  if (r == NULL) return UV_EINVAL;
  if (index >= r->nhdr) return UV_ENOENT;
  const char *p = r->hdr;
  for (size_t i = 0; i < index; i++) {
    p += strlen(p) + 1;
    p += strlen(p) + 1;
  }
  if (name) *name = p;
  if (value) *value = p + strlen(p) + 1;
  return 0;
}

const char *ascope_http_resp_header(const ascope_http_resp *r, const char *name) {
  if (r == NULL || name == NULL) return NULL;
  const char *p = r->hdr;
  for (size_t i = 0; i < r->nhdr; i++) {
    const char *v = p + strlen(p) + 1;
    if (strcasecmp(p, name) == 0) return v;
    p = v + strlen(v) + 1;
  }
  return NULL;
}

const char *ascope_http_resp_headers(const ascope_http_resp *r, size_t *len) {
  if (len) *len = r ? r->hdr_len : 0;
  return r && r->hdr_len ? r->hdr : "";
}

const void *ascope_http_resp_body(const ascope_http_resp *r, size_t *len) {
  if (r == NULL || r->view == NULL) {
    if (len) *len = 0;
    return "";
  }
  if (len) *len = r->view_len;
  return r->view;
}
