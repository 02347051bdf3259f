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
#include <strings.h>

void sq_cache_init(struct sq_cache *k, unsigned cap) {
  memset(k, 0, sizeof *k);
  k->cap = cap;
  alru_init(&k->lru);
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

static bool is_pragma(const char *sql) {
  while (*sql == ' ' || *sql == '\t' || *sql == '\n' || *sql == '\r') sql++;
  return strncasecmp(sql, "PRAGMA", 6) == 0;
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

/* Into the table, checked out (not on the list until it is put back). */
static void hash_insert(struct sq_cache *k, struct sq_stmt *e, const char *sql, uint64_t h) {
  if (alru_grow(&k->lru, k->cap, ascope_calloc, ascope_free) != 0)
    return; /* uncached: still correct, only slower */
  e->sql = ascope_strdup(sql);
  if (e->sql == NULL) return;
  alru_add(&k->lru, &e->node, h);
}

static struct sq_stmt *lookup(struct sq_cache *k, const char *sql, uint64_t h) {
  for (struct alru_node *n = alru_find(&k->lru, h); n; n = alru_find_next(n)) {
    struct sq_stmt *e = alru_data(n, struct sq_stmt, node);
    if (!e->in_use && strcmp(e->sql, sql) == 0) return e;
  }
  return NULL;
}

/* The entry for sql, checked out; h gets the text's hash on a miss. */
static struct sq_stmt *find(struct sq_cache *k, const char *sql, uint64_t *h) {
  /* The same statement again and again (a burst of INSERTs) is the common
   * case: the most recent entry is tried before hashing the text. */
  struct alru_node *newest = alru_newest(&k->lru);
  struct sq_stmt *e = newest ? alru_data(newest, struct sq_stmt, node) : NULL;
  if (e == NULL || strcmp(e->sql, sql) != 0)
    e = lookup(k, sql, *h = alru_hash_str(ALRU_HASH_INIT, sql));
  if (e) {
    alru_unlist(&e->node);
    e->in_use = true;
  }
  return e;
}

const struct sq_stmt *sq_cache_peek(struct sq_conn *c, const char *sql) {
  struct sq_cache *k = &c->cache;
  struct alru_node *newest = alru_newest(&k->lru);
  struct sq_stmt *e = newest ? alru_data(newest, struct sq_stmt, node) : NULL;
  return e && strcmp(e->sql, sql) == 0 ? e : lookup(k, sql, alru_hash_str(ALRU_HASH_INIT, sql));
}

struct sq_stmt *sq_cache_find(struct sq_conn *c, const char *sql) {
  uint64_t h;
  return find(&c->cache, sql, &h);
}

struct sq_stmt *sq_cache_get(struct sq_conn *c, const char *sql, const char **tail, int *rc) {
  struct sq_cache *k = &c->cache;
  *rc = SQLITE_OK;
  *tail = "";
  uint64_t h = 0;
  struct sq_stmt *e = find(k, sql, &h);
  if (e) return e;
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
  /* BEGIN, COMMIT and the like are read-only too, but return no columns,
   * and some pragmas do their work in one VM step: both may wait on the
   * disk, where no budget of VM steps reaches. */
  e->loop_kind = sqlite3_stmt_readonly(s) && sqlite3_column_count(s) > 0 && !is_pragma(sql);
  if (map_params(e) != 0) {
    entry_free(e);
    *rc = SQLITE_NOMEM;
    return NULL;
  }
  e->in_use = true;
  if (!tail_empty(c->db, t)) {
    *tail = t;
    return e; /* a script: the first statement, uncached */
  }
  if (k->cap) hash_insert(k, e, sql, h);
  return e;
}

void sq_cache_put(struct sq_conn *c, struct sq_stmt *e) {
  struct sq_cache *k = &c->cache;
  sqlite3_reset(e->stmt);
  e->in_use = false;
  if (!alru_in_table(&e->node)) {
    entry_free(e);
    return;
  }
  alru_touch(&k->lru, &e->node);
  struct alru_node *old;
  while (alru_count(&k->lru) > k->cap && (old = alru_oldest(&k->lru)) != NULL) {
    alru_remove(&k->lru, old);
    entry_free(alru_data(old, struct sq_stmt, node));
  }
}

void sq_cache_clear(struct sq_conn *c) {
  struct sq_cache *k = &c->cache;
  struct alru_node *n = alru_take_all(&k->lru);
  while (n) {
    struct sq_stmt *e = alru_data(n, struct sq_stmt, node);
    n = n->hnext;
    entry_free(e);
  }
  alru_fini(&k->lru, ascope_free);
}
