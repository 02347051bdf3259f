/* The PostgreSQL connection string: the parsing half of the driver's
 * connect (pg_dsn_start), both "key=value" and URI forms, then the host,
 * hostaddr and port lists it hands libpq once the names are resolved.
 *
 * No network: dsn.c is compiled into this target with uv_getaddrinfo
 * replaced by a resolver that answers from the input, and the connect
 * itself (pg_connect_start) replaced by a check of what it would be given.
 *
 * Input: the DSN, a NUL, one byte of flags (answer in reverse order; the
 * acquire fails while the lookups run; no lookup can start; a deadline of
 * our own), then the resolver's script: per lookup one byte (a failure, or
 * how many addresses, IPv4 or IPv6). */
#include <uv.h>

#include "fuzz_util.h"

struct fake_lookup {
  uv_getaddrinfo_t *req;
  uv_getaddrinfo_cb cb;
};

static struct fake_lookup *lookups;
static size_t nlookups, lookups_cap;
static int fail_next_start;

static int fake_getaddrinfo(uv_loop_t *loop, uv_getaddrinfo_t *req, uv_getaddrinfo_cb cb,
                            const char *node, const char *service, const struct addrinfo *hints) {
  (void)loop, (void)service, (void)hints;
  FZ_CHECK(node != NULL && *node != '\0');
  if (fail_next_start) return UV_EAI_NONAME; /* the start itself fails */
  if (nlookups == lookups_cap) {
    lookups_cap = lookups_cap ? lookups_cap * 2 : 8;
    lookups = realloc(lookups, lookups_cap * sizeof *lookups);
    if (lookups == NULL) abort();
  }
  lookups[nlookups++] = (struct fake_lookup){req, cb};
  return 0;
}

static int fake_cancel(uv_req_t *req) {
  (void)req;
  return 0;
}

static void fake_freeaddrinfo(struct addrinfo *ai) {
  while (ai) {
    struct addrinfo *next = ai->ai_next;
    free(ai->ai_addr);
    free(ai);
    ai = next;
  }
}

#define uv_getaddrinfo fake_getaddrinfo
#define uv_cancel fake_cancel
#define uv_freeaddrinfo fake_freeaddrinfo
#include "../../drivers/postgres/dsn.c"
#undef uv_getaddrinfo
#undef uv_cancel
#undef uv_freeaddrinfo

/* ---- what the rest of the driver would do ------------------------------------------ */

static int connects, fails;
static bool as_is; /* the DSN goes to libpq unchanged */

static size_t entries(const char *s) {
  size_t n = 1;
  for (; *s; s++) n += *s == ',';
  return n;
}

void pg_connect_start(struct pg_conn *c, const char *const *keys, const char *const *vals) {
  (void)c;
  const char *host = NULL, *addr = NULL, *port = NULL;
  size_t k = 0;
  for (; keys[k]; k++) {
    FZ_CHECK(k < 64 && vals[k] != NULL);
    fz_sink += strlen(vals[k]);
    if (!strcmp(keys[k], "host")) host = vals[k];
    if (!strcmp(keys[k], "hostaddr")) addr = vals[k];
    if (!strcmp(keys[k], "port")) port = vals[k];
  }
  FZ_CHECK(vals[k] == NULL);
  if (!as_is) {
    /* The lists built from the lookups: one entry each per address. */
    FZ_CHECK(host && addr && entries(host) == entries(addr));
    if (port) FZ_CHECK(entries(port) == entries(host));
  }
  connects++;
}

void pg_connect_arm(struct pg_conn *c, uint64_t ms) {
  (void)c;
  FZ_CHECK(ms >= 1000);
}

void pg_acquire_fail(struct pg_conn *c, int status, const char *code, const char *msg) {
  (void)c, (void)status, (void)code;
  FZ_CHECK(msg != NULL);
  fz_sink += strlen(msg);
  fails++;
}

void pg_maybe_done(struct pg_conn *c) {
  (void)c;
}

