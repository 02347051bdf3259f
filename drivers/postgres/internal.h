/* Internal structures of the PostgreSQL driver.
 *
 * Everything runs on the loop thread, except PQcancel (cancel.c), which
 * runs on libuv's threadpool with its own PGcancel copy and touches nothing
 * else. A connection (struct pg_conn) lives on the heap: the core's resource
 * state holds only a pointer to it, because the connection outlives the
 * state when the core gives up on a release (abort), and its libuv handles
 * close asynchronously.
 *
 * A request goes through three places: the send queue (not yet sent), the
 * pipeline (sent: its steps are in the step ring, in the order libpq will
 * hand their results back), and the answer. A stream, a COPY or a script
 * runs "solo" or behind a barrier: nothing else is sent meanwhile.
 */
#ifndef ASCOPE_POSTGRES_INTERNAL_H
#define ASCOPE_POSTGRES_INTERNAL_H

#include "ascope/postgres.h"
#include "ascope/sql_driver.h"

#include "../../core/counters.h"
#include "../../core/guard.h"
#include "../../core/lru.h"

#include <libpq-fe.h>
#include <stdatomic.h>
#include <stdbool.h>

struct pg_conn;

/* ---- options (options.c) ----------------------------------------------------------- */
struct pg_options {
  uint64_t connect_ms; /* 0: the DSN's connect_timeout, else the default */
  uint64_t cancel_ms;
  unsigned cache;
  unsigned batch;
  bool text_only;
  bool batch_sync; /* sync=batch: one sync point per round of sending */
  int names;       /* statement_cache: NAMES_AUTO, NAMES_ON or NAMES_OFF */
};
/* Named (server-side prepared) statements: auto uses them unless the
 * connection turns out to go through a transaction pooler, which hands
 * each transaction whatever server session is free (reset.c, pooler.c). */
enum { NAMES_AUTO, NAMES_ON, NAMES_OFF };
int pg_options_parse(struct pg_options *o, const char *s, char *err, size_t errlen);
/* "BEGIN ISOLATION LEVEL ..." into buf; UV_EINVAL for a bad option. */
int pg_tx_begin_sql(const char *options, char *buf, size_t cap);

/* ---- errors and secrets (errors.c) ------------------------------------------------- */
/* Copies msg into a new string with every occurrence of secret (and of any
 * "password=..." or "://user:password@" it holds) masked; NULL on no memory. */
char *pg_scrub(const char *msg, const char *secret);
/* The server's error of res: "message; DETAIL: ...; HINT: ..." (malloc'd),
 * its SQLSTATE copied into code[6]. */
char *pg_result_error(const PGresult *res, char code[6]);
/* The password as written in a DSN libpq could not parse (URI or
 * key=value), to mask it in the parser's message; malloc'd or NULL. */
char *pg_dsn_secret_guess(const char *dsn);
/* libpq's connection error, trimmed of its trailing newline and scrubbed. */
char *pg_conn_error(struct pg_conn *c, const char *fallback);

/* ---- the prepared-statement cache (cache.c) ------------------------------------------ */
enum { STMT_SEEN, STMT_PREPARING, STMT_READY };
struct pg_stmt {
  struct alru_node node; /* in the table (else evicted, freed when refs reaches 0) and on the
                            list: every cached entry, most recent first */
  char *sql;
  Oid *types;
  int ntypes;
  char name[16];
  uint8_t state;
  int8_t binary; /* -1: not known yet; 0: text results; 1: binary results */
  bool seen;     /* run once already: the next run prepares it */
  unsigned refs; /* steps in flight that point here */
};
struct pg_cache {
  struct alru lru;
  size_t cap;
  struct pg_stmt *last;
  unsigned next_id;
};
void pg_cache_init(struct pg_cache *k, unsigned cap);
/* The entry for sql with these parameter types, made (STMT_SEEN) if there
 * is none; it becomes the most recent. NULL: no cache, or no memory. An
 * entry evicted to make room that the server holds is handed to
 * pg_send_deallocate(). */
struct pg_stmt *pg_cache_get(struct pg_conn *c, const char *sql, const Oid *types, int n);
void pg_cache_forget(struct pg_conn *c, struct pg_stmt *st, bool held);
void pg_cache_unref(struct pg_conn *c, struct pg_stmt *st);
void pg_cache_clear(struct pg_conn *c);

