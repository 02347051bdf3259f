/* The prepared-statement cache: one per connection, least recently used out
 * first.
 *
 * A statement run again is sent as a Bind and an Execute of a named
 * statement the server already parsed and planned, instead of a Parse of
 * its text each time. An entry is keyed by the text and the parameter
 * types, because a prepared statement's parameter types are fixed.
 *
 * A text is prepared the second time it is seen, so one-off statements (SQL
 * built with the data inside) never cost a Prepare and a DEALLOCATE. While a
 * Prepare is in flight the entry is not used yet: a statement sent behind
 * it goes unnamed, so if the Prepare fails (a syntax error) each statement
 * reports that error itself, not "prepared statement does not exist".
 *
 * Everything here runs on the loop thread. An evicted entry the server
 * holds is deallocated with a DEALLOCATE queued behind its last use; its
 * memory lives while steps in flight still point at it.
 */
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint64_t hash_of(const char *sql, const Oid *types, int n) {
  uint64_t h = 1469598103934665603u;
  for (const char *s = sql; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211u;
  for (int i = 0; i < n; i++) h = (h ^ types[i]) * 1099511628211u;
  return h;
}

static bool same(const struct pg_stmt *e, uint64_t h, const char *sql, const Oid *types, int n) {
  return e->hash == h && e->ntypes == n && strcmp(e->sql, sql) == 0 &&
         (n == 0 || memcmp(e->types, types, (size_t)n * sizeof *types) == 0);
}

void pg_cache_init(struct pg_cache *k, unsigned cap) {
  memset(k, 0, sizeof *k);
  k->cap = cap;
  k->lru.lprev = k->lru.lnext = &k->lru;
}

static void lru_unlink(struct pg_stmt *e) {
  e->lprev->lnext = e->lnext;
  e->lnext->lprev = e->lprev;
  e->lprev = e->lnext = NULL;
}

static void lru_front(struct pg_cache *k, struct pg_stmt *e) {
  e->lprev = &k->lru;
  e->lnext = k->lru.lnext;
  k->lru.lnext->lprev = e;
  k->lru.lnext = e;
}

static void entry_free(struct pg_stmt *e) {
  ascope_free(e->types);
  ascope_free(e->sql);
  ascope_free(e);
}

/* Out of the table; freed now or when its last step is answered. */
static void unlink_entry(struct pg_cache *k, struct pg_stmt *e) {
  struct pg_stmt **pp = &k->buckets[e->hash & (k->nbuckets - 1)];
  while (*pp != e) pp = &(*pp)->hnext;
  *pp = e->hnext;
  lru_unlink(e);
  k->count--;
  e->cached = false;
  if (k->last == e) k->last = NULL;
  if (e->refs == 0) entry_free(e);
}

static void evict_one(struct pg_conn *c) {
  struct pg_cache *k = &c->cache;
  struct pg_stmt *old = k->lru.lprev;
  /* The server holds it (or will, once its Prepare lands): DEALLOCATE goes
   * behind every use already sent, so none of them can miss it. */
  if (old->state != STMT_SEEN) pg_send_deallocate(c, old);
  unlink_entry(k, old);
}

static struct pg_stmt *entry_new(struct pg_conn *c, uint64_t h, const char *sql, const Oid *types,
                                 int n) {
  struct pg_cache *k = &c->cache;
  if (k->buckets == NULL) {
    size_t nb = 16;
    while (nb < 2 * (size_t)k->cap) nb *= 2;
    if ((k->buckets = ascope_calloc(nb, sizeof *k->buckets)) == NULL) return NULL;
    k->nbuckets = nb;
  }
  struct pg_stmt *e = ascope_calloc(1, sizeof *e);
  if (e == NULL) return NULL;
  e->sql = ascope_strdup(sql);
  e->types = n ? ascope_malloc((size_t)n * sizeof *types) : NULL;
  if (e->sql == NULL || (n && e->types == NULL)) {
    entry_free(e);
    return NULL;
  }
  if (n) memcpy(e->types, types, (size_t)n * sizeof *types);
  e->ntypes = n;
  e->hash = h;
  e->binary = -1;
  e->state = STMT_SEEN;
  snprintf(e->name, sizeof e->name, "ascope_%u", ++k->next_id);
  while (k->count >= k->cap) evict_one(c);
  struct pg_stmt **b = &k->buckets[h & (k->nbuckets - 1)];
  e->hnext = *b;
  *b = e;
  e->cached = true;
  k->count++;
  lru_front(k, e);
  return e;
}

struct pg_stmt *pg_cache_get(struct pg_conn *c, const char *sql, const Oid *types, int n) {
  struct pg_cache *k = &c->cache;
  if (k->cap == 0) return NULL;
  /* The same statement again and again is the common case: the last entry
   * is checked before hashing. */
  struct pg_stmt *e = k->last;
  uint64_t h;
  if (e && e->ntypes == n && strcmp(e->sql, sql) == 0 &&
      (n == 0 || memcmp(e->types, types, (size_t)n * sizeof *types) == 0))
    return e;
  h = hash_of(sql, types, n);
  e = NULL;
  if (k->buckets)
    for (e = k->buckets[h & (k->nbuckets - 1)]; e && !same(e, h, sql, types, n); e = e->hnext) {
    }
  if (e) {
    lru_unlink(e);
    lru_front(k, e);
  } else {
    e = entry_new(c, h, sql, types, n);
  }
  k->last = e;
  return e;
}

/* The server does not hold st as prepared (its Prepare failed, a
 * DEALLOCATE ALL), or holds a stale one (held: its result type changed,
 * so it is deallocated). Its next use prepares it again, under a new name. */
void pg_cache_forget(struct pg_conn *c, struct pg_stmt *st, bool held) {
  if (held && st->state == STMT_READY) pg_send_deallocate(c, st);
  st->state = STMT_SEEN;
  st->binary = -1;
  snprintf(st->name, sizeof st->name, "ascope_%u", ++c->cache.next_id);
}

void pg_cache_unref(struct pg_conn *c, struct pg_stmt *st) {
  (void)c;
  if (--st->refs == 0 && !st->cached) entry_free(st);
}

void pg_cache_clear(struct pg_conn *c) {
  struct pg_cache *k = &c->cache;
  while (k->lru.lnext != &k->lru) {
    struct pg_stmt *e = k->lru.lnext;
    unlink_entry(k, e);
  }
  ascope_free(k->buckets);
  k->buckets = NULL;
  k->nbuckets = 0;
}
