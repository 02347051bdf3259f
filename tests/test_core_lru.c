/* The drivers' shared plumbing, header-only in the core: the LRU table of
 * core/lru.h (the statement caches) and the re-entrancy guard of
 * core/guard.h (the run queue, the PostgreSQL pump, the HTTP driver's calls
 * into libcurl). */
#include <criterion/criterion.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../core/guard.h"
#include "../core/lru.h"

TestSuite(lru, .timeout = 60);
TestSuite(guard, .timeout = 60);

/* ---- the LRU table ------------------------------------------------------------------- */

struct ent {
  struct alru_node node;
  int key;
};

static struct ent *ent_of(struct alru_node *n) {
  return n ? alru_data(n, struct ent, node) : NULL;
}

static int key_of(const struct alru_node *n) {
  return n ? alru_data(n, const struct ent, node)->key : -1;
}

/* The keys on the list, most recent first: "2 1 0". */
static const char *order(const struct alru *l) {
  static char buf[8192];
  size_t len = 0;
  buf[0] = '\0';
  for (const struct alru_node *x = l->list.next; x != &l->list && len < sizeof buf - 16;
       x = x->next)
    len += (size_t)snprintf(buf + len, sizeof buf - len, len ? " %d" : "%d", key_of(x));
  return buf;
}

static struct ent *find_key(const struct alru *l, uint64_t h, int key) {
  for (struct alru_node *x = alru_find(l, h); x; x = alru_find_next(x))
    if (ent_of(x)->key == key) return ent_of(x);
  return NULL;
}

static uint64_t hash_int(int key) {
  return alru_hash_bytes(ALRU_HASH_INIT, &key, sizeof key);
}

static void put(struct alru *l, struct ent *e, int key) {
  e->key = key;
  cr_assert_eq(alru_grow(l, alru_count(l) + 1, calloc, free), 0);
  alru_add(l, &e->node, hash_int(key));
  alru_touch(l, &e->node);
}

/* A table of n entries, keys 0 to n - 1, added in that order. */
static void fill(struct alru *l, struct ent *e, int n) {
  alru_init(l);
  memset(e, 0, (size_t)n * sizeof *e);
  for (int i = 0; i < n; i++) put(l, &e[i], i);
}

static int failing_calls;
static void *failing_calloc(size_t n, size_t size) {
  (void)n;
  (void)size;
  failing_calls++;
  return NULL;
}

Test(lru, fnv1a) {
  /* FNV-1a 64: the offset basis for nothing, and the published vector for "a" */
  cr_assert_eq(alru_hash_str(ALRU_HASH_INIT, ""), UINT64_C(0xcbf29ce484222325));
  cr_assert_eq(alru_hash_str(ALRU_HASH_INIT, "a"), UINT64_C(0xaf63dc4c8601ec8c));
  cr_assert_eq(alru_hash_str(ALRU_HASH_INIT, "foobar"), UINT64_C(0x85944171f73967e8));
  cr_assert_eq(alru_hash_bytes(ALRU_HASH_INIT, "foobar", 6), UINT64_C(0x85944171f73967e8));
  /* chained: a string, then more bytes, as one hash of the whole */
  cr_assert_eq(alru_hash_bytes(alru_hash_str(ALRU_HASH_INIT, "foo"), "bar", 3),
               alru_hash_str(ALRU_HASH_INIT, "foobar"));
}

Test(lru, empty) {
  struct alru l;
  alru_init(&l);
  cr_assert_null(alru_find(&l, 42)); /* no buckets yet */
  cr_assert_null(alru_newest(&l));
  cr_assert_null(alru_oldest(&l));
  cr_assert_eq(alru_count(&l), 0);
  cr_assert_null(alru_take_all(&l));
  alru_fini(&l, free);
}

