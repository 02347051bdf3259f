/* The connection string, and host names resolved off the loop thread.
 *
 * libpq resolves a host name with a blocking getaddrinfo() inside
 * PQconnectPoll, which would stall the loop for as long as DNS takes. So
 * the DSN is parsed here (PQconninfoParse: both "key=value" and URIs),
 * every host name is resolved with uv_getaddrinfo on libuv's threadpool,
 * and libpq is handed each address in hostaddr, beside its name in host
 * (still used for TLS verification and .pgpass). A name with several
 * addresses becomes one host entry per address, so libpq tries each in
 * turn, as it would have. Everything else (multi-host lists,
 * target_session_attrs, sslmode...) passes through untouched.
 *
 * A DSN that already gives hostaddr, or only Unix sockets and IP literals,
 * needs no resolution. (A host coming from a pg_service.conf entry is not
 * seen here; libpq resolves that one itself.)
 */
#include "internal.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct pg_lookup {
  uv_getaddrinfo_t req;
  struct pg_dns *d;
  struct addrinfo *ai;
  int status;
  bool done;
};

struct pg_dns {
  struct pg_conn *c;
  PQconninfoOption *opts;
  char *hostbuf, *portbuf; /* copies, cut at the commas */
  char **hosts, **ports;
  size_t nhosts, nports;
  struct pg_lookup *lookups; /* one per host entry; unused for sockets and literals */
  size_t pending;
};

static const char *opt_val(PQconninfoOption *o, const char *key) {
  for (; o && o->keyword; o++)
    if (strcmp(o->keyword, key) == 0) return o->val;
  return NULL;
}

static bool nonempty(const char *s) {
  return s && *s;
}

/* Cuts a copy of s at its commas; *n entries into *out (malloc'd). */
static char *split(const char *s, char ***out, size_t *n) {
  char *buf = ascope_strdup(s ? s : "");
  size_t k = 1;
  for (const char *p = buf ? buf : ""; *p; p++) k += *p == ',';
  *out = ascope_calloc(k, sizeof **out);
  if (buf == NULL || *out == NULL) {
    ascope_free(buf);
    ascope_free(*out);
    *out = NULL;
    return NULL;
  }
  size_t i = 0;
  for (char *p = buf, *q; i < k; p = q + 1) {
    (*out)[i++] = p;
    if ((q = strchr(p, ',')) == NULL) break;
    *q = '\0';
  }
  *n = i;
  return buf;
}

static bool is_literal(const char *h) {
  unsigned char b[16];
  return inet_pton(AF_INET, h, b) == 1 || inet_pton(AF_INET6, h, b) == 1;
}

static bool needs_lookup(const char *h) {
  return nonempty(h) && h[0] != '/' && h[0] != '@' && !is_literal(h);
}

void pg_dsn_free(struct pg_conn *c) {
  struct pg_dns *d = c->dns;
  if (d == NULL || d->pending) return; /* lookups still out: their callbacks free it */
  for (size_t i = 0; d->lookups && i < d->nhosts; i++)
    if (d->lookups[i].ai) uv_freeaddrinfo(d->lookups[i].ai);
  ascope_free(d->lookups);
  ascope_free(d->hosts);
  ascope_free(d->ports);
  ascope_free(d->hostbuf);
  ascope_free(d->portbuf);
  PQconninfoFree(d->opts);
  ascope_free(d);
  c->dns = NULL;
}

void pg_dsn_cancel(struct pg_conn *c) {
  struct pg_dns *d = c->dns;
  for (size_t i = 0; d && d->lookups && i < d->nhosts; i++)
    if (!d->lookups[i].done && d->lookups[i].d) uv_cancel((uv_req_t *)&d->lookups[i].req);
}

/* ---- building what libpq gets ------------------------------------------------------ */

struct strbuf {
  char *s;
  size_t len, cap;
  size_t n; /* entries: an empty first one (a socket's hostaddr) still takes its comma */
  bool oom;
};

