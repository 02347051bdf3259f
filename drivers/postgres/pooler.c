/* Transaction poolers: PgBouncer and the like.
 *
 * Behind a pooler in transaction mode a connection's statements run on
 * whatever server session is free when each transaction (each sync point,
 * outside an explicit transaction) begins. What the driver keeps per
 * session then breaks: a statement prepared under a name on one session is
 * missing on the next ("26000 prepared statement does not exist"), and
 * every client's "ascope_1" meets another's on a shared one ("42P05 already
 * exists"). asyncpg leaves its users to find this out and turn its cache
 * off; here it is found at connect and the cache goes unused, so the
 * driver works behind a pooler by default.
 *
 * How it is found (statement_cache=auto, the default): PgBouncer answers
 * the startup itself and makes up the key that libpq reports as the
 * backend's pid, so PQbackendPID() differs from what the server says
 * pg_backend_pid() is. One round trip at connect asks; the acquire
 * completes with the answer. A pooler that passes the pid through is still
 * caught by the first 42P05 or 26000 on one of the driver's own names: the
 * statement, which had not run, runs again unnamed. Either way the
 * connection stops naming statements, counts "pooled", and says so once
 * through the trace hook (a note). statement_cache=on trusts the session
 * (no probe); off never names a statement.
 *
 * LISTEN cannot work through such a pooler (the session that listens is
 * not the one the next transaction gets), so it fails at once on a
 * connection found to be pooled, rather than never hearing anything.
 */
#include "internal.h"

#include <stdlib.h>

/* 0, 1 when out of memory, -1 when the connection broke. */
int pg_probe_start(struct pg_conn *c) {
  int rc = pg_send_own(c, "SELECT pg_backend_pid()", ST_PROBE);
  if (rc != 0) return rc;
  PG_COUNT(c, PGS_SYNCS, -1); /* "syncs" counts the statements' sync points, not the connect's */
  c->probing = true;
  pg_sched_flush(c);
  return 0;
}

void pg_pooler_seen(struct pg_conn *c, const char *why) {
  c->behind_pooler = true;
  if (c->names_off) return;
  c->names_off = true;
  PG_COUNT(c, PGS_POOLED, 1);
  ascope_res_note(c->res, "POOLER", why);
}

void pg_probe_result(struct pg_conn *c, PGresult *res) {
  if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
    /* An answer not understood: naming statements is the risk, not
     * leaving them unnamed. */
    pg_pooler_seen(c, "the connect's probe of the server session failed: named prepared "
                      "statements are off on this connection");
    return;
  }
  long pid = strtol(PQgetvalue(res, 0, 0), NULL, 10);
  if (pid != PQbackendPID(c->pg))
    pg_pooler_seen(c, "the server session is not this connection's own (a transaction pooler "
                      "such as PgBouncer): named prepared statements are off on this "
                      "connection, and LISTEN is refused");
}

void pg_probe_check(struct pg_conn *c) {
  if (!c->probing || c->nsteps) return;
  c->probing = false;
  pg_connect_done(c);
}
