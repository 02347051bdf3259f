/* Internal structures of the SQLite driver.
 *
 * Threads: a connection (struct sq_conn) is touched by the loop thread and
 * by at most one libuv pool thread at a time, the one running its "hop".
 * Fields are grouped by who may touch them:
 *   (mu)     under conn->mu, from either side;
 *   (loop)   the loop thread only;
 *   (worker) the hop's thread while a hop runs, the loop thread otherwise
 *            (uv_queue_work orders the two).
 */
#ifndef ASCOPE_SQLITE_INTERNAL_H
#define ASCOPE_SQLITE_INTERNAL_H

#include "ascope/sql_driver.h"
#include "ascope/sqlite.h"

#include <sqlite3.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "../../core/counters.h"
#include "../../core/lru.h"

struct sq_conn;
struct sq_sched;
struct sq_rt;

/* ---- options ------------------------------------------------------------------ */
enum sq_mode { MODE_RWC, MODE_RW, MODE_RO, MODE_MEMORY };
struct sq_options {
  enum sq_mode mode;
  bool wal;
  int foreign_keys; /* -1: leave as is */
  int synchronous;  /* -1: leave as is; else 0 off, 1 normal, 2 full */
  unsigned busy_ms; /* total wait for a lock, per statement */
  unsigned cache;   /* prepared statements kept */
  unsigned batch;   /* rows per stream batch */
};
/* 0, or UV_EINVAL with a message in err. */
int sq_options_parse(struct sq_options *o, const char *s, char *err, size_t errlen);
enum sq_begin { BEGIN_DEFERRED, BEGIN_IMMEDIATE, BEGIN_EXCLUSIVE };
int sq_tx_options_parse(const char *s, enum sq_begin *mode);

/* ---- the prepared-statement cache --------------------------------------------- */
struct sq_stmt {
  struct alru_node node; /* in the table once cached; on the list: idle entries only */
  sqlite3_stmt *stmt;
  char *sql;
  int nslots;  /* sqlite3_bind_parameter_count */
  int nparams; /* values it takes: placeholders $N name value N */
  int *map;    /* slot i+1 takes value map[i] */
  bool in_use;
  bool loop_kind;    /* read-only and returns rows: may be tried on the loop thread */
  uint8_t long_runs; /* its last runs that were not short, in a row (loop.c), up to 255 */
  bool overran;      /* its last try on the loop thread ran out of budget, and no short run since */
  struct sq_rt *rts; /* where it is counted */
};
struct sq_cache {
  struct alru lru;
  size_t cap;
};
void sq_cache_init(struct sq_cache *k, unsigned cap);
/* Checks out the statement for sql, preparing it on a miss. *tail gets what
 * follows the first statement. NULL and an SQLite code in *rc on error. */
struct sq_stmt *sq_cache_get(struct sq_conn *c, const char *sql, const char **tail, int *rc);
/* Checks out the cached statement for sql; NULL when it is not cached
 * (nothing is prepared: the loop thread asks this). */
struct sq_stmt *sq_cache_find(struct sq_conn *c, const char *sql);
const struct sq_stmt *sq_cache_peek(struct sq_conn *c, const char *sql); /* not checked out */
void sq_cache_put(struct sq_conn *c, struct sq_stmt *st); /* resets it, or finalizes */
void sq_cache_clear(struct sq_conn *c);                   /* finalizes every entry */

/* ---- jobs ---------------------------------------------------------------------- */
enum sq_kind { JOB_OPEN, JOB_CLOSE, JOB_REQ, JOB_TX, JOB_RESET };
struct sq_job {               /* a request's driver data, or the connection's own open and close */
  struct sq_job *next, *prev; /* the connection's queue (mu) */
  struct sq_job *dnext;       /* the connection's answers (mu) */
  ascope_sql_req *req;
  enum sq_kind kind;
  bool queued;      /* (mu) in the queue */
  bool staged;      /* (loop) in the connection's stage, not yet in the queue */
  bool parked;      /* (mu) a stream's batch is out: wait for more or stop */
  bool delivering;  /* (mu) that batch is not delivered yet: not even a cancel runs the job */
  bool stop;        /* (mu) end the stream */
  bool started;     /* (worker) a stream holds its statement */
  bool batch, last; /* (worker) the answer is a batch; the stream ended with it */
  bool retry;       /* (worker) yielded on a busy lock: run again in a later hop */
  bool uncut;       /* (mu) a write inside a savepoint: never interrupted (stmt.c) */
  atomic_bool cancelled;
  int status; /* (worker) the answer */
  const char *code;
  char *msg;
  uint64_t busy_since; /* (worker) first wait for a lock, ns */
  struct sq_stmt *st;  /* (worker) a stream's statement */
  int tx_action;
  unsigned tx_depth;
  enum sq_begin tx_begin;
};

