/* A cancellation and fault storm over every driver at once.
 *
 * Thousands of short scopes, 64 in flight at a time on one loop: file reads,
 * streams and atomic writes; SQLite queries, streams and transactions on a
 * few shared connections and on connections of their own; PostgreSQL the
 * same, pipelined on a few shared connections; HTTP GETs and streams of the
 * test nginx's files through shared sessions and sessions of their own, and
 * requests to the fault server's misbehaving endpoints; lock and semaphore
 * holders. Each scope is cancelled at a random moment (before it acquired
 * anything, while acquiring, from its own body, from outside at a random
 * time) or given a random short deadline, or left alone. The shared
 * connections and sessions ("hubs") are themselves cancelled now and then,
 * which cancels every scope using them, and replaced. Meanwhile a raw libpq
 * connection terminates random backends of this process's connections
 * (pg_terminate_backend, only those whose application_name is this test
 * process's: other tests share the server).
 *
 * The PRNG's seed is printed (ASCOPE_STORM_SEED replays the same plan; the
 * timing, and so the outcomes, differ from run to run). ASCOPE_STORM_SCOPES
 * sets the number of scopes; ASCOPE_STORM_VERBOSE=1 lists, on a failure,
 * the scopes still in flight and the hubs still open, and every hub at the
 * end. The servers come from scripts/pg-start and scripts/http-start. Each
 * assertion says what it protects where it is made.
 */
#include <ascope/file.h>
#include <ascope/http.h>
#include <ascope/postgres.h>
#include <ascope/sqlite.h>
#include <criterion/criterion.h>

#include <dirent.h>
#include <libpq-fe.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "test_driver.h"
#include "temp_dir.h"

#if defined(__SANITIZE_ADDRESS__)
#define STORM_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define STORM_SANITIZED 1
#endif
#endif
#ifdef STORM_SANITIZED
#define DEFAULT_SCOPES 1500
#else
#define DEFAULT_SCOPES 4000
#endif

#define IN_FLIGHT 64
#define HUB_QUOTA 40      /* scopes one shared connection or session serves */
#define MAX_HUBS 400      /* hubs ever started: a bound, so a storm cannot spin */
#define ATOMIC_TARGETS 8  /* atomic writers race for these few targets */
#define ATOMIC_SIZE 65536 /* bytes of each atomic write */
#define SMALL_SIZE 65536
#define BIG_SIZE (4 << 20)
#define SEM_PERMITS 3
/* SQLite transactions on connections of their own at once. More writers
 * than this, with the shared connections' traffic, made some wait past their
 * busy timeout on a loaded machine: a yielding waiter goes to the back of
 * the ready list, and so does the lock's holder, which then moves one hop
 * per round of the whole list. */
#define SQ_WRITERS 2

/* The files and the HTTP test server's files repeat this 32-byte period
 * (scripts/http-start makes them with `yes 0123456789abcdefghijklmnopqrstu`),
 * so every byte received can be checked against its offset. */
static const char PATTERN[] = "0123456789abcdefghijklmnopqrstu\n";

/* ---- the plan --------------------------------------------------------------------------- */

static uint64_t rng;
static uint32_t rnd(void) { /* xorshift64*: reproducible from the printed seed */
  rng ^= rng >> 12;
  rng ^= rng << 25;
  rng ^= rng >> 27;
  return (uint32_t)((rng * 2685821657736338717ull) >> 32);
}
static unsigned below(unsigned n) {
  return n ? rnd() % n : 0;
}

enum kind {
  K_FILE_READ,
  K_FILE_STREAM,
  K_FILE_ATOMIC,
  K_SQ_QUERY, /* on a hub's connection */
  K_SQ_STREAM,
  K_SQ_TX,
  K_SQ_OWN, /* a connection and a transaction of its own */
  K_PG_QUERY,
  K_PG_STREAM,
  K_PG_TX,
  K_PG_OWN,
  K_HTTP_GET,
  K_HTTP_STREAM,
  K_HTTP_OWN,
  K_HTTP_FAULT,
  K_LOCK,
  K_SEM,
  K_COUNT
};
static const char *const KIND_NAME[K_COUNT] = {
    "file_read",   "file_stream", "file_atomic", "sq_query", "sq_stream", "sq_tx",
    "sq_own",      "pg_query",    "pg_stream",   "pg_tx",    "pg_own",    "http_get",
    "http_stream", "http_own",    "http_fault",  "lock",     "sem"};

enum plan {
  P_NONE,        /* left alone: must succeed unless a server fault or its hub's cancel hit it */
  P_CANCEL_AT,   /* ascope_cancel from a timer, 0-30 ms after the start */
  P_DEADLINE,    /* ascope_set_timeout, 1-40 ms */
  P_CANCEL_NOW,  /* ascope_cancel right after ascope_start, before anything is acquired */
  P_CANCEL_BODY, /* ascope_cancel from its own body, after starting its work */
  P_COUNT
};

/* Shared connections for plain statements (pipelined, many scopes at once)
 * and others for transactions (one scope at a time, behind the hub's lock):
 * statements of other scopes sent while a transaction is open would run
 * inside it, and fail with it. */
enum hub_type { H_SQ, H_SQTX, H_PG, H_PGTX, H_HTTP, H_FAULT, H_COUNT };
static const int HUBS_OF[H_COUNT] = {2, 1, 2, 1, 2, 1};

/* The fault server's endpoints; those marked `broken` can never succeed. */
static const struct {
  const char *path;
  bool broken, hangs;
} FAULTS[] = {
    {"/close", true, false},       {"/cut", true, false},      {"/cut-chunked", true, false},
    {"/garbage", true, false},     {"/slow/20", false, false}, {"/status/503", false, false},
    {"/hang", false, true},        {"/stall", false, true},    {"/never", false, true},
    {"/long-length", false, true},
};
#define NFAULTS (sizeof FAULTS / sizeof FAULTS[0])

typedef struct hub hub;
typedef struct task task;

struct hub {
  int id, type;
  ascope *s;
  void *res; /* the connection or session, once the body ran */
  ascope_lock *txlock;
  int tx_holders; /* scopes inside the transaction lock: never more than one */
  td_manual keep; /* keeps the hub open between its scopes */
  td_spec probe;
  uv_timer_t cancel_timer;
  bool ready, retired, cancelled;
  int assigned, done_calls, status;
  char msg[160];
};

struct task {
  int id, kind, plan;
  unsigned when_ms; /* P_CANCEL_AT: delay; P_DEADLINE: the deadline */
  hub *hub;
  ascope *s; /* until done */
  td_spec probe;
  uv_timer_t timer, resume;
  ascope_op *stream_op; /* the stream's operation, until its end */
  ascope_op *paused;    /* a paused stream, for the resume timer */
  td_op_stats opstats;
  int body_calls, done_calls, status;
  int ops, cb_calls, finals; /* operations started; their callbacks; a stream's final calls */
  int n;                     /* rows or bytes asked for, the fault's index, the atomic target */
  int stop_at;               /* a stream's items before it returns ASCOPE_STOP; 0: never */
  int64_t got;               /* rows or bytes seen */
  int items, http_status, resumed, final_status;
  uint64_t t_start, t_end; /* ns */
  bool head_seen, paused_once, stopped, hub_cancelled, failed_self, ops_stream;
  char bad[200]; /* the first thing seen that must not happen */
  char code[64], msg[200];
};

static struct storm {
  uv_loop_t loop;
  ascope_rt *rt;
  ascope *root;
  td_manual root_keep;
  int root_done_calls, root_status;
  task *tasks;
  int total, launched, finished;
  hub hubs[MAX_HUBS];
  int nhubs;
  bool running; /* still launching: hubs are replaced */
  ascope_lock *lock;
  ascope_sem *sem, *sq_writers;
  int lock_holders, sem_holders, sem_peak, sq_writing;
  /* the disturber */
  PGconn *killer;
  uv_timer_t kill_timer;
  int kill_rounds, terminated;
  char pg_dsn[1200], appname[64];
  char dir[256], small[300], big[300], db[300], targets[ATOMIC_TARGETS][300];
  char http_url[256], fault_url[256];
  char pgtable[64];
  int outcome[K_COUNT][4]; /* ok, cancelled, timed out, other */
  int hub_cancels, connect_timeouts;
} S;

/* The watchdog's view of progress (see watch_run). */
static struct watch {
  atomic_int progress;
  pthread_t thread;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  bool over;
} watch = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};

