/* ascope — the driver side: what a resource driver implements and calls.
 *
 * A driver is one versioned vtable. The core owns the per-resource state
 * (state_size bytes, zeroed), calls acquire/release/cancel/abort on the loop
 * thread, and the driver completes each with ascope_res_done(). Operations a
 * driver runs inside a scope register with ascope_op_begin() and complete
 * with ascope_op_end(). docs/guides/writing-a-driver.md walks through one.
 */
#ifndef ASCOPE_DRIVER_H
#define ASCOPE_DRIVER_H

#include "ascope.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The vtable's version, SQLite's sqlite3_vfs way: members are only ever
 * appended, each new one with a new version number, and a driver sets abi
 * to the version it was built against. The core accepts any version from
 * ASCOPE_DRIVER_ABI_MIN on — an older driver simply lacks the newer members
 * (the core never reads a member past the driver's version), a newer one
 * has members this core ignores — so a compiled plugin keeps loading as
 * the table grows. */
#define ASCOPE_DRIVER_ABI 2
#define ASCOPE_DRIVER_ABI_MIN 1

typedef struct ascope_res ascope_res;

typedef struct ascope_driver {
  uint32_t abi; /* ASCOPE_DRIVER_ABI */
  const char *name;
  size_t state_size; /* per-resource state, zeroed by the core */
  void (*acquire)(ascope_res *r, const void *arg, const char *options);
  void (*release)(ascope_res *r, int outcome); /* outcome = the scope's status */
  void (*cancel)(ascope_res *r);               /* optional: an acquire in flight */
  void (*abort)(ascope_res *r);                /* force close; synchronous; cannot fail */
  int (*check)(ascope_res *r);                 /* optional, pools: 0 = still good */
  void (*reset)(ascope_res *r);                /* optional, pools: completes via ascope_res_done */
  /* ABI 2 */
  const char *family; /* optional: "sql" when this table is the base of an ascope_sql_driver */
  /* Room for the members of later versions, zero in a driver built against
   * this one: the table keeps its size as it grows, so a table that embeds
   * it (the SQL driver's) keeps its layout. */
  void *reserved[6];
} ascope_driver;

ASCOPE_EXTERN void *ascope_res_state(ascope_res *r);
ASCOPE_EXTERN ascope_rt *ascope_res_rt(ascope_res *r);
/* The scope the resource is used by (NULL for a pool's idle resource). */
ASCOPE_EXTERN ascope *ascope_res_scope(ascope_res *r);
/* Completes the acquire, release or reset in flight; on the loop thread.
 * code and message are copied; either may be NULL. */
ASCOPE_EXTERN void ascope_res_done(ascope_res *r, int status, const char *code,
                                   const char *message);

/* A note for the runtime's trace hook (ASCOPE_TRACE_NOTE): something a user
 * should hear of once that is not an error ("behind a transaction pooler:
 * named statements off"). code and message are read during the call only;
 * nothing happens while no hook is set. */
ASCOPE_EXTERN void ascope_res_note(ascope_res *r, const char *code, const char *message);

/* Operations a driver runs inside a scope. */
ASCOPE_EXTERN ascope_op *ascope_op_begin(ascope *s, const ascope_driver *drv,
                                         void (*cancel)(ascope_op *op), void *data);
ASCOPE_EXTERN void *ascope_op_data(ascope_op *op);
ASCOPE_EXTERN ascope *ascope_op_scope(ascope_op *op);
ASCOPE_EXTERN void ascope_op_set_resume(ascope_op *op, void (*resume)(ascope_op *op));
ASCOPE_EXTERN void ascope_op_end(ascope_op *op, int status, const char *code, const char *message);

/* Options strings: "key=value" pairs separated by spaces, tabs or commas,
 * the form every driver's options take; a value holding those is quoted as
 * in libpq's conninfo, key='two words', \' and \\ escaping inside.
 * ascope_opt_next copies the next pair into buf (cut to cap - 1 bytes, the
 * quotes taken off), points key and value into it (value NULL for a bare
 * "key") and returns where to go on, or NULL at the end.
 * The value parsers return 0, or UV_EINVAL and leave *out alone. */
ASCOPE_EXTERN const char *ascope_opt_next(const char *s, char *buf, size_t cap, char **key,
                                          char **value);
ASCOPE_EXTERN int ascope_opt_bool(const char *value, int *out); /* 1/0 on/off true/false yes/no */
ASCOPE_EXTERN int ascope_opt_uint(const char *value, uint64_t max, uint64_t *out); /* decimal */

/* Memory: the allocator of ascope_set_allocator() (the C library's unless
 * one was set), for everything a driver allocates itself, so that an
 * embedder's allocator and its failure tests reach a driver as they reach
 * the core. What these return goes back through ascope_realloc and
 * ascope_free, never free(); what a library the driver uses hands out
 * (libpq, libcurl, SQLite, hiredis) goes back through that library. Any
 * thread. NULL when out of memory. ascope_malloc(0) returns a pointer to
 * free like any other; ascope_calloc zeroes and returns NULL when n * size
 * overflows; ascope_realloc(NULL, n) allocates; ascope_free(NULL) does
 * nothing; ascope_strdup(NULL) and ascope_strndup(NULL, n) return NULL;
 * ascope_strndup copies at most n bytes and always ends the copy with a
 * NUL. */
ASCOPE_EXTERN void *ascope_malloc(size_t n);
ASCOPE_EXTERN void *ascope_calloc(size_t n, size_t size);
ASCOPE_EXTERN void *ascope_realloc(void *p, size_t n);
ASCOPE_EXTERN void ascope_free(void *p);
ASCOPE_EXTERN char *ascope_strdup(const char *s);
ASCOPE_EXTERN char *ascope_strndup(const char *s, size_t n);

/* Per-runtime state: what a driver keeps for each runtime it works in (a
 * scheduler, counters), in place of a process-wide registry keyed by loop.
 * ascope_rt_driver_state returns drv's state in rt: size bytes, zeroed and
 * made through the allocator hook on the first call for that (rt, drv),
 * the same pointer on every later call (the first call's size and fini
 * stand). Keyed by the table's address, so a runtime holds one state per
 * driver. fini, when not NULL, runs once, from ascope_rt_free, after every
 * scope of the runtime ended and every handle of its own closed: on the
 * runtime's own loop after that loop ran to its end (every threadpool job
 * done), on a caller's loop from its last handle's close callback. The
 * states go in the reverse order of their making, then the memory is
 * freed. A driver must not need the state after that: work it runs on the
 * threadpool ends before the last resource's release completes (a late
 * completion after an abort must come before ascope_rt_free on a caller's
 * loop, as for ascope_res_done). NULL when out of memory (fail the acquire
 * or operation with UV_ENOMEM), for a NULL rt or drv, or for a state not
 * yet made once ascope_rt_free has begun. On the loop thread; the state
 * itself may be handed to threadpool work (count there with atomics). */
ASCOPE_EXTERN void *ascope_rt_driver_state(ascope_rt *rt, const ascope_driver *drv, size_t size,
                                           void (*fini)(void *state));

/* Counters per runtime, one naming scheme: ascope_rt_stat(rt,
 * "<drv->name>.<counter>") calls fn(state, counter) with drv's state in rt
 * (NULL when drv made none there: then its counters read 0) and returns
 * what fn returns, a value or UV_EINVAL for a counter drv does not have.
 * Keep the counters in the state ascope_rt_driver_state gives. The core's
 * own names ("scopes", "errors.ETIMEDOUT"…) come first: "errors" cannot be
 * a prefix. Returns 0 (a second call for the same table replaces fn),
 * UV_EINVAL (NULL, a bad name, "errors"), UV_EEXIST (another table
 * publishes under that name), UV_ENOSPC (64 names taken). Any thread: call
 * it where the driver registers itself. */
typedef int64_t (*ascope_driver_stat_fn)(void *state, const char *counter);
ASCOPE_EXTERN int ascope_driver_set_stats(const ascope_driver *drv, ascope_driver_stat_fn fn);

/* Plugins: a shared object exports
 *   const ascope_driver *ascope_driver_entry(void);
 * ascope_driver_load() returns NULL and writes the reason to errbuf on a
 * missing file, a missing symbol or a wrong ABI version. */
typedef const ascope_driver *(*ascope_driver_entry_fn)(void);
ASCOPE_EXTERN const ascope_driver *ascope_driver_load(const char *path, char *errbuf,
                                                      size_t errlen);

/* Drivers by name. A driver registered (every in-tree driver registers
 * itself when its library is loaded) is found by its name; otherwise
 * ascope_driver_find() loads the plugin ascope-<name>.so from each folder
 * of ASCOPE_DRIVER_PATH (':'-separated) in turn, then from the installed
 * plugin folder (ascope_driver_dir()), and registers it. Names are 1-31
 * characters of [a-z0-9_-]. register: 0, UV_EINVAL (a bad table or name),
 * UV_EEXIST (another table has that name), UV_ENOSPC (64 names taken).
 * find: NULL and the reason in errbuf when there is no such driver. Both
 * are safe from any thread. */
ASCOPE_EXTERN int ascope_driver_register(const ascope_driver *drv);
ASCOPE_EXTERN const ascope_driver *ascope_driver_find(const char *name, char *errbuf,
                                                      size_t errlen);
ASCOPE_EXTERN const char *ascope_driver_dir(void); /* the installed plugin folder */

#ifdef __cplusplus
}
#endif
#endif /* ASCOPE_DRIVER_H */