/* ---- connections --------------------------------------------------------------- */
/* IDLE: no work item; READY: waiting for a thread; RUNNING: a hop in
 * flight; AFTER: its completion is being delivered (no hop in flight, so a
 * new one may start at once); LOOP: listed to try its next statement on
 * the loop thread (loop.c), no hop in flight. */
enum sq_where { W_IDLE, W_READY, W_RUNNING, W_AFTER, W_LOOP };
struct sq_state { /* the resource state: what ascope_resource() returns */
  ascope_sql_header hdr;
  struct sq_conn *c;
};
struct sq_conn {
  uv_mutex_t mu;
  struct sq_job *head, *tail;   /* (mu) FIFO */
  struct sq_job *running;       /* (mu) the job a hop runs now: the only one interrupt may hit */
  sqlite3 *db;                  /* (mu) written; read by the worker freely */
  bool aborted;                 /* (mu) force-closed: the worker closes, answers ECLOSED */
  struct sq_job *ahead, *atail; /* (mu) answered jobs, waiting for the loop */
  /* loop */
  struct sq_rt *rts; /* the runtime's: counters (any thread) and scheduler */
  struct sq_sched *sched;
  enum sq_where where;
  struct sq_conn *rprev, *rnext; /* the scheduler's ready, running or loop list */
  ascope_res *res;
  bool closing;                 /* the close job is queued: new requests are refused */
  struct sq_job *shead, *stail; /* jobs staged while a hop runs (linked by next, prev) */
  unsigned nstaged;
  struct sq_conn *sprev, *snext; /* the scheduler's list of connections with a stage */
  bool listed;
  bool opened;     /* the open succeeded */
  bool dead;       /* open failed, closed or aborted: freed at the end of the hop */
  int dead_status; /* what the acquire or release completes with */
  const char *dead_code;
  char *dead_msg;
  uv_work_t work;
  struct sq_job open_job, close_job, reset_job;
  atomic_bool dirty; /* (worker sets) a transaction not the driver's is open: a reset rolls back */
  /* worker */
  struct sq_job *cur; /* what the busy handler waits for */
  struct sq_cache cache;
  struct sq_options opt;
  char *path;
  bool may_yield;   /* the current step may give its thread up on a busy lock */
  bool yielded;     /* it did */
  bool no_cut;      /* a rollback runs: cancellation must not stop it */
  bool tx_open;     /* the driver's transaction (level 0) began and has not ended */
  bool tx_lost;     /* SQLite rolled it back by itself: nothing runs until its end */
  unsigned levels;  /* levels open: 0 none, 1 the transaction, d + 1 savepoint ascope_d */
  unsigned sp_lost; /* savepoint level rolled back under a cancelled write: refuse until its end */
  uint64_t wait_start;    /* this busy episode began, ns */
  bool on_loop;           /* the statement runs on the loop thread, under a budget */
  bool overran;           /* ... which ran out (or it met a lock): it goes to the pool */
  unsigned loop_ticks;    /* progress handler calls of that run */
  uint64_t loop_t0;       /* that run began, ns */
  uint64_t hop_t0;        /* the hop began, ns */
  bool gate_held;         /* the hop holds one of the gate's tokens */
  uint64_t gate_since;    /* ... since, ns */
  uint64_t gate_yield_at; /* when the hop last let others have its core (gate.c) */
};

/* ---- per runtime, and scheduling (sched.c) ---------------------------------------- */
/* The driver's state in a runtime (ascope_rt_driver_state): its counters,
 * which pool threads count too, and its scheduler while connections are on
 * it. Lives until the runtime is freed, after its last connection. */