static void fail_task(task *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void fail_task(task *t, const char *fmt, ...) {
  if (t->bad[0]) return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(t->bad, sizeof t->bad, fmt, ap);
  va_end(ap);
}

static const char *env(const char *name) {
  const char *v = getenv(name);
  if (v == NULL || *v == '\0')
    cr_assert_fail("%s is not set: start the servers with scripts/pg-start and "
                   "scripts/http-start and export the lines they print (scripts/test does it)",
                   name);
  return v;
}

/* The open descriptors, and what they are ("3:socket:[123] 4:/tmp/x ..."). */
static int count_fds(char *what, size_t cap) {
  DIR *d = opendir("/proc/self/fd");
  cr_assert_not_null(d);
  int n = 0;
  size_t used = 0;
  if (cap) what[0] = '\0';
  for (struct dirent *e; (e = readdir(d)) != NULL;) {
    if (e->d_name[0] == '.') continue;
    n++;
    char p[300], target[256];
    snprintf(p, sizeof p, "/proc/self/fd/%s", e->d_name);
    ssize_t len = readlink(p, target, sizeof target - 1);
    target[len > 0 ? len : 0] = '\0';
    if (used + 1 < cap)
      used += (size_t)snprintf(what + used, cap - used, "%s:%s ", e->d_name, target);
    if (used >= cap) used = cap - 1;
  }
  closedir(d);
  return n;
}

static bool pattern_ok(const char *data, size_t len, uint64_t offset) {
  for (size_t i = 0; i < len; i++)
    if (data[i] != PATTERN[(offset + i) % 32]) return false;
  return true;
}

static void write_pattern_file(const char *path, size_t size) {
  FILE *f = fopen(path, "wb");
  cr_assert_not_null(f, "%s", path);
  for (size_t i = 0; i < size; i++) fputc(PATTERN[i % 32], f);
  cr_assert_eq(fclose(f), 0);
}

/* ---- the disturber: terminating this process's PostgreSQL backends ----------------------- */

static PGresult *raw(const char *sql) {
  PGresult *r = PQexec(S.killer, sql);
  ExecStatusType st = PQresultStatus(r);
  if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK)
    cr_assert_fail("oracle: %s: %s", sql, PQresultErrorMessage(r));
  return r;
}

/* One random backend of ours at a time, every 40-200 ms (often enough to
 * hit every phase, rarely enough that shared connections serve a while): connections die
 * while idle, mid-pipeline, mid-stream, mid-transaction and mid-connect.
 * The query runs synchronously on the loop thread (a few hundred µs on a
 * local server), which is one more disturbance of the timing. */
static void kill_tick(uv_timer_t *t) {
  char sql[512];
  snprintf(sql, sizeof sql,
           "SELECT coalesce(sum(pg_terminate_backend(pid)::int), 0) FROM "
           "(SELECT pid FROM pg_stat_activity WHERE application_name = '%s' "
           "ORDER BY random() LIMIT 1) a",
           S.appname);
  PGresult *r = raw(sql);
  S.terminated += atoi(PQgetvalue(r, 0, 0));
  PQclear(r);
  S.kill_rounds++;
  uv_timer_start(t, kill_tick, 40 + below(160), 0);
}

/* ---- hubs: shared connections and sessions ---------------------------------------------- */

static void hub_start(int type);

static void hub_replace(hub *h) {
  if (S.running && S.nhubs < MAX_HUBS) hub_start(h->type);
}

static void hub_retire(hub *h) {
  if (h->retired) return;
  h->retired = true;
  h->ready = false;
  td_manual_end(&h->keep, 0); /* the hub ends once its scopes have */
  hub_replace(h);
}

static void hub_cancel_cb(uv_timer_t *tm) {
  hub *h = tm->data;
  if (h->s == NULL || h->retired) return;
  h->cancelled = true;
  h->retired = true;
  h->ready = false;
  S.hub_cancels++;
  ascope_cancel(h->s); /* reaches every scope using it */
  hub_replace(h);
}

static void hub_body(ascope *s, void *ud) {
  hub *h = ud;
  h->res = ascope_resource(s, 1);
  if (h->res == NULL) cr_assert_fail("hub %d: no resource in its body", h->id);
  if (h->retired) return; /* the storm ended while it connected */
  if (td_manual_start(s, &h->keep) != 0) return;
  h->ready = true;
  /* Some hubs are cancelled while scopes use them: their transactions roll
   * back, their statements and transfers are cut, and the scopes end
   * cancelled without failing anything else. */
  if (below(100) < 15) uv_timer_start(&h->cancel_timer, hub_cancel_cb, 5 + below(100), 0);
}

static void hub_closed(uv_handle_t *hd) {
  (void)hd;
}

static void hub_done(ascope *s, int status, void *ud) {
  hub *h = ud;
  /* A scope's done runs exactly once. */
  if (++h->done_calls != 1) cr_assert_fail("hub %d: done ran %d times", h->id, h->done_calls);
  h->status = status;
  const ascope_err *e = ascope_error(s);
  snprintf(h->msg, sizeof h->msg, "%s", e ? ascope_err_message(e) : "");
  h->s = NULL;
  bool was_ready = !h->retired;
  h->ready = false;
  h->retired = true;
  uv_timer_stop(&h->cancel_timer);
  uv_close((uv_handle_t *)&h->cancel_timer, hub_closed);
  /* Every scope of the hub has ended: nobody holds its transaction lock. */
  if (h->tx_holders != 0) cr_assert_fail("hub %d: %d in its lock at its end", h->id, h->tx_holders);
  ascope_lock_free(h->txlock);
  h->txlock = NULL;
  if (was_ready) hub_replace(h); /* it failed before it served: try another */
}

static void hub_start(int type) {
  hub *h = &S.hubs[S.nhubs];
  memset(h, 0, sizeof *h);
  h->id = S.nhubs++;
  h->type = type;
  h->probe = (td_spec){.name = "hub", .acquire = TD_OK, .release = TD_OK};
  uv_timer_init(&S.loop, &h->cancel_timer);
  h->cancel_timer.data = h;
  h->txlock = ascope_lock_new(S.rt);
  cr_assert_not_null(h->txlock);
  ascope *s = ascope_child(S.root);
  cr_assert_not_null(s, "the root refused a hub");
  h->s = s;
  ascope_set_mode(s, ASCOPE_COLLECT_ALL); /* a failing scope does not take the others down */
  cr_assert_eq(td_use(s, &h->probe), 0);
  switch (type) {
  case H_SQ:
  case H_SQTX:
    cr_assert_eq(ascope_use_sqlite(s, S.db, "wal=1 busy_timeout=10000"), 0);
    break;
  case H_PG:
  case H_PGTX:
    cr_assert_eq(ascope_use_postgres(s, S.pg_dsn, "cancel_timeout=2000"), 0);
    break;
  case H_HTTP: {
    char o[400];
    snprintf(o, sizeof o, "base_url=%s", S.http_url);
    cr_assert_eq(ascope_use_http(s, o), 0);
    break;
  }
  case H_FAULT: {
    char o[400];
    snprintf(o, sizeof o, "base_url=%s", S.fault_url);
    cr_assert_eq(ascope_use_http(s, o), 0);
    break;
  }
  }
  cr_assert_eq(ascope_start(s, hub_body, hub_done, h), 0);
}

static hub *hub_pick(int type) {
  int n = 0;
  hub *c[MAX_HUBS];
  for (int i = 0; i < S.nhubs; i++)
    if (S.hubs[i].type == type && S.hubs[i].ready) c[n++] = &S.hubs[i];
  return n ? c[below((unsigned)n)] : NULL;
}

/* ---- the scopes' work --------------------------------------------------------------------- */

static bool is_pg(int k) {
  return k == K_PG_QUERY || k == K_PG_STREAM || k == K_PG_TX || k == K_PG_OWN;
}

static void resume_cb(uv_timer_t *tm) {
  task *t = tm->data;
  ascope_op *op = t->paused;
  t->paused = NULL;
  if (op == NULL) return;
  int rc = ascope_op_resume(op);
  t->resumed++;
  if (rc != 0) fail_task(t, "resume: %s", ascope_err_name(rc));
}

/* Now and then a stream pauses, and a timer resumes it 1-3 ms later: a
 * cancel, a deadline or a lost connection can land while it is paused. */
static int pause_or_go(task *t) {
  if (t->paused_once || t->stream_op == NULL || below(6) != 0) return ASCOPE_CONTINUE;
  t->paused_once = true;
  t->paused = t->stream_op;
  uv_timer_start(&t->resume, resume_cb, 1 + below(3), 0);
  return ASCOPE_PAUSE;
}