/* ---- requests ---------------------------------------------------------------------- */
enum pg_kind {
  K_EXEC,
  K_QUERY,
  K_STREAM,
  K_TX,
  K_SCRIPT,   /* several statements: the simple protocol, solo */
  K_COPY_IN,  /* solo */
  K_COPY_OUT, /* solo */
  K_LISTEN
};
/* R_LOCAL: failed before any of it was sent, its answer waiting for the
 * statements sent before it (pg_answer_local). */
enum pg_where { R_NEW, R_QUEUED, R_SENT, R_SOLO, R_LISTENING, R_VICTIM, R_LOCAL };

/* What ascope_postgres_copy_in/_copy_out/_listen hand to submit through the
 * generic layer's request (pg_conn.special, set around the call). */
struct pg_special {
  enum pg_kind kind;
  ascope_postgres_fill_fn fill;
  void *fill_ud;
  const char *data; /* copy_in_buffer */
  size_t len;
  const char *channel;
  ascope_op **op;
};

struct pg_req {               /* the driver's data in each generic request */
  struct pg_req *next, *prev; /* send queue, victims, or listeners */
  ascope_sql_req *req;
  struct pg_conn *c;
  enum pg_kind kind;
  enum pg_where where;
  bool cancelled; /* the generic layer asked to cancel */
  bool stopped;   /* a stream the user stopped: drain it quietly */
  bool batch_out; /* a stream's batch was delivered; waiting for more */
  bool binary;    /* results asked in binary */
  bool cols_set;  /* the result's columns are described */
  bool aimed;     /* a cancel request was sent for it */
  bool abandoned; /* cancelled, answered already; its results are only drained */
  bool retried;   /* sent again once after another's cancel hit it */
  bool unlisten;  /* a listener ending: its UNLISTEN is in flight */
  bool in_seg;    /* sent in a round sharing one sync point (sync=batch) */
  int status;     /* the first failure */
  char code[6];
  char *msg;
  int prior_status; /* the failure that had it sent again */
  char prior_code[6];
  char *prior_msg;
  int64_t changes;
  unsigned syncs; /* sync points still to come back */
  /* transactions: up to three statements */
  const char *sql[3];
  unsigned nsql;
  int tx_action;
  unsigned tx_depth;
  char txbuf[3][96];
  /* COPY FROM STDIN */
  ascope_postgres_fill_fn fill;
  void *fill_ud;
  const char *data;
  size_t len, off;
  bool copying;     /* the server is in COPY mode for it */
  bool fill_paused; /* the source said ASCOPE_PAUSE: wait for ascope_op_resume */
  bool in_fill, fill_resumed;
  bool copy_ended; /* PQputCopyEnd went */
  char *stage;     /* a chunk from the source libpq has not taken yet */
  size_t stage_len;
  ascope_op *op;
  /* LISTEN */
  char *channel;
  char *sqlbuf; /* its UNLISTEN */
};

/* ---- the pipeline's steps (pipeline.c) ------------------------------------------------ */
enum step_kind { ST_PREPARE, ST_EXEC, ST_SYNC, ST_PROBE };
struct pg_step {
  uint8_t kind;
  bool fresh;       /* ST_EXEC of a stream: single-row mode not asked yet */
  bool named;       /* ST_EXEC of a prepared statement */
  bool ends_round;  /* ST_SYNC closing a round of shared statements (sync=batch) */
  struct pg_req *r; /* NULL: the driver's own (DEALLOCATE) */
  struct pg_stmt *st;
  struct pg_req *after; /* failed locally once this step went: answered after it */
};

/* ---- connections --------------------------------------------------------------------- */
enum pg_state { PG_RESOLVING, PG_CONNECTING, PG_READY, PG_BROKEN, PG_CLOSING };

struct pg_watch { /* a uv_poll on one socket; a connect may go through several */
  uv_poll_t poll;
  struct pg_conn *c;
  int fd;
  int events;
};

struct pg_cancel_job;

struct pg_state_mem { /* the resource state: what ascope_resource() returns */
  ascope_sql_header hdr;
  struct pg_conn *c;
};