struct sq_rt {
  struct acount stats;    /* SQ_* below; any thread */
  struct sq_sched *sched; /* (loop) NULL while no connection is on the runtime */
};
/* The scheduler (sched.c; its loop list is loop.c's). */
struct sq_sched {
  uv_loop_t *loop;
  uv_prepare_t prepare;  /* publishes stages before the loop sleeps */
  uv_timer_t poll;       /* collects answers while hops run */
  uv_idle_t idle;        /* runs statements on the loop thread while any are listed */
  int handles;           /* open handles: the memory goes with the last */
  struct sq_conn *xhead; /* running connections */
  struct sq_conn *shead; /* connections with a stage */
  struct sq_rt *owner;   /* the runtime's state, which points here */
  unsigned refs;         /* connections */
  unsigned running;      /* hops in flight */
  struct sq_conn *rhead, *rtail;
  struct sq_conn *lhead, *ltail; /* connections listed for the loop thread (W_LOOP) */
  atomic_uint waiting;           /* ready connections; read by busy handlers on pool threads */
  atomic_uint hops_ended;        /* hops whose work is done (pool threads count) */
  unsigned hops_after;           /* ... whose end the loop has taken (hop_after) */
  /* the gate (gate.c): tokens for hops that run long, taken on pool threads */
  uv_mutex_t gate_mu;
  uv_cond_t gate_cv;
  unsigned gate_cap;     /* tokens: the cores less the loop thread's, at least 1 */
  unsigned gate_held;    /* (gate_mu) tokens taken */
  unsigned gate_waiting; /* (gate_mu) hops waiting for one */
  uint64_t gate_grants;  /* (gate_mu) tokens given so far */
  int gate_from;         /* (gate_mu) the core of the hop that last gave a token up, or -1 */
};
/* The runtime's state and its scheduler, with a reference taken for a
 * connection. NULL: out of memory. */
struct sq_rt *sq_rt_get(ascope_rt *rt, struct sq_sched **sched);
void sq_sched_put(struct sq_sched *s);
void sq_wake(struct sq_conn *c);       /* runnable jobs queued: make sure a hop comes */
void sq_stage_list(struct sq_conn *c); /* publish c's stage before the loop sleeps */
void sq_stage_unlist(struct sq_conn *c);
void sq_unready(struct sq_conn *c);            /* leave the ready or loop list (cancel, abort) */
void sq_wake_pool(struct sq_conn *c);          /* as sq_wake, but never the loop thread: a hop */
unsigned sq_sched_waiting(struct sq_sched *s); /* connections waiting for a thread */
bool sq_pool_full(struct sq_sched *s);         /* (loop) as many hops in flight as allowed */

/* The gate (gate.c): a hop that has run long holds one of a few tokens to
 * go on, so long CPU-bound hops leave the loop thread a core. */
void sq_gate_init(struct sq_sched *s);
void sq_gate_fini(struct sq_sched *s);
/* (worker) Called between jobs and from the progress handler: waits for a
 * token if the hop has run long and holds none, passes its token on after
 * its slice if others wait. false: the job was cut while waiting. */
bool sq_gate(struct sq_conn *c);
void sq_gate_release(struct sq_conn *c); /* (worker) the hop ends, or waits on a lock */
void sq_gate_kick(struct sq_sched *s);   /* a job was cancelled: its hop may be waiting */
/* The job running on c's worker is to stop now: cancelled, and neither a
 * rollback (no_cut) nor a write inside a savepoint (uncut, stmt.c). */
static inline bool sq_cut(const struct sq_conn *c) {
  return c->cur && !c->no_cut && !c->cur->uncut && atomic_load(&c->cur->cancelled);
}

/* ---- the queue (queue.c) ----------------------------------------------------------- */
void sq_push(struct sq_conn *c, struct sq_job *j);       /* (mu) held */
int sq_enqueue(struct sq_conn *c, struct sq_job *j);     /* on the loop: every job goes this way */
void sq_publish(struct sq_conn *c);                      /* the stage into the queue */
bool sq_unstage(struct sq_conn *c, struct sq_job *j);    /* a staged job leaves: true if it was */
void sq_remove(struct sq_conn *c, struct sq_job *j);     /* (mu) held */
bool sq_runnable(struct sq_conn *c);                     /* (mu) held */
void sq_answers(struct sq_conn *c);                      /* on the loop: deliver what is answered */
void sq_answer_one(struct sq_conn *c, struct sq_job *j); /* on the loop: deliver j's answer */
void sq_flush(struct sq_conn *c, int status);            /* answer every queued request */
void sq_conn_free(struct sq_conn *c);                    /* no hop may run */

/* ---- running, on a pool thread (run.c, stmt.c) -------------------------------------- */
void sq_run(struct sq_conn *c, struct sq_job *j);
void sq_run_stmt(struct sq_conn *c, struct sq_job *j);
/* After a statement ran: notes a transaction SQLite rolled back by itself
 * (tx_lost) or one a plain statement left open (dirty). */