/* A stream's end: nothing may resume it any more. */
static void stream_ended(task *t) {
  t->stream_op = t->paused = NULL;
  uv_timer_stop(&t->resume);
}

static int file_all_cb(ascope *s, int status, const char *data, size_t len, void *ud) {
  (void)s;
  task *t = ud;
  t->cb_calls++;
  /* What was read is the file, whole: a cancelled neighbour's buffer never
   * shows up in it. */
  if (status == 0 && (len != SMALL_SIZE || !pattern_ok(data, len, 0)))
    fail_task(t, "read_all: %zu bytes, not the file's", len);
  return status;
}

static int file_chunk_cb(ascope *s, int status, const char *data, size_t len, void *ud) {
  (void)s;
  task *t = ud;
  if (data == NULL) {
    t->finals++;
    stream_ended(t);
    if (status == 0 && !t->stopped && t->got != BIG_SIZE)
      fail_task(t, "file stream ended with 0 after %lld bytes", (long long)t->got);
    return status;
  }
  if (!pattern_ok(data, len, (uint64_t)t->got)) fail_task(t, "file stream: bytes out of place");
  t->got += (int64_t)len;
  if (t->stop_at && ++t->items >= t->stop_at) {
    t->stopped = true;
    return ASCOPE_STOP;
  }
  return pause_or_go(t);
}

static int status_cb(ascope *s, int status, void *ud) {
  (void)s;
  ((task *)ud)->cb_calls++;
  return status;
}

static int op_cb(ascope *s, int status, void *result, void *ud) {
  (void)s;
  (void)result;
  ((task *)ud)->cb_calls++;
  return status;
}

/* Rows of "SELECT id, x FROM 1..n": every row carries the task's id and its
 * number, so a result delivered to the wrong statement or cut short, or a
 * batch out of order, is seen. */
static void check_rows(task *t, ascope_rows *rows) {
  size_t n = ascope_rows_count(rows);
  for (size_t i = 0; i < n; i++) {
    int64_t id = ascope_rows_int64(rows, i, 0), x = ascope_rows_int64(rows, i, 1);
    if (id != t->id || x != t->got + (int64_t)i + 1) {
      fail_task(t, "row %lld is (%lld, %lld)", (long long)(t->got + (int64_t)i), (long long)id,
                (long long)x);
      return;
    }
  }
  t->got += (int64_t)n;
}

static int sql_query_cb(ascope *s, int status, ascope_rows *rows, void *ud) {
  (void)s;
  task *t = ud;
  t->cb_calls++;
  if (status == 0) {
    if (rows == NULL) {
      fail_task(t, "a query's success without rows");
      return status;
    }
    check_rows(t, rows);
    if (t->got != t->n) fail_task(t, "query: %lld rows of %d", (long long)t->got, t->n);
  }
  return status;
}

static int sql_exec_cb(ascope *s, int status, ascope_rows *rows, void *ud) {
  (void)s;
  (void)rows;
  ((task *)ud)->cb_calls++;
  return status;
}

static int sql_stream_cb(ascope *s, int status, ascope_rows *rows, void *ud) {
  (void)s;
  task *t = ud;
  if (rows == NULL) {
    t->finals++;
    t->final_status = status;
    stream_ended(t);
    if (status == 0 && t->got != t->n)
      fail_task(t, "stream ended with 0 after %lld rows of %d", (long long)t->got, t->n);
    return status;
  }
  if (status != 0) fail_task(t, "a batch with status %d", status);
  check_rows(t, rows);
  if (t->stop_at && ++t->items >= t->stop_at) {
    /* A batch that stops the stream is its last call: no final one. */
    t->stopped = true;
    stream_ended(t);
    return ASCOPE_STOP;
  }
  return pause_or_go(t);
}

static int http_get_cb(ascope *s, int status, ascope_http_resp *r, void *ud) {
  (void)s;
  task *t = ud;
  t->cb_calls++;
  if (status == 0) {
    size_t len = 0;
    const void *b = r ? ascope_http_resp_body(r, &len) : NULL;
    t->http_status = r ? ascope_http_resp_status(r) : 0;
    /* A response reported whole is the file, whole, even on a connection
     * that a cancelled transfer used just before. */
    if (t->http_status != 200 || len != (size_t)t->n || !pattern_ok(b, len, 0))
      fail_task(t, "GET: HTTP %d, %zu bytes of %d, or not the file's", t->http_status, len, t->n);
  }
  return status;
}

static int http_stream_cb(ascope *s, int status, ascope_http_resp *r, void *ud) {
  (void)s;
  task *t = ud;
  if (r == NULL) {
    t->finals++;
    stream_ended(t);
    if (status == 0 && !t->stopped && t->got != t->n)
      fail_task(t, "HTTP stream ended with 0 after %lld bytes of %d", (long long)t->got, t->n);
    return status;
  }
  size_t len = 0;
  const char *b = ascope_http_resp_body(r, &len);
  if (!t->head_seen) {
    t->head_seen = true;
    t->http_status = ascope_http_resp_status(r);
    if (t->http_status != 200 || len != 0) fail_task(t, "stream head: HTTP %d", t->http_status);
    return ASCOPE_CONTINUE;
  }
  if (!pattern_ok(b, len, (uint64_t)t->got)) fail_task(t, "HTTP stream: bytes out of place");
  t->got += (int64_t)len;
  if (t->stop_at && ++t->items >= t->stop_at) {
    t->stopped = true;
    return ASCOPE_STOP;
  }
  return pause_or_go(t);
}

static int http_fault_cb(ascope *s, int status, ascope_http_resp *r, void *ud) {
  (void)s;
  task *t = ud;
  t->cb_calls++;
  if (r) t->http_status = ascope_http_resp_status(r);
  /* A response the server broke (closed, cut, garbled) is never a success. */
  if (status == 0 && FAULTS[t->n].broken)
    fail_task(t, "%s reported success (HTTP %d)", FAULTS[t->n].path, t->http_status);
  return status;
}

static const char SQ_ROWS[] = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c "
                              "WHERE x < $2) SELECT $1, x FROM c";
static const char SQ_SLOW[] = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c "
                              "WHERE x < $1) SELECT count(*) FROM c";
static const char SQ_INSERT[] = "INSERT INTO t(tx, k) VALUES ($1, $2)";
static const char PG_ROWS[] = "SELECT $1::int8, g::int8 FROM generate_series(1, $2::int) g";
static const char PG_SLEEP[] = "SELECT pg_sleep($1)";

/* An operation's start. On a PostgreSQL connection already lost the start
 * itself refuses, with ASCOPE_ECLOSED (and nothing else happens): the scope
 * fails with it, as a caller would. */
static void start_op(ascope *s, task *t, int rc) {
  if (rc == 0) {
    t->ops++;
  } else if (rc == ASCOPE_ECLOSED && is_pg(t->kind)) {
    ascope_fail(s, rc, "the connection is lost");
    t->failed_self = true;
  } else if (rc == ASCOPE_ECANCELED && t->failed_self) {
    /* the scope failed above: it takes no more work */
  } else
    fail_task(t, "an operation refused to start: %s", ascope_err_name(rc));
}

static void sql_rows_op(ascope *s, task *t, ascope_sql *db, bool stream) {
  ascope_sql_params *p = ascope_sql_params_new();
  cr_assert_not_null(p);
  ascope_sql_params_add_int64(p, t->id);
  ascope_sql_params_add_int64(p, t->n);
  const char *sql = is_pg(t->kind) ? PG_ROWS : SQ_ROWS;
  if (stream) {
    int rc = ascope_sql_stream(s, db, sql, p, sql_stream_cb, t, &t->stream_op);
    if (rc == ASCOPE_ECLOSED && is_pg(t->kind))
      ascope_fail(s, rc, "the connection is lost");
    else if (rc != 0)
      fail_task(t, "stream refused: %s", ascope_err_name(rc));
    else
      t->ops_stream = true;
  } else {
    start_op(s, t, ascope_sql_query(s, db, sql, p, sql_query_cb, t));
  }
  ascope_sql_params_free(p);
}

/* Something slow in front, in the same order on the connection, so cancels
 * and deadlines also hit a statement the server is running. */
static void sql_slow_op(ascope *s, task *t, ascope_sql *db) {
  ascope_sql_params *p = ascope_sql_params_new();
  cr_assert_not_null(p);
  if (is_pg(t->kind)) {
    ascope_sql_params_add_double(p, (double)(1 + below(15)) / 1000.0);
    start_op(s, t, ascope_sql_exec(s, db, PG_SLEEP, p, sql_exec_cb, t));
  } else {
    ascope_sql_params_add_int64(p, 1 + below(40000));
    start_op(s, t, ascope_sql_query(s, db, SQ_SLOW, p, sql_exec_cb, t));
  }
  ascope_sql_params_free(p);
}

