/* Options: "key=value key='a value' ..." for sessions and requests.
 *
 * One parser serves both: a request accepts the keys that make sense per
 * request (timeouts, limits), a session accepts those as its defaults plus
 * its own (base URL, connection limits, TLS). An unknown key or a bad value
 * is an error, never ignored: a typo in "timeout_ms" must not silently leave
 * a request without its limit.
 *
 * The pairs are those of ascope_opt_next with two differences, kept from
 * the driver's first version because its values are URLs, paths and user
 * agents: pairs are separated by blanks only (a comma belongs to the value,
 * as in "base_url=http://h/a,b"), and a value may be single-quoted to hold
 * blanks, with \' and \\ inside the quotes. The values themselves are read
 * by the shared parsers, ascope_opt_uint and ascope_opt_bool, so a number
 * or a boolean is spelled as in every other driver's options. */
#include "internal.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void http_opts_default(http_opts *o) {
  o->timeout_ms = 0;
  o->connect_timeout_ms = 30000;
  o->wait_timeout_ms = 0;
  o->low_speed_limit = 0;
  o->low_speed_time = 0;
  o->max_redirects = 10;
  o->max_response_bytes = (int64_t)64 << 20;
  o->raise_for_status = false;
}

void http_conf_default(http_conf *c) {
  memset(c, 0, sizeof *c);
  c->max_connections = 100;
  c->max_host_connections = 0;
  c->http_version = CURL_HTTP_VERSION_2TLS;
  c->tls_verify = true;
}

void http_conf_free(http_conf *c) {
  ascope_free(c->base_url);
  ascope_free(c->user_agent);
  ascope_free(c->ca_file);
  ascope_free(c->proxy);
  c->base_url = c->user_agent = c->ca_file = c->proxy = NULL;
}

static int parse_int(const char *v, int64_t max, int64_t *out) {
  uint64_t n;
  int rc = ascope_opt_uint(v, (uint64_t)max, &n);
  if (rc == 0) *out = (int64_t)n;
  return rc;
}

/* libcurl's long options: at most 2^31 - 1 whatever the platform's long. */
static int parse_long(const char *v, long *out) {
  int64_t n;
  int rc = parse_int(v, 0x7fffffff, &n);
  if (rc == 0) *out = (long)n;
  return rc;
}

static int parse_bool(const char *v, bool *out) {
  int b;
  int rc = ascope_opt_bool(v, &b);
  if (rc == 0) *out = b != 0;
  return rc;
}

static int set_str(char **dst, const char *v) {
  char *p = ascope_strdup(v);
  if (p == NULL) return UV_ENOMEM;
  ascope_free(*dst);
  *dst = p;
  return 0;
}

static int parse_version(const char *v, long *out) {
  if (!strcmp(v, "1.0"))
    *out = CURL_HTTP_VERSION_1_0;
  else if (!strcmp(v, "1.1"))
    *out = CURL_HTTP_VERSION_1_1;
  else if (!strcmp(v, "2"))
    *out = CURL_HTTP_VERSION_2_0;
  else if (!strcmp(v, "2tls"))
    *out = CURL_HTTP_VERSION_2TLS;
  else
    return UV_EINVAL;
  return 0;
}

/* Returns 1 when the key is not a request key. */
static int set_req_key(http_opts *o, const char *k, const char *v) {
  if (!strcmp(k, "timeout_ms")) return parse_long(v, &o->timeout_ms);
  if (!strcmp(k, "connect_timeout_ms")) return parse_long(v, &o->connect_timeout_ms);
  if (!strcmp(k, "wait_timeout_ms")) return parse_long(v, &o->wait_timeout_ms);
  if (!strcmp(k, "low_speed_limit")) return parse_long(v, &o->low_speed_limit);
  if (!strcmp(k, "low_speed_time")) return parse_long(v, &o->low_speed_time);
  if (!strcmp(k, "max_redirects")) return parse_long(v, &o->max_redirects);
  if (!strcmp(k, "max_response_bytes")) return parse_int(v, INT64_MAX, &o->max_response_bytes);
  if (!strcmp(k, "raise_for_status")) return parse_bool(v, &o->raise_for_status);
  return 1;
}

static int set_session_key(http_conf *c, const char *k, const char *v) {
  if (!strcmp(k, "base_url")) return set_str(&c->base_url, v);
  if (!strcmp(k, "user_agent")) return set_str(&c->user_agent, v);
  if (!strcmp(k, "ca_file")) return set_str(&c->ca_file, v);
  if (!strcmp(k, "proxy")) return set_str(&c->proxy, v);
  if (!strcmp(k, "max_connections")) return parse_long(v, &c->max_connections);
  if (!strcmp(k, "max_host_connections")) return parse_long(v, &c->max_host_connections);
  if (!strcmp(k, "tls_verify")) return parse_bool(v, &c->tls_verify);
  if (!strcmp(k, "http_version")) return parse_version(v, &c->http_version);
  return 1;
}

/* Reads one "key=value" at *p into k and v (bounded buffers); advances *p. */
static int next_pair(const char **p, char *k, size_t kcap, char *v, size_t vcap) {
  const char *s = *p;
  size_t n = 0;
  while (*s && *s != '=' && !isspace((unsigned char)*s)) {
    if (n + 1 >= kcap) return UV_EINVAL;
    k[n++] = *s++;
  }
  k[n] = '\0';
  if (*s != '=' || n == 0) return UV_EINVAL;
  s++;
  n = 0;
  bool quoted = *s == '\'';
  if (quoted) s++;
  while (*s && (quoted ? *s != '\'' : !isspace((unsigned char)*s))) {
    if (*s == '\\' && s[1]) s++; /* \' and \\ inside a value */
    if (n + 1 >= vcap) return UV_EINVAL;
    v[n++] = *s++;
  }
  if (quoted) {
    if (*s != '\'') return UV_EINVAL;
    s++;
  }
  v[n] = '\0';
  *p = s;
  return 0;
}

int http_parse_options(const char *options, http_opts *o, http_conf *c, char *err, size_t errlen) {
  if (options == NULL) return 0;
  char k[64], v[4096];
  const char *p = options;
  for (;;) {
    while (isspace((unsigned char)*p)) p++;
    if (*p == '\0') return 0;
    if (next_pair(&p, k, sizeof k, v, sizeof v)) {
      snprintf(err, errlen, "malformed option near \"%.32s\" (want key=value)", p);
      return UV_EINVAL;
    }
    int rc = set_req_key(o, k, v);
    if (rc == 1 && c) rc = set_session_key(c, k, v);
    if (rc == 1) {
      snprintf(err, errlen, "unknown option \"%s\"", k);
      return UV_EINVAL;
    }
    if (rc) {
      /* The value is not echoed: it may be a proxy URL with a password. */
      snprintf(err, errlen, "bad value for option \"%s\"", k);
      return rc;
    }
  }
}
