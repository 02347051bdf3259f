/* Drivers' per-runtime state (ascope_rt_driver_state) and the counters
 * they publish under "<driver>.<counter>" (ascope_driver_set_stats).
 *
 * A runtime holds a short list of states, one per driver that asked: a
 * driver asks when it acquires and keeps the pointer, so the list is walked
 * rarely and never on a hot path. The publishers are process-wide, like
 * the driver registry: drivers are code, shared by every runtime.
 */
#include "internal.h"

#include <stdlib.h>

struct rt_state {
  struct rt_state *next;
  const ascope_driver *drv;
  void (*fini)(void *state);
  max_align_t data[]; /* the driver's state */
};

void *ascope_rt_driver_state(ascope_rt *rt, const ascope_driver *drv, size_t size,
                             void (*fini)(void *state)) {
  if (rt == NULL || drv == NULL) return NULL;
  for (struct rt_state *st = rt->states; st; st = st->next)
    if (st->drv == drv) return st->data;
  if (rt->freeing || size > SIZE_MAX - sizeof(struct rt_state)) return NULL;
  struct rt_state *st = ascope__malloc(sizeof *st + size);
  if (st == NULL) return NULL;
  memset(st, 0, sizeof *st + size);
  st->drv = drv;
  st->fini = fini;
  st->next = rt->states; /* the newest first: fini runs in reverse order of making */
  rt->states = st;
  return st->data;
}

void rt_states_fini(ascope_rt *rt) {
  for (struct rt_state *st; (st = rt->states) != NULL;) {
    rt->states = st->next;
    if (st->fini) st->fini(st->data);
    ascope__free(st);
  }
}

/* ---- counters ------------------------------------------------------------------- */

#define STATS_CAP 64
#define STATS_NAME_CAP 32

static struct {
  char name[STATS_NAME_CAP];
  const ascope_driver *drv;
  ascope_driver_stat_fn fn;
} publishers[STATS_CAP];
static int npublishers;
static uv_mutex_t stats_lock;
static uv_once_t stats_once = UV_ONCE_INIT;

static void stats_init(void) {
  if (uv_mutex_init(&stats_lock) != 0) abort();
}

int ascope_driver_set_stats(const ascope_driver *drv, ascope_driver_stat_fn fn) {
  if (drv == NULL || fn == NULL || drv->name == NULL) return UV_EINVAL;
  size_t n = strlen(drv->name);
  if (n == 0 || n >= STATS_NAME_CAP || strchr(drv->name, '.') || strcmp(drv->name, "errors") == 0)
    return UV_EINVAL;
  uv_once(&stats_once, stats_init);
  uv_mutex_lock(&stats_lock);
  int rc = 0, i = 0;
  while (i < npublishers && strcmp(publishers[i].name, drv->name) != 0) i++;
  if (i < npublishers && publishers[i].drv != drv)
    rc = UV_EEXIST;
  else if (i == npublishers && npublishers == STATS_CAP)
    rc = UV_ENOSPC;
  else {
    if (i == npublishers) {
      memcpy(publishers[i].name, drv->name, n + 1);
      publishers[i].drv = drv;
      npublishers++;
    }
    publishers[i].fn = fn;
  }
  uv_mutex_unlock(&stats_lock);
  return rc;
}

int64_t rt_driver_stat(ascope_rt *rt, const char *name) {
  const char *dot = strchr(name, '.');
  if (dot == NULL || dot == name || (size_t)(dot - name) >= STATS_NAME_CAP) return UV_EINVAL;
  size_t n = (size_t)(dot - name);
  const ascope_driver *drv = NULL;
  ascope_driver_stat_fn fn = NULL;
  uv_once(&stats_once, stats_init);
  uv_mutex_lock(&stats_lock);
  for (int i = 0; i < npublishers; i++) {
    if (strncmp(publishers[i].name, name, n) == 0 && publishers[i].name[n] == '\0') {
      drv = publishers[i].drv;
      fn = publishers[i].fn;
      break;
    }
  }
  uv_mutex_unlock(&stats_lock);
  if (fn == NULL) return UV_EINVAL;
  void *state = NULL;
  for (struct rt_state *st = rt->states; st; st = st->next)
    if (st->drv == drv) state = st->data;
  return fn(state, dot + 1);
}
