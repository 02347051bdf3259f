/* The target and the options: where to connect, as whom, and how long to
 * wait for it.
 *
 * A URL, "redis://[[user]:password@]host[:port][/db]", or the repo's
 * key=value grammar, "host=... port=... user=... password=... db=...
 * path=..." (path: a Unix socket). Messages name what is wrong, never the
 * password.
 */
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int set(char **dst, const char *s, size_t n) {
  ascope_free(*dst);
  *dst = ascope_strndup(s, n);
  return *dst ? 0 : UV_ENOMEM;
}

static int parse_uint(const char *v, size_t n, uint64_t max, uint64_t *out) {
  char buf[24];
  if (n == 0 || n >= sizeof buf) return UV_EINVAL;
  memcpy(buf, v, n);
  buf[n] = '\0';
  return ascope_opt_uint(buf, max, out);
}

/* "[[user]:password@]host[:port][/db]", after the scheme. */
static int parse_url(struct rd_target *t, const char *u, char *err, size_t errlen) {
  const char *at = strrchr(u, '@'), *hp = at ? at + 1 : u;
  if (at) {
    const char *colon = memchr(u, ':', (size_t)(at - u));
    if (colon == NULL) colon = at; /* "user@": no password */
    if (colon > u && set(&t->user, u, (size_t)(colon - u))) return UV_ENOMEM;
    if (colon < at && set(&t->password, colon + 1, (size_t)(at - colon - 1))) return UV_ENOMEM;
  }
  const char *slash = strchr(hp, '/'), *end = slash ? slash : hp + strlen(hp);
  const char *colon = hp[0] == '[' ? NULL : memchr(hp, ':', (size_t)(end - hp));
  uint64_t v;
  if (hp[0] == '[') { /* [IPv6]:port */
    const char *close = memchr(hp, ']', (size_t)(end - hp));
    if (close == NULL) goto bad;
    if (set(&t->host, hp + 1, (size_t)(close - hp - 1))) return UV_ENOMEM;
    colon = close[1] == ':' ? close + 1 : NULL;
  } else if (set(&t->host, hp, (size_t)((colon ? colon : end) - hp))) {
    return UV_ENOMEM;
  }
  if (colon) {
    if (parse_uint(colon + 1, (size_t)(end - colon - 1), 65535, &v)) goto bad;
    t->port = (int)v;
  }
  if (slash && slash[1]) {
    if (parse_uint(slash + 1, strlen(slash + 1), 1000000, &v)) goto bad;
    t->db = (unsigned)v;
  }
  return 0;
bad:
  snprintf(err, errlen, "bad redis URL (expected redis://[[user]:password@]host[:port][/db])");
  return UV_EINVAL;
}

static int parse_pairs(struct rd_target *t, const char *s, char *err, size_t errlen) {
  char buf[1024], *k, *v;
  uint64_t n;
  while ((s = ascope_opt_next(s, buf, sizeof buf, &k, &v)) != NULL) {
    int rc = 0;
    if (v == NULL) {
      rc = UV_EINVAL;
    } else if (strcmp(k, "host") == 0) {
      rc = set(&t->host, v, strlen(v));
    } else if (strcmp(k, "path") == 0) {
      rc = set(&t->path, v, strlen(v));
    } else if (strcmp(k, "user") == 0) {
      rc = set(&t->user, v, strlen(v));
    } else if (strcmp(k, "password") == 0) {
      rc = set(&t->password, v, strlen(v));
    } else if (strcmp(k, "port") == 0) {
      rc = ascope_opt_uint(v, 65535, &n);
      t->port = (int)n;
    } else if (strcmp(k, "db") == 0) {
      rc = ascope_opt_uint(v, 1000000, &n);
      t->db = (unsigned)n;
    } else {
      rc = UV_EINVAL;
    }
    if (rc == UV_ENOMEM) return rc;
    if (rc) {
      /* never echo a password's value */
      snprintf(err, errlen, "bad target key or value: %s", k);
      return rc;
    }
  }
  return 0;
}

static int parse_options(struct rd_target *t, const char *s, char *err, size_t errlen) {
  char buf[256], *k, *v;
  uint64_t n;
  while (s && (s = ascope_opt_next(s, buf, sizeof buf, &k, &v)) != NULL) {
    int rc = UV_EINVAL;
    if ((strcmp(k, "connect_timeout_ms") == 0 || strcmp(k, "connect_timeout") == 0) && v) {
      rc = ascope_opt_uint(v, UINT32_MAX, &n);
      if (rc == 0) t->connect_ms = n;
    } else if (strcmp(k, "db") == 0 && v) {
      rc = ascope_opt_uint(v, 1000000, &n);
      if (rc == 0) t->db = (unsigned)n;
    }
    if (rc) {
      snprintf(err, errlen, "bad redis option: %s", k);
      return rc;
    }
  }
  return 0;
}

int rd_target_parse(struct rd_target *t, const char *target, const char *options, char *err,
                    size_t errlen) {
  t->port = 6379;
  t->connect_ms = 10000;
  int rc;
  if (target == NULL || *target == '\0')
    rc = set(&t->host, "127.0.0.1", 9);
  else if (strncmp(target, "redis://", 8) == 0)
    rc = parse_url(t, target + 8, err, errlen);
  else
    rc = parse_pairs(t, target, err, errlen);
  if (rc == 0) rc = parse_options(t, options, err, errlen);
  if (rc == 0 && t->host == NULL && t->path == NULL) rc = set(&t->host, "127.0.0.1", 9);
  if (rc == 0 && t->host && t->host[0] == '\0') {
    snprintf(err, errlen, "the redis target has no host");
    rc = UV_EINVAL;
  }
  if (rc == UV_ENOMEM) snprintf(err, errlen, "out of memory");
  return rc;
}

void rd_target_free(struct rd_target *t) {
  if (t->password) {
    memset(t->password, 0, strlen(t->password));
    ascope_free(t->password);
  }
  ascope_free(t->host);
  ascope_free(t->path);
  ascope_free(t->user);
  memset(t, 0, sizeof *t);
}
