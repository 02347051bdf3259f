/* Receiving: results matched to the steps that asked for them.
 *
 * libpq hands results back in the order the commands went out: for a
 * Prepare one result then NULL, for an Execute its results then NULL, for a
 * sync point one PGRES_PIPELINE_SYNC. The step ring holds the same order,
 * so the head step is always what the next result answers. A request is
 * answered at its last sync point, when its outcome is final (a COMMIT's
 * included).
 *
 * Results are taken only while libpq has them complete (PQisBusy is the
 * test, PQgetResult would block otherwise), and a stream's rows only while
 * its consumer wants them: a batch out or a pause stops the taking, and the
 * socket stops being read (io.c), which is the back-pressure.
 */
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BATCH_BYTES (1u << 20) /* a stream's batch also ends at this much data */

/* ---- failures ------------------------------------------------------------------- */

/* libpq's own messages span lines ("server closed the connection
 * unexpectedly\n\tThis probably means..."): an error is one line. */
static void one_line(char *msg) {
  char *o = msg;
  for (const char *p = msg; *p; p++) {
    bool blank = *p == '\n' || *p == '\t' || *p == '\r' || *p == ' ';
    if (blank && (o == msg || o[-1] == ' ')) continue;
    *o++ = blank ? ' ' : *p;
  }
  while (o > msg && o[-1] == ' ') o--;
  *o = '\0';
}

void pg_req_fail_own(struct pg_req *r, int status, const char *code, char *msg) {
  if (r->status) { /* the first failure stands */
    ascope_free(msg);
    return;
  }
  /* A failure libpq reports without a SQLSTATE on a connection that is
   * gone is the connection's loss, whichever request was running. */
  struct pg_conn *c = r->c;
  bool lost = c && (c->pg == NULL || PQstatus(c->pg) == CONNECTION_BAD);
  if (status == ASCOPE_EDRIVER && (code == NULL || *code == '\0') && lost) {
    status = ASCOPE_ECLOSED;
    code = "08006";
  }
  if (msg) one_line(msg);
  r->status = status;
  snprintf(r->code, sizeof r->code, "%s", code ? code : "");
  ascope_free(r->msg);
  r->msg = msg;
}

void pg_req_fail(struct pg_req *r, int status, const char *code, const char *msg) {
  pg_req_fail_own(r, status, code, msg ? ascope_strdup(msg) : NULL);
}

void pg_req_reset(struct pg_req *r) {
  ascope_free(r->prior_msg); /* the first failure is kept: the retry may only echo it */
  r->prior_msg = r->msg;
  r->prior_status = r->status;
  memcpy(r->prior_code, r->code, sizeof r->code);
  r->msg = NULL;
  r->status = 0;
  r->code[0] = '\0';
  r->changes = 0;
  r->syncs = 0;
  r->in_seg = false;
  r->cols_set = false;
  r->aimed = false;
  ascope_rows_clear(ascope_sql_req_rows(r->req));
}

/* r failed without running, through no fault of its own (another's cancel
 * request, its prepared statement gone): it is sent again, once. That is
 * safe: it did nothing. Inside a transaction block its failure aborted the
 * block, so the second run fails too ("25P02") and r reports its first
 * error. COMMIT and ROLLBACK are never sent again: a failed COMMIT has
 * ended the transaction, and a second one would find none to commit. */
static void mark_victim(struct pg_req *r) {
  if (r->cancelled || r->stopped || r->retried || r->status || r->where != R_SENT) return;
  if (r->kind == K_TX && r->tx_action != ASCOPE_SQL_TX_BEGIN) return;
  r->where = R_VICTIM;
}

/* The server's error for r: a cancellation the scope asked for reads as
 * one; a statement another's cancel request may have hit is noted. */
