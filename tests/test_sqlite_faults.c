/* Every stage failing, timing out and being cancelled: the acquire (open,
 * BEGIN), the operations, the release (close, COMMIT). Whatever happens the
 * scope's done runs once, each opened connection is closed once, and
 * nothing is left (t_fini checks connections, requests, transactions and
 * prepared statements after every test). */
#include "sqlite_support.h"

#include <sqlite3.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

TestSuite(sqlite_faults, .init = t_init, .fini = t_fini);

#define LONG_QUERY                                                                                 \
  "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 2000000000) "          \
  "SELECT count(*) FROM c"

static void cancel_it(void *ud) {
  ascope_cancel(ud);
}

/* A scope that runs one long query on its own connection until cancelled. */
struct hog {
  t_scope t;
  t_cb q;
};

static void hog_body(ascope *s, t_scope *t) {
  struct hog *h = (struct hog *)t;
  ascope_sql_query(s, ascope_resource(s, 0), LONG_QUERY, NULL, t_cb_fn, &h->q);
}

/* The n long queries hold their threads: each hog's second hop (its query;
 * the first was its open) has started, and n hops are still in flight. An
 * open's answer may reach the loop before its hop is over, so "opened" and
 * "running" alone would not say the queries run. */
static bool hogs_running(void *ud) {
  int64_t n = (int64_t)(intptr_t)ud;
  return ascope_sqlite_stat("hops") >= 2 * n && ascope_sqlite_stat("running") >= n;
}

static ascope *hog_start(struct hog *h, const char *name, uint64_t cancel_after_ms) {
  h->t.body = hog_body;
  ascope *s = ascope_new(T_rt);
  cr_assert_eq(ascope_use_sqlite(s, t_path(name), NULL), 0);
  cr_assert_eq(ascope_start(s, t_body, t_done, h), 0);
  if (cancel_after_ms) t_after(cancel_after_ms, cancel_it, s);
  return s;
}

/* ---- operations ------------------------------------------------------------------------------ */

Test(sqlite_faults, a_long_query_is_stopped_by_a_deadline) {
  struct hog h = {.t.body = hog_body};
  ascope *s = ascope_new(T_rt);
  ascope_use_sqlite(s, t_path("a.db"), NULL);
  ascope_set_timeout(s, 250); /* the open takes its time on a loaded machine */
  cr_assert_eq(t_run(s, &h.t), ASCOPE_ETIMEDOUT);
  uint64_t took = h.t.t_done - h.t.t_start;
  cr_assert_geq(took, 245);
  cr_assert_lt(took, 2000, "took %llu ms", (unsigned long long)took);
  cr_assert_eq(h.q.calls, 1);
  cr_assert_eq(h.q.status, ASCOPE_ECANCELED, "the query saw the cancellation");
  cr_assert_eq(ascope_sqlite_stat("closed"), 1);
}

static ascope *to_cancel;

static void cancel_saved(void *ud) {
  (void)ud;
  ascope_cancel(to_cancel);
}

Test(sqlite_faults, a_long_query_is_stopped_by_cancel) {
  struct hog h = {0};
  to_cancel = hog_start(&h, "a.db", 0);
  t_when(hogs_running, cancel_saved, (void *)(intptr_t)1); /* once the query runs */
  h.t.t_start = t_now_ms();
  cr_assert_eq(ascope_rt_run(T_rt), 0);
  cr_assert_eq(h.t.done_calls, 1);
  cr_assert_eq(h.t.status, ASCOPE_ECANCELED);
  cr_assert_lt(h.t.t_done - h.t.t_start, 2000);
  cr_assert_eq(h.q.calls, 1);
  cr_assert_eq(h.q.status, ASCOPE_ECANCELED);
}

struct queued {
  t_scope t;
  t_cb long_q, short_q[3];
};

static void queued_body(ascope *s, t_scope *t) {
  struct queued *q = (struct queued *)t;
  ascope_sql *db = ascope_resource(s, 0);
  ascope_sql_query(s, db, LONG_QUERY, NULL, t_cb_fn, &q->long_q);
  for (int i = 0; i < 3; i++) ascope_sql_query(s, db, "SELECT 1", NULL, t_cb_fn, &q->short_q[i]);
  t_after(50, cancel_it, s);
}

