/* The allocator hook and the per-runtime object caches. */
#include "internal.h"

#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>

static void *(*malloc_hook)(size_t) = malloc;
static void *(*realloc_hook)(void *, size_t) = realloc;
static void (*free_hook)(void *) = free;
static atomic_int live_runtimes;

int ascope_set_allocator(void *(*malloc_fn)(size_t), void *(*realloc_fn)(void *, size_t),
                         void (*free_fn)(void *)) {
  /* Memory from one allocator must go back to the same one: swapping while a
   * runtime holds objects would hand them to the wrong free. */
  if (atomic_load(&live_runtimes) > 0) return ASCOPE_EBUSY;
  if ((malloc_fn == NULL) != (free_fn == NULL)) return UV_EINVAL;
  if (malloc_fn == NULL) {
    malloc_hook = malloc;
    realloc_hook = realloc;
    free_hook = free;
    return 0;
  }
  if (realloc_fn == NULL) return UV_EINVAL;
  malloc_hook = malloc_fn;
  realloc_hook = realloc_fn;
  free_hook = free_fn;
  return 0;
}

void ascope__runtime_count(int delta) {
  atomic_fetch_add(&live_runtimes, delta);
}

void *ascope__malloc(size_t n) {
  return malloc_hook(n ? n : 1);
}

void *ascope__realloc(void *p, size_t n) {
  return realloc_hook(p, n ? n : 1);
}

void ascope__free(void *p) {
  if (p) free_hook(p);
}

char *ascope__strdup(const char *s) {
  size_t n = strlen(s) + 1;
  char *d = ascope__malloc(n);
  if (d) memcpy(d, s, n);
  return d;
}

/* The same hooks, exported for drivers: a driver's memory then meets the
 * embedder's allocator and the allocation-failure tests just as the core's
 * does. */
void *ascope_malloc(size_t n) {
  return ascope__malloc(n);
}

void *ascope_calloc(size_t n, size_t size) {
  /* calloc's own overflow check, which a malloc hook does not make */
  if (size && n > SIZE_MAX / size) return NULL;
  void *p = ascope__malloc(n * size);
  if (p) memset(p, 0, n * size);
  return p;
}

void *ascope_realloc(void *p, size_t n) {
  return ascope__realloc(p, n);
}

void ascope_free(void *p) {
  ascope__free(p);
}

char *ascope_strdup(const char *s) {
  return s ? ascope__strdup(s) : NULL;
}

char *ascope_strndup(const char *s, size_t n) {
  if (s == NULL) return NULL;
  size_t len = strnlen(s, n);
  char *d = ascope__malloc(len + 1);
  if (d) {
    memcpy(d, s, len);
    d[len] = '\0';
  }
  return d;
}

void cache_init(struct cache *c, size_t size, void (*fini)(void *obj)) {
  c->size = size;
  c->free = NULL;
  c->fini = fini;
  aq_init(&c->all);
}

void *cache_get(struct cache *c) {
  struct cache_obj *o = c->free;
  if (o) {
    c->free = o->next_free;
    return o;
  }
  o = ascope__malloc(c->size);
  if (o == NULL) return NULL;
  /* Zeroed once, at birth: every kind resets its own fields on reuse but
   * keeps the buffers it grew, which is what makes reuse allocation-free. */
  memset(o, 0, c->size);
  aq_push(&c->all, &o->all);
  return o;
}

void cache_put(struct cache *c, void *obj) {
  struct cache_obj *o = obj;
  o->next_free = c->free;
  c->free = o;
}

void cache_destroy(struct cache *c) {
  while (!aq_empty(&c->all)) {
    struct cache_obj *o = aq_data(c->all.next, struct cache_obj, all);
    aq_remove(&o->all);
    if (c->fini) c->fini(o);
    ascope__free(o);
  }
  c->free = NULL;
}
