/* ascope — structured async resource scopes for C, on libuv.
 *
 * The C form of Python's `async with`: resources are acquired asynchronously
 * for the length of a scope and released, in reverse order and exactly once,
 * whatever happens inside it — success, error, timeout or cancellation.
 *
 * Every call is made on the loop thread, except ascope_rt_post().
 * docs/api/core.md describes each function.
 */
#ifndef ASCOPE_ASCOPE_H
#define ASCOPE_ASCOPE_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32)
#define ASCOPE_EXTERN __declspec(dllexport)
#elif __GNUC__ >= 4
#define ASCOPE_EXTERN __attribute__((visibility("default")))
#else
#define ASCOPE_EXTERN
#endif

#define ASCOPE_VERSION_MAJOR 0
#define ASCOPE_VERSION_MINOR 1
#define ASCOPE_VERSION_PATCH 0

/* ---- status codes ------------------------------------------------------ */
/* 0 is success, failures are negative. libuv's UV_E* pass through. */
#define ASCOPE_FAIL_FAST 0 /* modes: fixed values, bindings rely on them */
#define ASCOPE_COLLECT_ALL 1
#define ASCOPE_ECANCELED UV_ECANCELED /* the scope or operation was cancelled */
#define ASCOPE_ETIMEDOUT UV_ETIMEDOUT /* a deadline passed */
#define ASCOPE_EDRIVER (-30001)       /* the driver's own failure: see ascope_err_code() */
#define ASCOPE_ECLOSED (-30002)       /* the runtime, pool or resource is closing/closed */
#define ASCOPE_EBUSY (-30003)         /* the call is not allowed in this state */

/* A static English description of a status; never NULL, never to be freed.
 * A negative status neither ascope nor libuv knows gets libuv's text for
 * UV_UNKNOWN, "unknown error" (libuv's own uv_strerror() would allocate a
 * new "Unknown system error N" on each such call, and leak it); a positive
 * one, "not an error status". */
ASCOPE_EXTERN const char *ascope_strerror(int status);
/* "ASCOPE_EDRIVER", "ECANCELED"…: the symbolic name of a status, static.
 * "UNKNOWN" (libuv's name of UV_UNKNOWN) for a status nobody knows. */
ASCOPE_EXTERN const char *ascope_err_name(int status);
/* The status named name, the inverse of ascope_err_name: "ECANCELED" (or
 * "UV_ECANCELED") gives this platform's UV_ECANCELED, "ASCOPE_EDRIVER"
 * -30001, "OK" 0; UV_UNKNOWN for a name nobody knows. For bindings, which
 * must not hard-code libuv's values: they follow the platform's errno. */
ASCOPE_EXTERN int ascope_err_value(const char *name);
/* ASCOPE_VERSION_MAJOR << 16 | MINOR << 8 | PATCH of the library linked. */
ASCOPE_EXTERN unsigned ascope_version(void);

/* ---- runtime ------------------------------------------------------------ */
typedef struct ascope_rt ascope_rt;

ASCOPE_EXTERN ascope_rt *ascope_rt_new(uv_loop_t *loop); /* NULL: the runtime owns its loop */
ASCOPE_EXTERN int ascope_rt_run(ascope_rt *rt);  /* runs the loop until no scope is pending */
ASCOPE_EXTERN int ascope_rt_free(ascope_rt *rt); /* ASCOPE_EBUSY while scopes are pending */
ASCOPE_EXTERN uv_loop_t *ascope_rt_loop(ascope_rt *rt);
ASCOPE_EXTERN int ascope_rt_post(ascope_rt *rt, void (*fn)(void *ud), void *ud); /* any thread */
ASCOPE_EXTERN int ascope_rt_set_release_timeout(ascope_rt *rt, uint64_t ms);     /* default 30000 */

/* Before any runtime exists; NULLs restore the C library's.
 * Covers ascope's own allocations and its drivers' (ascope_malloc in
 * driver.h), not libuv's nor those of the libraries the drivers use
 * (libpq, libcurl, SQLite, hiredis). The functions must be thread-safe:
 * drivers allocate and free on libuv's threadpool too. */
ASCOPE_EXTERN int ascope_set_allocator(void *(*malloc_fn)(size_t),
                                       void *(*realloc_fn)(void *, size_t),
                                       void (*free_fn)(void *));

/* ---- scopes: the `async with` ------------------------------------------- */
typedef struct ascope ascope;
typedef struct ascope_op ascope_op;
typedef struct ascope_err ascope_err;
struct ascope_driver;

typedef void (*ascope_body_fn)(ascope *s, void *ud);
typedef void (*ascope_done_fn)(ascope *s, int status, void *ud);

ASCOPE_EXTERN ascope *ascope_new(ascope_rt *rt);    /* a top-level scope, not started */
ASCOPE_EXTERN ascope *ascope_child(ascope *parent); /* from a running parent's body or callbacks */
ASCOPE_EXTERN ascope *ascope_parent(ascope *s);     /* the scope s is a child of; NULL: top-level */
ASCOPE_EXTERN int ascope_use(ascope *s, const struct ascope_driver *drv, const void *arg,
                             const char *options);            /* append a resource */