void sq_req_after(struct sq_conn *c, struct sq_job *j);
/* ---- on the loop thread (loop.c) ------------------------------------------------------ */
/* A statement tried on the loop thread stops (interrupted by the progress
 * handler, called every 1000 VM steps) past SQ_LOOP_TICKS calls, or past
 * SQ_LOOP_NS once it has read pages outside SQLite's page cache (that
 * time is I/O, which may go on; without such reads, time is the steps'
 * or a preemption's, and sending the statement to the pool would not give
 * the loop its time back). Its last run must have been far shorter still
 * (SQ_SHORT_*) for it to be tried at all. */
#define SQ_LOOP_TICKS 20
#define SQ_LOOP_NS (250 * 1000)
#define SQ_SHORT_STEPS 2000
#define SQ_SHORT_NS (50 * 1000)
/* The loop thread's candidate: j alone in the queue, a plain exec or query. (mu) held. */
bool sq_loop_candidate(struct sq_conn *c);
void sq_loop_list(struct sq_conn *c); /* try c's next statement on the loop thread */
void sq_loop_unlist(struct sq_conn *c);
void sq_loop_init(struct sq_sched *s); /* the scheduler's idle handle */
/* Runs j with st on the loop thread under the budget: false when the budget
 * ran out or the statement met a lock, and nothing of the run is left (the
 * job goes to the pool, to run from the start). stmt.c */
bool sq_run_on_loop(struct sq_conn *c, struct sq_job *j, struct sq_stmt *st);
/* Around a run: sq_stmt_note_start, then sq_stmt_note_run notes whether
 * st's next run may be tried on the loop thread. */
void sq_stmt_note_start(struct sq_conn *c);
/* Whether st's next run may be tried on the loop thread (loop.c). */
bool sq_stmt_loop_ok(const struct sq_stmt *st, struct sq_sched *s);
void sq_stmt_note_run(struct sq_conn *c, struct sq_stmt *st, uint64_t ns);
int sq_cache_misses(struct sq_conn *c, bool reset); /* pages read outside the page cache */
void sq_run_tx(struct sq_conn *c, struct sq_job *j);
void sq_run_reset(struct sq_conn *c, struct sq_job *j); /* reset.c */
void sq_reset(ascope_res *r);                           /* pools: the driver's reset */
void sq_close_db(struct sq_conn *c); /* finalizes everything, closes; any thread, exclusive */
int sq_busy_handler(void *ud, int count);
int sq_progress_handler(void *ud);
/* Records the job's failure from the connection's error state. */
void sq_fail(struct sq_conn *c, struct sq_job *j, int rc);
void sq_fail_msg(struct sq_job *j, int status, const char *code, const char *msg);
/* Refuses j: the transaction it would have run in is gone (tx_lost). */
void sq_fail_lost(struct sq_job *j);
/* Refuses j: the savepoint it would have run in was rolled back (sp_lost). */
void sq_fail_sp_lost(struct sq_conn *c, struct sq_job *j);

/* ---- codes (codes.c) --------------------------------------------------------------- */
const char *sq_code_name(int code);

/* ---- counters: "sqlite.<name>" per runtime, ascope_sqlite_stat for the process ------ */
enum {
  SQ_CONNECTIONS,
  SQ_OPENED,
  SQ_CLOSED,
  SQ_ABORTED,
  SQ_HOPS,
  SQ_RUNNING,
  SQ_STATEMENTS,
  SQ_YIELDS,
  SQ_BUSY,
  SQ_RESETS,            /* connections a pool reset */
  SQ_RESET_JOBS,        /* ... of them that needed a job on the threadpool */
  SQ_LOOP_RUNS,         /* statements run on the loop thread */
  SQ_LOOP_OVERRUNS,     /* ... of those tries, sent to the pool when the budget ran out */
  SQ_GATE_WAITS,        /* hops that waited for one of the gate's tokens */
  SQ_GATE_HANDOVERS,    /* tokens taken from a hop that gave them up, its core known */
  SQ_GATE_MOVES,        /* ... whose taker moved to that core */
  SQ_SAVEPOINT_CANCELS, /* savepoint writes cancelled running: let finish, then rolled back */
  SQ_NSTATS
};
extern struct acount sq_stats; /* the process's */
/* Counts n on counter k of rts's runtime and of the process. */
#define SQ_COUNT(rts, k, n) acount_add(&(rts)->stats, &sq_stats, (k), (n))

#endif
