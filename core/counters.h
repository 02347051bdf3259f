/* Counters of the in-tree drivers, one copy for all of them (included as
 * "../../core/counters.h", like queue.h; not installed, no ABI).
 *
 * A driver's counters are a set: one per runtime, in the driver's state of
 * ascope_rt_driver_state and read through ascope_rt_stat(rt,
 * "<driver>.<name>"), and a process-wide one that mirrors the sum of every
 * runtime's since the process began, read by the driver's older
 * ascope_<driver>_stat(name). Every count goes to both. Atomic, as a
 * threadpool thread counts too (SQLite's hops). */
#ifndef ASCOPE_COUNTERS_H
#define ASCOPE_COUNTERS_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <uv.h>

#define ACOUNT_MAX 24

struct acount {
  atomic_llong v[ACOUNT_MAX];
};

/* Adds n to counter k of the runtime's set (NULL: none) and of the
 * process's. */
static inline void acount_add(struct acount *rt, struct acount *all, int k, long long n) {
  atomic_fetch_add(&all->v[k], n);
  if (rt) atomic_fetch_add(&rt->v[k], n);
}

static inline void acount_max1(atomic_llong *v, long long n) {
  long long max = atomic_load(v);
  while (n > max && !atomic_compare_exchange_weak(v, &max, n)) {
  }
}

/* Raises counter k to n where it is lower (a peak). */
static inline void acount_max(struct acount *rt, struct acount *all, int k, long long n) {
  acount_max1(&all->v[k], n);
  if (rt) acount_max1(&rt->v[k], n);
}

/* The counter called name of the set (NULL: 0 for every name), names
 * being the set's in order; UV_EINVAL for a name not among them. */
static inline int64_t acount_read(struct acount *set, const char *const *names, size_t n,
                                  const char *name) {
  for (size_t i = 0; name && i < n; i++)
    if (strcmp(name, names[i]) == 0) return set ? atomic_load(&set->v[i]) : 0;
  return UV_EINVAL;
}

#endif