static void fail_from(struct pg_conn *c, struct pg_req *r, const PGresult *res) {
  char code[6];
  char *msg = pg_result_error(res, code);
  int status = ASCOPE_EDRIVER;
  if (strcmp(code, "57014") == 0 && (r->cancelled || r->stopped)) status = ASCOPE_ECANCELED;
  if (strcmp(code, "57014") == 0 && c->hold) mark_victim(r);
  if (r->in_seg) c->seg_failed = true; /* its whole round rolled back */
  pg_req_fail_own(r, status, code, msg);
}

/* ---- answering ------------------------------------------------------------------- */

void pg_answer(struct pg_conn *c, struct pg_req *r) {
  if (c->barrier == r) c->barrier = NULL;
  pg_cancel_answered(c, r);
  if (r->prior_msg && r->status && strcmp(r->code, "25P02") == 0) {
    ascope_free(r->msg); /* sent again into an aborted block: the first error tells why */
    r->msg = r->prior_msg;
    r->prior_msg = NULL;
    r->status = r->prior_status;
    memcpy(r->code, r->prior_code, sizeof r->code);
  }
  ascope_free(r->prior_msg);
  r->prior_msg = NULL;
  ascope_sql_req *req = r->req;
  int status = r->status;
  char code[6];
  memcpy(code, r->code, sizeof code);
  char *msg = r->msg;
  r->msg = NULL;
  ascope_free(r->channel);
  r->channel = NULL;
  ascope_free(r->sqlbuf);
  r->sqlbuf = NULL;
  r->where = R_NEW;
  if (r->abandoned) { /* its scope heard ASCOPE_ECANCELED already */
    ascope_free(msg);
    ascope_sql_req_done(req, ASCOPE_ECANCELED, NULL, NULL); /* only frees */
    return;
  }
  bool streamed = r->kind == K_STREAM || r->kind == K_COPY_OUT || r->kind == K_LISTEN;
  if (status == 0 && streamed && r->cancelled && !r->stopped) {
    status = ASCOPE_ECANCELED;
    msg = msg ? msg : ascope_strdup("cancelled");
  }
  /* A statement cancelled by its scope reports the cancellation, never a
   * result it did not deliver: its rows were not read (take_rows). The
   * server's own 57014 for it is the cancel request that stopped it. */
  bool plain =
      r->kind == K_EXEC || r->kind == K_QUERY || r->kind == K_SCRIPT || r->kind == K_COPY_IN;
  /* A transaction whose connection went was rolled back by the server: a
   * ROLLBACK has nothing left to do; a COMMIT says what became of it. */
  if (r->kind == K_TX && status == ASCOPE_ECLOSED) {
    ascope_free(msg);
    msg = NULL;
    if (r->tx_action == ASCOPE_SQL_TX_ROLLBACK) {
      status = 0;
      code[0] = '\0';
    } else if (r->tx_action == ASCOPE_SQL_TX_COMMIT) {
      msg = ascope_strdup("the connection was lost; the transaction was rolled back");
    } else {
      msg = ascope_strdup("the connection was lost");
    }
  }
  if (r->cancelled && status == ASCOPE_EDRIVER && strcmp(code, "57014") == 0)
    status = ASCOPE_ECANCELED;
  if (plain && r->cancelled && status == 0) {
    ascope_free(msg);
    msg = ascope_strdup("cancelled; the statement had already run on the server");
    status = ASCOPE_ECANCELED;
  }
  ascope_rows *rows = NULL;
  if (status == 0 && streamed && !r->stopped) rows = ascope_sql_req_rows(req);
  /* r lives inside req: nothing of it is touched once req is answered */
  if (rows && ascope_rows_count(rows) > 0) {
    ascope_sql_req_batch(req, 1);
  } else {
    if (status == 0) ascope_sql_req_set_changes(req, r->changes, 0);
    ascope_sql_req_done(req, status, code[0] ? code : NULL, msg);
  }
  ascope_free(msg);
}

/* ---- streams ----------------------------------------------------------------------- */

bool pg_batch_full(struct pg_conn *c, struct pg_req *r) {
  ascope_rows *rows = ascope_sql_req_rows(r->req);
  return ascope_rows_count(rows) >= c->opt.batch || ascope_rows_memory(rows) >= BATCH_BYTES;
}