/* Two rows with the task's id, in one transaction: afterwards the table
 * must hold both or neither. */
static void sql_tx_ops(ascope *s, task *t, ascope_sql *db) {
  char sql[128];
  if (is_pg(t->kind))
    snprintf(sql, sizeof sql, "INSERT INTO %s(tx, k) VALUES ($1, $2)", S.pgtable);
  else
    snprintf(sql, sizeof sql, "%s", SQ_INSERT);
  ascope_sql_params *p = ascope_sql_params_new();
  cr_assert_not_null(p);
  for (int k = 1; k <= 2; k++) {
    ascope_sql_params_clear(p);
    ascope_sql_params_add_int64(p, t->id);
    ascope_sql_params_add_int64(p, k);
    start_op(s, t, ascope_sql_exec(s, db, sql, p, sql_exec_cb, t));
    if (k == 1 && below(2)) sql_slow_op(s, t, db);
  }
  ascope_sql_params_free(p);
}

static void http_get_op(ascope *s, task *t, ascope_http *h) {
  const char *path = t->n == 1024 ? "/static/1k.bin" : "/static/1m.bin";
  start_op(s, t, ascope_http_get(s, h, path, http_get_cb, t));
}

static void task_body(ascope *s, void *ud) {
  task *t = ud;
  t->body_calls++;
  hub *h = t->hub;
  switch (t->kind) {
  case K_FILE_READ:
    start_op(s, t, ascope_file_read_all(s, ascope_resource(s, 1), SIZE_MAX, file_all_cb, t));
    break;
  case K_FILE_STREAM: {
    int rc =
        ascope_file_stream(s, ascope_resource(s, 1), 65536, 0, file_chunk_cb, t, &t->stream_op);
    if (rc != 0) fail_task(t, "file stream refused: %s", ascope_err_name(rc));
    break;
  }
  case K_FILE_ATOMIC: {
    /* 8 bytes of header (the writer's id), then its letter: a target
     * holding anything else was torn or written by a scope that failed. */
    static char buf[ATOMIC_SIZE];
    snprintf(buf, 9, "%07d\n", t->id);
    memset(buf + 8, 'A' + t->id % 26, ATOMIC_SIZE - 8);
    size_t cut = 8 + below(ATOMIC_SIZE - 8);
    ascope_file *f = ascope_resource(s, 1);
    start_op(s, t, ascope_file_write(s, f, buf, cut, -1, status_cb, t));
    start_op(s, t, ascope_file_write(s, f, buf + cut, ATOMIC_SIZE - cut, -1, status_cb, t));
    if (below(2)) start_op(s, t, ascope_file_sync(s, f, status_cb, t));
    break;
  }
  case K_SQ_QUERY:
  case K_PG_QUERY:
    if (below(3) == 0) sql_slow_op(s, t, h->res);
    sql_rows_op(s, t, h->res, false);
    break;
  case K_SQ_STREAM:
  case K_PG_STREAM:
    sql_rows_op(s, t, h->res, true);
    break;
  case K_SQ_TX:
  case K_PG_TX:
    /* Inside the hub's transaction lock: one transaction at a time per
     * connection. */
    if (++h->tx_holders != 1) fail_task(t, "%d scopes inside a hub's lock", h->tx_holders);
    sql_tx_ops(s, t, h->res);
    break;
  case K_SQ_OWN:
    if (++S.sq_writing > SQ_WRITERS) fail_task(t, "%d SQLite writers at once", S.sq_writing);
    sql_tx_ops(s, t, ascope_resource(s, 2));
    break;
  case K_PG_OWN:
    sql_tx_ops(s, t, ascope_resource(s, 1));
    break;
  case K_HTTP_GET:
    http_get_op(s, t, h->res);
    break;
  case K_HTTP_OWN:
    http_get_op(s, t, ascope_resource(s, 1));
    break;
  case K_HTTP_STREAM: {
    ascope_http_req *q = ascope_http_req_new(
        h->res, "GET", t->n == BIG_SIZE * 16 ? "/static/64m.bin" : "/static/1m.bin");
    cr_assert_not_null(q);
    int rc = ascope_http_stream(s, q, http_stream_cb, t, &t->stream_op);
    if (rc != 0) fail_task(t, "HTTP stream refused: %s", ascope_err_name(rc));
    break;
  }
  case K_HTTP_FAULT:
    start_op(s, t, ascope_http_get(s, h->res, FAULTS[t->n].path, http_fault_cb, t));
    break;
  case K_LOCK:
  case K_SEM:
    /* body..done lies inside acquire..release: more scopes here at once
     * than the lock or semaphore admits means it let one in too many. */
    if (t->kind == K_LOCK ? ++S.lock_holders > 1 : ++S.sem_holders > SEM_PERMITS)
      fail_task(t, "%d holders of the lock, %d of the semaphore", S.lock_holders, S.sem_holders);
    if (S.sem_holders > S.sem_peak) S.sem_peak = S.sem_holders;
    start_op(s, t, td_op_start(s, TD_OK_LATE, 1 + below(3), 0, op_cb, t, &t->opstats));
    break;
  }
  if (t->plan == P_CANCEL_BODY) ascope_cancel(s);
}

/* ---- a scope's life ------------------------------------------------------------------------- */

static void launch(void);

static void task_closed(uv_handle_t *hd) {
  (void)hd;
}

static void cancel_cb(uv_timer_t *tm) {
  task *t = tm->data;
  if (t->s) ascope_cancel(t->s);
}

/* A failure other than a cancel or a deadline, allowed where a server
 * fault explains it: a PostgreSQL connection lost to pg_terminate_backend
 * (ASCOPE_ECLOSED, or the server's 57P01 and the 08xxx class), and the
 * fault server's answers. */
static bool fault_explains(const task *t) {
  if (t->kind == K_HTTP_FAULT) return true;
  if (!is_pg(t->kind)) return false;
  if (t->status == ASCOPE_ECLOSED) return true;
  /* A connect that ran into connect_timeout (10 s): seen once in many runs
   * on a loaded machine, with backends being terminated; counted and
   * printed, so a rise shows. */
  if (t->status == ASCOPE_ETIMEDOUT && strcmp(t->code, "08001") == 0) return true;
  return t->status == ASCOPE_EDRIVER &&
         (strncmp(t->code, "08", 2) == 0 || strncmp(t->code, "57P0", 4) == 0);
}

static void dump_in_flight(void) {
  for (int i = 0; i < S.launched; i++) {
    const task *u = &S.tasks[i];
    if (u->done_calls == 0)
      fprintf(stderr,
              "in flight: task %d (%s, plan %d/%u, hub %d) %.0f ms: body %d ops %d/%d "
              "paused %d stream %p acquired %d\n",
              i, KIND_NAME[u->kind], u->plan, u->when_ms, u->hub ? u->hub->id : -1,
              (double)(uv_hrtime() - u->t_start) / 1e6, u->body_calls, u->cb_calls, u->ops,
              u->paused != NULL, (void *)u->stream_op, u->probe.acquired);
  }
  for (int i = 0; i < S.nhubs; i++)
    if (S.hubs[i].done_calls == 0)
      fprintf(stderr, "open hub %d: type %d, served %d, ready %d, retired %d, cancelled %d\n", i,
              S.hubs[i].type, S.hubs[i].assigned, S.hubs[i].ready, S.hubs[i].retired,
              S.hubs[i].cancelled);
}

