/* The SQL conformance suite: one set of Criterion tests, written once
 * against sql.h, that every SQL driver runs. docs/sql.md promises the same
 * behaviour whichever driver is underneath; this is where that promise is
 * checked, on each driver, with the same cases: value types and their round
 * trips, the order of results on a shared connection, transactions and
 * savepoints, constraint errors, streams and their flow control, bad input.
 *
 * A runner (tests/conformance/test_conformance_sql_<driver>.c) links
 * sql_suite.c and defines ascope_sql_suite_describe(), which returns the
 * driver's description: the driver, where its connections go, and the few
 * things that legitimately differ between databases (an error's code, what
 * a cancelled statement may have done). Everything else is the same SQL and
 * the same assertions for every driver. docs/guides/writing-a-driver.md,
 * "The SQL conformance suite", says how to add a driver.
 *
 * Each test runs in a runtime of its own (a fresh process under Criterion)
 * and ends by checking that nothing is left: no request, transaction or
 * result object, plus the driver's own check. Tables are named after the
 * test process, so runs against a shared server do not collide.
 */
#ifndef ASCOPE_SQL_SUITE_H
#define ASCOPE_SQL_SUITE_H

#include <ascope/sql.h>
#include <stdbool.h>

/* flags */
/* A statement cancelled after the driver sent it may still have run (a
 * statement already on the server's way, as with PostgreSQL's pipeline):
 * its callback may then hear 0, and its effects may stay. Without it, a
 * cancelled statement that was queued behind another never runs. */
#define ASCOPE_SQL_SUITE_CANCELLED_MAY_RUN 1u
/* A text parameter may hold NUL bytes (its length given). Without it, such
 * a parameter is refused by the statement call with UV_EINVAL (PostgreSQL's
 * text cannot hold one). */
#define ASCOPE_SQL_SUITE_TEXT_NUL 2u
/* The database keeps a bool as the integer 0 or 1 (SQLite): the value's own
 * type reads back as ASCOPE_SQL_INT64, the declared column's as BOOL.
 * Without it, the value's type is ASCOPE_SQL_BOOL too. */
#define ASCOPE_SQL_SUITE_BOOL_IS_INT 4u
/* ascope_rows_last_id() of an INSERT is the row's id (SQLite's rowid).
 * Without it, it is 0 (the database has none: use RETURNING). */
#define ASCOPE_SQL_SUITE_LAST_ID 8u
/* A statement given more parameters than it has placeholders runs, the
 * extra values unused (a driver that declares every value with its type
 * may let that through). Without it, that is an error, as too few always
 * are; both of the project's drivers refuse it. */
#define ASCOPE_SQL_SUITE_EXTRA_PARAMS_RUN 16u
/* A statement whose values do not match its parameters, too few or too
 * many, is refused by the call (UV_EINVAL, nothing queued, no callback)
 * rather than failing in its callback. */
#define ASCOPE_SQL_SUITE_PARAMS_AT_CALL 32u

/* The database's own codes (ascope_sql_errcode) for the errors the suite
 * provokes. NULL: any non-empty code will do. */
typedef struct ascope_sql_suite_codes {
  const char *unique;   /* a unique key violated: "SQLITE_CONSTRAINT_UNIQUE", "23505" */
  const char *syntax;   /* "SELEC 1" */
  const char *params;   /* a statement given fewer or more parameters than it has */
  const char *overflow; /* abs() of the smallest int64 */
  const char *several;  /* a query holding two statements */
} ascope_sql_suite_codes;

typedef struct ascope_sql_suite {
  const char *name;                /* what ascope_sql_driver_name() answers: "sqlite" */
  const ascope_sql_driver *driver; /* handed to ascope_use_sql() */
  /* The target of one test's connections, asked once per test before it
   * runs: a database of its own (SQLite: a file in a new temporary
   * directory) or the server's (PostgreSQL: the DSN). It stays valid until
   * cleanup. */
  const char *(*target)(void *ud);
  void (*cleanup)(void *ud); /* optional: after each test (remove the files) */
  const char *options;       /* every connection's; NULL: the driver's defaults */
  /* The options of a connection whose streams deliver batches of at most
   * 100 rows ("batch=100" for both in-tree drivers). */
  const char *batch_100;
  /* The type to declare a blob column with: "BLOB", "bytea". */
  const char *blob_type;
  /* A query that runs for many seconds unless interrupted; NULL: a
   * recursive count to two billion (portable, but it keeps a CPU busy). */
  const char *long_query;
  /* Optional: whether the long query is executing on db now, asked from
   * the loop every few milliseconds before a cancel that means to land
   * mid-statement; NULL: the suite cancels as soon as it started it. */
  bool (*running)(ascope_sql *db, void *ud);
  /* Optional: asserts the driver holds nothing (connections, prepared
   * statements); called after each test, once every scope is done. */
  void (*check_clean)(void *ud);
  ascope_sql_suite_codes code;
  unsigned flags;
  void *ud;
} ascope_sql_suite;

/* Defined by the runner: its driver's description, asked for at the start
 * of every test. */
const ascope_sql_suite *ascope_sql_suite_describe(void);

#endif
