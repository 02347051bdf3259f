/* Internal structures of the core. Nothing here crosses the ABI: bindings
 * and drivers see only the opaque handles of ascope.h and driver.h. */
#ifndef ASCOPE_INTERNAL_H
#define ASCOPE_INTERNAL_H

#include "ascope/ascope.h"
#include "ascope/driver.h"
#include "ascope/trace.h"

#include <stdbool.h>
#include <string.h>

/* ---- intrusive circular lists: queue.h, shared with the drivers --------- */
#include "queue.h"
/* ---- the re-entrancy guard: guard.h, shared with the drivers ------------ */
#include "guard.h"

/* ---- allocation --------------------------------------------------------- */
void *ascope__malloc(size_t n);
void *ascope__realloc(void *p, size_t n);
void ascope__free(void *p);
char *ascope__strdup(const char *s);
void ascope__runtime_count(int delta); /* live runtimes: the allocator is fixed while > 0 */

/* A per-runtime free list of one kind of object. Objects come from the
 * allocator the first time and are recycled after, so the steady state of
 * opening and closing scopes does no malloc. `all` links every object the
 * cache ever made, so the runtime can free them, in use or not, at the end. */
struct cache_obj {
  struct aq all;
  struct cache_obj *next_free;
};
struct cache {
  size_t size; /* of the object, header included */
  struct cache_obj *free;
  struct aq all;
  void (*fini)(void *obj); /* frees what an object owns, before the object */
};
void cache_init(struct cache *c, size_t size, void (*fini)(void *obj));
void *cache_get(struct cache *c); /* NULL when out of memory */
void cache_put(struct cache *c, void *obj);
void cache_destroy(struct cache *c);

/* ---- errors ------------------------------------------------------------- */
#define ERR_CODE_MAX 48
#define ERR_MSG_INLINE 160
struct ascope_err {
  struct cache_obj hdr;
  int status;
  const char *driver; /* the driver's static name; NULL for the core */
  const char *code;   /* codebuf or NULL */
  const char *message;
  struct ascope_err *next;
  char *heap; /* a message longer than msgbuf; kept for reuse */
  size_t heap_cap;
  char codebuf[ERR_CODE_MAX];
  char msgbuf[ERR_MSG_INLINE];
};
void err_set(struct ascope_err *e, int status, const char *driver, const char *code,
             const char *message);
void err_fini(void *obj);

/* ---- resources ---------------------------------------------------------- */
enum res_phase {
  RES_IDLE,      /* appended, not yet acquired (or its acquire failed) */
  RES_ACQUIRING, /* acquire in flight */
  RES_HELD,
  RES_RELEASING, /* release in flight */
  RES_ABORTING,  /* inside driver->abort */
  RES_ORPHAN,    /* aborted; recycled when the driver's late done arrives */
  RES_RELEASED
};
struct ascope_res {
  struct cache_obj hdr;
  struct aq node; /* in the scope's use list */
  ascope_rt *rt;
  ascope *scope;
  const ascope_driver *drv;
  const void *arg;
  const char *options; /* optbuf, or NULL when the caller gave none */
  char *optbuf;        /* the copy; kept for reuse */
  size_t optbuf_cap;
  void *state;
  size_t state_cap;
  enum res_phase phase;
  bool cancel_called;
  /* Pools (pool.c): a pool use stands for the member it was lent, whose
   * state ascope_resource() returns; a member's completions go to its
   * pool. Both NULL for every other resource. */
  struct ascope_res *lent;
  struct pool_member *member;
};
void res_fini(void *obj);
/* A resource of drv from the runtime's cache, its state zeroed, in no
 * scope and no pool, phase RES_IDLE; NULL when out of memory. */
ascope_res *res_new(ascope_rt *rt, const ascope_driver *drv, const void *arg);
void pool_member_done(ascope_res *r, int status, const char *code, const char *message);

/* ---- operations --------------------------------------------------------- */
struct ascope_op {
  struct cache_obj hdr;
  struct aq node; /* in the scope's ops or ops_cancelled list */
  ascope *scope;
  const ascope_driver *drv;
  void (*cancel)(ascope_op *op);
  void (*resume)(ascope_op *op);
  void *data;
  uint64_t id; /* for traces: from 1 per runtime */
};

/* ---- scopes ------------------------------------------------------------- */
#define ASCOPE_NAME_CAP 48 /* ascope_set_name: 47 bytes and the NUL */
enum scope_state {
  S_NEW,     /* created, not started */
  S_QUEUED,  /* started; acquiring begins on the next drain */
  S_ACQUIRE, /* acquiring uses in order */
  S_BODY,    /* body ran or runs; waiting for operations and children */
  S_RELEASE, /* releasing in reverse order */
  S_DONE
};
struct ascope {
  struct cache_obj hdr;
  ascope_rt *rt;
  ascope *parent;
  struct aq child_node; /* in the parent's children list */
  struct aq children;
  struct aq uses;
  struct aq ops;           /* operations in flight */
  struct aq ops_cancelled; /* operations told to cancel, not yet ended */
  ascope *runq_next;
  size_t nuses, nacquired, nchildren, nops;
  ascope_res *cur; /* the use being acquired or released */
  enum scope_state state;
  int status; /* the first error; 0 while all is well */
  int mode;
  uint64_t timeout_ms;
  uv_timer_t timer; /* the deadline, then each release's deadline */
  ascope_body_fn body;
  ascope_done_fn done;
  void *ud;
  void *value;
  void (*value_free)(void *value);
  struct ascope_err err; /* the first error lives here: failing never allocates */
  struct ascope_err *err_tail;
  uint64_t id;       /* for traces: from 1 per runtime, never reused; 0 until needed */
  uint64_t phase_ts; /* when the acquire or release in flight began; 0: not timed */
  char name[ASCOPE_NAME_CAP];
  bool timer_inited, queued, inflight, in_done, value_taken;
  bool cancel_self;   /* ascope_cancel() on this scope: does not fail the parent */
  bool cancel_parent; /* cancelled because its parent failed */
  /* Bumped each time the memory becomes a new scope: ascope_check() tells
   * a stale handle (kept past done by a binding) from the scope now here. */
  uint64_t gen;
};
void scope_fini(void *obj);
/* Fails s with a first error, or chains it when s already failed or is
 * releasing. driver is the driver's name (NULL: the core). */