struct pg_conn {
  ascope_res *res;
  uv_loop_t *loop;
  struct acount *stats; /* the runtime's counters: the driver's state there */
  enum pg_state state;
  PGconn *pg;
  struct pg_options opt;
  char *secret; /* the password, to mask it in messages */
  int pid;
  /* handles: the conn is freed when every one has closed */
  struct pg_watch *watch;
  uv_timer_t timer;     /* connect timeout, then the drain after a cancel */
  uv_timer_t retry;     /* a cancel request sent again while its target runs on */
  uv_check_t check;     /* sends what an iteration queued, after its I/O */
  uv_prepare_t prepare; /* ... or before the loop blocks */
  unsigned open_handles;
  bool flush_armed;
  int io_failed; /* the watch reported a socket error */
  /* connecting */
  struct pg_dns *dns;
  uint64_t connect_ms;
  bool acquired;   /* the acquire completed with success */
  bool cancelled;  /* the acquire was cancelled */
  int fail_status; /* what the acquire or release completes with */
  char *fail_msg;
  const char *fail_code;
  /* requests */
  struct pg_req *send_head, *send_tail;
  bool cork_off;         /* TCP_CORK failed on this socket (not TCP): not tried again */
  struct pg_step *steps; /* a ring */
  size_t step_head, nsteps, step_cap;
  size_t inflight; /* statements sent, their results not all in */
  /* sync=batch: statements sent since the last sync point, and those of
   * them whose results are in, waiting for it */
  unsigned seg_open;
  unsigned rounds_out; /* rounds sent whose sync point is not back */
  struct pg_req *seg_head, *seg_tail;
  bool seg_failed;
  struct pg_req *barrier; /* a stream in flight: nothing is sent behind it */
  struct pg_req *solo;    /* the COPY or script running outside the pipeline */
  struct pg_req *victims; /* failed without running: to be sent again */
  struct pg_req *local;   /* failed locally, the steps ahead of them done: to answer */
  bool victims_stale;     /* a statement behind them ran: they cannot go again in order */
  bool cancel_seen;       /* a statement in flight was cancelled: check before sending */
  struct pg_req *listeners;
  struct pg_special *special;
  /* cancel requests */
  struct pg_cancel_job *cancel_job;
  bool hold;     /* a cancel request was sent: send nothing until back to idle */
  bool draining; /* the timer counts cancel_timeout for cancel_target */
  struct pg_req *cancel_target;
  /* the pump: inside it (or inside code that runs user code) nothing may
   * re-enter it; a kick from there is deferred, and the pump goes again */
  struct aguard pump;
  bool closing; /* release or abort asked while pumping: finish after */
  /* pools (reset.c): a reset waiting for the connection to settle, and
   * whether a statement may have changed the session */
  ascope_res *resetting;
  bool session_dirty;
  /* transaction poolers (pooler.c): whether named statements are used,
   * and what the connect's probe found */
  bool names_off;        /* no named statements on this connection */
  bool probing;          /* the acquire waits for the probe's answer */
  bool behind_pooler;    /* the server session is not the connection's own */
  unsigned names_missed; /* 26000 on one of its names: twice and it is a pooler */
  bool aborting;
  struct pg_cache cache;
  /* sending scratch: parameter arrays, reused */
  const char **pvals;
  int *plens, *pfmts;
  Oid *ptypes;
  char *pbin;
  size_t pcap;
};

static inline struct pg_conn *pg_conn_of(ascope_sql *db) {
  return ((struct pg_state_mem *)db)->c;
}

/* ---- resolving and connecting (dsn.c, connect.c) --------------------------------------- */
/* Starts resolving the DSN's host names; pg_connect_start() follows. */
int pg_dsn_start(struct pg_conn *c, const char *dsn, char *err, size_t errlen);
void pg_dsn_cancel(struct pg_conn *c);
void pg_dsn_free(struct pg_conn *c);
void pg_connect_start(struct pg_conn *c, const char *const *keys, const char *const *vals);
void pg_connect_poll(struct pg_conn *c);             /* the socket is ready during a connect */
void pg_connect_arm(struct pg_conn *c, uint64_t ms); /* the connect's deadline */
void pg_acquire_fail(struct pg_conn *c, int status, const char *code, const char *msg);

