/* Trace output for the tour. */
#include "tour.h"

#include <stdarg.h>
#include <stdio.h>

static uint64_t t0;

void tour_say(const char *fmt, ...) {
  uint64_t now = uv_hrtime();
  if (t0 == 0) t0 = now;
  printf("[%6.1f ms] ", (double)(now - t0) / 1e6);
  va_list ap;
  va_start(ap, fmt);
  vprintf(fmt, ap);
  va_end(ap);
  putchar('\n');
  fflush(stdout);
}

void tour_title(const char *title) {
  printf("\n== %s ==\n", title);
  fflush(stdout);
}

const char *tour_outcome(int status) {
  return status == 0 ? "ok" : ascope_err_name(status);
}

void tour_print_error(ascope *s) {
  const ascope_err *e = ascope_error(s);
  for (int i = 0; e; e = ascope_err_next(e), i++) {
    const char *drv = ascope_err_driver(e), *code = ascope_err_code(e);
    tour_say("   %s %s from %s%s%s: %s", i ? "  then" : "error",
             ascope_err_name(ascope_err_status(e)), drv ? drv : "the core", code ? ", code " : "",
             code ? code : "", ascope_err_message(e));
  }
}
