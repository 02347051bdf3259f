/* The prepared-statement cache: one per connection, least recently used
 * out first.
 *
 * Parsing and planning a statement costs more than running a primary-key
 * lookup, so statements are kept prepared (SQLITE_PREPARE_PERSISTENT tells
 * SQLite they will live long) and found again by their exact text. An entry
 * is checked out while a job uses it and back in when the job is done; only
 * idle entries are on the LRU list, so eviction can never finalize a
 * statement a stream still steps. Scripts (several statements) are never
 * cached: their text would find only the first. Only the thread running the
 * connection's hop touches the cache.
 */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

static uint64_t fnv1a(const char *s) {
  uint64_t h = 1469598103934665603u;
  for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211u;
  return h;
}

static void lru_unlink(struct sq_stmt *e) {
  if (e->lnext == NULL) return;
  e->lprev->lnext = e->lnext;
  e->lnext->lprev = e->lprev;
  e->lprev = e->lnext = NULL;
}

static void lru_front(struct sq_cache *k, struct sq_stmt *e) {
  e->lprev = &k->lru;
  e->lnext = k->lru.lnext;
  k->lru.lnext->lprev = e;
  k->lru.lnext = e;
}

void sq_cache_init(struct sq_cache *k, unsigned cap) {
  memset(k, 0, sizeof *k);
  k->cap = cap;
  k->lru.lprev = k->lru.lnext = &k->lru;
}

static void entry_free(struct sq_stmt *e) {
  sqlite3_finalize(e->stmt);
  SQ_COUNT(e->rts, SQ_STATEMENTS, -1);
  ascope_free(e->map);
  ascope_free(e->sql);
  ascope_free(e);
}

/* What follows a statement is nothing if it holds only blanks, semicolons
 * and comments: preparing it then yields no statement. */
static bool tail_empty(sqlite3 *db, const char *tail) {
  while (*tail == ' ' || *tail == '\t' || *tail == '\n' || *tail == '\r' || *tail == ';') tail++;
  if (*tail == '\0') return true;
  sqlite3_stmt *s = NULL;
  int rc = sqlite3_prepare_v2(db, tail, -1, &s, NULL);
  sqlite3_finalize(s);
  return rc == SQLITE_OK && s == NULL;
}

/* Placeholders: "$N" takes value N (PostgreSQL's spelling, so one SQL text
 * serves both drivers, whatever order the numbers appear in); "?NNN" is
 * already slot NNN; "?", ":name" and "@name" take values in slot order. */
static int map_params(struct sq_stmt *e) {
  e->nslots = sqlite3_bind_parameter_count(e->stmt);
  e->nparams = 0;
  if (e->nslots == 0) return 0;
  e->map = ascope_malloc((size_t)e->nslots * sizeof *e->map);
  if (e->map == NULL) return SQLITE_NOMEM;
  for (int i = 0; i < e->nslots; i++) {
    const char *name = sqlite3_bind_parameter_name(e->stmt, i + 1);
    int v = i;
    if (name && name[0] == '$' && name[1] >= '1' && name[1] <= '9') {
      char *end;
      long n = strtol(name + 1, &end, 10);
      if (*end == '\0' && n <= 32766) v = (int)n - 1;
    }
    e->map[i] = v;
    if (v + 1 > e->nparams) e->nparams = v + 1;
  }
  return 0;
}

static void hash_insert(struct sq_cache *k, struct sq_stmt *e, const char *sql) {
  if (k->buckets == NULL) {
    size_t n = 16;
    while (n < 2 * (size_t)k->cap) n *= 2;
    k->buckets = ascope_calloc(n, sizeof *k->buckets);
    if (k->buckets == NULL) return; /* uncached: still correct, only slower */
    k->nbuckets = n;
  }
  e->sql = ascope_strdup(sql);
  if (e->sql == NULL) return;
  struct sq_stmt **b = &k->buckets[e->hash & (k->nbuckets - 1)];
  e->hnext = *b;
  *b = e;
  e->cached = true;
  k->count++;
}

static void hash_remove(struct sq_cache *k, struct sq_stmt *e) {
  struct sq_stmt **pp = &k->buckets[e->hash & (k->nbuckets - 1)];
  while (*pp != e) pp = &(*pp)->hnext;
  *pp = e->hnext;
  k->count--;
  e->cached = false;
}

static struct sq_stmt *lookup(struct sq_cache *k, const char *sql, uint64_t h) {
  if (k->buckets == NULL) return NULL;
  for (struct sq_stmt *e = k->buckets[h & (k->nbuckets - 1)]; e; e = e->hnext)
    if (e->hash == h && !e->in_use && strcmp(e->sql, sql) == 0) return e;
  return NULL;
}

struct sq_stmt *sq_cache_get(struct sq_conn *c, const char *sql, const char **tail, int *rc) {
  struct sq_cache *k = &c->cache;
  *rc = SQLITE_OK;
  *tail = "";
  /* The same statement again and again (a burst of INSERTs) is the common
   * case: the most recent entry is tried before hashing the text. */
  struct sq_stmt *e = k->lru.lnext;
  if (e != &k->lru && strcmp(e->sql, sql) == 0) {
    lru_unlink(e);
    e->in_use = true;
    return e;
  }
  uint64_t h = fnv1a(sql);
  e = lookup(k, sql, h);
  if (e) {
    lru_unlink(e);
    e->in_use = true;
    return e;
  }
  sqlite3_stmt *s = NULL;
  const char *t = NULL;
  *rc = sqlite3_prepare_v3(c->db, sql, -1, k->cap ? SQLITE_PREPARE_PERSISTENT : 0, &s, &t);
  if (*rc != SQLITE_OK || s == NULL) return NULL; /* an error, or no statement at all */
  SQ_COUNT(c->rts, SQ_STATEMENTS, 1);
  e = ascope_calloc(1, sizeof *e);
  if (e == NULL) {
    sqlite3_finalize(s);
    SQ_COUNT(c->rts, SQ_STATEMENTS, -1);
    *rc = SQLITE_NOMEM;
    return NULL;
  }
  e->stmt = s;
  e->rts = c->rts;
  if (map_params(e) != 0) {
    entry_free(e);
    *rc = SQLITE_NOMEM;
    return NULL;
  }
  e->hash = h;
  e->in_use = true;
  if (!tail_empty(c->db, t)) {
    *tail = t;
    return e; /* a script: the first statement, uncached */
  }
  if (k->cap) hash_insert(k, e, sql);
  return e;
}

void sq_cache_put(struct sq_conn *c, struct sq_stmt *e) {
  struct sq_cache *k = &c->cache;
  sqlite3_reset(e->stmt);
  e->in_use = false;
  if (!e->cached) {
    entry_free(e);
    return;
  }
  lru_front(k, e);
  while (k->count > k->cap && k->lru.lprev != &k->lru) {
    struct sq_stmt *old = k->lru.lprev;
    lru_unlink(old);
    hash_remove(k, old);
    entry_free(old);
  }
}

void sq_cache_clear(struct sq_conn *c) {
  struct sq_cache *k = &c->cache;
  for (size_t i = 0; i < k->nbuckets; i++) {
    while (k->buckets[i]) {
      struct sq_stmt *e = k->buckets[i];
      k->buckets[i] = e->hnext;
      entry_free(e);
    }
  }
  ascope_free(k->buckets);
  sq_cache_init(k, k->cap);
}
