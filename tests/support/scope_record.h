/* What a scope's body and done saw, for the SQL drivers' tests: one record
 * type and one start-run-check helper, shared by tests/sqlite_support.c and
 * tests/pg_support.c. Each support file defines T_rt, the test's runtime. */
#ifndef ASCOPE_SCOPE_RECORD_H
#define ASCOPE_SCOPE_RECORD_H

#include <ascope/ascope.h>
#include <criterion/criterion.h>
#include <stdint.h>

extern ascope_rt *T_rt;

/* What a scope saw. Embed it first in a test's own context. */
typedef struct t_scope {
  int body_calls, done_calls, status;
  char driver[32], code[64], msg[512]; /* the first error */
  int nerr;                            /* length of the error chain */
  int err_status[4];
  char err_code[4][64];
  void (*body)(ascope *s, struct t_scope *t);
  uint64_t t_start, t_done; /* ms */
} t_scope;

uint64_t t_now_ms(void);
void t_copy(char *dst, size_t cap, const char *src); /* src NULL: "" */
void t_body(ascope *s, void *ud);
void t_done(ascope *s, int status, void *ud);
/* Starts s with t_body/t_done, runs the loop, asserts done ran once; the status. */
int t_run(ascope *s, t_scope *t);

/* The loop's own timer: fn(ud) after ms. Closed after it fires. */
void t_after(uint64_t ms, void (*fn)(void *ud), void *ud);
void t_cancel_cb(void *ud); /* ascope_cancel(ud) */

#endif
