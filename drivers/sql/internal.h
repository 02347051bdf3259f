/* Internal structures of the generic SQL layer (ascope-sql). Nothing here
 * crosses the ABI: drivers and users see the opaque types of sql.h. */
#ifndef ASCOPE_SQL_INTERNAL_H
#define ASCOPE_SQL_INTERNAL_H

#include "ascope/sql_driver.h"

#include "../../core/counters.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

/* ---- parameters ----------------------------------------------------------- */
struct pval {
  int type;
  size_t len; /* text and blob */
  union {
    int64_t i;
    double d;
    size_t off; /* text and blob: into the arena, NUL-terminated there */
  } v;
};
struct ascope_sql_params {
  size_t n, cap;
  struct pval *vals;
  char *arena;
  size_t used, arena_cap;
  int err;   /* the first failed add, reported by the statement that uses the set */
  bool flat; /* a request's copy: vals and arena live inside the request */
};
/* The bytes the values [first, first + n) of p take as a flat set, and the
 * copy of them into mem as dst (a request's own). */
size_t params_flat_size_range(const ascope_sql_params *p, size_t first, size_t n);
void params_flatten_range(ascope_sql_params *dst, const ascope_sql_params *p, size_t first,
                          size_t n, void *mem);

/* ---- results -------------------------------------------------------------- */
struct rval {
  union {
    int64_t i;
    double d;
    size_t off; /* text and blob, into the arena */
  } v;
  uint32_t len;
  uint8_t type;
};
struct rcol {
  size_t name, decl; /* offsets into colbuf; decl SIZE_MAX: none */
  int type;
};
struct ascope_rows {
  size_t ncols, nrows;
  struct rcol *cols;
  char *colbuf;
  size_t colbuf_len, colbuf_cap;
  struct rval *vals; /* nrows * ncols */
  size_t vals_cap;   /* bytes */
  char *arena;
  size_t arena_len, arena_cap;
  int64_t changes, last_id;
};
void rows_init(ascope_rows *r);
void rows_fini(ascope_rows *r);

/* ---- connections ---------------------------------------------------------- */
#define SQL_MAGIC 0x5153514cu /* "LQSQ" */
struct sql_conn {             /* the real layout of ascope_sql_header */
  uint32_t magic;
  const ascope_sql_driver *drv;
  const char *errcode, *errmsg; /* while a failing callback runs */
  struct acount *stats;         /* the runtime's counters; from the first request on */
  struct ascope_sql_tx *top;    /* the innermost transaction level, open or opening (tx.c) */
};
struct sql_conn *sql_conn_of(ascope_sql *db);     /* NULL: not a SQL connection */
bool sql_driver_ok(const ascope_sql_driver *drv); /* a table this layer can use */
/* 0, or ASCOPE_EBUSY when c is inside a transaction whose scope does not
 * hold s (tx.c): a statement from s would run inside another scope's work. */
int sql_tx_admits(struct sql_conn *c, ascope *s);

/* ---- requests ------------------------------------------------------------- */
struct ascope_sql_req {
  ascope_sql *db;
  struct sql_conn *conn;
  int kind;
  const char *text;
  ascope_sql_params params; /* flat copy */
  ascope *scope;
  ascope_op *op; /* NULL once ended */
  ascope_sql_cb cb;
  void *ud;
  /* a stream's flow control, on the loop thread */
  bool in_cb;     /* a batch callback is running */
  bool paused;    /* it returned ASCOPE_PAUSE; waiting for ascope_op_resume */
  bool resumed;   /* resume came while in_cb */
  bool drv_done;  /* the driver has answered for good */
  bool cancelled; /* the op was cancelled */
  /* a transaction step or a row of a batch (many.c): no op, an internal
   * completion, called once */
  void (*on_done)(ascope_sql_req *req, int status, const char *code, const char *message);
  void *ctx;
  size_t row;        /* a batch's row: its index */
  bool answered;     /* a batch's row the driver abandoned: its late answer only frees */
  ascope_rows *rows; /* made when the driver first asks: a plain exec has none */
  int64_t changes, last_id;
  _Alignas(max_align_t) unsigned char data[]; /* the driver's req_size bytes */
};
/* NULL: out of memory. rt is the connection's runtime. */
ascope_sql_req *req_new(ascope_rt *rt, struct sql_conn *c, ascope_sql *db, int kind,
                        const char *text, const ascope_sql_params *p);
/* The same with the values [first, first + n) of p (many.c). */
ascope_sql_req *req_new_range(ascope_rt *rt, struct sql_conn *c, ascope_sql *db, int kind,
                              const char *text, const ascope_sql_params *p, size_t first, size_t n);
void req_free(ascope_sql_req *req);
/* Calls the user's callback as every statement's is called (the failure's
 * code and message readable through ascope_sql_errcode/_errmsg meanwhile);
 * what it returned, flow-control codes made 0. */
int sql_call_user(struct sql_conn *c, ascope *s, ascope_sql_cb cb, void *ud, int status,
                  ascope_rows *rows, const char *code, const char *msg);
/* Ends op with rc, the callback's answer to status. */
void sql_op_end(ascope_op *op, int rc, int status, const char *code, const char *msg);
/* Starting: the checks every statement passes; 0 or a negative code. */
int sql_start_check(ascope *s, struct sql_conn *c, const char *sql, const ascope_sql_params *p);
/* A batch's row: its completion, and its abandonment by the driver (many.c). */
void many_row_done(ascope_sql_req *req, int status, const char *code, const char *message);
void many_row_abandon(ascope_sql_req *req, int status, const char *code, const char *message);

/* ---- counters: "sql.<name>" per runtime, ascope_sql_stat for the process -- */
enum { SQLS_REQUESTS, SQLS_TRANSACTIONS, SQLS_ROWS_LIVE, SQLS_NSTATS };
extern struct acount sql_stats; /* the process's */
/* Counts n on counter k of c's runtime and of the process. */
#define SQL_COUNT(c, k, n) acount_add((c)->stats, &sql_stats, (k), (n))

#endif
