/* Transaction steps in PostgreSQL's SQL, sent down the pipeline in order
 * with everything else on the connection.
 *
 * Level 0 is BEGIN / COMMIT / ROLLBACK; level d > 0 is the savepoint
 * "ascope_d". A release always leaves its level closed, because a release
 * must complete and the connection may serve a parent scope next:
 *   - a failed COMMIT has already ended the transaction on the server;
 *   - a COMMIT of a transaction an error had aborted comes back as
 *     "ROLLBACK": the scope hears it as an error (recv.c);
 *   - a RELEASE that fails (the savepoint's work had an error) is followed
 *     by ROLLBACK TO and RELEASE, and the scope hears the first error;
 *   - a COMMIT cancelled before it was sent (the release was aborted)
 *     becomes a ROLLBACK: a scope that ran out of time commits nothing.
 */
#include "internal.h"

#include <stdio.h>
#include <string.h>

static void plan_rollback(struct pg_req *r, unsigned d) {
  if (d == 0) {
    snprintf(r->txbuf[0], sizeof r->txbuf[0], "ROLLBACK");
    r->nsql = 1;
  } else {
    snprintf(r->txbuf[0], sizeof r->txbuf[0], "ROLLBACK TO SAVEPOINT ascope_%u", d);
    snprintf(r->txbuf[1], sizeof r->txbuf[1], "RELEASE SAVEPOINT ascope_%u", d);
    r->nsql = 2;
  }
  r->tx_action = ASCOPE_SQL_TX_ROLLBACK;
}

int pg_tx_plan(struct pg_req *r, int action, unsigned d, const char *options) {
  r->tx_action = action;
  r->tx_depth = d;
  r->nsql = 1;
  switch (action) {
  case ASCOPE_SQL_TX_BEGIN:
    if (pg_tx_begin_sql(options, r->txbuf[0], sizeof r->txbuf[0]) != 0) return UV_EINVAL;
    if (d > 0) snprintf(r->txbuf[0], sizeof r->txbuf[0], "SAVEPOINT ascope_%u", d);
    break;
  case ASCOPE_SQL_TX_COMMIT:
    if (d == 0)
      snprintf(r->txbuf[0], sizeof r->txbuf[0], "COMMIT");
    else
      snprintf(r->txbuf[0], sizeof r->txbuf[0], "RELEASE SAVEPOINT ascope_%u", d);
    break;
  default:
    plan_rollback(r, d);
    break;
  }
  for (unsigned i = 0; i < 3; i++) r->sql[i] = r->txbuf[i];
  return 0;
}

/* A COMMIT cancelled while still queued: roll back instead. */
void pg_tx_cancel_queued(struct pg_req *r) {
  if (r->tx_action != ASCOPE_SQL_TX_COMMIT) return;
  plan_rollback(r, r->tx_depth);
  pg_req_fail(r, ASCOPE_ECANCELED, NULL, "the commit was aborted; rolled back instead");
}

bool pg_tx_follow_up(struct pg_conn *c, struct pg_req *r) {
  if (r->tx_action != ASCOPE_SQL_TX_COMMIT || r->tx_depth == 0 || r->status == 0 ||
      c->state != PG_READY)
    return false;
  plan_rollback(r, r->tx_depth); /* the RELEASE's error stays the answer */
  r->syncs = 0;
  pg_queue_front(c, r);
  pg_sched_flush(c);
  return true;
}