static void task_done(ascope *s, int status, void *ud) {
  task *t = ud;
  /* A scope's done runs exactly once. */
  if (++t->done_calls != 1) cr_assert_fail("task %d: done ran %d times", t->id, t->done_calls);
  t->status = status;
  t->t_end = uv_hrtime();
  const ascope_err *e = ascope_error(s);
  snprintf(t->code, sizeof t->code, "%s", e && ascope_err_code(e) ? ascope_err_code(e) : "");
  snprintf(t->msg, sizeof t->msg, "%s", e ? ascope_err_message(e) : "");
  t->s = NULL;
  t->paused = t->stream_op = NULL;
  uv_timer_stop(&t->timer);
  uv_timer_stop(&t->resume);
  uv_close((uv_handle_t *)&t->timer, task_closed);
  uv_close((uv_handle_t *)&t->resume, task_closed);
  if (t->body_calls && (t->kind == K_SQ_TX || t->kind == K_PG_TX)) t->hub->tx_holders--;
  if (t->body_calls && t->kind == K_LOCK) S.lock_holders--;
  if (t->body_calls && t->kind == K_SEM) S.sem_holders--;
  if (t->body_calls && t->kind == K_SQ_OWN) S.sq_writing--;
  t->hub_cancelled = t->hub && t->hub->cancelled;

  const char *why = NULL;
  /* The body runs once, and only with every use acquired. */
  if (t->body_calls > 1) why = "the body ran more than once";
  /* The probe (a counting test driver, each scope's first use): acquired at
   * most once, and released exactly when it was acquired — the core's
   * bookkeeping of every use under cancels, deadlines and failures. */
  else if (t->probe.acquire_calls > 1 || t->probe.release_calls != t->probe.acquired)
    why = "the probe was acquired and released unevenly";
  else if (t->body_calls && !t->probe.acquired)
    why = "the body ran without its uses";
  /* Every buffered operation started calls back exactly once, whatever
   * ended it; every stream has exactly one final call (an SQL stream none
   * after a batch stopped it). */
  else if (t->cb_calls != t->ops)
    why = "an operation's callback ran another number of times than once";
  else if (t->body_calls && (t->kind == K_FILE_STREAM || t->kind == K_HTTP_STREAM) &&
           t->finals != 1)
    why = "a stream's final call did not run exactly once";
  else if (t->ops_stream && t->finals != (t->stopped ? 0 : 1))
    why = "an SQL stream's final call ran another number of times than once";
  /* The status is one the plan or a server fault explains: a cancel only
   * where one was made, a deadline only where one was set, no failure out
   * of nowhere, and a scope left alone on a healthy path succeeds. */
  else if (status == ASCOPE_ECANCELED && t->plan != P_CANCEL_AT && t->plan != P_CANCEL_NOW &&
           t->plan != P_CANCEL_BODY && !t->hub_cancelled && !fault_explains(t))
    why = "cancelled without a cancel";
  else if (status == ASCOPE_ETIMEDOUT && t->plan != P_DEADLINE &&
           !(t->kind == K_HTTP_FAULT && FAULTS[t->n].hangs) && !fault_explains(t))
    why = "timed out without a deadline";
  else if (status != 0 && status != ASCOPE_ECANCELED && status != ASCOPE_ETIMEDOUT &&
           !fault_explains(t))
    why = "a failure no fault explains";
  else if (t->plan == P_CANCEL_NOW &&
           (status != ASCOPE_ECANCELED || t->body_calls || t->probe.acquired))
    why = "cancelled before acquiring, yet it acquired, ran or did not end cancelled";
  else if (t->plan == P_CANCEL_BODY && status != ASCOPE_ECANCELED && !fault_explains(t))
    why = "cancelled from its body, yet not cancelled";
  else if (t->plan == P_NONE && status != 0 && !t->hub_cancelled && !fault_explains(t))
    why = "left alone on a healthy path, yet it failed";
  if ((why || t->bad[0]) && getenv("ASCOPE_STORM_VERBOSE")) dump_in_flight();
  if (why || t->bad[0])
    cr_assert_fail("task %d (%s, plan %d/%u ms, hub %d%s): %s; status %s, code '%s': %s; "
                   "body %d, ops %d, callbacks %d, finals %d",
                   t->id, KIND_NAME[t->kind], t->plan, t->when_ms, t->hub ? t->hub->id : -1,
                   t->hub_cancelled ? " cancelled" : "", why ? why : t->bad,
                   ascope_err_name(status), t->code, t->msg, t->body_calls, t->ops, t->cb_calls,
                   t->finals);

  /* A shared connection that is lost serves no more scopes: the hub ends
   * once those on it have, and another takes its place, as in a pool. */
  if (t->hub && is_pg(t->kind) && status != 0 && fault_explains(t) && !t->hub->retired)
    hub_retire(t->hub);
  if (status == ASCOPE_ETIMEDOUT && strcmp(t->code, "08001") == 0) S.connect_timeouts++;
  int o = status == 0 ? 0 : status == ASCOPE_ECANCELED ? 1 : status == ASCOPE_ETIMEDOUT ? 2 : 3;
  S.outcome[t->kind][o]++;
  if (++S.finished == S.total) uv_timer_stop(&S.kill_timer);
  atomic_fetch_add(&watch.progress, 1);
  launch();
}

static int fallback(int kind) {
  switch (kind) {
  case K_SQ_QUERY:
  case K_SQ_STREAM:
  case K_SQ_TX:
    return K_SQ_OWN;
  case K_PG_QUERY:
  case K_PG_STREAM:
  case K_PG_TX:
    return K_PG_OWN;
  default:
    return K_HTTP_OWN;
  }
}

static int hub_type_of(int kind) {
  switch (kind) {
  case K_SQ_QUERY:
  case K_SQ_STREAM:
    return H_SQ;
  case K_SQ_TX:
    return H_SQTX;
  case K_PG_QUERY:
  case K_PG_STREAM:
    return H_PG;
  case K_PG_TX:
    return H_PGTX;
  case K_HTTP_GET:
  case K_HTTP_STREAM:
    return H_HTTP;
  case K_HTTP_FAULT:
    return H_FAULT;
  default:
    return -1;
  }
}

static void launch_one(void) {
  task *t = &S.tasks[S.launched];
  t->id = S.launched++;
  t->kind = (int)below(K_COUNT);
  unsigned p = below(100);
  t->plan = p < 25   ? P_NONE
            : p < 65 ? P_CANCEL_AT
            : p < 90 ? P_DEADLINE
            : p < 95 ? P_CANCEL_NOW
                     : P_CANCEL_BODY;
  t->when_ms = t->plan == P_CANCEL_AT ? below(31) : t->plan == P_DEADLINE ? 1 + below(40) : 0;
  int ht = hub_type_of(t->kind);
  hub *h = ht >= 0 ? hub_pick(ht) : NULL;
  if (ht >= 0 && h == NULL) t->kind = fallback(t->kind); /* none open now */
  t->hub = h;
  t->probe =
      (td_spec){.name = "probe", .acquire = TD_OK_LATE, .release = TD_OK, .delay_ms = below(3)};
  uv_timer_init(&S.loop, &t->timer);
  uv_timer_init(&S.loop, &t->resume);
  t->timer.data = t->resume.data = t;

  ascope *s = ascope_child(h ? h->s : S.root);
  cr_assert_not_null(s, "task %d: its parent refused it", t->id);
  t->s = s;
  cr_assert_eq(td_use(s, &t->probe), 0);
  switch (t->kind) {
  case K_FILE_READ:
    cr_assert_eq(ascope_use_file(s, S.small, "r"), 0);
    break;
  case K_FILE_STREAM:
    cr_assert_eq(ascope_use_file(s, S.big, "r"), 0);
    t->stop_at = below(3) == 0 ? 1 + (int)below(40) : 0;
    break;
  case K_FILE_ATOMIC:
    t->n = (int)below(ATOMIC_TARGETS);
    cr_assert_eq(ascope_use_file(s, S.targets[t->n], "w atomic"), 0);
    break;
  case K_SQ_QUERY:
  case K_PG_QUERY:
    t->n = 1 + (int)below(2000);
    break;
  case K_SQ_STREAM:
  case K_PG_STREAM:
    t->n = 1 + (int)below(3000);
    t->stop_at = below(4) == 0 ? 1 + (int)below(6) : 0;
    break;
  case K_SQ_TX:
    cr_assert_eq(ascope_use_lock(s, h->txlock), 0);
    cr_assert_eq(ascope_use_sql_tx(s, h->res, "begin=immediate"), 0);
    break;
  case K_PG_TX:
    cr_assert_eq(ascope_use_lock(s, h->txlock), 0);
    cr_assert_eq(ascope_use_sql_tx(s, h->res, NULL), 0);
    break;
  case K_SQ_OWN:
    /* As an application would, the storm bounds its SQLite writers: each
     * one more makes every other's wait for the lock longer. */
    cr_assert_eq(ascope_use_sem(s, S.sq_writers), 0);
    cr_assert_eq(ascope_use_sqlite(s, S.db, "wal=1 busy_timeout=10000"), 0);
    cr_assert_eq(ascope_use_sql_tx_at(s, ascope_sqlite(), 2, "begin=immediate"), 0);
    break;
  case K_PG_OWN:
    cr_assert_eq(ascope_use_postgres(s, S.pg_dsn, "connect_timeout=10000"), 0);
    cr_assert_eq(ascope_use_sql_tx_at(s, ascope_postgres(), 1, NULL), 0);
    break;
  case K_HTTP_GET:
  case K_HTTP_OWN:
    t->n = below(4) == 0 ? 1048576 : 1024;
    if (t->kind == K_HTTP_OWN) {
      char o[400];
      snprintf(o, sizeof o, "base_url=%s", S.http_url);
      cr_assert_eq(ascope_use_http(s, o), 0);
    }
    break;
  case K_HTTP_STREAM:
    /* 64 MiB only where something will cut it short. */
    t->n = t->plan != P_NONE && below(3) == 0 ? BIG_SIZE * 16 : 1048576;
    t->stop_at = below(4) == 0 ? 1 + (int)below(20) : 0;
    break;
  case K_HTTP_FAULT:
    t->n = (int)below(NFAULTS);
    /* A request the server never answers ends by a deadline at the latest. */
    if (FAULTS[t->n].hangs && t->plan != P_DEADLINE)
      cr_assert_eq(ascope_set_timeout(s, 30 + below(60)), 0);
    break;
  case K_LOCK:
    cr_assert_eq(ascope_use_lock(s, S.lock), 0);
    break;
  case K_SEM:
    cr_assert_eq(ascope_use_sem(s, S.sem), 0);
    break;
  }
  if (t->plan == P_DEADLINE) cr_assert_eq(ascope_set_timeout(s, t->when_ms), 0);
  t->t_start = uv_hrtime();
  cr_assert_eq(ascope_start(s, task_body, task_done, t), 0);
  if (h && ++h->assigned >= HUB_QUOTA) hub_retire(h);
  if (t->plan == P_CANCEL_AT) uv_timer_start(&t->timer, cancel_cb, t->when_ms, 0);
  if (t->plan == P_CANCEL_NOW) ascope_cancel(s); /* last: done may run inside it */
}