ASCOPE_EXTERN int ascope_set_timeout(ascope *s, uint64_t ms); /* deadline from start; 0: none */
ASCOPE_EXTERN int ascope_set_mode(ascope *s, int mode); /* ASCOPE_FAIL_FAST | ASCOPE_COLLECT_ALL */
ASCOPE_EXTERN int ascope_start(ascope *s, ascope_body_fn body, ascope_done_fn done, void *ud);
ASCOPE_EXTERN void ascope_discard(ascope *s); /* drop a scope that was never started */

ASCOPE_EXTERN void *ascope_resource(ascope *s, size_t index); /* the index-th use, once acquired */
/* As ascope_use, with a string target (a path, a DSN, a URL) that is
 * copied: it need not outlive the call. */
ASCOPE_EXTERN int ascope_use_str(ascope *s, const struct ascope_driver *drv, const char *target,
                                 const char *options);
/* The number of uses so far: the index the next ascope_use* takes. */
ASCOPE_EXTERN size_t ascope_use_count(ascope *s);
/* ascope_resource, checked: NULL unless the index-th use is of drv (the
 * same driver table) and is held. Each driver has a typed form of it. */
ASCOPE_EXTERN void *ascope_resource_of(ascope *s, size_t index, const struct ascope_driver *drv);
ASCOPE_EXTERN ascope_rt *ascope_scope_rt(ascope *s);
/* Handles kept past done (bindings): a finished scope's memory becomes the
 * next ascope_new's or ascope_child's, so a stale pointer would reach
 * another scope. Keep the pair (s, ascope_gen(s)) and call ascope_check()
 * before using s: it returns s while s is that scope and its done has not
 * begun, NULL after. Generations are unique in a runtime and never 0; both
 * calls accept a stale pointer until the runtime is freed. */
ASCOPE_EXTERN uint64_t ascope_gen(ascope *s);
ASCOPE_EXTERN ascope *ascope_check(ascope *s, uint64_t gen);
ASCOPE_EXTERN void ascope_fail(ascope *s, int status, const char *message);
ASCOPE_EXTERN void ascope_cancel(ascope *s); /* idempotent; reaches all children */
ASCOPE_EXTERN void ascope_return(ascope *s, void *value, void (*free_fn)(void *value));

/* Inside `done`, and only there. */
ASCOPE_EXTERN void *ascope_value(ascope *s);             /* ownership passes to the caller */
ASCOPE_EXTERN const ascope_err *ascope_error(ascope *s); /* NULL on success */

/* ---- streams: the `async for` ------------------------------------------- */
#define ASCOPE_CONTINUE 0 /* deliver the next item */
#define ASCOPE_PAUSE 1    /* hold further items until ascope_op_resume() */
#define ASCOPE_STOP 2     /* end the stream now; the operation completes with 0 */

ASCOPE_EXTERN int ascope_op_resume(ascope_op *op); /* from any callback on the loop thread */
/* Cancels one operation, not its scope: the driver stops it as it would on
 * a scope's cancel, and it completes (its callback runs, if it has one) with
 * ASCOPE_ECANCELED unless it finished first — possibly before this call
 * returns. Once per operation; from the loop thread, while its callback has
 * not run. */
ASCOPE_EXTERN int ascope_op_cancel(ascope_op *op);

/* ---- errors ------------------------------------------------------------- */
ASCOPE_EXTERN int ascope_err_status(const ascope_err *e);
ASCOPE_EXTERN const char *ascope_err_driver(const ascope_err *e); /* NULL: the core */
ASCOPE_EXTERN const char *ascope_err_code(const ascope_err *e);   /* may be NULL */
ASCOPE_EXTERN const char *ascope_err_message(const ascope_err *e);
ASCOPE_EXTERN const ascope_err *ascope_err_next(const ascope_err *e); /* secondary errors */
/* The whole chain as text, as snprintf writes it (returns the length it
 * needed): "[postgres] ASCOPE_EDRIVER 23505: duplicate key ...", then a line per
 * secondary error ("  then, releasing: ..."). */
ASCOPE_EXTERN int ascope_err_format(const ascope_err *e, char *buf, size_t len);

/* ---- sync: `async with lock` -------------------------------------------- */
typedef struct ascope_lock ascope_lock;
typedef struct ascope_sem ascope_sem;

ASCOPE_EXTERN ascope_lock *ascope_lock_new(ascope_rt *rt);
ASCOPE_EXTERN void ascope_lock_free(ascope_lock *l);
ASCOPE_EXTERN int ascope_use_lock(ascope *s, ascope_lock *l); /* FIFO, cancellation-safe */
ASCOPE_EXTERN ascope_sem *ascope_sem_new(ascope_rt *rt, unsigned permits);
ASCOPE_EXTERN void ascope_sem_free(ascope_sem *sem);
ASCOPE_EXTERN int ascope_use_sem(ascope *s, ascope_sem *sem);

