/* Helpers for the PostgreSQL driver's tests, against the real server that
 * scripts/pg-start runs (its DSN in ASCOPE_PG_DSN; without it every test
 * fails and says so: none is skipped). A fresh runtime per test (each
 * Criterion test runs in its own process), a record of what a scope's done
 * saw, a raw libpq "oracle" to set up and check the database independently
 * of the driver, names unique to the test process, timers, and the leak
 * check every test ends with: no connection, request or transaction left,
 * every connection opened closed. */
#ifndef ASCOPE_PG_SUPPORT_H
#define ASCOPE_PG_SUPPORT_H

#include <ascope/postgres.h>
#include <criterion/criterion.h>
#include <stdbool.h>
#include <stdint.h>

#include "scope_record.h"

void t_init(void); /* TestSuite(name, .init = t_init, .fini = t_fini) */
void t_fini(void); /* frees the runtime, checks for leaks */
const char *t_dsn(void);
/* "base_<pid>": a table name of this test process; 8 rotating buffers. */
const char *t_name(const char *base);
/* printf into one of 8 rotating buffers (SQL with the test's table names). */
const char *t_sql(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* A scope on one connection (the test DSN, options), body run, run to the end. */
int t_run_db(t_scope *t, const char *options);

/* The raw libpq oracle, synchronous, on its own connection. */
void t_raw(const char *sql);        /* asserts success */
int64_t t_raw_int(const char *sql); /* one integer */
char *t_raw_text(const char *sql);  /* one text, malloc'd */

/* Asserts the driver holds nothing: call when every scope is done. */
void t_check_clean(void);

/* A callback that counts calls and keeps the status, rows count, the
 * error's code (when db is set) and the result's changes; returns the
 * status when pass is set (the error fails the scope), else ret. */
typedef struct t_cb {
  int calls, status, ret;
  bool pass;
  size_t rows;
  int64_t changes, first;
  char code[64], msg[512];
  ascope_sql *db;
} t_cb;
int t_cb_fn(ascope *s, int status, ascope_rows *rows, void *ud);

#define LONG_SLEEP "SELECT pg_sleep(30)"

#endif
