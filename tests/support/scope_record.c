#include "scope_record.h"

#include <stdio.h>
#include <stdlib.h>

uint64_t t_now_ms(void) {
  return uv_hrtime() / 1000000u;
}

void t_body(ascope *s, void *ud) {
  t_scope *t = ud;
  t->body_calls++;
  if (t->body) t->body(s, t);
}

void t_copy(char *dst, size_t cap, const char *src) {
  snprintf(dst, cap, "%s", src ? src : "");
}

/* The error objects live only while done runs: copy what the test checks. */
void t_done(ascope *s, int status, void *ud) {
  t_scope *t = ud;
  t->done_calls++;
  t->status = status;
  t->t_done = t_now_ms();
  const ascope_err *e = ascope_error(s);
  cr_assert((status == 0) == (e == NULL));
  if (e) {
    t_copy(t->driver, sizeof t->driver, ascope_err_driver(e));
    t_copy(t->code, sizeof t->code, ascope_err_code(e));
    t_copy(t->msg, sizeof t->msg, ascope_err_message(e));
  }
  for (t->nerr = 0; e; e = ascope_err_next(e), t->nerr++) {
    if (t->nerr >= 4) continue;
    t->err_status[t->nerr] = ascope_err_status(e);
    t_copy(t->err_code[t->nerr], sizeof t->err_code[0], ascope_err_code(e));
  }
}

int t_run(ascope *s, t_scope *t) {
  cr_assert_not_null(s);
  t->t_start = t_now_ms();
  cr_assert_eq(ascope_start(s, t_body, t_done, t), 0);
  cr_assert_eq(ascope_rt_run(T_rt), 0);
  cr_assert_eq(t->done_calls, 1, "done ran %d times", t->done_calls);
  return t->status;
}

/* ---- timers ------------------------------------------------------------------------------ */

struct after {
  uv_timer_t t;
  void (*fn)(void *ud);
  void *ud;
};

static void after_closed(uv_handle_t *h) {
  free(h->data);
}

static void after_fire(uv_timer_t *t) {
  struct after *a = t->data;
  uv_close((uv_handle_t *)t, after_closed);
  a->fn(a->ud);
}

void t_after(uint64_t ms, void (*fn)(void *ud), void *ud) {
  struct after *a = calloc(1, sizeof *a);
  cr_assert_not_null(a);
  a->fn = fn;
  a->ud = ud;
  uv_timer_init(ascope_rt_loop(T_rt), &a->t);
  a->t.data = a;
  uv_timer_start(&a->t, after_fire, ms, 0);
}

void t_cancel_cb(void *ud) {
  ascope_cancel(ud);
}
