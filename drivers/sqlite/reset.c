/* Pools: making a connection clean for its next scope.
 *
 * A connection comes back to its pool after the scope's transaction use
 * has committed or rolled back and every statement has been answered, so
 * there is usually nothing to do, and the reset completes inside the call
 * without a trip to the threadpool. The hop notes when a statement leaves
 * SQLite outside autocommit without the driver's transaction (a "BEGIN" run
 * as a plain statement); only then, or while jobs of the former scope are
 * still queued, does the reset run as a job behind them: it rolls back what
 * is open and resets any statement still stepping, so the next scope
 * starts in autocommit with no read transaction held.
 */
#include "internal.h"

/* (worker) */
void sq_run_reset(struct sq_conn *c, struct sq_job *j) {
  for (sqlite3_stmt *st = sqlite3_next_stmt(c->db, NULL); st; st = sqlite3_next_stmt(c->db, st))
    if (sqlite3_stmt_busy(st)) sqlite3_reset(st);
  if (!sqlite3_get_autocommit(c->db)) {
    c->no_cut = true; /* nothing may interrupt the rollback */
    int rc = sqlite3_exec(c->db, "ROLLBACK", NULL, NULL, NULL);
    c->no_cut = false;
    if (rc != SQLITE_OK) sq_fail(c, j, rc);
  }
  c->tx_open = c->tx_lost = false;
  c->levels = c->sp_lost = 0;
  atomic_store(&c->dirty, false);
}

void sq_reset(ascope_res *r) {
  struct sq_conn *c = ((struct sq_state *)ascope_res_state(r))->c;
  SQ_COUNT(c->rts, SQ_RESETS, 1);
  if (c->closing || c->dead) {
    ascope_res_done(r, ASCOPE_ECLOSED, NULL, "the connection is closed");
    return;
  }
  uv_mutex_lock(&c->mu);
  bool quiet = c->head == NULL && c->running == NULL && c->ahead == NULL;
  uv_mutex_unlock(&c->mu);
  if (quiet && c->shead == NULL && c->where != W_RUNNING && !atomic_load(&c->dirty)) {
    ascope_res_done(r, 0, NULL, NULL);
    return;
  }
  SQ_COUNT(c->rts, SQ_RESET_JOBS, 1);
  c->reset_job.kind = JOB_RESET;
  int rc = sq_enqueue(c, &c->reset_job);
  if (rc) ascope_res_done(r, rc, NULL, "cannot queue the reset");
}
