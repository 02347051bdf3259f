/* countdown — a template driver to copy: a counter that opens after a
 * delay, and an operation that takes one off it after another.
 *
 * It stands in for a client library (a database, a queue, a device): the
 * "connection" takes connect_ms to open, each tick takes tick_ms, both on
 * libuv timers, so every path a real driver has — an acquire that can be
 * cancelled, an operation in flight when the scope is cancelled or its
 * deadline passes, a release that completes later (a handle's close), an
 * abort, a driver error with its own code, a pool's check and reset — is
 * here in a few lines. Copy the folder, rename "countdown", and put the
 * library's calls where the timers are.
 *
 *   ascope_use_countdown(s, 3, "connect_ms=5 tick_ms=1");
 *   ...
 *   ascope_countdown_tick(s, ascope_countdown_resource(s, 0), on_tick, ud);
 */
#ifndef ASCOPE_COUNTDOWN_H
#define ASCOPE_COUNTDOWN_H

#include <ascope/driver.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ascope_countdown ascope_countdown; /* the resource: opaque */

/* The driver's table, for ascope_use(), pools and the plugin entry. */
ASCOPE_EXTERN const ascope_driver *ascope_countdown_driver(void);

/* A counter starting at `start` (1..1000000). options: connect_ms (default
 * 1), tick_ms (default 1); anything else fails the acquire with UV_EINVAL. */
ASCOPE_EXTERN int ascope_use_countdown(ascope *s, unsigned start, const char *options);

/* The index-th use as a countdown, once acquired; NULL otherwise. */
ASCOPE_EXTERN ascope_countdown *ascope_countdown_resource(ascope *s, size_t index);

/* Takes one off the counter after tick_ms; cb gets the value left (status
 * 0) or, at 0, status ASCOPE_EDRIVER with code "CD01". cb's return is what
 * the scope sees. 0, or a negative status when the tick cannot start. */
typedef int (*ascope_countdown_cb)(ascope *s, int status, unsigned left, void *ud);
ASCOPE_EXTERN int ascope_countdown_tick(ascope *s, ascope_countdown *c, ascope_countdown_cb cb,
                                        void *ud);

#ifdef __cplusplus
}
#endif
#endif