Test(sqlite_faults, statements_queued_behind_are_cancelled_without_running) {
  struct queued q = {.t.body = queued_body};
  cr_assert_eq(t_run_db(&q.t, t_path("a.db"), NULL), ASCOPE_ECANCELED);
  cr_assert_eq(q.long_q.status, ASCOPE_ECANCELED);
  for (int i = 0; i < 3; i++) {
    cr_assert_eq(q.short_q[i].calls, 1);
    cr_assert_eq(q.short_q[i].status, ASCOPE_ECANCELED);
  }
}

static int fail_here(ascope *s, int status, ascope_rows *rows, void *ud) {
  (void)s;
  (void)rows;
  (void)ud;
  cr_assert_eq(status, 0);
  return UV_EPROTO; /* a callback's own failure */
}

static void cb_fails_body(ascope *s, t_scope *t) {
  (void)t;
  ascope_sql *db = ascope_resource(s, 0);
  ascope_sql_query(s, db, "SELECT 1", NULL, fail_here, NULL);
  ascope_sql_query(s, db, LONG_QUERY, NULL, NULL, NULL);
}

Test(sqlite_faults, a_failing_callback_cancels_the_rest) {
  t_scope t = {.body = cb_fails_body};
  cr_assert_eq(t_run_db(&t, t_path("a.db"), NULL), UV_EPROTO);
  cr_assert_lt(t.t_done - t.t_start, 2000);
}

/* ---- acquire: the open --------------------------------------------------------------------- */

Test(sqlite_faults, a_failed_open_is_never_released) {
  t_scope t = {0};
  cr_assert_eq(t_run_db(&t, t_path("no/such/dir/a.db"), NULL), ASCOPE_EDRIVER);
  cr_assert_str_eq(t.code, "SQLITE_CANTOPEN");
  cr_assert_str_eq(t.driver, "sqlite");
  cr_assert_eq(t.body_calls, 0);
  cr_assert_eq(ascope_sqlite_stat("opened"), 0);
  cr_assert_eq(ascope_sqlite_stat("closed"), 0);
}

/* With the pool's share taken by two long queries, an open waits for a
 * thread; a deadline or a cancel drops it without it ever running. The long
 * queries run until the waiter is done. */
static t_scope waiter;
static uint64_t waiter_timeout, waiter_cancel;
static ascope *hog_scopes[2];

static void waiter_done(ascope *s, int status, void *ud) {
  t_done(s, status, ud);
  for (int i = 0; i < 2; i++) ascope_cancel(hog_scopes[i]);
}

static void start_waiter(void *ud) {
  (void)ud;
  ascope *s = ascope_new(T_rt);
  ascope_use_sqlite(s, t_path("c.db"), NULL);
  if (waiter_timeout) ascope_set_timeout(s, waiter_timeout);
  if (waiter_cancel) t_after(waiter_cancel, cancel_it, s);
  waiter.t_start = t_now_ms();
  cr_assert_eq(ascope_start(s, t_body, waiter_done, &waiter), 0);
}

static void open_waits(uint64_t timeout_ms, uint64_t cancel_ms, int want) {
  struct hog a = {0}, b = {0};
  hog_scopes[0] = hog_start(&a, "a.db", 0);
  hog_scopes[1] = hog_start(&b, "b.db", 0);
  waiter_timeout = timeout_ms;
  waiter_cancel = cancel_ms;
  t_when(hogs_running, start_waiter, (void *)(intptr_t)2); /* both long queries run */
  cr_assert_eq(ascope_rt_run(T_rt), 0);
  cr_assert_eq(waiter.done_calls, 1);
  cr_assert_eq(waiter.status, want);
  cr_assert_eq(waiter.body_calls, 0);
  cr_assert_lt(waiter.t_done - waiter.t_start, 2000, "it did not wait for the long queries");
  cr_assert_eq(a.t.done_calls, 1);
  cr_assert_eq(b.t.done_calls, 1);
  cr_assert_eq(a.q.status, ASCOPE_ECANCELED);
  cr_assert_eq(ascope_sqlite_stat("opened"), 2, "c.db was never opened");
}

Test(sqlite_faults, an_open_waiting_for_a_thread_times_out) {
  open_waits(100, 0, ASCOPE_ETIMEDOUT);
}

Test(sqlite_faults, an_open_waiting_for_a_thread_is_cancelled) {
  open_waits(0, 100, ASCOPE_ECANCELED);
}