void pg_deliver_batch(struct pg_conn *c, struct pg_req *r) {
  (void)c;
  r->batch_out = true;
  ascope_sql_req_batch(r->req, 0);
  /* The rows were the callback's to read during the call; the next batch
   * reuses them. (The request outlives a batch that is not its last.) */
  ascope_rows_clear(ascope_sql_req_rows(r->req));
}

static bool wants_rows(const struct pg_req *r) {
  return !r->stopped && !r->cancelled && r->status == 0;
}

static void take_rows(struct pg_req *r, const PGresult *res) {
  if (!wants_rows(r)) return;
  ascope_rows *rows = ascope_sql_req_rows(r->req);
  int rc = rows ? 0 : UV_ENOMEM;
  if (rc == 0 && !r->cols_set) {
    rc = pg_rows_describe(rows, res);
    r->cols_set = rc == 0;
  }
  if (rc == 0) rc = pg_rows_append(rows, res, r->binary);
  if (rc) pg_req_fail(r, UV_ENOMEM, NULL, "out of memory reading the result");
}

/* ---- one result ------------------------------------------------------------------------ */

static void exec_result(struct pg_conn *c, struct pg_step *s, PGresult *res) {
  struct pg_req *r = s->r;
  ExecStatusType st = PQresultStatus(res);
  if (s->st && s->st->binary < 0 && (st == PGRES_TUPLES_OK || st == PGRES_SINGLE_TUPLE))
    s->st->binary = pg_types_binary(res);
  if (r == NULL) { /* the driver's own: DEALLOCATE */
    /* its failure rolls back what shares its sync point (sync=batch) */
    if (st == PGRES_FATAL_ERROR) c->seg_failed = true;
    return;
  }
  switch (st) {
  case PGRES_SINGLE_TUPLE:
  case PGRES_TUPLES_OK:
    if (r->kind == K_QUERY || r->kind == K_STREAM) take_rows(r, res);
    /* Rows a SELECT returned are not rows it changed (docs/sql.md); a
     * command's own count is (INSERT ... RETURNING). A query's is 0. */
    if (r->kind == K_EXEC && strncmp(PQcmdStatus(res), "SELECT", 6) != 0)
      r->changes = strtoll(PQcmdTuples(res), NULL, 10);
    break;
  case PGRES_COMMAND_OK:
    if (r->kind != K_QUERY && r->kind != K_STREAM) r->changes = strtoll(PQcmdTuples(res), NULL, 10);
    /* COMMIT in a transaction an error had aborted answers "ROLLBACK". */
    if (r->kind == K_TX && r->tx_action == ASCOPE_SQL_TX_COMMIT && r->tx_depth == 0 &&
        strcmp(PQcmdStatus(res), "ROLLBACK") == 0)
      pg_req_fail(r, ASCOPE_EDRIVER, "25P02",
                  "COMMIT rolled the transaction back: a statement in it had failed");
    break;
  case PGRES_EMPTY_QUERY:
    break;
  case PGRES_PIPELINE_ABORTED:
    if (r->in_seg) /* another statement of its round failed: it is sent again */
      c->seg_failed = true;
    else /* its Prepare failed: that error is already r's */
      pg_req_fail(r, ASCOPE_EDRIVER, NULL, "not run: its pipeline segment had failed");
    break;
  case PGRES_COPY_IN:
    /* A COPY FROM STDIN sent as a plain statement: refuse the data. */
    PQputCopyEnd(c->pg, "COPY FROM STDIN runs through ascope_postgres_copy_in()");
    break;
  case PGRES_COPY_OUT:
  case PGRES_COPY_BOTH:
    pg_req_fail(r, ASCOPE_EDRIVER, "0A000",
                "COPY TO STDOUT runs through ascope_postgres_copy_out()");
    break;
  default: {
    char code[6];
    const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    snprintf(code, sizeof code, "%s", state ? state : "");
    /* its prepared statement is gone (DEALLOCATE ALL, DISCARD ALL, or a
     * transaction pooler gave this one another session): again */
    if (s->named && strcmp(code, "26000") == 0) {
      mark_victim(r);
      /* Once is a DISCARD ALL or DEALLOCATE ALL the user ran; again and
       * again is sessions changing under the connection. */
      if (c->opt.names == NAMES_AUTO && ++c->names_missed >= 2)
        pg_pooler_seen(c, "the connection's prepared statements went missing on the server "
                          "session again (a transaction pooler?): named prepared statements are "
                          "off on this connection");
    }
    /* VACUUM and the like, in a shared round: again, alone */
    if (r->in_seg && strcmp(code, "25001") == 0) mark_victim(r);
    fail_from(c, r, res);
    bool current = s->st && s->st->state == STMT_READY; /* not forgotten already */
    if (current && s->named && strcmp(code, "26000") == 0) pg_cache_forget(c, s->st, false);
    if (current && s->named && strcmp(code, "0A000") == 0) pg_cache_forget(c, s->st, true);
    break;
  }
  }
}

