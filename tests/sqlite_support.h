/* Helpers for the SQLite driver's tests: a fresh runtime and a mkdtemp
 * directory per test (each Criterion test runs in its own process), a
 * record of what a scope's done saw, a raw sqlite3 "oracle" to set up and
 * check databases independently of the driver, timers, and the leak check
 * every test ends with: no connection, request, transaction or prepared
 * statement left, every opened connection closed. Only the Criterion subset
 * the TSan stand-in supports is used: Test, TestSuite(.init, .fini), and
 * the plain cr_assert* macros. */
#ifndef ASCOPE_SQLITE_SUPPORT_H
#define ASCOPE_SQLITE_SUPPORT_H

#include <ascope/sqlite.h>
#include <criterion/criterion.h>
#include <stdbool.h>
#include <stdint.h>

#include "scope_record.h"

void t_init(void); /* TestSuite(name, .init = t_init, .fini = t_fini) */
void t_fini(void); /* frees the runtime, checks for leaks, removes the directory */
const char *t_path(const char *name); /* a path in the test's directory; 8 rotating buffers */

/* A scope on one connection to path with options, body run, run to the end. */
int t_run_db(t_scope *t, const char *path, const char *options);

/* The raw sqlite3 oracle, synchronous. */
void t_raw(const char *path, const char *sql);        /* asserts success */
int64_t t_raw_int(const char *path, const char *sql); /* one integer */
char *t_raw_text(const char *path, const char *sql);  /* one text, malloc'd */

/* fn(ud) as soon as cond(ud) holds, checked every 2 ms on the loop: for
 * "cancel once the statement is waiting", whatever the machine's speed. */
void t_when(bool (*cond)(void *ud), void (*fn)(void *ud), void *ud);
bool t_busy_waiting(void *ud); /* a statement has met a lock: stat "busy" > 0 */
/* Occupies n of libuv's pool threads for ms each (plain uv_queue_work). */
void t_block_pool(int n, uint64_t ms);

/* Asserts the driver holds nothing: call when every scope is done. */
void t_check_clean(void);

/* A callback that counts calls and keeps the status, rows count, the
 * error's code (when db is set) and the result's changes/last id; returns
 * the status when pass is set (the error fails the scope), else ret. */
typedef struct t_cb {
  int calls, status, ret;
  bool pass;
  size_t rows;
  int64_t changes, last_id, first;
  char code[64], msg[256];
  ascope_sql *db;
} t_cb;
int t_cb_fn(ascope *s, int status, ascope_rows *rows, void *ud);

#endif