/* ---- the socket and the pump (io.c) ----------------------------------------------------- */
int pg_watch(struct pg_conn *c, int events); /* (re)watches PQsocket() */
void pg_unwatch(struct pg_conn *c);          /* stops and closes the watch */
void pg_kick(struct pg_conn *c);             /* something changed: make progress */
void pg_sched_flush(struct pg_conn *c);      /* send the queue at the iteration's end */
void pg_update_poll(struct pg_conn *c);
/* The connection is lost or closed: every request fails, status and code
 * for the one running, ASCOPE_ECLOSED for the rest. */
void pg_break(struct pg_conn *c, int status, const char *code, const char *msg);
void pg_close(struct pg_conn *c, bool abort); /* release (or abort): close, then complete */
void pg_close_handles(struct pg_conn *c);     /* then the conn is freed */
void pg_handle_closed(uv_handle_t *h);
void pg_maybe_done(struct pg_conn *c); /* every handle closed: complete and free */

/* ---- the pipeline (pipeline.c, send.c, recv.c) ------------------------------------------- */
void pg_queue(struct pg_conn *c, struct pg_req *r);       /* at the back */
void pg_queue_front(struct pg_conn *c, struct pg_req *r); /* victims, follow-ups */
void pg_unqueue(struct pg_conn *c, struct pg_req *r);
/* NULL: out of memory */
int pg_steps_reserve(struct pg_conn *c, size_t n); /* room for n more steps, or UV_ENOMEM */
struct pg_step *pg_step_push(struct pg_conn *c, uint8_t kind, struct pg_req *r, struct pg_stmt *st);
struct pg_step *pg_step_head(struct pg_conn *c);
void pg_step_pop(struct pg_conn *c);
bool pg_step_holds(struct pg_conn *c, const struct pg_req *r); /* r has a step in flight */
/* A request that failed before any of it was sent: answered now if nothing
 * is in flight, else after the last step in flight, in the order started. */
void pg_answer_local_later(struct pg_conn *c, struct pg_req *r);
void pg_answer_local(struct pg_conn *c);              /* those whose steps ahead are done */
bool pg_unlocal(struct pg_conn *c, struct pg_req *r); /* r is no longer waiting (cancelled) */
void pg_flush_sends(struct pg_conn *c);
int pg_flush_out(struct pg_conn *c); /* PQflush: 0, or -1 when the connection broke */
int pg_send_deallocate(struct pg_conn *c, struct pg_stmt *st);
int pg_send_internal(struct pg_conn *c, const char *sql); /* a round of its own, result dropped */
int pg_send_own(struct pg_conn *c, const char *sql, int kind); /* the same, its step of kind */

/* ---- transaction poolers (pooler.c) ------------------------------------------------------- */
int pg_probe_start(struct pg_conn *c); /* after connect, statement_cache=auto */
void pg_probe_result(struct pg_conn *c, PGresult *res);
void pg_probe_check(struct pg_conn *c);  /* from the pump: the probe answered, the acquire ends */
void pg_connect_done(struct pg_conn *c); /* the acquire succeeds (connect.c) */
void pg_pooler_seen(struct pg_conn *c, const char *why);

/* ---- pools (reset.c) ----------------------------------------------------------------------- */
void pg_reset(ascope_res *res);
void pg_reset_check(struct pg_conn *c); /* from the pump: a reset waiting to settle goes on */
bool pg_sql_touches_session(const char *sql);
void pg_take_results(struct pg_conn *c); /* every complete result, in order */
/* Answers r (done or, for a stream with rows left, its last batch). */
void pg_answer(struct pg_conn *c, struct pg_req *r);
void pg_req_fail(struct pg_req *r, int status, const char *code, const char *msg);
void pg_req_fail_own(struct pg_req *r, int status, const char *code, char *msg); /* takes msg */
void pg_req_reset(struct pg_req *r); /* before sending it again */
void pg_deliver_batch(struct pg_conn *c, struct pg_req *r);
bool pg_batch_full(struct pg_conn *c, struct pg_req *r);