static void sb_add(struct strbuf *b, const char *s) {
  size_t n = strlen(s);
  if (b->len + n + 2 > b->cap) {
    size_t cap = b->cap ? b->cap * 2 : 128;
    while (cap < b->len + n + 2) cap *= 2;
    char *p = ascope_realloc(b->s, cap);
    if (p == NULL) {
      b->oom = true;
      return;
    }
    b->s = p;
    b->cap = cap;
  }
  if (b->n++) b->s[b->len++] = ',';
  memcpy(b->s + b->len, s, n + 1);
  b->len += n;
}

/* host, hostaddr and port lists: one entry per address. */
static size_t expand(struct pg_dns *d, struct strbuf *h, struct strbuf *a, struct strbuf *p,
                     int *last_err, const char **last_host) {
  size_t entries = 0;
  for (size_t i = 0; i < d->nhosts; i++) {
    const char *host = d->hosts[i], *port = d->nports ? d->ports[d->nports == 1 ? 0 : i] : "";
    if (!needs_lookup(host)) {
      sb_add(h, host);
      sb_add(a, is_literal(host) ? host : "");
      sb_add(p, port);
      entries++;
      continue;
    }
    struct pg_lookup *l = &d->lookups[i];
    if (l->status) {
      *last_err = l->status;
      *last_host = host;
      continue;
    }
    for (struct addrinfo *ai = l->ai; ai; ai = ai->ai_next) {
      char addr[INET6_ADDRSTRLEN];
      if (uv_ip_name(ai->ai_addr, addr, sizeof addr) != 0) continue;
      sb_add(h, host);
      sb_add(a, addr);
      sb_add(p, port);
      entries++;
    }
  }
  return entries;
}

/* The parsed options, host, hostaddr and port replaced by the lists. */
static void connect_resolved(struct pg_dns *d) {
  struct pg_conn *c = d->c;
  struct strbuf h = {0}, a = {0}, p = {0};
  int err = 0;
  const char *bad = NULL;
  size_t n = expand(d, &h, &a, &p, &err, &bad);
  const char *keys[64], *vals[64];
  size_t k = 0;
  for (PQconninfoOption *o = d->opts; o->keyword && k < 60; o++) {
    if (o->val == NULL || !strcmp(o->keyword, "host") || !strcmp(o->keyword, "hostaddr") ||
        !strcmp(o->keyword, "port"))
      continue;
    keys[k] = o->keyword;
    vals[k++] = o->val;
  }
  if (n == 0 || h.oom || a.oom || p.oom) {
    char msg[300];
    if (n == 0)
      snprintf(msg, sizeof msg, "could not translate host name \"%s\" to address: %s",
               bad ? bad : "", uv_strerror(err));
    pg_acquire_fail(c, n == 0 ? ASCOPE_EDRIVER : UV_ENOMEM, "08001",
                    n == 0 ? msg : "out of memory resolving the host names");
  } else {
    keys[k] = "host", vals[k++] = h.s;
    keys[k] = "hostaddr", vals[k++] = a.s;
    if (p.len) keys[k] = "port", vals[k++] = p.s;
    keys[k] = NULL;
    vals[k] = NULL;
    pg_connect_start(c, keys, vals);
  }
  ascope_free(h.s);
  ascope_free(a.s);
  ascope_free(p.s);
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res) {
  struct pg_lookup *l = (struct pg_lookup *)req;
  struct pg_dns *d = l->d;
  struct pg_conn *c = d->c;
  l->done = true;
  l->status = status;
  l->ai = res;
  d->pending--;
  if (d->pending) return;
  if (c->state == PG_RESOLVING) {
    connect_resolved(d);
    pg_dsn_free(c); /* libpq copied what it needs */
  } else {          /* the acquire failed or was cancelled meanwhile */
    pg_dsn_free(c);
    pg_maybe_done(c);
  }
}

static int start_lookups(struct pg_dns *d) {
  struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
  d->lookups = ascope_calloc(d->nhosts, sizeof *d->lookups);
  if (d->lookups == NULL) return UV_ENOMEM;
  for (size_t i = 0; i < d->nhosts; i++) {
    if (!needs_lookup(d->hosts[i])) continue;
    struct pg_lookup *l = &d->lookups[i];
    l->d = d;
    int rc = uv_getaddrinfo(d->c->loop, &l->req, on_resolved, d->hosts[i], NULL, &hints);
    if (rc) { /* this host fails; the others may still do */
      l->done = true;
      l->status = rc;
      continue;
    }
    d->pending++;
  }
  return 0;
}

