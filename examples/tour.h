/* The tour's shared pieces: a trace printer and a simulated resource. */
#ifndef ASCOPE_TOUR_H
#define ASCOPE_TOUR_H

#include <ascope/driver.h>

/* printf-like; each line is stamped with the milliseconds since the tour began. */
void tour_say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void tour_title(const char *title);
/* "ok", "ECANCELED: cancelled"… for a done status and its error */
const char *tour_outcome(int status);
void tour_print_error(ascope *s); /* inside done: the error and its chain */
/* mkdtemp(3) of "<$TMPDIR or /tmp>/ascope-tour-XXXXXX" into buf: buf, or NULL. */
char *tour_temp_dir(char *buf, size_t cap);

/* A simulated network resource: acquiring takes `connect_ms`, releasing
 * takes `close_ms`; every step is traced. The use's arg is a sim_target. */
typedef struct sim_target {
  const char *name;
  unsigned connect_ms, close_ms;
} sim_target;
extern const ascope_driver sim_driver;
int sim_use(ascope *s, const sim_target *t);
/* An operation on the loop: completes after ms with status (0 or an error). */
int sim_sleep(ascope *s, const char *what, unsigned ms, int status,
              int (*cb)(ascope *s, int status, void *unused, void *ud), void *ud);

/* Parts contributed by drivers, compiled in when the driver is built. */
int tour_file(ascope_rt *rt);
int tour_sqlite(ascope_rt *rt);
int tour_postgres(ascope_rt *rt);
int tour_http(ascope_rt *rt);

#endif