Test(lru, insert_find_touch_order) {
  struct alru l;
  struct ent e[3];
  fill(&l, e, 3);
  cr_assert_str_eq(order(&l), "2 1 0", "newest first");
  cr_assert_eq(key_of(alru_oldest(&l)), 0);
  cr_assert_eq(alru_count(&l), 3);
  for (int i = 0; i < 3; i++) {
    cr_assert_eq(find_key(&l, hash_int(i), i), &e[i]);
    cr_assert(alru_in_table(&e[i].node) && alru_listed(&e[i].node));
  }
  cr_assert_null(find_key(&l, hash_int(7), 7));
  /* touching the oldest makes it the newest; finding alone changes nothing */
  alru_touch(&l, &e[0].node);
  cr_assert_str_eq(order(&l), "0 2 1");
  cr_assert_eq(key_of(alru_oldest(&l)), 1);
  alru_touch(&l, &e[0].node); /* already the newest */
  cr_assert_str_eq(order(&l), "0 2 1");
  alru_fini(&l, free);
}

/* As the PostgreSQL cache: room is made before an entry goes in, the least
 * recently used out first. */
Test(lru, eviction_order) {
  struct alru l;
  alru_init(&l);
  struct ent e[6];
  memset(e, 0, sizeof e);
  int evicted[6], nev = 0;
  const size_t cap = 3;
  for (int i = 0; i < 6; i++) {
    if (i == 4) alru_touch(&l, &e[1].node); /* 1 was the oldest: now 2 is */
    while (alru_count(&l) >= cap) {
      struct alru_node *old = alru_oldest(&l);
      evicted[nev++] = key_of(old);
      alru_remove(&l, old);
      cr_assert(!alru_in_table(old) && !alru_listed(old));
    }
    put(&l, &e[i], i);
  }
  cr_assert_eq(nev, 3);
  cr_assert(evicted[0] == 0 && evicted[1] == 2 && evicted[2] == 3, "evicted %d %d %d", evicted[0],
            evicted[1], evicted[2]);
  cr_assert_null(find_key(&l, hash_int(0), 0));
  cr_assert_null(find_key(&l, hash_int(2), 2));
  cr_assert_eq(find_key(&l, hash_int(1), 1), &e[1]);
  cr_assert_str_eq(order(&l), "5 4 1");
  alru_fini(&l, free);
}

/* As the SQLite cache: an entry checked out stays in the table but leaves
 * the list, so the oldest on the list is never one in use. */
Test(lru, checked_out_entries_are_never_the_oldest) {
  struct alru l;
  struct ent e[3];
  fill(&l, e, 3);
  alru_unlist(&e[0].node); /* the oldest, checked out */
  cr_assert(alru_in_table(&e[0].node) && !alru_listed(&e[0].node));
  alru_unlist(&e[0].node); /* twice: harmless */
  cr_assert_eq(key_of(alru_oldest(&l)), 1);
  cr_assert_eq(alru_count(&l), 3);
  cr_assert_eq(find_key(&l, hash_int(0), 0), &e[0]);
  /* added checked out: in the table, not on the list */
  struct ent f = {.key = 9};
  cr_assert_eq(alru_grow(&l, 4, calloc, free), 0);
  alru_add(&l, &f.node, hash_int(9));
  cr_assert(alru_in_table(&f.node) && !alru_listed(&f.node));
  cr_assert_eq(key_of(alru_newest(&l)), 2);
  /* checked in again: the most recent */
  alru_touch(&l, &e[0].node);
  alru_touch(&l, &f.node);
  cr_assert_str_eq(order(&l), "9 0 2 1");
  alru_fini(&l, free);
}

Test(lru, remove_twice_is_harmless) {
  struct alru l;
  struct ent e[3];
  fill(&l, e, 3);
  alru_remove(&l, &e[1].node);
  alru_remove(&l, &e[1].node);
  cr_assert_eq(alru_count(&l), 2);
  cr_assert_null(find_key(&l, hash_int(1), 1));
  cr_assert_str_eq(order(&l), "2 0");
  /* off the list first, then out of the table */
  alru_unlist(&e[0].node);
  alru_remove(&l, &e[0].node);
  alru_remove(&l, &e[0].node);
  cr_assert_eq(alru_count(&l), 1);
  cr_assert_str_eq(order(&l), "2");
  alru_remove(&l, &e[2].node);
  cr_assert_eq(alru_count(&l), 0);
  cr_assert_null(alru_newest(&l));
  cr_assert_null(alru_oldest(&l));
  alru_fini(&l, free);
}

