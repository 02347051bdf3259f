/* Running alone on the connection: COPY in and out, and scripts.
 *
 * libpq takes COPY and multi-statement texts (the simple protocol) only
 * outside pipeline mode. Such a request waits in the send queue until the
 * pipeline has drained, the connection leaves pipeline mode, runs it, and
 * goes back in; nothing else is sent meanwhile.
 *
 * COPY FROM STDIN is fed while the socket takes it: a chunk from the
 * source, then PQflush; when libpq holds output it could not write, the
 * feeding waits for the socket to be writable. libpq would grow its buffer
 * without bound otherwise. A source that pauses stops the feeding until
 * ascope_op_resume(). COPY TO STDOUT is read a data message at a time into
 * the stream's batch; a batch out or a pause stops the reading, and the
 * socket is not read (io.c).
 */
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHUNK (64 * 1024)

bool pg_is_solo(const struct pg_req *r) {
  return r->kind == K_SCRIPT || r->kind == K_COPY_IN || r->kind == K_COPY_OUT;
}

int pg_solo_start(struct pg_conn *c, struct pg_req *r) {
  if (!PQexitPipelineMode(c->pg)) {
    char *msg = pg_conn_error(c, "could not leave pipeline mode");
    pg_req_fail_own(r, ASCOPE_EDRIVER, NULL, msg);
    pg_answer(c, r);
    return -1;
  }
  r->where = R_SOLO;
  c->solo = r;
  const char *sql = ascope_sql_req_text(r->req);
  int ok = r->kind == K_SCRIPT ? PQsendQuery(c->pg, sql)
                               : PQsendQueryParams(c->pg, sql, 0, NULL, NULL, NULL, NULL, 0);
  PG_COUNT(c, PGS_STATEMENTS, 1);
  if (!ok) {
    char *msg = pg_conn_error(c, "could not send to the server");
    pg_break(c, ASCOPE_ECLOSED, "08006", msg);
    ascope_free(msg);
    return -1;
  }
  return 0;
}

/* Back into the pipeline; r is answered. */
static void solo_end(struct pg_conn *c, struct pg_req *r) {
  c->solo = NULL;
  if (r->data == NULL) ascope_free(r->stage); /* from memory, it was the caller's */
  r->stage = NULL;
  if (!PQenterPipelineMode(c->pg)) {
    char *msg = pg_conn_error(c, "could not enter pipeline mode");
    pg_req_fail(r, ASCOPE_ECLOSED, "08006", msg);
    r->where = R_SENT;
    c->solo = r; /* fail_all answers it with the rest */
    pg_break(c, ASCOPE_ECLOSED, "08006", msg);
    ascope_free(msg);
    return;
  }
  pg_answer(c, r);
  if (c->send_head) pg_sched_flush(c);
}

/* ---- COPY FROM STDIN ------------------------------------------------------------------ */

static ascope *scope_of(struct pg_req *r) {
  return ascope_op_scope(r->op);
}

/* The source's next chunk into r->stage. 1: a chunk; 0: the end; -1: wait
 * (paused) or stop (the source failed: the COPY is being aborted). */
static int next_chunk(struct pg_conn *c, struct pg_req *r) {
  if (r->data) { /* from memory */
    size_t n = r->len - r->off < CHUNK ? r->len - r->off : CHUNK;
    r->stage = (char *)r->data + r->off; /* not ours: never freed */
    r->stage_len = n;
    r->off += n;
    return n > 0;
  }
  if (r->stage == NULL && (r->stage = ascope_malloc(CHUNK)) == NULL) {
    pg_req_fail(r, UV_ENOMEM, NULL, "out of memory feeding the COPY");
    PQputCopyEnd(c->pg, "out of memory in the client");
    r->copy_ended = true;
    return -1;
  }
  size_t len = 0;
  int rc;
  do {
    r->in_fill = true;
    r->fill_resumed = false;
    rc = r->fill(scope_of(r), r->stage, CHUNK, &len, r->fill_ud);
    r->in_fill = false;
  } while (rc == ASCOPE_PAUSE && r->fill_resumed && !r->cancelled);
  if (rc < 0) {
    char msg[96];
    snprintf(msg, sizeof msg, "the COPY's data source failed: %s", ascope_strerror(rc));
    pg_req_fail(r, rc, NULL, msg);
    PQputCopyEnd(c->pg, "the client's data source failed");
    r->copy_ended = true;
    return -1;
  }
  if (rc == ASCOPE_PAUSE) {
    r->fill_paused = true;
    return -1;
  }
  r->stage_len = len > CHUNK ? CHUNK : len;
  return len > 0;
}

void pg_copy_feed(struct pg_conn *c) {
  struct pg_req *r = c->solo;
  if (r == NULL || r->kind != K_COPY_IN || !r->copying || r->copy_ended) return;
  if (r->fill_paused && !r->cancelled) return; /* the source will resume it */
  for (;;) {
    if (r->cancelled) {
      PQputCopyEnd(c->pg, "cancelled by the client");
      r->copy_ended = true;
      break;
    }
    if (r->stage_len == 0) {
      int k = next_chunk(c, r);
      if (k < 0) break;
      if (k == 0) {
        PQputCopyEnd(c->pg, NULL);
        r->copy_ended = true;
        break;
      }
    }
    if (PQputCopyData(c->pg, r->stage, (int)r->stage_len) != 1) { /* the COPY failed */
      r->copy_ended = true;
      break;
    }
    r->stage_len = 0;
    int out = PQflush(c->pg);
    if (out != 0) break; /* 1: the socket is full, wait for it; -1: lost (the pump sees) */
  }
  PQflush(c->pg);
}

