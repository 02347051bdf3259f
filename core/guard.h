/* A re-entrancy guard: one copy for the core and the in-tree drivers, which
 * include it as "../../core/guard.h". Not installed and not part of any ABI,
 * like queue.h.
 *
 * A loop that runs user code (a pump, the run queue, libcurl's callbacks)
 * must not be entered again from that code. The guard counts the calls
 * inside; work asked for meanwhile is recorded (aguard_ask() answers false
 * and sets the deferred flag, or the caller keeps a list of its own) and
 * done by the one inside, in another turn of its loop, or when the
 * outermost leaves (aguard_leave() answers true). Loop thread only.
 *
 *   void kick(struct x *x) {
 *     if (aguard_ask(&x->g)) pump(x);    // from inside: pump's loop goes again
 *   }
 *   void pump(struct x *x) {
 *     aguard_enter(&x->g);
 *     do {
 *       aguard_take(&x->g);              // this turn does what was asked so far
 *       ...                              // runs user code, which may kick
 *     } while (aguard_deferred(&x->g));
 *     aguard_leave(&x->g);
 *   }
 */
#ifndef ASCOPE_GUARD_H
#define ASCOPE_GUARD_H

#include <stdbool.h>

struct aguard {
  unsigned depth; /* calls inside */
  bool deferred;  /* work was asked for while inside */
};

static inline void aguard_init(struct aguard *g) {
  g->depth = 0;
  g->deferred = false;
}
static inline void aguard_enter(struct aguard *g) {
  g->depth++;
}
/* True when the outermost leaves: whatever waited for it may run now. */
static inline bool aguard_leave(struct aguard *g) {
  return --g->depth == 0;
}
static inline bool aguard_busy(const struct aguard *g) {
  return g->depth != 0;
}
/* Only the outermost call is inside (the one that finishes the rest). */
static inline bool aguard_outermost(const struct aguard *g) {
  return g->depth == 1;
}

/* Asks for the guarded work: true when nobody is inside, so the caller runs
 * it now; false when it is recorded for the one inside. */
static inline bool aguard_ask(struct aguard *g) {
  if (g->depth == 0) return true;
  g->deferred = true;
  return false;
}
static inline void aguard_defer(struct aguard *g) {
  g->deferred = true;
}
static inline bool aguard_deferred(const struct aguard *g) {
  return g->deferred;
}
/* Whether work was asked for, clearing it: the caller does it now. */
static inline bool aguard_take(struct aguard *g) {
  bool d = g->deferred;
  g->deferred = false;
  return d;
}

#endif
