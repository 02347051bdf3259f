/* Many rows of one statement as one operation: ascope_sql_exec_many().
 *
 * A binding inserting 100,000 rows pays for every call into C and every
 * callback out of it, several times what the database spends on a row.
 * This entry takes all the rows' values in one parameter set and answers
 * once. Each row is still a request of its own, queued behind the one
 * before it within this call, so a driver sees what a burst of single
 * statements would give it and pipelines or batches them the same way:
 * no driver knows the difference, and none needs code for it.
 *
 * The rows answer to the batch (an internal completion, as a transaction
 * step does), not to the scope; the batch's one operation is what the
 * scope waits for and cancels.
 */
#include "internal.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

struct sql_many {
  ascope_op *op;
  struct sql_conn *c;
  ascope_sql *db;
  ascope *scope;
  ascope_sql_cb cb;
  void *ud;
  size_t nrows;
  size_t left;    /* rows not answered yet */
  size_t failed;  /* the first failing row, in row order; SIZE_MAX: none */
  size_t last_ok; /* the last row that succeeded; SIZE_MAX: none */
  int status;     /* the first failing row's */
  char *code, *msg;
  int64_t changes, last_id;
  unsigned holds;         /* loops over rows[] running: the batch must outlive them */
  bool answering;         /* the user's callback runs: the batch is over */
  bool cancelled;         /* the operation was cancelled */
  ascope_sql_req *rows[]; /* NULL once answered */
};

static char *copy_or_null(const char *s) {
  if (s == NULL) return NULL;
  size_t n = strlen(s) + 1;
  char *c = ascope_malloc(n);
  if (c) memcpy(c, s, n);
  return c;
}

static void many_free(struct sql_many *m) {
  ascope_free(m->code);
  ascope_free(m->msg);
  ascope_free(m);
}

/* Every row answered and no loop over them running: the user hears. */
static void many_maybe_finish(struct sql_many *m) {
  if (m->left || m->holds || m->answering) return;
  /* The operation ends only once the callback has returned, so a cancel
   * may still reach it meanwhile (the callback cancelling its scope or the
   * batch itself): there is nothing left to cancel, nor to answer again. */
  m->answering = true;
  ascope_rows local, *rows = NULL;
  if (m->status == 0) { /* an exec's result: counts only, no allocation */
    rows_init(&local);
    rows = &local;
    ascope_rows_set_changes(rows, m->changes, m->last_id);
  }
  /* a message copy that failed (out of memory) still names the failure */
  const char *msg = m->status && !m->msg ? ascope_strerror(m->status) : m->msg;
  /* Cancelled, the first row that failed is the first the cancel reached,
   * and its own words (a PostgreSQL row "runs to its end on the server")
   * would describe that row, not the batch. */
  if (m->cancelled && m->status == ASCOPE_ECANCELED)
    msg = "the batch was cancelled: its rows not yet under way never ran, those under way may have";
  int rc = sql_call_user(m->c, m->scope, m->cb, m->ud, m->status, rows, m->code, msg);
  sql_op_end(m->op, rc, m->status, m->code, msg);
  many_free(m);
}

/* One row's answer, whether the driver gave it or the batch did (a row
 * refused, never queued). */
static void many_row_answer(struct sql_many *m, size_t i, int status, int64_t changes,
                            int64_t last_id, const char *code, const char *message) {
  m->rows[i] = NULL;
  m->left--;
  if (status == 0) {
    m->changes += changes;
    if (m->last_ok == SIZE_MAX || i > m->last_ok) {
      m->last_ok = i;
      m->last_id = last_id;
    }
  } else if (m->failed == SIZE_MAX || i < m->failed) {
    m->failed = i;
    m->status = status;
    ascope_free(m->code);
    ascope_free(m->msg);
    m->code = copy_or_null(code);
    m->msg = copy_or_null(message);
  }
}

void many_row_done(ascope_sql_req *req, int status, const char *code, const char *message) {
  struct sql_many *m = req->ctx;
  req->answered = true;
  many_row_answer(m, req->row, status, req->changes, req->last_id, code, message);
  many_maybe_finish(m);
}

/* The driver gave the row up (it was sent, and stopping it on the server
 * could hit other work): the batch counts it failed now; the driver's late
 * answer only frees it. */