static void prepare_result(struct pg_conn *c, struct pg_step *s, PGresult *res) {
  if (PQresultStatus(res) == PGRES_COMMAND_OK) {
    s->st->state = STMT_READY;
    PG_COUNT(c, PGS_PREPARED, 1);
    return;
  }
  pg_cache_forget(c, s->st, false);
  const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
  /* Another client's statement of the same name on this session: a
   * transaction pooler shares sessions. The statement had not run: again,
   * unnamed. */
  if (state && strcmp(state, "42P05") == 0 && c->opt.names == NAMES_AUTO && s->r) {
    pg_pooler_seen(c, "a prepared statement name of this connection was taken on the server "
                      "session (a transaction pooler?): named prepared statements are off on "
                      "this connection");
    mark_victim(s->r);
  }
  if (s->r) fail_from(c, s->r, res);
}

/* The request's last sync point is back: its outcome is final. */
static void req_finished(struct pg_conn *c, struct pg_req *r) {
  pg_cancel_answered(c, r);
  if (r->where == R_VICTIM) {
    r->next = NULL; /* it did nothing: again, once, when the pipeline is idle */
    struct pg_req **pp = &c->victims;
    while (*pp) pp = &(*pp)->next;
    *pp = r;
    PG_COUNT(c, PGS_RETRIED, 1);
    return;
  }
  /* r ran after the victims failed: sent again now, they would run after
   * it, out of the order they were started in */
  if (c->victims && r->status == 0) c->victims_stale = true;
  r->where = R_SENT;
  if (r->kind == K_TX && pg_tx_follow_up(c, r)) return;
  if (r->kind == K_LISTEN && !r->unlisten && r->status == 0) {
    if (r->cancelled || r->stopped) /* it listens now: it must stop listening */
      pg_listen_end(c, r);
    else
      pg_listen_ready(c, r);
    return;
  }
  pg_answer(c, r);
}

/* sync=batch: the statements of a round whose sync point came back. If
 * one failed, the round's implicit transaction rolled back, so none of
 * them took effect: every one still wanted is sent again, each alone with
 * its own sync point, in the round's order, the one that failed included.
 * That gives each the outcome it would have had on its own, in its order
 * (an INSERT that failed only because of a neighbour's rolled-back row now
 * succeeds), and answers come in the order the statements were started. */
static void segment_finished(struct pg_conn *c) {
  struct pg_req *list = c->seg_head;
  bool failed = c->seg_failed;
  c->seg_head = c->seg_tail = NULL;
  c->seg_failed = false;
  while (list) {
    struct pg_req *r = list;
    list = r->next;
    r->next = NULL;
    r->in_seg = false;
    if (failed && r->cancelled)
      pg_req_fail(r, ASCOPE_ECANCELED, NULL, "cancelled; its round was rolled back");
    else if (failed)
      r->where = R_VICTIM;
    req_finished(c, r);
  }
}