/* ---- pools: resources kept open between scopes ------------------------- */
typedef struct ascope_pool ascope_pool;

/* A pool of drv's resources, each acquired with arg (which must outlive the
 * pool) and the options the pool does not take itself. The pool's keys:
 * min (0: members opened at once and kept), max (10), acquire_timeout_ms
 * (30000; 0: wait as long as it takes), idle_timeout_ms (0: never) and
 * max_lifetime_ms (0: never; a member is replaced up to a tenth earlier, at
 * random). NULL on bad options, a bad table or out of memory. */
ASCOPE_EXTERN ascope_pool *ascope_pool_new(ascope_rt *rt, const struct ascope_driver *drv,
                                           const void *arg, const char *options);
/* As ascope_pool_new, with a string target (a path, a DSN) that is copied. */
ASCOPE_EXTERN ascope_pool *ascope_pool_new_str(ascope_rt *rt, const struct ascope_driver *drv,
                                               const char *target, const char *options);
/* A use of one of the pool's resources: ascope_resource() of it is the
 * driver's state, as for ascope_use() of the driver. FIFO; a waiter
 * cancelled or timed out leaves the queue and never receives a resource;
 * past acquire_timeout_ms the acquire fails with ASCOPE_ETIMEDOUT and code
 * "POOL_TIMEOUT". ASCOPE_ECLOSED once the pool is closing. */
ASCOPE_EXTERN int ascope_use_pool(ascope *s, ascope_pool *p);
/* mode=shared (a pool option): a resource is lent to many scopes at once,
 * spread by load, for drivers whose resources serve several scopes (a
 * pipelined PostgreSQL connection). A use marked here — the index-th use
 * of s, a pool use, before s starts — gets a resource to itself, as for a
 * transaction (ascope_use_sql_tx_at marks its connection's use itself).
 * UV_EINVAL when that use is not a pool use. */
ASCOPE_EXTERN int ascope_pool_use_exclusive(ascope *s, size_t index);
/* Fails the waiters with ASCOPE_ECLOSED, closes the idle resources, waits
 * for the ones in use to come back and closes them, then frees the pool and
 * calls closed (may be NULL). ascope_rt_run() runs until then; the runtime
 * cannot be freed before. */
ASCOPE_EXTERN void ascope_pool_close(ascope_pool *p, void (*closed)(void *ud), void *ud);
/* A pool's counter: "size" (open or opening), "idle", "in_use", "waiting",
 * "opening", "resetting", "min", "max", and since the pool was made:
 * "created", "discarded", "connect_errors", "acquired", "waits",
 * "timeouts", "wait_ns" (time waiters spent in the queue). UV_EINVAL for
 * another name. */
ASCOPE_EXTERN int64_t ascope_pool_stat(ascope_pool *p, const char *name);
/* Calls cb every every_ms on the loop while the pool is open (cb NULL or
 * every_ms 0: stops). */
ASCOPE_EXTERN int ascope_pool_on_stats(ascope_pool *p, uint64_t every_ms,
                                       void (*cb)(ascope_pool *p, void *ud), void *ud);
/* The pooled driver's table. */
ASCOPE_EXTERN const struct ascope_driver *ascope_pool_driver(ascope_pool *p);

/* ---- observing: names and counters (traces: ascope/trace.h) ------------- */
/* A name for the scope in traces ("checkout", "replica"): copied, cut to
 * 47 bytes; NULL clears it. Before ascope_start for a trace to show it from
 * the start; ASCOPE_EBUSY once the scope ended. */
ASCOPE_EXTERN int ascope_set_name(ascope *s, const char *name);
/* A runtime's counter by name, since ascope_rt_new: "scopes" (started),
 * "scopes_live", "ops" (begun), "ops_live",
 * "errors" (scopes ended with a failure), "errors.<ascope_err_name>" (of
 * them, those with that status: "errors.ETIMEDOUT"), "cancelled",
 * "timed_out" (deadlines fired), "aborted" (releases past the release
 * timeout), "acquire_ns" and "release_ns" (time spent, counted while the
 * runtime is timed: see ascope_rt_set_timing); and each driver's counters
 * for this runtime, "<driver>.<counter>" ("sqlite.statements",
 * "http.requests": docs/api/core.md). UV_EINVAL for another name. */
ASCOPE_EXTERN int64_t ascope_rt_stat(ascope_rt *rt, const char *name);
/* Times every acquire and release for "acquire_ns"/"release_ns" (1), or
 * not (0, the default: two clock reads per use are not free). A trace hook
 * times them too, while it is set. */
ASCOPE_EXTERN int ascope_rt_set_timing(ascope_rt *rt, int on);

#ifdef __cplusplus
}
#endif
#endif /* ASCOPE_ASCOPE_H */