/* A successful lookup: one to three addresses (getaddrinfo never succeeds
 * with none). */
static struct addrinfo *answer(uint8_t b) {
  struct addrinfo *head = NULL;
  for (int i = 0; i < 1 + b % 3; i++) {
    struct addrinfo *ai = calloc(1, sizeof *ai);
    if (ai == NULL) abort();
    if ((b >> (2 + i)) & 1) {
      struct sockaddr_in6 *a = calloc(1, sizeof *a);
      if (a == NULL) abort();
      a->sin6_family = AF_INET6;
      a->sin6_addr.s6_addr[15] = (uint8_t)(i + 1);
      ai->ai_family = AF_INET6, ai->ai_addr = (struct sockaddr *)a, ai->ai_addrlen = sizeof *a;
    } else {
      struct sockaddr_in *a = calloc(1, sizeof *a);
      if (a == NULL) abort();
      a->sin_family = AF_INET;
      a->sin_addr.s_addr = htonl(0x7f000001u + (uint32_t)i);
      ai->ai_family = AF_INET, ai->ai_addr = (struct sockaddr *)a, ai->ai_addrlen = sizeof *a;
    }
    ai->ai_next = head;
    head = ai;
  }
  return head;
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc, (void)argv;
  /* Only the input may say where to connect. */
  static const char *const vars[] = {"PGHOST", "PGHOSTADDR", "PGPORT", "PGPASSWORD", "PGSERVICE"};
  for (size_t i = 0; i < sizeof vars / sizeof *vars; i++) unsetenv(vars[i]);
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  struct fz f = {data, size};
  char *dsn = fz_str(&f, NULL);
  uint8_t flags = fz_byte(&f);
  fail_next_start = flags & 4;

  PQconninfoOption *parsed = PQconninfoParse(dsn, NULL);
  /* Unchanged: with addresses given, or a port list libpq will refuse. */
  const char *ha = parsed ? opt_val(parsed, "hostaddr") : NULL;
  const char *h = parsed ? opt_val(parsed, "host") : NULL;
  const char *p = parsed ? opt_val(parsed, "port") : NULL;
  size_t nports = p && *p ? entries(p) : 0;
  as_is = (ha && *ha) || (nports > 1 && nports != entries(h ? h : ""));

  struct pg_conn c;
  memset(&c, 0, sizeof c);
  c.state = PG_RESOLVING;
  c.opt.connect_ms = flags & 8 ? 1000 : 0;
  char err[256];
  nlookups = 0;
  connects = fails = 0;
  int rc = pg_dsn_start(&c, dsn, err, sizeof err);
  if (rc != 0) {
    FZ_CHECK(parsed == NULL || rc == UV_ENOMEM);
    FZ_CHECK(c.dns == NULL && nlookups == 0);
    FZ_CHECK(strncmp(err, "bad connection string", 21) == 0 || rc == UV_ENOMEM);
  } else {
    FZ_CHECK(parsed != NULL);
    if (nlookups) {
      FZ_CHECK(c.dns != NULL && connects + fails == 0);
      if (flags & 2) { /* the acquire fails meanwhile: the rest come back cancelled */
        c.state = PG_CONNECTING;
        pg_dsn_cancel(&c);
      }
      size_t n = nlookups;
      for (size_t i = 0; i < n; i++) {
        struct fake_lookup *l = &lookups[flags & 1 ? n - 1 - i : i];
        uint8_t b = fz_byte(&f);
        if (c.state != PG_RESOLVING)
          l->cb(l->req, UV_ECANCELED, NULL);
        else if (b >= 0xf0)
          l->cb(l->req, UV_EAI_NONAME, NULL);
        else
          l->cb(l->req, 0, answer(b));
      }
    }
    FZ_CHECK(c.dns == NULL); /* every path frees the lookups' state */
    FZ_CHECK(connects + fails == (c.state == PG_RESOLVING));
  }
  ascope_free(c.secret);
  PQconninfoFree(parsed);
  free(dsn);
  return 0;
}