/* ---- results (decode.c) --------------------------------------------------------------- */
int pg_rows_describe(ascope_rows *rows, const PGresult *res);
int pg_rows_append(ascope_rows *rows, const PGresult *res, bool binary);
bool pg_types_binary(const PGresult *res); /* every column has a binary form we read */
int pg_params_encode(struct pg_conn *c, const ascope_sql_params *p, char *err, size_t errlen);

/* ---- solo: COPY and scripts (copy.c) ----------------------------------------------------- */
bool pg_is_solo(const struct pg_req *r);
int pg_solo_start(struct pg_conn *c, struct pg_req *r);
void pg_solo_results(struct pg_conn *c);
void pg_copy_feed(struct pg_conn *c);
void pg_copy_resume(ascope_op *op);

/* ---- LISTEN / NOTIFY (notify.c) ------------------------------------------------------------ */
void pg_notifies(struct pg_conn *c);
void pg_listen_ready(struct pg_conn *c, struct pg_req *r); /* LISTEN done: now a listener */
void pg_listen_end(struct pg_conn *c, struct pg_req *r);   /* stop or cancel: UNLISTEN */
void pg_listeners_fail(struct pg_conn *c, int status, const char *code, const char *msg);
bool pg_listeners_paused(struct pg_conn *c);

/* ---- cancel requests (cancel.c) -------------------------------------------------------------- */
void pg_cancel_maybe(struct pg_conn *c); /* the head of the pipeline is cancelled: ask the server */
int pg_cancel_fire(struct pg_conn *c, struct pg_req *target); /* target: NULL at close */
void pg_cancel_answered(struct pg_conn *c, struct pg_req *r); /* r is answered or sent again */
void pg_cancel_detach(struct pg_conn *c);
void pg_hold_check(struct pg_conn *c); /* the hold ends once idle and delivered */
/* A cancelled statement in flight waits to become the one the backend
 * runs, to be stopped by a cancel request: nothing is sent behind it. */
bool pg_cancel_awaited(struct pg_conn *c);
/* True when a request that still wants its outcome is in flight behind r. */
bool pg_wanted_behind(struct pg_conn *c, const struct pg_req *r);
/* A statement still wanted is ahead of r in the pipeline: the backend runs
 * it first, however long it takes. */
bool pg_wanted_ahead(struct pg_conn *c, const struct pg_req *r);

/* ---- transactions (tx.c) ------------------------------------------------------------------- */
int pg_tx_plan(struct pg_req *r, int action, unsigned depth, const char *options);
void pg_tx_cancel_queued(struct pg_req *r);
/* A transaction step answered: true when it queued a follow-up instead. */
bool pg_tx_follow_up(struct pg_conn *c, struct pg_req *r);

/* ---- SQL text (lex.c) ----------------------------------------------------------------------- */
bool pg_sql_is_script(const char *sql); /* more than one statement */
bool pg_sql_is_copy(const char *sql);   /* a COPY statement */
int pg_sql_params(const char *sql);     /* the parameters it takes: its highest $N */

/* ---- counters: "postgres.<name>" per runtime, ascope_postgres_stat for the process -------------
 */
enum {
  PGS_CONNECTIONS,
  PGS_OPENED,
  PGS_CLOSED,
  PGS_BROKEN,
  PGS_ABORTED,
  PGS_CANCELS,
  PGS_RETRIED,
  PGS_PREPARED,
  PGS_DEALLOCATED,
  PGS_STATEMENTS,
  PGS_SYNCS,
  PGS_FLUSHES,
  PGS_MAX_PIPELINE,
  PGS_RESETS,          /* connections a pool reset */
  PGS_RESET_ROLLBACKS, /* ... that a transaction left open needed a ROLLBACK */
  PGS_RESET_SESSIONS,  /* ... whose session settings needed undoing */
  PGS_POOLED,          /* connections found to go through a transaction pooler */
  PGS_CORKED,          /* rounds sent corked */
  PGS_NSTATS
};
extern struct acount pg_stats; /* the process's */
/* Counts n on counter k of c's runtime (the driver's state there) and of the process. */
#define PG_COUNT(c, k, n) acount_add((c)->stats, &pg_stats, (k), (n))

#endif
