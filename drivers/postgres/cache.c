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
  return alru_hash_bytes(alru_hash_str(ALRU_HASH_INIT, sql), types, (size_t)n * sizeof *types);
}

static bool same(const struct pg_stmt *e, const char *sql, const Oid *types, int n) {
  return e->ntypes == n && strcmp(e->sql, sql) == 0 &&
         (n == 0 || memcmp(e->types, types, (size_t)n * sizeof *types) == 0);
}

void pg_cache_init(struct pg_cache *k, unsigned cap) {
  memset(k, 0, sizeof *k);
  k->cap = cap;
  alru_init(&k->lru);
}

static void entry_free(struct pg_stmt *e) {
  ascope_free(e->types);
  ascope_free(e->sql);
  ascope_free(e);
}

/* Out of the table; freed now or when its last step is answered. */
static void unlink_entry(struct pg_cache *k, struct pg_stmt *e) {
  alru_remove(&k->lru, &e->node);
  if (k->last == e) k->last = NULL;
  if (e->refs == 0) entry_free(e);
}

static void evict_one(struct pg_conn *c) {
  struct pg_cache *k = &c->cache;
  struct pg_stmt *old = alru_data(alru_oldest(&k->lru), struct pg_stmt, node);
  /* The server holds it (or will, once its Prepare lands): DEALLOCATE goes
   * behind every use already sent, so none of them can miss it. */
  if (old->state != STMT_SEEN) pg_send_deallocate(c, old);
  unlink_entry(k, old);
}

static struct pg_stmt *entry_new(struct pg_conn *c, uint64_t h, const char *sql, const Oid *types,
                                 int n) {
  struct pg_cache *k = &c->cache;
  if (alru_grow(&k->lru, k->cap, ascope_calloc, ascope_free) != 0) return NULL;
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
  e->binary = -1;
  e->state = STMT_SEEN;
  snprintf(e->name, sizeof e->name, "ascope_%u", ++k->next_id);
  while (alru_count(&k->lru) >= k->cap) evict_one(c);
  alru_add(&k->lru, &e->node, h);
  alru_touch(&k->lru, &e->node);
  return e;
}

static struct pg_stmt *lookup(struct pg_cache *k, uint64_t h, const char *sql, const Oid *types,
                              int n) {
  for (struct alru_node *x = alru_find(&k->lru, h); x; x = alru_find_next(x)) {
    struct pg_stmt *e = alru_data(x, struct pg_stmt, node);
    if (same(e, sql, types, n)) return e;
  }
  return NULL;
}

struct pg_stmt *pg_cache_get(struct pg_conn *c, const char *sql, const Oid *types, int n) {
  struct pg_cache *k = &c->cache;
  if (k->cap == 0) return NULL;
  /* The same statement again and again is the common case: the last entry
   * is checked before hashing. */
  struct pg_stmt *e = k->last;
  if (e && same(e, sql, types, n)) return e;
  uint64_t h = hash_of(sql, types, n);
  e = lookup(k, h, sql, types, n);
  if (e)
    alru_touch(&k->lru, &e->node);
  else
    e = entry_new(c, h, sql, types, n);
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
  if (--st->refs == 0 && !alru_in_table(&st->node)) entry_free(st);
}

void pg_cache_clear(struct pg_conn *c) {
  struct pg_cache *k = &c->cache;
  struct alru_node *n;
  while ((n = alru_newest(&k->lru)) != NULL) unlink_entry(k, alru_data(n, struct pg_stmt, node));
  alru_fini(&k->lru, ascope_free);
}