static void launch(void) {
  while (S.launched < S.total && S.launched - S.finished < IN_FLIGHT) launch_one();
  if (S.launched == S.total && S.running) {
    S.running = false; /* no more hubs: those open end once their scopes have */
    for (int i = 0; i < S.nhubs; i++)
      if (S.hubs[i].s && !S.hubs[i].retired) hub_retire(&S.hubs[i]);
    td_manual_end(&S.root_keep, 0);
  }
}

static void root_body(ascope *s, void *ud) {
  (void)ud;
  S.root = s;
  cr_assert_eq(td_manual_start(s, &S.root_keep), 0);
  for (int type = 0; type < H_COUNT; type++)
    for (int i = 0; i < HUBS_OF[type]; i++) hub_start(type);
  launch();
}

static void root_done(ascope *s, int status, void *ud) {
  (void)s;
  (void)ud;
  S.root_done_calls++;
  S.root_status = status;
}

/* ---- the watchdog -----------------------------------------------------------------------------
 */

/* A storm that stops making progress is a hang in a driver or the core, and
 * ctest's timeout would only say "Timeout". A thread watches the count of
 * scopes ended; when it stands still for ASCOPE_STORM_STALL_S seconds
 * (default 120; the whole storm takes seconds) it prints the scopes in
 * flight, the open hubs, the drivers' books and every thread's stack (when
 * gdb is installed), then aborts. Its reads of the test's state race with
 * the loop, which is acceptable: the process is about to abort. */
/* What the server's backends are doing, from a connection of the
 * watchdog's own: a storm stalled on the server shows here. */
static void dump_server(void) {
  const char *dsn = getenv("ASCOPE_PG_DSN");
  if (dsn == NULL) return;
  PGconn *c = PQconnectdb(dsn);
  if (PQstatus(c) != CONNECTION_OK) {
    fprintf(stderr, "storm: the watchdog cannot connect: %s", PQerrorMessage(c));
    PQfinish(c);
    return;
  }
  fprintf(stderr, "storm: the disturber's backend is %d\n", S.killer ? PQbackendPID(S.killer) : 0);
  PGresult *r = PQexec(c, "SELECT pid, application_name, backend_type, state, wait_event_type, "
                          "wait_event, now() - query_start, left(query, 100) "
                          "FROM pg_stat_activity WHERE pid <> pg_backend_pid() ORDER BY pid");
  for (int i = 0; PQresultStatus(r) == PGRES_TUPLES_OK && i < PQntuples(r); i++) {
    fprintf(stderr, "backend:");
    for (int j = 0; j < PQnfields(r); j++) fprintf(stderr, " %s |", PQgetvalue(r, i, j));
    fprintf(stderr, "\n");
  }
  PQclear(r);
  r = PQexec(c, "SELECT pid, locktype, mode, relation::regclass FROM pg_locks WHERE NOT granted");
  for (int i = 0; PQresultStatus(r) == PGRES_TUPLES_OK && i < PQntuples(r); i++)
    fprintf(stderr, "lock wait: pid %s %s %s %s\n", PQgetvalue(r, i, 0), PQgetvalue(r, i, 1),
            PQgetvalue(r, i, 2), PQgetvalue(r, i, 3));
  PQclear(r);
  PQfinish(c);
}

static void watch_stalled(int secs) {
  fprintf(stderr,
          "storm: no scope ended for %d s: %d of %d ended, %d launched; pg connections %lld, "
          "sql requests %lld, sqlite running %lld\n",
          secs, S.finished, S.total, S.launched, (long long)ascope_postgres_stat("connections"),
          (long long)ascope_sql_stat("requests"), (long long)ascope_sqlite_stat("running"));
  dump_in_flight();
  dump_server();
  /* With the stacks, the PostgreSQL driver's books of each open shared
   * connection: the requests it holds and what it waits for. */
  char cmd[8192], ex[7000] = "";
  size_t n = 0;
  for (int i = 0; i < S.nhubs && n < sizeof ex - 400; i++) {
    const hub *h = &S.hubs[i];
    if (h->done_calls || h->res == NULL || (h->type != H_PG && h->type != H_PGTX)) continue;
    const char *c = "((struct pg_state_mem *)%p)->c";
    char conn[80];
    snprintf(conn, sizeof conn, c, h->res);
    n += (size_t)snprintf(
        ex + n, sizeof ex - n,
        " -ex 'p *%s' -ex 'p %s->steps[%s->step_head]' -ex 'p *%s->steps[%s->step_head].r'"
        " -ex 'p %s->solo' -ex 'p %s->send_head' -ex 'p %s->victims'",
        conn, conn, conn, conn, conn, conn, conn, conn);
  }
  /* And the first operation of each scope still in flight (its request
   * and the driver's part of it, for a SQL one). */
  for (int i = 0, shown = 0; i < S.launched && shown < 4 && n < sizeof ex - 700; i++) {
    const task *u = &S.tasks[i];
    if (u->done_calls || u->s == NULL) continue;
    shown++;
    const char *list = is_pg(u->kind) || u->kind == K_SQ_QUERY || u->kind == K_SQ_STREAM ||
                               u->kind == K_SQ_TX || u->kind == K_SQ_OWN
                           ? "ops_cancelled"
                           : NULL;
    for (int l = 0; list && l < 2; l++, list = "ops")
      n += (size_t)snprintf(
          ex + n, sizeof ex - n,
          " -ex 'set $q=((struct ascope *)%p)->%s.next' -ex 'p $q == &((struct ascope *)%p)->%s'"
          " -ex 'set $o=(struct ascope_op *)((char *)$q - (unsigned long)&((struct ascope_op "
          "*)0)->node)' -ex 'p *(struct ascope_sql_req *)$o->data'"
          " -ex 'p *(struct pg_req *)ascope_sql_req_data($o->data)'",
          (void *)u->s, list, (void *)u->s, list);
  }
  snprintf(cmd, sizeof cmd,
           "command -v gdb >/dev/null && gdb -batch -nx -p %d -ex 'thread apply all bt'%s 2>&1 "
           "| grep -v '^\\[New LWP' >&2",
           (int)getpid(), ex);
  if (system(cmd) != 0) fprintf(stderr, "storm: no stacks (gdb missing or refused)\n");
  abort();
}

static void *watch_run(void *arg) {
  (void)arg;
  const char *v = getenv("ASCOPE_STORM_STALL_S");
  int limit = v && *v ? atoi(v) : 120, still = 0, last = -1;
  pthread_mutex_lock(&watch.mu);
  while (!watch.over) {
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 1;
    pthread_cond_timedwait(&watch.cv, &watch.mu, &until);
    int now = atomic_load(&watch.progress);
    still = now == last ? still + 1 : 0;
    last = now;
    if (!watch.over && still >= limit) watch_stalled(still);
  }
  pthread_mutex_unlock(&watch.mu);
  return NULL;
}

