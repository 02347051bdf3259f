#include "sqlite_support.h"

#include <ftw.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "temp_dir.h"

ascope_rt *T_rt;
static char dir[256];

static int rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
  (void)sb;
  (void)flag;
  (void)ftw;
  return remove(path);
}

/* Also at exit: a failed assertion may end the test's process before .fini. */
static void rm_dir(void) {
  if (dir[0]) nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

void t_init(void) {
  cr_assert_not_null(t_temp_dir(dir, sizeof dir, "ascope-sqlite"));
  atexit(rm_dir);
  T_rt = ascope_rt_new(NULL);
  cr_assert_not_null(T_rt);
}

void t_fini(void) {
  if (T_rt) cr_assert_eq(ascope_rt_free(T_rt), 0);
  T_rt = NULL;
  t_check_clean();
  rm_dir();
}

const char *t_path(const char *name) {
  static char bufs[8][320];
  static int k;
  char *b = bufs[k++ & 7];
  snprintf(b, sizeof bufs[0], "%s/%s", dir, name);
  return b;
}

void t_check_clean(void) {
  cr_assert_eq(ascope_sqlite_stat("connections"), 0, "a connection was leaked");
  cr_assert_eq(ascope_sqlite_stat("running"), 0, "a hop is still running");
  cr_assert_eq(ascope_sqlite_stat("statements"), 0, "a prepared statement was leaked");
  cr_assert_eq(ascope_sqlite_stat("opened"), ascope_sqlite_stat("closed"),
               "opened and closed connections differ");
  cr_assert_eq(ascope_sql_stat("requests"), 0, "a request was leaked");
  cr_assert_eq(ascope_sql_stat("transactions"), 0, "a transaction was left open");
}

/* ---- scopes -------------------------------------------------------------------------- */

int t_run_db(t_scope *t, const char *path, const char *options) {
  ascope *s = ascope_new(T_rt);
  cr_assert_eq(ascope_use_sqlite(s, path, options), 0);
  return t_run(s, t);
}

/* ---- the raw oracle ---------------------------------------------------------------------- */

static sqlite3 *raw_open(const char *path) {
  sqlite3 *db = NULL;
  cr_assert_eq(sqlite3_open(path, &db), SQLITE_OK);
  sqlite3_busy_timeout(db, 5000);
  return db;
}

void t_raw(const char *path, const char *sql) {
  sqlite3 *db = raw_open(path);
  char *err = NULL;
  int rc = sqlite3_exec(db, sql, NULL, NULL, &err);
  cr_assert_eq(rc, SQLITE_OK, "%s: %s", sql, err ? err : "");
  sqlite3_free(err);
  sqlite3_close(db);
}

static sqlite3_stmt *raw_one(sqlite3 *db, const char *sql) {
  sqlite3_stmt *st = NULL;
  cr_assert_eq(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK, "%s", sqlite3_errmsg(db));
  cr_assert_eq(sqlite3_step(st), SQLITE_ROW, "%s: no row", sql);
  return st;
}

int64_t t_raw_int(const char *path, const char *sql) {
  sqlite3 *db = raw_open(path);
  sqlite3_stmt *st = raw_one(db, sql);
  int64_t v = sqlite3_column_int64(st, 0);
  sqlite3_finalize(st);
  sqlite3_close(db);
  return v;
}

char *t_raw_text(const char *path, const char *sql) {
  sqlite3 *db = raw_open(path);
  sqlite3_stmt *st = raw_one(db, sql);
  const char *t = (const char *)sqlite3_column_text(st, 0);
  char *v = strdup(t ? t : "");
  sqlite3_finalize(st);
  sqlite3_close(db);
  return v;
}

/* ---- timers and the pool ------------------------------------------------------------------- */

/* t_after and t_cancel_cb: tests/support/scope_record.c */

struct when {
  bool (*cond)(void *ud);
  void (*fn)(void *ud);
  void *ud;
};

static void when_check(void *ud) {
  struct when *w = ud;
  if (!w->cond(w->ud)) {
    t_after(2, when_check, w);
    return;
  }
  w->fn(w->ud);
  free(w);
}

void t_when(bool (*cond)(void *ud), void (*fn)(void *ud), void *ud) {
  struct when *w = malloc(sizeof *w);
  cr_assert_not_null(w);
  *w = (struct when){cond, fn, ud};
  t_after(2, when_check, w);
}

bool t_busy_waiting(void *ud) {
  (void)ud;
  return ascope_sqlite_stat("busy") > 0;
}

struct block {
  uv_work_t w;
  uint64_t ms;
};

static void block_work(uv_work_t *w) {
  struct block *b = w->data;
  usleep((useconds_t)(b->ms * 1000));
}

static void block_after(uv_work_t *w, int status) {
  (void)status;
  free(w->data);
}

void t_block_pool(int n, uint64_t ms) {
  for (int i = 0; i < n; i++) {
    struct block *b = calloc(1, sizeof *b);
    cr_assert_not_null(b);
    b->ms = ms;
    b->w.data = b;
    uv_queue_work(ascope_rt_loop(T_rt), &b->w, block_work, block_after);
  }
}

/* ---- a recording callback ----------------------------------------------------------------- */

int t_cb_fn(ascope *s, int status, ascope_rows *rows, void *ud) {
  (void)s;
  t_cb *c = ud;
  c->calls++;
  c->status = status;
  if (rows) {
    c->rows = ascope_rows_count(rows);
    c->changes = ascope_rows_changes(rows);
    c->last_id = ascope_rows_last_id(rows);
    c->first = ascope_rows_int64(rows, 0, 0);
  }
  if (status < 0 && c->db) {
    t_copy(c->code, sizeof c->code, ascope_sql_errcode(c->db));
    t_copy(c->msg, sizeof c->msg, ascope_sql_errmsg(c->db));
  }
  return c->pass ? status : c->ret;
}
