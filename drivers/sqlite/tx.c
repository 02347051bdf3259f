/* Transaction steps in SQLite's SQL, on a pool thread.
 *
 * Level 0 is BEGIN / COMMIT / ROLLBACK; level d > 0 is the savepoint
 * "ascope_d". The release of a level always leaves it closed, because a
 * release must complete and the connection may serve a parent scope next:
 *   - a COMMIT (or RELEASE) that fails is followed by a rollback of the
 *     level, and the commit's error is what the scope hears;
 *   - a rollback finds nothing to do when SQLite already rolled the whole
 *     transaction back (an interrupt or some errors do that by themselves);
 *   - a COMMIT whose release was aborted (cancelled) rolls back instead: a
 *     scope that ran out of time does not get its work committed.
 */
#include "internal.h"

#include <stdio.h>

/* Runs one short statement through the cache; records a failure in j when
 * record is set. */
static int exec1(struct sq_conn *c, struct sq_job *j, const char *sql, bool record) {
  const char *tail;
  int rc;
  struct sq_stmt *st = sq_cache_get(c, sql, &tail, &rc);
  if (st == NULL) {
    if (record) sq_fail(c, j, rc);
    return rc;
  }
  while ((rc = sqlite3_step(st->stmt)) == SQLITE_ROW) {
  }
  if (rc == SQLITE_DONE) rc = SQLITE_OK;
  if (rc != SQLITE_OK && record) sq_fail(c, j, rc);
  sq_cache_put(c, st);
  return rc;
}

static int rollback_once(struct sq_conn *c, struct sq_job *j, unsigned d, bool record) {
  if (sqlite3_get_autocommit(c->db)) return SQLITE_OK; /* already rolled back */
  if (d == 0) return exec1(c, j, "ROLLBACK", record);
  char sql[64];
  snprintf(sql, sizeof sql, "ROLLBACK TO ascope_%u", d);
  int rc = exec1(c, j, sql, record);
  snprintf(sql, sizeof sql, "RELEASE ascope_%u", d);
  if (rc == SQLITE_OK) rc = exec1(c, j, sql, record);
  return rc;
}

/* A rollback must happen. An interrupt meant for the statement before it
 * (the COMMIT it replaces) can land on it instead: then it runs again, and
 * SQLite clears the stale interrupt when the next statement starts. */
static int rollback_level(struct sq_conn *c, struct sq_job *j, unsigned d, bool record) {
  int rc = SQLITE_OK;
  c->no_cut = true; /* the progress and busy handlers let it run */
  for (int tries = 0; tries < 3; tries++)
    if (((rc = rollback_once(c, j, d, false)) & 0xff) != SQLITE_INTERRUPT) break;
  c->no_cut = false;
  if (rc != SQLITE_OK && record) sq_fail(c, j, rc);
  return rc;
}

static void begin(struct sq_conn *c, struct sq_job *j, unsigned d) {
  static const char *const begins[] = {"BEGIN", "BEGIN IMMEDIATE", "BEGIN EXCLUSIVE"};
  char sql[64];
  if (d == 0)
    snprintf(sql, sizeof sql, "%s", begins[j->tx_begin]);
  else
    snprintf(sql, sizeof sql, "SAVEPOINT ascope_%u", d);
  c->may_yield = true; /* nothing has happened yet: BEGIN can run again later */
  int rc = exec1(c, j, sql, false);
  if (rc != SQLITE_OK && (rc & 0xff) == SQLITE_BUSY && c->yielded)
    j->retry = true;
  else if (rc != SQLITE_OK)
    sq_fail(c, j, rc);
}

static void commit(struct sq_conn *c, struct sq_job *j, unsigned d) {
  char sql[64];
  if (d == 0)
    snprintf(sql, sizeof sql, "COMMIT");
  else
    snprintf(sql, sizeof sql, "RELEASE ascope_%u", d);
  c->may_yield = d == 0; /* a COMMIT kept busy may run again */
  int rc = exec1(c, j, sql, false);
  if (rc == SQLITE_OK) return;
  if ((rc & 0xff) == SQLITE_BUSY && c->yielded && !atomic_load(&j->cancelled)) {
    j->retry = true;
    return;
  }
  sq_fail(c, j, rc);
  rollback_level(c, j, d, false);
}

/* The transaction SQLite rolled back by itself (tx_lost, see run.c): a
 * savepoint would start a new transaction of its own, and a COMMIT or
 * RELEASE has nothing left to commit; the level's end is refused with the
 * reason, and the transaction's end clears the state. A rollback runs as
 * usual and finds nothing to do. */
static bool refused_as_lost(struct sq_conn *c, struct sq_job *j) {
  if (!c->tx_lost || j->tx_action == ASCOPE_SQL_TX_ROLLBACK) return false;
  sq_fail_lost(j);
  return true;
}

/* The savepoint a cancelled write rolled back (sp_lost, stmt.c): no level
 * begins inside it, and its RELEASE is refused with the reason and rolls
 * the level back instead, closing it; its rollback runs as usual. */
static bool refused_as_sp_lost(struct sq_conn *c, struct sq_job *j) {
  if (!c->sp_lost || j->tx_action == ASCOPE_SQL_TX_ROLLBACK) return false;
  sq_fail_sp_lost(c, j);
  if (j->tx_action == ASCOPE_SQL_TX_COMMIT) rollback_level(c, j, j->tx_depth, false);
  return true;
}

static void run_tx(struct sq_conn *c, struct sq_job *j) {
  unsigned d = j->tx_depth;
  if (refused_as_lost(c, j) || refused_as_sp_lost(c, j)) return;
  switch (j->tx_action) {
  case ASCOPE_SQL_TX_BEGIN:
    if (atomic_load(&j->cancelled))
      sq_fail_msg(j, ASCOPE_ECANCELED, NULL, "cancelled");
    else
      begin(c, j, d);
    if (d == 0 && j->status == 0 && !j->retry) c->tx_open = true;
    if (j->status == 0 && !j->retry) c->levels = d + 1;
    break;
  case ASCOPE_SQL_TX_COMMIT:
    if (!atomic_load(&j->cancelled)) {
      commit(c, j, d);
      break;
    }
    rollback_level(c, j, d, true);
    if (j->status == 0)
      sq_fail_msg(j, ASCOPE_ECANCELED, NULL, "the commit was aborted; rolled back instead");
    break;
  default:
    rollback_level(c, j, d, true);
    break;
  }
}

void sq_run_tx(struct sq_conn *c, struct sq_job *j) {
  run_tx(c, j);
  if (j->tx_action == ASCOPE_SQL_TX_BEGIN || j->retry) return;
  /* a level ends with its COMMIT or ROLLBACK, whatever became of it */
  c->levels = j->tx_depth;
  if (c->sp_lost >= j->tx_depth) c->sp_lost = 0;
  if (j->tx_depth == 0) c->tx_open = c->tx_lost = false;
}