static void watch_end(void) {
  pthread_mutex_lock(&watch.mu);
  watch.over = true;
  pthread_cond_signal(&watch.cv);
  pthread_mutex_unlock(&watch.mu);
  pthread_join(watch.thread, NULL);
}

/* ---- checks after the storm ------------------------------------------------------------------ */

/* The transactions' rows, as the databases hold them: counts[id] rows of
 * task id. */
static void pg_counts(int *counts) {
  char sql[200];
  snprintf(sql, sizeof sql, "SELECT tx, count(*) FROM %s GROUP BY tx", S.pgtable);
  PGresult *r = raw(sql);
  for (int i = 0; i < PQntuples(r); i++) {
    int id = atoi(PQgetvalue(r, i, 0));
    cr_assert(id >= 0 && id < S.total, "a row of no task: %d", id);
    counts[id] = atoi(PQgetvalue(r, i, 1));
  }
  PQclear(r);
  snprintf(sql, sizeof sql, "DROP TABLE %s", S.pgtable);
  PQclear(raw(sql));
}

static void sq_counts(int *counts) {
  sqlite3 *db = NULL;
  cr_assert_eq(sqlite3_open_v2(S.db, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
  sqlite3_stmt *st = NULL;
  cr_assert_eq(sqlite3_prepare_v2(db, "SELECT tx, count(*) FROM t GROUP BY tx", -1, &st, NULL),
               SQLITE_OK, "%s", sqlite3_errmsg(db));
  int rc;
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    int id = sqlite3_column_int(st, 0);
    cr_assert(id >= 0 && id < S.total, "a row of no task: %d", id);
    counts[id] = sqlite3_column_int(st, 1);
  }
  cr_assert_eq(rc, SQLITE_DONE, "%s", sqlite3_errmsg(db));
  sqlite3_finalize(st);
  cr_assert_eq(sqlite3_close(db), SQLITE_OK);
}

static void check_transactions(void) {
  int *pg = calloc((size_t)S.total, sizeof *pg), *sq = calloc((size_t)S.total, sizeof *sq);
  cr_assert(pg && sq);
  pg_counts(pg);
  sq_counts(sq);
  for (int i = 0; i < S.total; i++) {
    const task *t = &S.tasks[i];
    bool pgtx = t->kind == K_PG_TX || t->kind == K_PG_OWN;
    bool sqtx = t->kind == K_SQ_TX || t->kind == K_SQ_OWN;
    /* Only transaction scopes wrote, and all or nothing of each. */
    if ((!pgtx && pg[i]) || (!sqtx && sq[i]) || (pg[i] != 0 && pg[i] != 2) ||
        (sq[i] != 0 && sq[i] != 2))
      cr_assert_fail("task %d (%s): %d rows in PostgreSQL, %d in SQLite", i, KIND_NAME[t->kind],
                     pg[i], sq[i]);
    /* A transaction whose scope succeeded is committed. (In PostgreSQL a
     * COMMIT whose connection died under it may have committed though the
     * scope hears that it did not: only one direction holds there.) */
    if (pgtx && t->status == 0 && pg[i] != 2)
      cr_assert_fail("task %d: succeeded, yet its PostgreSQL rows are missing", i);
    /* In SQLite, nothing comes between the scope's outcome and the
     * COMMIT or ROLLBACK it decides: rows exactly when it succeeded. */
    if (sqtx && (t->status == 0) != (sq[i] == 2))
      cr_assert_fail("task %d: status %s, yet %d SQLite rows", i, ascope_err_name(t->status),
                     sq[i]);
  }
  free(pg);
  free(sq);
}

static void check_files(void) {
  bool written[ATOMIC_TARGETS] = {false};
  for (int i = 0; i < S.total; i++)
    if (S.tasks[i].kind == K_FILE_ATOMIC && S.tasks[i].status == 0) written[S.tasks[i].n] = true;
  static char buf[ATOMIC_SIZE + 1];
  for (int k = 0; k < ATOMIC_TARGETS; k++) {
    FILE *f = fopen(S.targets[k], "rb");
    /* A successful atomic write leaves its target; a failed one never
     * creates it. */
    cr_assert_eq(f != NULL, written[k], "target %d: exists %d, a writer succeeded %d", k, f != NULL,
                 written[k]);
    if (f == NULL) continue;
    size_t len = fread(buf, 1, sizeof buf, f);
    fclose(f);
    /* The target is one whole write, by a scope that succeeded: never torn,
     * never the work of a scope cancelled or timed out. */
    int id = atoi(buf);
    cr_assert_eq(len, ATOMIC_SIZE, "target %d: %zu bytes", k, len);
    cr_assert(id >= 0 && id < S.total, "target %d: header '%.8s'", k, buf);
    const task *t = &S.tasks[id];
    cr_assert(t->kind == K_FILE_ATOMIC && t->n == k && t->status == 0,
              "target %d holds the write of task %d (%s, status %s)", k, id, KIND_NAME[t->kind],
              ascope_err_name(t->status));
    for (size_t i = 8; i < ATOMIC_SIZE; i++)
      if (buf[i] != 'A' + id % 26) cr_assert_fail("target %d: torn at byte %zu", k, i);
  }
  /* No temporary file of an atomic write is left behind, whatever ended
   * its scope; then the directory goes. */
  DIR *d = opendir(S.dir);
  cr_assert_not_null(d);
  int left = 0;
  char first[256] = "";
  for (struct dirent *e; (e = readdir(d)) != NULL;) {
    if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
    if (e->d_name[0] == '.' && left++ == 0) snprintf(first, sizeof first, "%s", e->d_name);
    char p[600];
    snprintf(p, sizeof p, "%s/%s", S.dir, e->d_name);
    unlink(p);
  }
  closedir(d);
  rmdir(S.dir);
  cr_assert_eq(left, 0, "%d temporary files left, first: %s", left, first);
}

/* ---- the test ------------------------------------------------------------------------------ */

static void setup_files(void) {
  snprintf(S.dir, sizeof S.dir, "%s/ascope-storm.XXXXXX", t_temp_root());
  cr_assert_not_null(mkdtemp(S.dir));
  snprintf(S.small, sizeof S.small, "%s/small.bin", S.dir);
  snprintf(S.big, sizeof S.big, "%s/big.bin", S.dir);
  snprintf(S.db, sizeof S.db, "%s/db.sqlite", S.dir);
  for (int k = 0; k < ATOMIC_TARGETS; k++)
    snprintf(S.targets[k], sizeof S.targets[k], "%s/out%d", S.dir, k);
  write_pattern_file(S.small, SMALL_SIZE);
  write_pattern_file(S.big, BIG_SIZE);
  sqlite3 *db = NULL;
  cr_assert_eq(sqlite3_open(S.db, &db), SQLITE_OK);
  cr_assert_eq(sqlite3_exec(db, "PRAGMA journal_mode=WAL; CREATE TABLE t(tx INTEGER, k INTEGER)",
                            NULL, NULL, NULL),
               SQLITE_OK, "%s", sqlite3_errmsg(db));
  cr_assert_eq(sqlite3_close(db), SQLITE_OK);
}

static void setup_servers(void) {
  const char *dsn = env("ASCOPE_PG_DSN");
  snprintf(S.appname, sizeof S.appname, "ascope_storm_%d", (int)getpid());
  snprintf(S.pgtable, sizeof S.pgtable, "storm_%d", (int)getpid());
  /* The storm's connections carry an application_name of this process, so
   * the disturber finds them, and only them. */
  if (strncmp(dsn, "postgres", 8) == 0)
    snprintf(S.pg_dsn, sizeof S.pg_dsn, "%s%sapplication_name=%s", dsn,
             strchr(dsn, '?') ? "&" : "?", S.appname);
  else
    snprintf(S.pg_dsn, sizeof S.pg_dsn, "%s application_name=%s", dsn, S.appname);
  S.killer = PQconnectdb(dsn);
  cr_assert_eq(PQstatus(S.killer), CONNECTION_OK, "oracle: %s", PQerrorMessage(S.killer));
  char sql[200];
  snprintf(sql, sizeof sql, "CREATE TABLE %s(tx int, k int)", S.pgtable);
  PQclear(raw(sql));
  snprintf(S.http_url, sizeof S.http_url, "%s", env("ASCOPE_HTTP_URL"));
  snprintf(S.fault_url, sizeof S.fault_url, "%s", env("ASCOPE_HTTP_FAULT_URL"));
}

/* After a failure too: the files and the PostgreSQL table go, so a failing
 * run leaves nothing behind but its report. */
static void storm_fini(void) {
  if (S.killer) {
    char sql[200];
    snprintf(sql, sizeof sql, "DROP TABLE %s", S.pgtable);
    PQclear(PQexec(S.killer, sql));
    PQfinish(S.killer);
    S.killer = NULL;
  }
  DIR *d = S.dir[0] ? opendir(S.dir) : NULL;
  if (d == NULL) return;
  for (struct dirent *e; (e = readdir(d)) != NULL;) {
    char p[600];
    snprintf(p, sizeof p, "%s/%s", S.dir, e->d_name);
    if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) unlink(p);
  }
  closedir(d);
  rmdir(S.dir);
}

