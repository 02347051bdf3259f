/* Error texts, and keeping the password out of them.
 *
 * The server's errors carry a SQLSTATE, a message and sometimes a DETAIL and
 * a HINT: all of it goes into the message the scope reports, because the
 * detail is often the useful part ("Key (id)=(1) already exists."). libpq's
 * own messages (connecting, a lost connection) have no SQLSTATE.
 *
 * A password must never reach a message: libpq quotes pieces of a
 * malformed connection string back in its errors, and a server may echo
 * what it was sent. Every message that may hold one passes through
 * pg_scrub(), which masks the password itself wherever it appears, and any
 * "password=..." or "scheme://user:password@" it finds, known or not. */
#include "internal.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MASK "***"

/* Replaces every occurrence of s (n > 0 bytes) in *buf with MASK. */
static char *mask_all(char *buf, const char *s, size_t n) {
  size_t count = 0;
  for (const char *p = buf; (p = strstr(p, s)) != NULL; p += n) count++;
  if (count == 0) return buf;
  size_t len = strlen(buf), mlen = strlen(MASK);
  char *out = ascope_malloc(len + count * mlen + 1);
  if (out == NULL) { /* cannot grow: blank it in place rather than leak it */
    for (char *p = buf; (p = strstr(p, s)) != NULL;) memset(p, '*', n);
    return buf;
  }
  char *o = out;
  const char *p = buf, *q;
  while ((q = strstr(p, s)) != NULL) {
    memcpy(o, p, (size_t)(q - p));
    o += q - p;
    memcpy(o, MASK, mlen);
    o += mlen;
    p = q + n;
  }
  strcpy(o, p);
  ascope_free(buf);
  return out;
}

/* The extent of a value starting at v: a quoted 'string' (with \ escapes) or
 * a run up to a blank, '&' or the end. */
static size_t value_len(const char *v) {
  if (*v == '\'') {
    size_t i = 1;
    while (v[i] && v[i] != '\'') i += v[i] == '\\' && v[i + 1] ? 2 : 1;
    return v[i] ? i + 1 : i;
  }
  return strcspn(v, " \t\n&'\"");
}

/* "password=VALUE" (any case, spaces around '=') → "password=***". */
static void mask_keyword(char *buf) {
  for (char *p = buf; (p = strcasestr(p, "password")) != NULL;) {
    char *q = p + 8;
    while (*q == ' ' || *q == '\t') q++;
    if (*q != '=') {
      p += 8;
      continue;
    }
    q++;
    while (*q == ' ' || *q == '\t') q++;
    size_t n = value_len(q);
    memset(q, '*', n);
    p = q + n;
  }
}

/* "scheme://user:password@host" → the password's bytes become '*'. */
static void mask_uri(char *buf) {
  for (char *p = buf; (p = strstr(p, "://")) != NULL;) {
    p += 3;
    size_t auth = strcspn(p, "/?# \t\n\"'");
    char *at = memchr(p, '@', auth);
    if (at == NULL) continue;
    char *colon = memchr(p, ':', (size_t)(at - p));
    if (colon) memset(colon + 1, '*', (size_t)(at - colon - 1));
  }
}

char *pg_scrub(const char *msg, const char *secret) {
  char *buf = ascope_strdup(msg ? msg : "");
  if (buf == NULL) return NULL;
  if (secret && *secret) buf = mask_all(buf, secret, strlen(secret));
  mask_keyword(buf);
  mask_uri(buf);
  return buf;
}

/* "text" without its trailing newlines. */
static size_t trimmed(const char *s) {
  size_t n = strlen(s);
  while (n && (s[n - 1] == '\n' || s[n - 1] == ' ')) n--;
  return n;
}

char *pg_result_error(const PGresult *res, char code[6]) {
  const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
  const char *primary = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
  const char *detail = PQresultErrorField(res, PG_DIAG_MESSAGE_DETAIL);
  const char *hint = PQresultErrorField(res, PG_DIAG_MESSAGE_HINT);
  code[0] = '\0';
  if (state) snprintf(code, 6, "%s", state);
  if (primary == NULL) primary = PQresultErrorMessage(res);
  if (primary == NULL || *primary == '\0') primary = "the server reported an error";
  size_t n = trimmed(primary) + (detail ? strlen(detail) + 11 : 0) + (hint ? strlen(hint) + 9 : 0);
  char *msg = ascope_malloc(n + 1);
  if (msg == NULL) return NULL;
  int k = snprintf(msg, n + 1, "%.*s", (int)trimmed(primary), primary);
  if (detail) k += snprintf(msg + k, n + 1 - (size_t)k, "; DETAIL: %s", detail);
  if (hint) snprintf(msg + k, n + 1 - (size_t)k, "; HINT: %s", hint);
  return msg;
}

char *pg_conn_error(struct pg_conn *c, const char *fallback) {
  const char *m = c->pg ? PQerrorMessage(c->pg) : NULL;
  if (m == NULL || *m == '\0') m = fallback;
  char tmp[512];
  snprintf(tmp, sizeof tmp, "%.*s", (int)trimmed(m), m);
  /* libpq's multi-line messages read better on one line. */
  for (char *p = tmp; *p; p++)
    if (*p == '\n' || *p == '\t') *p = ' ';
  return pg_scrub(tmp, c->secret);
}

/* ---- a password in a DSN libpq could not parse ----------------------------------------- */

static char *dup_n(const char *s, size_t n) {
  char *d = n ? ascope_malloc(n + 1) : NULL;
  if (d) {
    memcpy(d, s, n);
    d[n] = '\0';
  }
  return d;
}

char *pg_dsn_secret_guess(const char *dsn) {
  if (dsn == NULL) return NULL;
  const char *p = strstr(dsn, "://");
  if (p && (strncmp(dsn, "postgresql://", 13) == 0 || strncmp(dsn, "postgres://", 11) == 0)) {
    p += 3;
    size_t auth = strcspn(p, "/?#");
    const char *at = NULL;
    for (const char *q = p; q < p + auth; q++)
      if (*q == '@') at = q;
    const char *colon = at ? memchr(p, ':', (size_t)(at - p)) : NULL;
    return colon ? dup_n(colon + 1, (size_t)(at - colon - 1)) : NULL;
  }
  for (p = dsn; (p = strstr(p, "password")) != NULL; p += 8) {
    const char *q = p + 8;
    while (isspace((unsigned char)*q)) q++;
    if (*q != '=') continue;
    q++;
    while (isspace((unsigned char)*q)) q++;
    if (*q == '\'') {
      const char *e = q + 1;
      while (*e && *e != '\'') e += *e == '\\' && e[1] ? 2 : 1;
      return dup_n(q + 1, (size_t)(e - q - 1));
    }
    return dup_n(q, strcspn(q, " \t\n"));
  }
  return NULL;
}