void many_row_abandon(ascope_sql_req *req, int status, const char *code, const char *message) {
  if (req->answered) return;
  many_row_done(req, status, code, message);
}

static void on_many_cancel(ascope_op *op) {
  struct sql_many *m = ascope_op_data(op);
  if (m->answering) return; /* every row answered; the callback runs */
  m->cancelled = true;
  /* A cancelled row may answer inside the driver's cancel: the hold keeps
   * the batch while this loop still reads it. */
  m->holds++;
  for (size_t i = 0; i < m->nrows; i++)
    if (m->rows[i]) m->c->drv->cancel(m->db, m->rows[i]);
  m->holds--;
  many_maybe_finish(m);
}

/* Every row's request, made before any is queued, so that running out of
 * memory queues nothing. */
static int many_make_rows(struct sql_many *m, ascope_rt *rt, const char *sql,
                          const ascope_sql_params *p) {
  size_t width = ascope_sql_params_count(p) / m->nrows;
  for (size_t i = 0; i < m->nrows; i++) {
    ascope_sql_req *req = req_new_range(rt, m->c, m->db, ASCOPE_SQL_EXEC, sql, p, i * width, width);
    if (req == NULL) {
      while (i--) req_free(m->rows[i]);
      return UV_ENOMEM;
    }
    req->on_done = many_row_done;
    req->ctx = m;
    req->row = i;
    m->rows[i] = req;
  }
  return 0;
}

/* Queues the rows in order. A row the driver refuses ends the batch there:
 * it and the rows after it are answered with the refusal, never queued. 0,
 * or the refusal of the first row (nothing queued then). */
static int many_submit(struct sql_many *m) {
  m->holds++; /* rows may be answered inside submit */
  for (size_t i = 0; i < m->nrows; i++) {
    ascope_sql_req *req = m->rows[i];
    int rc = m->c->drv->submit(m->db, req);
    if (rc >= 0) continue;
    if (i == 0) {
      for (size_t j = 0; j < m->nrows; j++) req_free(m->rows[j]);
      return rc;
    }
    for (size_t j = i; j < m->nrows; j++) {
      req = m->rows[j];
      many_row_answer(m, j, rc, 0, 0, NULL, j == i ? ascope_strerror(rc) : NULL);
      req_free(req);
    }
    break;
  }
  m->holds--;
  many_maybe_finish(m);
  return 0;
}

int ascope_sql_exec_many(ascope *s, ascope_sql *db, const char *sql,
                         const ascope_sql_params *params, size_t nrows, ascope_sql_cb cb, void *ud,
                         ascope_op **opp) {
  if (opp) *opp = NULL;
  struct sql_conn *c = sql_conn_of(db);
  int bad = sql_start_check(s, c, sql, params);
  if (bad) return bad;
  size_t count = ascope_sql_params_count(params);
  if (nrows == 0 || count % nrows || nrows > (SIZE_MAX - sizeof(struct sql_many)) / sizeof(void *))
    return UV_EINVAL;
  struct sql_many *m = ascope_malloc(sizeof *m + nrows * sizeof m->rows[0]);
  if (m == NULL) return UV_ENOMEM;
  memset(m, 0, sizeof *m);
  *m = (struct sql_many){.c = c,
                         .db = db,
                         .scope = s,
                         .cb = cb,
                         .ud = ud,
                         .nrows = nrows,
                         .left = nrows,
                         .failed = SIZE_MAX,
                         .last_ok = SIZE_MAX};
  int rc = many_make_rows(m, ascope_scope_rt(s), sql, params);
  if (rc) {
    many_free(m);
    return rc;
  }
  if ((m->op = ascope_op_begin(s, &c->drv->base, on_many_cancel, m)) == NULL) {
    for (size_t i = 0; i < nrows; i++) req_free(m->rows[i]);
    many_free(m);
    return ASCOPE_ECANCELED;
  }
  ascope_op *op = m->op;
  if (opp) *opp = op;
  if ((rc = many_submit(m)) < 0) { /* refused: nothing ran, so the op ends quietly */
    if (opp) *opp = NULL;
    many_free(m);
    ascope_op_end(op, 0, NULL, NULL);
  }
  return rc;
}