TestSuite(storm, .fini = storm_fini, .timeout = 600);

Test(storm, every_driver_cancelled_and_disturbed) {
  const char *v = getenv("ASCOPE_STORM_SCOPES");
  S.total = v && *v ? atoi(v) : DEFAULT_SCOPES;
  cr_assert_gt(S.total, 0);
  v = getenv("ASCOPE_STORM_SEED");
  uint64_t seed = v && *v ? strtoull(v, NULL, 10) : (uv_hrtime() ^ (uint64_t)getpid());
  seed %= 1000000007u;
  rng = seed * 0x9E3779B97F4A7C15ull + 1;
  fprintf(stderr, "storm: %d scopes, %d in flight, ASCOPE_STORM_SEED=%llu\n", S.total, IN_FLIGHT,
          (unsigned long long)seed);
  S.tasks = calloc((size_t)S.total, sizeof *S.tasks);
  cr_assert_not_null(S.tasks);

  setup_files();
  /* Counted before the loop, the runtime, the drivers and the disturber
   * exist: all of them must give back every descriptor they took. */
  /* libuv opens a pipe of its own, for its signal handling, at the first
   * loop's start, and keeps it for the process: a loop made and closed
   * before the count takes it out of the comparison. */
  uv_loop_t warm;
  cr_assert_eq(uv_loop_init(&warm), 0);
  cr_assert_eq(uv_loop_close(&warm), 0);
  char before[2048], after[2048];
  int fds = count_fds(before, sizeof before);
  setup_servers();

  cr_assert_eq(uv_loop_init(&S.loop), 0);
  S.rt = ascope_rt_new(&S.loop);
  cr_assert_not_null(S.rt);
  S.lock = ascope_lock_new(S.rt);
  S.sem = ascope_sem_new(S.rt, SEM_PERMITS);
  S.sq_writers = ascope_sem_new(S.rt, SQ_WRITERS);
  cr_assert(S.lock && S.sem && S.sq_writers);
  uv_timer_init(&S.loop, &S.kill_timer);
  uv_timer_start(&S.kill_timer, kill_tick, 10, 0);
  S.running = true;

  uint64_t t0 = uv_hrtime();
  ascope *root = ascope_new(S.rt);
  cr_assert_not_null(root);
  ascope_set_mode(root, ASCOPE_COLLECT_ALL);
  cr_assert_eq(pthread_create(&watch.thread, NULL, watch_run, NULL), 0);
  cr_assert_eq(ascope_start(root, root_body, root_done, NULL), 0);
  cr_assert_eq(ascope_rt_run(S.rt), 0);
  watch_end();
  double secs = (double)(uv_hrtime() - t0) / 1e9;

  /* Every scope ended, each exactly once (task_done fails at once on a
   * second call; here: none was lost), and so did every hub and the root. */
  cr_assert_eq(S.root_done_calls, 1);
  cr_assert_eq(S.root_status, 0);
  cr_assert_eq(S.launched, S.total);
  cr_assert_eq(S.finished, S.total, "%d of %d scopes ended", S.finished, S.total);
  for (int i = 0; i < S.total; i++)
    cr_assert_eq(S.tasks[i].done_calls, 1, "task %d: done ran %d times", i, S.tasks[i].done_calls);
  for (int i = 0; i < S.nhubs; i++) {
    const hub *h = &S.hubs[i];
    cr_assert_eq(h->done_calls, 1, "hub %d: done ran %d times", i, h->done_calls);
    /* A hub ends well, or cancelled when it was; a PostgreSQL hub may also
     * hear of its lost connection. */
    bool ok = h->status == 0 || (h->cancelled && h->status == ASCOPE_ECANCELED) ||
              ((h->type == H_PG || h->type == H_PGTX) && h->status != 0);
    cr_assert(ok, "hub %d (type %d): %s: %s", i, h->type, ascope_err_name(h->status), h->msg);
  }
  if (getenv("ASCOPE_STORM_VERBOSE"))
    for (int i = 0; i < S.nhubs; i++)
      fprintf(stderr, "hub %d: type %d, served %d, cancelled %d, %s: %s\n", i, S.hubs[i].type,
              S.hubs[i].assigned, S.hubs[i].cancelled, ascope_err_name(S.hubs[i].status),
              S.hubs[i].msg);
  /* The probes: every acquire released (td_live counts those held). */
  cr_assert_eq(td_live(), 0, "%d probes still held", td_live());
  cr_assert_eq(S.lock_holders + S.sem_holders + S.sq_writing, 0);

  uv_timer_stop(&S.kill_timer);
  uv_close((uv_handle_t *)&S.kill_timer, NULL);
  ascope_lock_free(S.lock);
  ascope_sem_free(S.sem);
  ascope_sem_free(S.sq_writers);
  cr_assert_eq(ascope_rt_free(S.rt), 0);
  uv_run(&S.loop, UV_RUN_DEFAULT);
  /* Every handle of the drivers and of the test is closed. */
  cr_assert_eq(uv_loop_close(&S.loop), 0, "a libuv handle was left open");

  /* The drivers' own books: every connection opened was closed, no
   * statement, transaction or result is still held, nothing runs on the
   * threadpool. */
  cr_assert_eq(ascope_sqlite_stat("connections"), 0);
  cr_assert_eq(ascope_sqlite_stat("opened"), ascope_sqlite_stat("closed"));
  cr_assert_eq(ascope_sqlite_stat("running"), 0);
  cr_assert_eq(ascope_sqlite_stat("statements"), 0);
  cr_assert_eq(ascope_postgres_stat("connections"), 0);
  cr_assert_eq(ascope_postgres_stat("opened"), ascope_postgres_stat("closed"));
  cr_assert_eq(ascope_sql_stat("requests"), 0);
  cr_assert_eq(ascope_sql_stat("transactions"), 0);
  cr_assert_eq(ascope_sql_stat("rows_live"), 0);

  check_transactions();
  PQfinish(S.killer);
  S.killer = NULL;
  check_files();
  /* No descriptor leaked: sockets, files, database handles, loop fds. */
  int fds_after = count_fds(after, sizeof after);
  cr_assert_eq(fds_after, fds, "%d descriptors open, %d before the storm: %s; before: %s",
               fds_after, fds, after, before);

  int sum[4] = {0};
  char line[2048];
  size_t n = 0;
  for (int k = 0; k < K_COUNT; k++) {
    n += (size_t)snprintf(line + n, sizeof line - n, " %s %d/%d/%d/%d", KIND_NAME[k],
                          S.outcome[k][0], S.outcome[k][1], S.outcome[k][2], S.outcome[k][3]);
    for (int o = 0; o < 4; o++) sum[o] += S.outcome[k][o];
  }
  fprintf(stderr,
          "storm: %.1f s; ok %d, cancelled %d, timed out %d, failed %d; %d hubs (%d cancelled); "
          "%d backends terminated in %d rounds; pg connections %lld, sqlite %lld (busy %lld, "
          "yields %lld); semaphore peak %d; PostgreSQL connects timed out %d\nstorm: "
          "ok/cancelled/timed out/failed:%s\n",
          secs, sum[0], sum[1], sum[2], sum[3], S.nhubs, S.hub_cancels, S.terminated, S.kill_rounds,
          (long long)ascope_postgres_stat("opened"), (long long)ascope_sqlite_stat("opened"),
          (long long)ascope_sqlite_stat("busy"), (long long)ascope_sqlite_stat("yields"),
          S.sem_peak, S.connect_timeouts, line);
  /* The storm was one: with enough scopes, every ending happened, and the
   * disturber did terminate connections under them. */
  if (S.total >= 1000) {
    cr_assert(sum[0] > 0 && sum[1] > 0 && sum[2] > 0, "ok %d, cancelled %d, timed out %d", sum[0],
              sum[1], sum[2]);
    cr_assert_gt(S.terminated, 0, "no backend was terminated");
  }
  free(S.tasks);
}
