/* A hash table with a least-recently-used list, intrusive (the drivers'
 * prepared-statement caches): one copy for the core and the in-tree drivers,
 * which include it as "../../core/lru.h". Not installed and not part of any
 * ABI, like queue.h.
 *
 * An entry embeds a struct alru_node. Being in the table (found by its hash)
 * and being on the list (most recent first) are apart: a driver whose
 * entries are checked out takes them off the list while they are used, so
 * the oldest on the list is always one it may evict. The table never
 * allocates by itself: alru_grow() takes the caller's allocator. Nothing
 * here is thread-safe; a cache belongs to one thread at a time.
 *
 * Keys are the caller's: alru_find() and alru_find_next() walk the entries
 * with the same hash, and the caller compares the keys. FNV-1a
 * (alru_hash_*) makes the hash.
 */
#ifndef ASCOPE_LRU_H
#define ASCOPE_LRU_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct alru_node {
  struct alru_node *hnext;       /* the bucket's chain */
  struct alru_node *prev, *next; /* the list; NULL: not on it */
  uint64_t hash;
  bool in_table;
};

struct alru {
  struct alru_node **buckets; /* a power of two of them, or none yet */
  size_t nbuckets, count;     /* count: entries in the table */
  struct alru_node list;      /* sentinel: next is the most recent, prev the oldest */
};

#define alru_data(ptr, type, field) ((type *)((const char *)(ptr)-offsetof(type, field)))

/* ---- FNV-1a ---------------------------------------------------------------- */
#define ALRU_HASH_INIT UINT64_C(14695981039346656037) /* the offset basis, 0xcbf29ce484222325 */
static inline uint64_t alru_hash_bytes(uint64_t h, const void *p, size_t n) {
  const unsigned char *b = p;
  for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * UINT64_C(1099511628211);
  return h;
}
/* A NUL-terminated string, without its NUL. */
static inline uint64_t alru_hash_str(uint64_t h, const char *s) {
  for (; *s; s++) h = (h ^ (unsigned char)*s) * UINT64_C(1099511628211);
  return h;
}

/* ---- the table ------------------------------------------------------------- */
static inline void alru_init(struct alru *l) {
  l->buckets = NULL;
  l->nbuckets = l->count = 0;
  l->list.hnext = NULL;
  l->list.prev = l->list.next = &l->list;
  l->list.hash = 0;
  l->list.in_table = false;
}

/* Buckets for n entries at a load of one half or less (16 at least),
 * moving the entries there are; zalloc is calloc-like, release frees the
 * old array. 0, or -1 with the table as it was when zalloc fails. */
static inline int alru_grow(struct alru *l, size_t n, void *(*zalloc)(size_t, size_t),
                            void (*release)(void *)) {
  size_t nb = 16;
  while (nb < 2 * n) nb *= 2;
  if (nb <= l->nbuckets) return 0;
  struct alru_node **b = zalloc(nb, sizeof *b);
  if (b == NULL) return -1;
  for (size_t i = 0; i < l->nbuckets; i++) {
    while (l->buckets[i]) {
      struct alru_node *e = l->buckets[i];
      l->buckets[i] = e->hnext;
      e->hnext = b[e->hash & (nb - 1)];
      b[e->hash & (nb - 1)] = e;
    }
  }
  release(l->buckets);
  l->buckets = b;
  l->nbuckets = nb;
  return 0;
}

/* Frees the buckets; the table must be empty (alru_take_all). */
static inline void alru_fini(struct alru *l, void (*release)(void *)) {
  release(l->buckets);
  alru_init(l);
}

static inline size_t alru_count(const struct alru *l) {
  return l->count;
}
static inline bool alru_in_table(const struct alru_node *n) {
  return n->in_table;
}
static inline bool alru_listed(const struct alru_node *n) {
  return n->next != NULL;
}

/* The first entry in the table with this hash, then the next ones: the
 * caller compares the keys. NULL when there is none (or no buckets yet). */
static inline struct alru_node *alru_find_next(struct alru_node *n) {
  uint64_t h = n->hash;
  for (n = n->hnext; n && n->hash != h; n = n->hnext) {
  }
  return n;
}
static inline struct alru_node *alru_find(const struct alru *l, uint64_t hash) {
  if (l->nbuckets == 0) return NULL;
  struct alru_node *n = l->buckets[hash & (l->nbuckets - 1)];
  while (n && n->hash != hash) n = n->hnext;
  return n;
}

/* ---- the list -------------------------------------------------------------- */
/* Off the list (it stays in the table); harmless when it is not on it. */
static inline void alru_unlist(struct alru_node *n) {
  if (n->next == NULL) return;
  n->prev->next = n->next;
  n->next->prev = n->prev;
  n->prev = n->next = NULL;
}
/* The most recent: to the list's front, whether it was on the list or not. */
static inline void alru_touch(struct alru *l, struct alru_node *n) {
  alru_unlist(n);
  n->prev = &l->list;
  n->next = l->list.next;
  l->list.next->prev = n;
  l->list.next = n;
}
static inline struct alru_node *alru_newest(const struct alru *l) {
  return l->list.next == &l->list ? NULL : l->list.next;
}
static inline struct alru_node *alru_oldest(const struct alru *l) {
  return l->list.prev == &l->list ? NULL : l->list.prev;
}

/* Into the table under hash, not on the list (alru_touch puts it there).
 * The buckets must exist (alru_grow). */
static inline void alru_add(struct alru *l, struct alru_node *n, uint64_t hash) {
  struct alru_node **b = &l->buckets[hash & (l->nbuckets - 1)];
  n->hash = hash;
  n->hnext = *b;
  *b = n;
  n->prev = n->next = NULL;
  n->in_table = true;
  l->count++;
}

/* Out of the table and off the list; removing it twice is harmless. */
static inline void alru_remove(struct alru *l, struct alru_node *n) {
  alru_unlist(n);
  if (!n->in_table) return;
  struct alru_node **pp = &l->buckets[n->hash & (l->nbuckets - 1)];
  while (*pp != n) pp = &(*pp)->hnext;
  *pp = n->hnext;
  n->hnext = NULL;
  n->in_table = false;
  l->count--;
}

/* Empties the table and the list; returns every entry that was in the
 * table, chained through hnext (read it before freeing the entry). */
static inline struct alru_node *alru_take_all(struct alru *l) {
  struct alru_node *all = NULL;
  for (size_t i = 0; i < l->nbuckets; i++) {
    while (l->buckets[i]) {
      struct alru_node *n = l->buckets[i];
      l->buckets[i] = n->hnext;
      alru_unlist(n);
      n->in_table = false;
      n->hnext = all;
      all = n;
    }
  }
  l->count = 0;
  return all;
}

#endif
