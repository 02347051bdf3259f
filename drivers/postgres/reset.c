/* Pools: making a connection clean for its next scope.
 *
 * A pool resets every connection that comes back. Most need nothing: the
 * scope's transaction use committed or rolled back before the connection's
 * use was released, and its statements have all been answered. Paying a
 * round trip for such a connection (a "DISCARD ALL" each time) would halve
 * a pool's throughput, so the reset is free then: it checks what the
 * driver already knows and completes inside the call.
 *
 * What the driver tracks instead:
 * - a transaction the scope opened with a plain "BEGIN" and left open
 *   (libpq's transaction status, once nothing is in flight): ROLLBACK;
 * - session state a statement may have left (SET, RESET, LISTEN, DECLARE
 *   ... WITH HOLD, advisory locks: seen by the statement's first word or
 *   its call of pg_advisory_lock): "CLOSE ALL", "UNLISTEN *", "RESET ALL",
 *   "SELECT pg_advisory_unlock_all()";
 * - a cancel request still out, or statements of cancelled operations
 *   still draining: the reset waits until they are done, so a late cancel
 *   can never hit the next scope's statement.
 * The statements a reset needs are sent in rounds of their own and the
 * reset completes at once: the next scope's statements are pipelined
 * behind them. The connection's prepared statements are kept — that is
 * what pooling them is for.
 *
 * Everything here runs on the loop thread.
 */
#include "internal.h"

#include <string.h>
#include <strings.h>

static bool word_is(const char *s, const char *word) {
  size_t n = strlen(word);
  if (strncasecmp(s, word, n) != 0) return false;
  char next = s[n];
  return !((next >= 'a' && next <= 'z') || (next >= 'A' && next <= 'Z') || next == '_' ||
           (next >= '0' && next <= '9'));
}

bool pg_sql_touches_session(const char *sql) {
  const char *s = sql;
  if (s == NULL) return false;
  while (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r' || *s == '(') s++;
  static const char *const words[] = {"SET", "RESET", "LISTEN", "DECLARE", "PREPARE", "LOAD"};
  for (size_t i = 0; i < sizeof words / sizeof *words; i++)
    if (word_is(s, words[i])) {
      /* SET LOCAL ends with its transaction */
      return !(i == 0 && word_is(s + 3 + strspn(s + 3, " \t\n\r"), "LOCAL"));
    }
  return strcasestr(s, "advisory_lock") != NULL;
}

/* Nothing of a former scope can reach the next one: no cancel request
 * out, no statement still to send or to answer. */
static bool settled(struct pg_conn *c) {
  return c->cancel_job == NULL && !c->hold && c->victims == NULL && c->solo == NULL &&
         c->send_head == NULL && c->nsteps == 0;
}

static void reset_done(struct pg_conn *c, int status, const char *msg) {
  ascope_res *res = c->resetting;
  c->resetting = NULL;
  ascope_res_done(res, status, status ? "08006" : NULL, msg);
}

static void reset_finish(struct pg_conn *c) {
  PGTransactionStatusType tx = PQtransactionStatus(c->pg);
  int rc = 0;
  if (tx == PQTRANS_INTRANS || tx == PQTRANS_INERROR) {
    rc = pg_send_internal(c, "ROLLBACK");
    PG_COUNT(c, PGS_RESET_ROLLBACKS, 1);
  } else if (tx != PQTRANS_IDLE) {
    rc = -1;
  }
  if (rc == 0 && c->session_dirty) {
    static const char *const undo[] = {"CLOSE ALL", "UNLISTEN *", "RESET ALL",
                                       "SELECT pg_advisory_unlock_all()"};
    for (size_t i = 0; i < 4 && rc == 0; i++) rc = pg_send_internal(c, undo[i]);
    PG_COUNT(c, PGS_RESET_SESSIONS, 1);
  }
  c->session_dirty = false;
  if (rc != 0) {
    reset_done(c, ASCOPE_ECLOSED, "the connection could not be reset");
    return;
  }
  if (c->nsteps) pg_sched_flush(c);
  reset_done(c, 0, NULL);
}

/* From the pump, after each turn: a reset waiting for the connection to
 * settle goes on. */
void pg_reset_check(struct pg_conn *c) {
  if (c->resetting == NULL) return;
  if (c->state != PG_READY || c->closing) {
    reset_done(c, ASCOPE_ECLOSED, "the connection was lost while it was being reset");
    return;
  }
  if (settled(c)) reset_finish(c);
}

void pg_reset(ascope_res *res) {
  struct pg_conn *c = ((struct pg_state_mem *)ascope_res_state(res))->c;
  c->resetting = res;
  PG_COUNT(c, PGS_RESETS, 1);
  if (c->state != PG_READY || PQstatus(c->pg) != CONNECTION_OK || c->listeners) {
    reset_done(c, ASCOPE_ECLOSED, "the connection is broken or still listening");
    return;
  }
  /* Settled: complete now, the common case. Otherwise the pump finishes
   * it once the last answer or the cancel request is in. */
  if (settled(c)) reset_finish(c);
}