/* Entries with the same hash are all found, each told apart by the
 * caller's key; an entry of another hash in the same bucket is skipped. */
Test(lru, colliding_hashes) {
  struct alru l;
  alru_init(&l);
  cr_assert_eq(alru_grow(&l, 1, calloc, free), 0);
  cr_assert_eq(l.nbuckets, 16);
  struct ent e[6];
  memset(e, 0, sizeof e);
  const uint64_t h = 5, other = 5 + 16; /* the same bucket, another hash */
  for (int i = 0; i < 6; i++) {
    e[i].key = i;
    alru_add(&l, &e[i].node, i % 2 ? other : h);
    alru_touch(&l, &e[i].node);
  }
  int seen = 0, n = 0;
  for (struct alru_node *x = alru_find(&l, h); x; x = alru_find_next(x)) {
    cr_assert_eq(x->hash, h);
    cr_assert_eq(key_of(x) % 2, 0);
    seen |= 1 << key_of(x);
    n++;
  }
  cr_assert_eq(n, 3);
  cr_assert_eq(seen, 1 | 4 | 16);
  for (int i = 0; i < 6; i++) cr_assert_eq(find_key(&l, i % 2 ? other : h, i), &e[i]);
  cr_assert_null(alru_find(&l, 6));
  /* removing one in the middle of the chain keeps the others */
  alru_remove(&l, &e[2].node);
  cr_assert_null(find_key(&l, h, 2));
  cr_assert_eq(find_key(&l, h, 0), &e[0]);
  cr_assert_eq(find_key(&l, h, 4), &e[4]);
  cr_assert_eq(find_key(&l, other, 3), &e[3]);
  alru_fini(&l, free);
}

Test(lru, bucket_growth) {
  struct alru l;
  alru_init(&l);
  enum { N = 1000 };
  struct ent *e = calloc(N, sizeof *e);
  cr_assert_not_null(e);
  size_t grew = 0, last = 0;
  for (int i = 0; i < N; i++) {
    put(&l, &e[i], i);
    if (l.nbuckets != last) grew++;
    last = l.nbuckets;
    cr_assert_geq(l.nbuckets, 2 * alru_count(&l));
    cr_assert_eq(l.nbuckets & (l.nbuckets - 1), 0, "a power of two");
  }
  cr_assert_gt(grew, 5);
  cr_assert_eq(l.nbuckets, 2048);
  for (int i = 0; i < N; i++) cr_assert_eq(find_key(&l, hash_int(i), i), &e[i]);
  /* the list is untouched by moving buckets */
  int n = 0;
  for (struct alru_node *x = alru_newest(&l); x != &l.list; x = x->next, n++)
    cr_assert_eq(key_of(x), N - 1 - n);
  cr_assert_eq(n, N);
  /* big enough: no allocation; too small a request: nothing */
  failing_calls = 0;
  cr_assert_eq(alru_grow(&l, 10, failing_calloc, free), 0);
  cr_assert_eq(alru_grow(&l, 1024, failing_calloc, free), 0);
  cr_assert_eq(failing_calls, 0);
  /* out of memory: the table as it was */
  cr_assert_eq(alru_grow(&l, 5000, failing_calloc, free), -1);
  cr_assert_eq(failing_calls, 1);
  cr_assert_eq(l.nbuckets, 2048);
  for (int i = 0; i < N; i++) cr_assert_eq(find_key(&l, hash_int(i), i), &e[i]);
  /* everything out at once */
  n = 0;
  for (struct alru_node *x = alru_take_all(&l); x; x = x->hnext) {
    cr_assert(!alru_in_table(x) && !alru_listed(x));
    n++;
  }
  cr_assert_eq(n, N);
  cr_assert_eq(alru_count(&l), 0);
  cr_assert_null(alru_newest(&l));
  cr_assert_null(find_key(&l, hash_int(3), 3));
  alru_fini(&l, free);
  cr_assert_eq(l.nbuckets, 0);
  free(e);
}

/* ---- the guard ------------------------------------------------------------------------ */