void pg_copy_resume(ascope_op *op) {
  struct pg_req *r = ascope_sql_req_data(ascope_op_data(op));
  struct pg_conn *c = r->c;
  if (r->in_fill) {
    r->fill_resumed = true;
    return;
  }
  if (!r->fill_paused) return;
  r->fill_paused = false;
  if (!aguard_ask(&c->pump)) return; /* the pump's turn feeds it */
  aguard_enter(&c->pump);
  pg_copy_feed(c);
  aguard_leave(&c->pump);
  pg_kick(c);
}

/* ---- COPY TO STDOUT -------------------------------------------------------------------- */

static int copy_out_describe(struct pg_req *r, const PGresult *res) {
  ascope_rows *rows = ascope_sql_req_rows(r->req);
  if (rows == NULL) return UV_ENOMEM;
  int rc = ascope_rows_set_columns(rows, 1);
  if (rc == 0)
    rc = ascope_rows_set_column(rows, 0, "data", NULL,
                                PQbinaryTuples(res) ? ASCOPE_SQL_BLOB : ASCOPE_SQL_TEXT);
  r->binary = PQbinaryTuples(res);
  r->cols_set = rc == 0;
  return rc;
}

static bool wants(const struct pg_req *r) {
  return !r->stopped && !r->cancelled && r->status == 0;
}

static int add_line(struct pg_req *r, const char *buf, int n) {
  ascope_rows *rows = ascope_sql_req_rows(r->req);
  int rc = ascope_rows_add_row(rows);
  if (rc == 0)
    rc = r->binary ? ascope_rows_put_blob(rows, 0, buf, (size_t)n)
                   : ascope_rows_put_text(rows, 0, buf, (size_t)n);
  return rc;
}

/* Data messages into batches. true: the data has ended. */
static bool copy_out_data(struct pg_conn *c, struct pg_req *r) {
  for (;;) {
    if (r->batch_out) return false;
    if (wants(r) && pg_batch_full(c, r)) {
      pg_deliver_batch(c, r);
      continue;
    }
    char *buf = NULL;
    int n = PQgetCopyData(c->pg, &buf, 1);
    if (n > 0) {
      if (wants(r) && add_line(r, buf, n) != 0)
        pg_req_fail(r, UV_ENOMEM, NULL, "out of memory reading the COPY");
      PQfreemem(buf);
      continue;
    }
    if (n == 0) { /* the rest is still on its way */
      if (wants(r) && ascope_rows_count(ascope_sql_req_rows(r->req)) > 0) {
        pg_deliver_batch(c, r);
        continue;
      }
      return false;
    }
    r->copying = false;
    if (n == -2) {
      char *msg = pg_conn_error(c, "the COPY failed");
      pg_req_fail_own(r, ASCOPE_EDRIVER, NULL, msg);
    }
    return true;
  }
}

/* ---- results ---------------------------------------------------------------------------- */

static void solo_result(struct pg_conn *c, struct pg_req *r, PGresult *res) {
  char code[6];
  switch (PQresultStatus(res)) {
  case PGRES_COPY_IN:
    if (r->kind != K_COPY_IN) {
      PQputCopyEnd(c->pg, "COPY FROM STDIN runs through ascope_postgres_copy_in()");
      break;
    }
    r->copying = true;
    pg_copy_feed(c);
    break;
  case PGRES_COPY_OUT:
    r->copying = true;
    if (r->kind == K_COPY_OUT) {
      if (copy_out_describe(r, res) != 0) pg_req_fail(r, UV_ENOMEM, NULL, "out of memory");
    } else {
      pg_req_fail(r, ASCOPE_EDRIVER, "0A000",
                  "COPY TO STDOUT runs through ascope_postgres_copy_out()");
      r->stopped = true; /* read and drop the data */
    }
    break;
  case PGRES_COMMAND_OK:
  case PGRES_TUPLES_OK:
    r->changes += strtoll(PQcmdTuples(res), NULL, 10);
    break;
  case PGRES_EMPTY_QUERY:
    break;
  default: {
    char *msg = pg_result_error(res, code);
    int status = ASCOPE_EDRIVER;
    if ((r->cancelled || r->stopped) && strcmp(code, "57014") == 0) status = ASCOPE_ECANCELED;
    if (r->cancelled && r->kind == K_COPY_IN && strcmp(code, "57014") == 0)
      status = ASCOPE_ECANCELED;
    pg_req_fail_own(r, status, code, msg);
    break;
  }
  }
}

void pg_solo_results(struct pg_conn *c) {
  struct pg_req *r = c->solo;
  while (c->state == PG_READY && c->solo == r && !c->closing) {
    if (r->copying && r->kind != K_COPY_IN && !copy_out_data(c, r)) return;
    if (r->copying && r->kind == K_COPY_IN) {
      pg_copy_feed(c);
      if (!r->copy_ended) return;
    }
    if (PQisBusy(c->pg)) return;
    PGresult *res = PQgetResult(c->pg);
    if (res == NULL) {
      if (r->cancelled && r->kind == K_COPY_IN && r->status == 0)
        pg_req_fail(r, ASCOPE_ECANCELED, NULL, "cancelled");
      solo_end(c, r);
      return;
    }
    solo_result(c, r, res);
    PQclear(res);
  }
}