/* An open stuck on a lock (journal_mode=WAL needs the database to itself)
 * is running when cancelled: its busy wait gives up. */
Test(sqlite_faults, an_open_stuck_on_a_lock_is_cancelled) {
  const char *path = t_path("locked.db");
  t_raw(path, "CREATE TABLE t(x)");
  sqlite3 *holder;
  cr_assert_eq(sqlite3_open(path, &holder), SQLITE_OK);
  cr_assert_eq(sqlite3_exec(holder, "BEGIN EXCLUSIVE", NULL, NULL, NULL), SQLITE_OK);
  t_scope t = {0};
  ascope *s = ascope_new(T_rt);
  ascope_use_sqlite(s, path, "wal=1 busy_timeout=20000");
  ascope_set_timeout(s, 100);
  cr_assert_eq(t_run(s, &t), ASCOPE_ETIMEDOUT);
  cr_assert_lt(t.t_done - t.t_start, 2000);
  cr_assert_eq(t.body_calls, 0);
  cr_assert_eq(ascope_sqlite_stat("opened"), 0);
  sqlite3_exec(holder, "ROLLBACK", NULL, NULL, NULL);
  sqlite3_close(holder);
}

/* ---- acquire: BEGIN ------------------------------------------------------------------------- */

Test(sqlite_faults, a_begin_waiting_for_a_lock_is_cancelled) {
  const char *path = t_path("locked.db");
  t_raw(path, "CREATE TABLE t(x)");
  sqlite3 *holder;
  cr_assert_eq(sqlite3_open(path, &holder), SQLITE_OK);
  cr_assert_eq(sqlite3_exec(holder, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);
  t_scope t = {0};
  ascope *s = ascope_new(T_rt);
  ascope_use_sqlite(s, path, "busy_timeout=60000");
  ascope_use_sql_tx_at(s, ascope_sqlite(), 0, "begin=immediate");
  t_when(t_busy_waiting, cancel_it, s); /* once BEGIN waits for the lock */
  cr_assert_eq(t_run(s, &t), ASCOPE_ECANCELED);
  cr_assert_lt(t.t_done - t.t_start, 3000, "not the 20 s busy timeout");
  cr_assert_eq(t.body_calls, 0);
  cr_assert_eq(ascope_sqlite_stat("closed"), 1, "the connection was released once");
  sqlite3_exec(holder, "ROLLBACK", NULL, NULL, NULL);
  sqlite3_close(holder);
}

Test(sqlite_faults, a_transaction_on_no_connection_fails_its_acquire) {
  t_scope t = {0};
  ascope *s = ascope_new(T_rt);
  ascope_use_sqlite(s, t_path("a.db"), NULL);
  ascope_use_sql_tx_at(s, ascope_sqlite(), 5, NULL); /* there is no use 5 */
  cr_assert_eq(t_run(s, &t), UV_EINVAL);
  cr_assert_eq(t.body_calls, 0);
  cr_assert_eq(ascope_sqlite_stat("closed"), 1);
}

/* ---- release: the close, aborted ------------------------------------------------------------ */

struct quick {
  t_scope t;
  t_cb q;
  int block_pool;
};

static int quick_done(ascope *s, int status, ascope_rows *rows, void *ud) {
  struct quick *x = ud;
  if (x->block_pool) t_block_pool(4, 1500); /* libuv's every thread, while we release */
  return t_cb_fn(s, status, rows, &x->q);
}

static void quick_body(ascope *s, t_scope *t) {
  ascope_sql_query(s, ascope_resource(s, 0), "SELECT 1", NULL, quick_done, t);
}

static void done_then_cancel(ascope *s, int status, void *ud) {
  t_done(s, status, ud);
  ascope_cancel(to_cancel);
}

/* One thread for SQLite, held by a long query: the close waits in the
 * ready list past the release deadline, and abort closes the database on
 * the loop thread at once. */
Test(sqlite_faults, a_close_waiting_for_a_thread_is_aborted) {
  cr_assert_eq(ascope_sqlite_set_concurrency(1), 0);
  cr_assert_eq(ascope_rt_set_release_timeout(T_rt, 100), 0);
  struct quick x = {.t.body = quick_body};
  ascope *s = ascope_new(T_rt);
  ascope_use_sqlite(s, t_path("x.db"), NULL);
  cr_assert_eq(ascope_start(s, t_body, done_then_cancel, &x), 0);
  struct hog h = {0};
  to_cancel = hog_start(&h, "h.db", 0); /* runs until x is done */
  x.t.t_start = t_now_ms();
  cr_assert_eq(ascope_rt_run(T_rt), 0);
  cr_assert_eq(x.t.done_calls, 1);
  cr_assert_eq(x.q.first, 1);
  cr_assert_eq(x.t.status, ASCOPE_ETIMEDOUT);
  cr_assert(strstr(x.t.msg, "aborted"), "%s", x.t.msg);
  cr_assert_lt(x.t.t_done - x.t.t_start, 2000, "x did not wait for the hog");
  cr_assert_eq(h.t.status, ASCOPE_ECANCELED);
  cr_assert_eq(ascope_sqlite_stat("aborted"), 1);
  cr_assert_eq(ascope_sqlite_stat("connections"), 0);
}

/* Every libuv thread busy: the close's hop is queued in libuv, where it
 * cannot be taken back. Abort marks the connection; the hop, when it runs,
 * closes it, and completes the orphaned release late. */
Test(sqlite_faults, a_close_queued_in_libuv_is_aborted_and_finished_late) {
  cr_assert_eq(ascope_rt_set_release_timeout(T_rt, 100), 0);
  struct quick x = {.t.body = quick_body, .block_pool = 1};
  cr_assert_eq(t_run_db(&x.t, t_path("x.db"), NULL), ASCOPE_ETIMEDOUT);
  cr_assert_lt(x.t.t_done - x.t.t_start, 1200);
  cr_assert_eq(ascope_sqlite_stat("aborted"), 1);
  cr_assert_eq(ascope_sqlite_stat("connections"), 1, "the hop has not run yet");
  uv_run(ascope_rt_loop(T_rt), UV_RUN_DEFAULT); /* the blockers end, the hop closes */
  cr_assert_eq(ascope_sqlite_stat("connections"), 0);
  cr_assert_eq(ascope_sqlite_stat("closed"), 1);
}

/* ---- release: COMMIT ---------------------------------------------------------------------------
 */

static void insert_body(ascope *s, t_scope *t) {
  (void)t;
  ascope_sql_exec(s, ascope_resource(s, 0), "INSERT INTO t VALUES (1)", NULL, NULL, NULL);
}

/* Rollback journal, and a reader holding its SHARED lock: the COMMIT waits
 * for an EXCLUSIVE one past the release deadline. The abort cuts the wait;
 * the transaction rolls back; the connection closes normally. */
Test(sqlite_faults, a_commit_stuck_on_a_lock_is_aborted_and_rolled_back) {
  const char *path = t_path("j.db");
  t_raw(path, "CREATE TABLE t(x)");
  sqlite3 *reader;
  sqlite3_stmt *st;
  cr_assert_eq(sqlite3_open(path, &reader), SQLITE_OK);
  cr_assert_eq(sqlite3_prepare_v2(reader, "SELECT * FROM sqlite_master", -1, &st, NULL), 0);
  cr_assert_eq(sqlite3_step(st), SQLITE_ROW); /* a read in progress: SHARED held */
  cr_assert_eq(ascope_rt_set_release_timeout(T_rt, 100), 0);
  t_scope t = {.body = insert_body};
  ascope *s = ascope_new(T_rt);
  ascope_use_sqlite(s, path, "busy_timeout=60000");
  ascope_use_sql_tx_at(s, ascope_sqlite(), 0, NULL);
  cr_assert_eq(t_run(s, &t), ASCOPE_ETIMEDOUT);
  cr_assert(strstr(t.msg, "aborted"), "%s", t.msg);
  cr_assert_lt(t.t_done - t.t_start, 2000);
  uv_run(ascope_rt_loop(T_rt), UV_RUN_DEFAULT);
  sqlite3_finalize(st);
  sqlite3_close(reader);
  cr_assert_eq(t_raw_int(path, "SELECT count(*) FROM t"), 0, "not committed");
  cr_assert_eq(ascope_sqlite_stat("closed"), 1);
  cr_assert_eq(ascope_sqlite_stat("aborted"), 0, "the connection itself closed in time");
}

/* ---- the gate: long hops take turns for the cores (drivers/sqlite/gate.c) ------------------- */

#define COUNT_TO(n)                                                                                \
  "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < " #n ") "              \
  "SELECT count(*) FROM c"

/* The gate's tokens: the cores less the loop thread's, at least one. Its
 * cases need more long hops than tokens, and each on a pool thread of its
 * own (libuv has 4): with more cores than that nothing waits, and the
 * cases only check that everything still completes. */
static unsigned gate_tokens(void) {
  unsigned n = uv_available_parallelism();
  return n > 2 ? n - 1 : 1;
}

static bool gate_can_wait(void) {
  return gate_tokens() + 1 <= 4;
}

struct counter {
  t_scope t;
  t_cb q;
};

static void count_body(ascope *s, t_scope *t) {
  struct counter *x = (struct counter *)t;
  ascope_sql_query(s, ascope_resource(s, 0), COUNT_TO(2000000), NULL, t_cb_fn, &x->q);
}

/* Starts s on a database of its own, "<prefix><i>.db", running t's body. */
static void start_on_own_db(ascope *s, char prefix, unsigned i, t_scope *t) {
  char name[16];
  snprintf(name, sizeof name, "%c%u.db", prefix, i);
  cr_assert_not_null(s);
  cr_assert_eq(ascope_use_sqlite(s, t_path(name), NULL), 0);
  cr_assert_eq(ascope_start(s, t_body, t_done, t), 0);
}

/* One more long query than tokens, each on its own connection and hop:
 * one of them waits, they pass the tokens round (a holder gives its token
 * up after its slice when another waits, and waits again) and all end with
 * the right count. */
Test(sqlite_faults, long_queries_take_turns_at_the_gate) {
  unsigned n = gate_tokens() + 1;
  cr_assert_eq(ascope_sqlite_set_concurrency(n), 0);
  struct counter x[8] = {0};
  if (n > 8) n = 8;
  for (unsigned i = 0; i < n; i++) {
    x[i].t.body = count_body;
    start_on_own_db(ascope_new(T_rt), 'g', i, &x[i].t);
  }
  cr_assert_eq(ascope_rt_run(T_rt), 0);
  for (unsigned i = 0; i < n; i++) {
    cr_assert_eq(x[i].t.status, 0, "query %u: %s", i, x[i].t.msg);
    cr_assert_eq(x[i].q.first, 2000000);
  }
  int64_t waits = ascope_rt_stat(T_rt, "sqlite.gate_waits");
  int64_t handovers = ascope_rt_stat(T_rt, "sqlite.gate_handovers");
  int64_t moves = ascope_rt_stat(T_rt, "sqlite.gate_moves");
  if (gate_can_wait()) {
    cr_assert_geq(waits, 2, "a wait, and a wait after a hand-over");
#ifdef __linux__
    /* each token given up went with its giver's core (its taker moved there,
     * unless it was there already) */
    cr_assert_geq(handovers, 1, "%lld waits", (long long)waits);
#endif
  }
  cr_assert_leq(moves, handovers);
  ascope_sqlite_set_concurrency(2);
}

/* Alone, a long query takes a token and keeps it: nothing is handed over,
 * and its thread is never moved. */
Test(sqlite_faults, a_lone_long_query_keeps_its_token_and_core) {
  struct counter x = {.t.body = count_body};
  start_on_own_db(ascope_new(T_rt), 'l', 0, &x.t);
  cr_assert_eq(ascope_rt_run(T_rt), 0);
  cr_assert_eq(x.t.status, 0, "%s", x.t.msg);
  cr_assert_eq(x.q.first, 2000000);
  cr_assert_eq(ascope_rt_stat(T_rt, "sqlite.gate_waits"), 0);
  cr_assert_eq(ascope_rt_stat(T_rt, "sqlite.gate_handovers"), 0);
  cr_assert_eq(ascope_rt_stat(T_rt, "sqlite.gate_moves"), 0);
}

static bool a_hop_waits_at_the_gate(void *ud) {
  (void)ud;
  return ascope_rt_stat(T_rt, "sqlite.gate_waits") > 0;
}

/* Endless queries, one more than tokens: the one waiting for a token is
 * cancelled as promptly as those running (its wait ends on the cancel; it
 * holds a pool thread and must not hold it for the holder's slice). */
static struct hog gate_hogs[4];
static unsigned gate_nhogs;

static void gate_parent_body(ascope *p, t_scope *t) {
  (void)t;
  for (unsigned i = 0; i < gate_nhogs; i++) {
    gate_hogs[i].t.body = hog_body;
    start_on_own_db(ascope_child(p), 'h', i, &gate_hogs[i].t);
  }
  t_when(a_hop_waits_at_the_gate, cancel_it, p);
}

Test(sqlite_faults, a_query_waiting_at_the_gate_is_cancelled) {
  if (!gate_can_wait()) return; /* nothing would wait */
  gate_nhogs = gate_tokens() + 1;
  cr_assert_eq(ascope_sqlite_set_concurrency(gate_nhogs), 0);
  t_scope parent = {.body = gate_parent_body};
  ascope *p = ascope_new(T_rt);
  uint64_t t0 = t_now_ms();
  cr_assert_eq(t_run(p, &parent), ASCOPE_ECANCELED);
  for (unsigned i = 0; i < gate_nhogs; i++) {
    cr_assert_eq(gate_hogs[i].t.done_calls, 1);
    cr_assert_eq(gate_hogs[i].q.status, ASCOPE_ECANCELED, "query %u", i);
    cr_assert_lt(gate_hogs[i].t.t_done - t0, 5000);
  }
  cr_assert_gt(ascope_rt_stat(T_rt, "sqlite.gate_waits"), 0);
  ascope_sqlite_set_concurrency(2);
}

/* A hop holding a token that meets a lock gives the token up while it
 * waits: the lock's holder may be the hop waiting for that token. B holds
 * the write lock (BEGIN IMMEDIATE) and runs a long query; A runs one a
 * third as long (the two take turns at the gate, so A's ends first), then
 * an INSERT that waits for B's lock, in the same hop. Were A to
 * keep its token through the wait, B could not finish, nor COMMIT, before
 * A's busy timeout (60 s here, which a loaded machine's slow but right run
 * stays well within): the INSERT would fail SQLITE_BUSY. */
struct locked {
  t_scope t;
  t_cb q, ins;
};

static void holder_body(ascope *s, t_scope *t) {
  struct locked *x = (struct locked *)t;
  ascope_sql_query(s, ascope_resource(s, 0), COUNT_TO(3000000), NULL, t_cb_fn, &x->q);
}

static void waiter_body(ascope *s, t_scope *t) {
  struct locked *x = (struct locked *)t;
  ascope_sql *db = ascope_resource(s, 0);
  ascope_sql_query(s, db, COUNT_TO(1000000), NULL, t_cb_fn, &x->q);
  x->ins.pass = true;
  ascope_sql_exec(s, db, "INSERT INTO t VALUES (1)", NULL, t_cb_fn, &x->ins);
}

struct two {
  struct locked *a, *b;
};

static void start_lock_waiter(void *ud) {
  struct two *w = ud;
  ascope *s = ascope_new(T_rt);
  cr_assert_eq(ascope_use_sqlite(s, t_path("w.db"), "busy_timeout=60000"), 0);
  cr_assert_eq(ascope_start(s, t_body, t_done, w->a), 0);
}

static bool holder_began(void *ud) {
  struct two *w = ud;
  return w->b->t.body_calls > 0;
}

Test(sqlite_faults, a_hop_waiting_for_a_lock_gives_its_token_up) {
  t_raw(t_path("w.db"), "PRAGMA journal_mode=WAL; CREATE TABLE t(x)");
  cr_assert_eq(ascope_sqlite_set_concurrency(gate_tokens() + 1), 0);
  struct locked b = {.t.body = holder_body}, a = {.t.body = waiter_body};
  ascope *s = ascope_new(T_rt);
  cr_assert_eq(ascope_use_sqlite(s, t_path("w.db"), NULL), 0);
  cr_assert_eq(ascope_use_sql_tx_at(s, ascope_sqlite(), 0, "begin=immediate"), 0);
  cr_assert_eq(ascope_start(s, t_body, t_done, &b), 0);
  struct two w = {&a, &b};
  t_when(holder_began, start_lock_waiter, &w); /* once B holds the lock */
  cr_assert_eq(ascope_rt_run(T_rt), 0);
  cr_assert_eq(b.t.status, 0, "%s", b.t.msg);
  cr_assert_eq(a.t.status, 0, "%s", a.t.msg);
  cr_assert_eq(a.ins.status, 0, "%s", a.ins.msg);
  cr_assert_eq(a.q.first, 1000000);
  cr_assert_eq(t_raw_int(t_path("w.db"), "SELECT count(*) FROM t"), 1);
  ascope_sqlite_set_concurrency(2);
}

/* ---- statements staged while a hop runs, then cancelled --------------------------------------
 *
 * Statements started while a hop runs wait in the connection's stage, and
 * the connection is listed for the loop to publish the stage before it
 * sleeps. When every staged statement is cancelled before that (the scope
 * fails or is cancelled in the same loop iteration), the stage is empty but
 * the connection was left listed, and publishing an empty stage never took
 * it off: the loop spun in the publishing callback forever, and no timer
 * (deadline, cancel) ever fired again. These scopes must end; the suite's
 * timeout fails a hang. */
TestSuite(sqlite_stage, .init = t_init, .fini = t_fini, .timeout = 120);

#define STAGED 4

/* The first statement's callback starts STAGED - 1 more, then ends the
 * scope (a cancel, or the statement's own failure passed on). A long query
 * queued behind the first is running by then — the hop takes it in the
 * same hold of the mutex as it answers the first — so the new statements
 * are staged, and the long query's interrupted answer comes later. */
struct staged {
  t_scope t;
  t_cb q[STAGED], hold;
  bool fail;
};

static int stage_then_end(ascope *s, int status, ascope_rows *rows, void *ud) {
  struct staged *x = ud;
  t_cb_fn(s, status, rows, &x->q[0]);
  ascope_sql *db = ascope_resource(s, 0);
  for (int i = 1; i < STAGED; i++)
    cr_assert_eq(ascope_sql_query(s, db, "SELECT 1", NULL, t_cb_fn, &x->q[i]), 0);
  if (x->fail) return status;
  ascope_cancel(s); /* before the loop sleeps: the stage is still unpublished */
  return 0;
}

static void stage_body(ascope *s, t_scope *t) {
  struct staged *x = (struct staged *)t;
  ascope_sql *db = ascope_resource(s, 0);
  const char *first = x->fail ? "SELECT * FROM no_such_table" : "SELECT 1";
  cr_assert_eq(ascope_sql_query(s, db, first, NULL, stage_then_end, x), 0);
  cr_assert_eq(ascope_sql_query(s, db, LONG_QUERY, NULL, t_cb_fn, &x->hold), 0);
}

static void stage_then_end_runs(bool fail) {
  for (int run = 0; run < 20; run++) {
    struct staged x = {.t.body = stage_body, .fail = fail};
    ascope *s = ascope_new(T_rt);
    cr_assert_eq(ascope_use_sqlite(s, t_path("a.db"), NULL), 0);
    if (run % 2) /* and with a transaction: its ROLLBACK is staged as well */
      cr_assert_eq(ascope_use_sql_tx_at(s, ascope_sqlite(), 0, NULL), 0);
    int status = t_run(s, &x.t);
    cr_assert_lt(x.t.t_done - x.t.t_start, 2000, "run %d", run);
    if (fail) {
      cr_assert_eq(status, ASCOPE_EDRIVER, "run %d: %s", run, x.t.msg);
      cr_assert_str_eq(x.t.code, "SQLITE_ERROR");
    } else {
      cr_assert_eq(status, ASCOPE_ECANCELED, "run %d: %s", run, x.t.msg);
      cr_assert_eq(x.q[0].status, 0);
    }
    cr_assert_eq(x.q[0].calls, 1);
    cr_assert_eq(x.hold.calls, 1);
    cr_assert_eq(x.hold.status, ASCOPE_ECANCELED, "run %d", run);
    for (int i = 1; i < STAGED; i++) {
      cr_assert_eq(x.q[i].calls, 1, "run %d, statement %d", run, i);
      cr_assert_eq(x.q[i].status, ASCOPE_ECANCELED, "run %d, statement %d", run, i);
    }
  }
}

Test(sqlite_stage, a_scope_cancelled_with_statements_staged_ends) {
  stage_then_end_runs(false);
}

Test(sqlite_stage, a_failure_right_after_statements_were_staged_ends_the_scope) {
  stage_then_end_runs(true);
}

/* A child scope stages its statements behind its parent's long query and
 * cancels itself: the stage empties while the parent's hop runs on. The
 * child's end has a timer cancel the parent, which never fires if the loop
 * spins. */
struct family {
  t_scope t;
  t_cb q;
  ascope_sql *db;
  struct staged child;
};

/* Later, from a timer: a loop spinning before it sleeps never gets there. */
static void staged_child_done(ascope *s, int status, void *ud) {
  struct family *f = ud;
  t_done(s, status, &f->child.t);
  t_after(1, cancel_it, to_cancel);
}

static void staged_child_body(ascope *s, void *ud) {
  struct family *f = ud;
  f->child.t.body_calls++;
  for (int i = 0; i < STAGED; i++)
    cr_assert_eq(ascope_sql_query(s, f->db, "SELECT 1", NULL, t_cb_fn, &f->child.q[i]), 0);
  ascope_cancel(s);
}

static void parent_body(ascope *s, t_scope *t) {
  struct family *f = (struct family *)t;
  to_cancel = s;
  f->db = ascope_resource(s, 0);
  ascope_sql_query(s, f->db, LONG_QUERY, NULL, t_cb_fn, &f->q);
  ascope *c = ascope_child(s);
  cr_assert_eq(ascope_start(c, staged_child_body, staged_child_done, f), 0);
}

Test(sqlite_stage, a_child_cancelled_with_statements_staged_lets_its_parent_go_on) {
  for (int run = 0; run < 10; run++) {
    struct family f = {.t.body = parent_body};
    cr_assert_eq(t_run_db(&f.t, t_path("a.db"), NULL), ASCOPE_ECANCELED, "run %d", run);
    cr_assert_lt(f.t.t_done - f.t.t_start, 2000, "run %d", run);
    cr_assert_eq(f.q.status, ASCOPE_ECANCELED);
    cr_assert_eq(f.child.t.done_calls, 1);
    cr_assert_eq(f.child.t.status, ASCOPE_ECANCELED);
    for (int i = 0; i < STAGED; i++) {
      cr_assert_eq(f.child.q[i].calls, 1, "run %d, statement %d", run, i);
      cr_assert_eq(f.child.q[i].status, ASCOPE_ECANCELED, "run %d, statement %d", run, i);
    }
  }
}

/* The report: a transaction, 20,000 INSERTs queued at once, the 2,000th
 * failing (no such table), a 2 s deadline. The failure's answer reaches the
 * loop while the body's last INSERTs are still staged, now and then in the
 * very iteration that staged them: about one run in seven hung. */
static void burst_body(ascope *s, t_scope *t) {
  (void)t;
  ascope_sql *db = ascope_resource(s, 0);
  ascope_sql_params *p = ascope_sql_params_new();
  cr_assert_not_null(p);
  for (int i = 0; i < 20000; i++) {
    ascope_sql_params_clear(p);
    ascope_sql_params_add_int64(p, i);
    const char *sql =
        i == 1999 ? "INSERT INTO no_such_table VALUES ($1)" : "INSERT INTO t VALUES ($1)";
    if (ascope_sql_exec(s, db, sql, p, NULL, NULL) != 0) break; /* the scope has failed */
  }
  ascope_sql_params_free(p);
}

Test(sqlite_stage, a_burst_with_a_failing_insert_ends_every_time) {
  const char *path = t_path("burst.db");
  t_raw(path, "CREATE TABLE t(v INTEGER)");
  for (int run = 0; run < 60; run++) {
    t_scope t = {.body = burst_body};
    ascope *s = ascope_new(T_rt);
    cr_assert_eq(ascope_use_sqlite(s, path, NULL), 0);
    cr_assert_eq(ascope_use_sql_tx_at(s, ascope_sqlite(), 0, NULL), 0);
    ascope_set_timeout(s, 2000);
    cr_assert_eq(t_run(s, &t), ASCOPE_EDRIVER, "run %d: %s", run, t.msg);
    cr_assert_str_eq(t.code, "SQLITE_ERROR");
    cr_assert(strstr(t.msg, "no_such_table"), "%s", t.msg);
  }
  /* and nothing ran after SQLite's own rollback of an interrupted INSERT */
  cr_assert_eq(t_raw_int(path, "SELECT count(*) FROM t"), 0, "every run rolled back");
}