Test(guard, nested_enter_leave) {
  struct aguard g;
  aguard_init(&g);
  cr_assert(!aguard_busy(&g));
  aguard_enter(&g);
  cr_assert(aguard_busy(&g) && aguard_outermost(&g));
  aguard_enter(&g);
  aguard_enter(&g);
  cr_assert(aguard_busy(&g) && !aguard_outermost(&g));
  cr_assert(!aguard_leave(&g));
  cr_assert(!aguard_leave(&g));
  cr_assert(aguard_outermost(&g));
  cr_assert(aguard_leave(&g), "the outermost leaves");
  cr_assert(!aguard_busy(&g));
}

Test(guard, ask) {
  struct aguard g;
  aguard_init(&g);
  cr_assert(aguard_ask(&g), "nobody inside: run it now");
  cr_assert(!aguard_deferred(&g));
  aguard_enter(&g);
  cr_assert(!aguard_ask(&g), "inside: recorded");
  cr_assert(aguard_deferred(&g));
  cr_assert(aguard_take(&g));
  cr_assert(!aguard_take(&g), "taken once");
  aguard_defer(&g);
  cr_assert(aguard_deferred(&g));
  cr_assert(aguard_leave(&g));
}

/* A pump whose turns run "user code" that kicks it again, from several
 * levels inside: the pump is never re-entered, and each kick from inside
 * costs one more turn, run by the outermost. */
struct pump {
  struct aguard g;
  int turns, active, max_active;
  int kicks_left; /* user code kicks this many more times */
};
static void pump_run(struct pump *p);
static void kick(struct pump *p) {
  if (aguard_ask(&p->g)) pump_run(p);
}
static void user_code(struct pump *p) {
  if (p->kicks_left == 0) return;
  p->kicks_left--;
  /* a callback that itself guards a call that kicks (as answer_now does) */
  aguard_enter(&p->g);
  kick(p);
  kick(p); /* twice in one turn: still one more turn */
  if (aguard_leave(&p->g)) kick(p);
}
static void pump_run(struct pump *p) {
  aguard_enter(&p->g);
  cr_assert(++p->active == 1, "the pump is never re-entered");
  do {
    aguard_take(&p->g);
    p->turns++;
    user_code(p);
  } while (aguard_deferred(&p->g));
  p->active--;
  aguard_leave(&p->g);
}

Test(guard, deferred_work_runs_again_inside_the_outermost) {
  struct pump p = {.kicks_left = 3};
  aguard_init(&p.g);
  kick(&p);
  cr_assert_eq(p.turns, 4, "the first turn and one per kick from inside: %d", p.turns);
  cr_assert(!aguard_busy(&p.g));
  cr_assert(!aguard_deferred(&p.g));
}

/* The run queue's pattern (core/runtime.c): work queued while inside is
 * done once, by the outermost leave, never by an inner one. */
struct drainer {
  struct aguard g;
  int queued, drained, drains;
};
static void leave(struct drainer *d) {
  if (aguard_outermost(&d->g) && aguard_take(&d->g)) {
    d->drains++;
    d->drained += d->queued;
    d->queued = 0;
  }
  aguard_leave(&d->g);
}
static void queue_work(struct drainer *d) {
  d->queued++;
  aguard_defer(&d->g);
}

Test(guard, deferred_work_runs_once_when_the_outermost_leaves) {
  struct drainer d = {0};
  aguard_init(&d.g);
  aguard_enter(&d.g);
  queue_work(&d);
  aguard_enter(&d.g);
  queue_work(&d);
  aguard_enter(&d.g);
  queue_work(&d);
  leave(&d);
  leave(&d);
  cr_assert_eq(d.drains, 0, "an inner leave does not run it");
  cr_assert_eq(d.queued, 3);
  leave(&d);
  cr_assert_eq(d.drains, 1);
  cr_assert_eq(d.drained, 3);
  cr_assert(!aguard_busy(&d.g) && !aguard_deferred(&d.g));
  /* nothing asked: the outermost leave has nothing to run */
  aguard_enter(&d.g);
  leave(&d);
  cr_assert_eq(d.drains, 1);
}