/* The DSN's options as libpq's keyword arrays, with no change. */
static void connect_as_is(struct pg_conn *c, PQconninfoOption *opts) {
  const char *keys[64], *vals[64];
  size_t k = 0;
  for (PQconninfoOption *o = opts; o->keyword && k < 63; o++) {
    if (o->val == NULL) continue;
    keys[k] = o->keyword;
    vals[k++] = o->val;
  }
  keys[k] = vals[k] = NULL;
  pg_connect_start(c, keys, vals);
}

int pg_dsn_start(struct pg_conn *c, const char *dsn, char *err, size_t errlen) {
  char *perr = NULL;
  PQconninfoOption *opts = PQconninfoParse(dsn ? dsn : "", &perr);
  if (opts == NULL) {
    char *guess = pg_dsn_secret_guess(dsn);
    char *m = pg_scrub(perr ? perr : "out of memory parsing the connection string", guess);
    ascope_free(guess);
    snprintf(err, errlen, "bad connection string: %s", m ? m : "");
    if (m && strlen(m) && err[strlen(err) - 1] == '\n') err[strlen(err) - 1] = '\0';
    ascope_free(m);
    PQfreemem(perr);
    return perr ? UV_EINVAL : UV_ENOMEM;
  }
  /* The deadline: ours (milliseconds), else the DSN's connect_timeout
   * (seconds), else 15 s. The driver's own timer enforces it, so it is the
   * time asked for: libpq's blocking connect rounds 1 s up to 2 s, but its
   * non-blocking one, used here, does not read the key at all. */
  const char *ct = opt_val(opts, "connect_timeout");
  uint64_t ms = c->opt.connect_ms;
  if (ms == 0 && nonempty(ct) && atoi(ct) > 0) ms = (uint64_t)atoi(ct) * 1000;
  pg_connect_arm(c, ms ? ms : 15000);
  const char *pw = opt_val(opts, "password");
  if (!nonempty(pw)) pw = getenv("PGPASSWORD");
  if (nonempty(pw) && (c->secret = ascope_strdup(pw)) == NULL) {
    PQconninfoFree(opts);
    snprintf(err, errlen, "out of memory");
    return UV_ENOMEM;
  }
  const char *host = opt_val(opts, "host"), *addr = opt_val(opts, "hostaddr");
  if (!nonempty(host)) host = getenv("PGHOST");
  if (!nonempty(addr)) addr = getenv("PGHOSTADDR");
  struct pg_dns *d = ascope_calloc(1, sizeof *d);
  if (d == NULL) {
    PQconninfoFree(opts);
    snprintf(err, errlen, "out of memory");
    return UV_ENOMEM;
  }
  d->c = c;
  d->opts = opts;
  c->dns = d;
  d->hostbuf = split(host, &d->hosts, &d->nhosts);
  const char *port = opt_val(opts, "port");
  d->portbuf = split(nonempty(port) ? port : getenv("PGPORT"), &d->ports, &d->nports);
  if (d->hostbuf == NULL || d->portbuf == NULL) {
    pg_dsn_free(c);
    snprintf(err, errlen, "out of memory");
    return UV_ENOMEM;
  }
  if (d->nports == 1 && d->ports[0][0] == '\0') d->nports = 0;
  /* Addresses given: nothing to resolve. A port list that is neither one
   * port nor one per host cannot be paired by expand(): libpq refuses it
   * before any lookup, in its own words. */
  if (nonempty(addr) || (d->nports > 1 && d->nports != d->nhosts)) {
    connect_as_is(c, opts);
    pg_dsn_free(c);
    return 0;
  }
  if (start_lookups(d) != 0) {
    pg_dsn_free(c);
    snprintf(err, errlen, "out of memory");
    return UV_ENOMEM;
  }
  if (d->pending == 0) { /* sockets and literals only, or no lookup could start */
    connect_resolved(d);
    pg_dsn_free(c);
  }
  return 0;
}