void scope_fail(ascope *s, int status, const char *driver, const char *code, const char *message);
void scope_kick(ascope *s); /* s may progress: queue it for the drain */
void scope_res_done(ascope_res *r, int status, const char *code, const char *message);

/* ---- runtime ------------------------------------------------------------ */
struct post {
  void (*fn)(void *ud);
  void *ud;
};
/* The counters of ascope_rt_stat. Plain increments on the paths they
 * count, always kept: only the *_ns ones need the clock, and they are
 * taken while the runtime is observed. */
#define STAT_ERR_ENUM(name, _) STAT_ERR_##name,
enum { /* one slot per status ascope_err_name() names; UNKNOWN is libuv's */
       STAT_ERR_ASCOPE_EDRIVER,
       STAT_ERR_ASCOPE_ECLOSED,
       STAT_ERR_ASCOPE_EBUSY,
       UV_ERRNO_MAP(STAT_ERR_ENUM) STAT_ERR_COUNT
};
#undef STAT_ERR_ENUM
struct rt_stats {
  uint64_t scopes, ops, ops_live;
  uint64_t errors, cancelled, timed_out, aborted;
  uint64_t acquire_ns, release_ns;
  uint64_t by_status[STAT_ERR_COUNT]; /* scopes ended with each failure status */
};
struct ascope_rt {
  uv_loop_t *loop;
  uv_loop_t own_loop;
  bool owns_loop;
  bool freeing;
  uv_async_t async; /* posts from other threads; referenced while scopes are pending */
  uv_idle_t idle;   /* drains the run queue on the next loop iteration */
  uv_mutex_t post_mu;
  struct post *posts, *posts_spare; /* double buffer: no malloc in steady state */
  size_t nposts, posts_cap, spare_cap;
  ascope *runq_head, *runq_tail;
  struct aguard in; /* inside the core: completions queue, the outermost drains */
  ascope *stepping; /* the scope scope_step() is running: it re-checks by itself */
  size_t pending;   /* started scopes whose done has not run */
  size_t closing;   /* handles whose close callback has not run (during free) */
  size_t npools;    /* pools not yet closed: the runtime cannot be freed */
  uint64_t release_timeout_ms;
  struct cache scopes, res, ops, errs;
  /* Tracing and timing. `observed` is the one flag the hot paths test:
   * true while a hook is set or timing is on. */
  bool observed, timing;
  ascope_trace_fn trace_fn;
  void *trace_ud;
  uint64_t next_scope_id, next_op_id;
  uint64_t next_gen; /* ascope_gen(): from 1, never reused */
  struct rt_stats stats;
  struct rt_state *states; /* drivers' per-runtime state (rt_state.c) */
};
void rt_enter(ascope_rt *rt);
void rt_leave(ascope_rt *rt); /* the outermost leave drains the run queue */
/* The leave of a call the user makes (cancel, fail, discard, lock free):
 * from outside every callback it leaves the drain to the next loop
 * iteration, so such a call never runs a `done` before it returns. */
void rt_leave_user(ascope_rt *rt);
void rt_enqueue(ascope_rt *rt, ascope *s);
void rt_pending(ascope_rt *rt, int delta);
void scope_step(ascope *s);
/* rt_state.c: the drivers' states, at the runtime's end (fini, then the
 * memory); a "<driver>.<counter>" that driver publishes, else UV_EINVAL. */
void rt_states_fini(ascope_rt *rt);
int64_t rt_driver_stat(ascope_rt *rt, const char *name);

/* ---- tracing (trace.c) ---------------------------------------------------- */
/* Every hook point is `if (OBSERVED(rt)) trace_*(...)`: with tracing off,
 * one branch on a flag the CPU predicts, and the call kept out of line. */
#define OBSERVED(rt) __builtin_expect((rt)->observed, 0)
void trace_scope(ascope *s, int kind, int status, uint64_t id, const char *driver, const char *code,
                 const char *message);
void trace_res(ascope_res *r, int kind, int status); /* ACQUIRE_* and RELEASE_* */
void trace_res_done(ascope_res *r, int status);      /* the end of what is in flight */
void trace_op(ascope_op *op, int kind, int status);
void trace_rt_free(ascope_rt *rt);
/* The JSON writer knows the runtime whose hook it is, to remove itself at
 * close; replaced or removed, it forgets it (the runtime may be freed
 * before the writer is closed). */
void trace_json_attach(void *writer, ascope_rt *rt); /* rt NULL: detach */
void stat_scope_end(ascope_rt *rt, int status);      /* counts a scope's failure */

/* plugin.c: the reason for a failure, into a caller's error buffer (NULL
 * or 0 bytes: none), printf-style. */
void core_say(char *buf, size_t len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#endif