static void seg_append(struct pg_conn *c, struct pg_req *r) {
  r->next = NULL;
  if (c->seg_tail)
    c->seg_tail->next = r;
  else
    c->seg_head = r;
  c->seg_tail = r;
}

static void sync_result(struct pg_conn *c, struct pg_step *s, PGresult *res) {
  if (PQresultStatus(res) != PGRES_PIPELINE_SYNC) { /* an error outside any statement */
    if (s->r) fail_from(c, s->r, res);
    return;
  }
  struct pg_req *r = s->r;
  if (s->ends_round) c->rounds_out--;
  pg_step_pop(c);
  if (c->seg_head) /* every sync point ends an implicit transaction */
    segment_finished(c);
  else
    c->seg_failed = false;
  if (r && --r->syncs == 0) req_finished(c, r);
}

static void on_result(struct pg_conn *c, struct pg_step *s, PGresult *res) {
  switch (s->kind) {
  case ST_PREPARE:
  case ST_EXEC:
    if (res == NULL) {
      struct pg_req *r = s->r;
      bool last = s->kind == ST_EXEC;
      pg_step_pop(c);                               /* this command's results are all in */
      if (last && r && r->in_seg) seg_append(c, r); /* it waits for its round's sync */
      return;
    }
    if (s->kind == ST_PREPARE)
      prepare_result(c, s, res);
    else
      exec_result(c, s, res);
    break;
  case ST_PROBE:
    if (res == NULL) {
      pg_step_pop(c);
      return;
    }
    pg_probe_result(c, res);
    break;
  case ST_SYNC:
    if (res == NULL) { /* libpq and the ring disagree: nothing can be trusted */
      pg_break(c, ASCOPE_ECLOSED, "08P01", "the pipeline lost its place");
      return;
    }
    sync_result(c, s, res);
    break;
  }
  PQclear(res);
}

/* ---- taking -------------------------------------------------------------------------------- */

/* A stream at the head: single-row mode for it, and batches out as they
 * fill. false: stop taking results for now. */
static bool stream_turn(struct pg_conn *c, struct pg_step *s) {
  struct pg_req *r = s->r;
  if (s->fresh) {
    s->fresh = false;
    PQsetSingleRowMode(c->pg); /* 0 in an aborted segment: then no rows come anyway */
  }
  if (r->batch_out) return false;
  if (wants_rows(r) && pg_batch_full(c, r)) pg_deliver_batch(c, r);
  return !r->batch_out;
}

static bool is_stream_exec(const struct pg_step *s) {
  return s->kind == ST_EXEC && s->r && s->r->kind == K_STREAM;
}

/* What is there while libpq waits for more: a stream's partial batch goes
 * out now rather than sitting until the batch fills. */
static bool flush_partial(struct pg_conn *c, struct pg_step *s) {
  if (!is_stream_exec(s) || !wants_rows(s->r) || s->r->batch_out) return false;
  if (ascope_rows_count(ascope_sql_req_rows(s->r->req)) == 0) return false;
  pg_deliver_batch(c, s->r);
  return true;
}

void pg_take_results(struct pg_conn *c) {
  while (c->state == PG_READY && !c->closing) {
    if (c->solo) {
      pg_solo_results(c);
      return;
    }
    struct pg_step *s = pg_step_head(c);
    if (s == NULL) return;
    if (is_stream_exec(s) && !stream_turn(c, s)) return;
    if (PQisBusy(c->pg)) {
      if (flush_partial(c, s)) continue;
      return;
    }
    PGresult *res = PQgetResult(c->pg);
    on_result(c, s, res);
    pg_answer_local(c); /* failed locally behind what just finished */
    if (c->state == PG_READY && PQstatus(c->pg) == CONNECTION_BAD) {
      char *msg = pg_conn_error(c, "the connection to the server was lost");
      pg_break(c, ASCOPE_ECLOSED, "08006", msg);
      ascope_free(msg);
    }
  }
}
