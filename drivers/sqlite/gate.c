/* The gate: at most `cap` hops of a runtime busy on the CPU for long at once.
 *
 * A hop that runs CPU-bound SQLite work holds a core. The loop thread needs
 * one too: libuv's threadpool has 4 threads and the driver lets 2 hops run
 * at once, so on a 2-core machine two long queries left the loop thread a
 * third of a core and its timers fired milliseconds late. So a hop that has
 * run for GATE_LONG_NS must hold one of `cap` tokens to go on, cap being
 * the cores less the loop's own (at least 1): a second long hop on two
 * cores waits for the first, asleep, on its pool thread, where it is asked
 * (the progress handler, every 1000 VM steps, and between the hop's jobs).
 * A holder passes its token on after GATE_SLICE_NS when another hop
 * waits, so long queries take turns rather than one waiting for the other
 * to end. A token is not held across a busy wait (the lock's holder may be
 * the hop waiting for it), nor past the hop. A holder yields its core every
 * GATE_YIELD_NS, so a thread woken there runs without waiting for a tick.
 *
 * A hop waiting in the progress handler is still running its job
 * (conn->running names it): a cancel or an abort flags the job and calls
 * sq_gate_kick, the wait ends at once and the progress handler stops the
 * statement. A wait between jobs ends when a token comes, within the
 * holder's slice. Only the hop's own pool thread waits, and a hop is on
 * the pool only within the driver's concurrency cap, so file I/O and DNS
 * keep the pool's other threads. The gate is per runtime, as the cap is.
 *
 * A token passed on moves its taker to the core it came from. The hop that
 * gives a token up goes to sleep (or leaves the pool) on its core; the hop
 * that takes it was asleep, and the kernel wakes it where it likes. Traced
 * on 2 cores, that was often the loop thread's core, the passer's left
 * idle: the loop thread, woken there by its next timer, then waited for
 * the scheduler's tick (3-4 ms) behind a CPU-bound thread that had just
 * begun its turn, with an idle core beside it, so every hand-over could
 * make a timer late. Moved to the passer's core, the long queries keep the
 * cores they had and the loop's stays the loop's.
 */
#include "internal.h"

#include <sched.h>

#ifdef __linux__

static int core_now(void) {
  return sched_getcpu();
}

/* Moves the calling thread to core, its own affinity kept: the move is
 * made by narrowing the affinity to that core, and putting it back does
 * not move the thread again. False: no move (already there, or a core the
 * thread may not run on). */
static bool move_to(int core) {
  cpu_set_t own, one;
  if (core < 0 || sched_getcpu() == core) return false;
  if (sched_getaffinity(0, sizeof own, &own) != 0 || !CPU_ISSET(core, &own)) return false;
  CPU_ZERO(&one);
  CPU_SET(core, &one);
  if (sched_setaffinity(0, sizeof one, &one) != 0) return false;
  if (sched_setaffinity(0, sizeof own, &own) != 0) {
    /* The cores allowed changed meanwhile (a cpuset): every core, which
     * the kernel narrows to those allowed, rather than one for good. */
    CPU_ZERO(&own);
    for (int i = 0; i < CPU_SETSIZE; i++) CPU_SET(i, &own);
    sched_setaffinity(0, sizeof own, &own);
  }
  return true;
}
#else
static int core_now(void) {
  return -1;
}

static bool move_to(int core) {
  (void)core;
  return false;
}
#endif

/* A hop running this long needs a token. Short enough that two hops
 * starting together on 2 cores are down to one before the loop thread's
 * next millisecond timer: at 2 ms the first tick after long queries
 * started was often late, and 64 scopes' reads on 4 connections ran
 * 0.67-1.14x raw, against 0.98-1.11x at 0.5 ms (five A/B runs). */
#define GATE_LONG_NS (500 * 1000)
#define GATE_SLICE_NS (50 * 1000 * 1000) /* a token held this long goes to a waiter */
/* A holder lets whatever waits for its core run this often. The loop
 * thread, woken on the core a long query holds, otherwise waited for the
 * scheduler's tick (4 ms at HZ=250) whenever the kernel did not move it
 * to the other; a yield with nothing else runnable is one cheap system
 * call, about 0.1% of the query's time at this rate. */
#define GATE_YIELD_NS (500 * 1000)

void sq_gate_init(struct sq_sched *s) {
  unsigned cores = uv_available_parallelism();
  s->gate_cap = cores > 2 ? cores - 1 : 1;
  s->gate_from = -1;
  uv_mutex_init(&s->gate_mu);
  uv_cond_init(&s->gate_cv);
}

void sq_gate_fini(struct sq_sched *s) {
  uv_cond_destroy(&s->gate_cv);
  uv_mutex_destroy(&s->gate_mu);
}

void sq_gate_kick(struct sq_sched *s) {
  uv_mutex_lock(&s->gate_mu);
  if (s->gate_waiting) uv_cond_broadcast(&s->gate_cv);
  uv_mutex_unlock(&s->gate_mu);
}

/* Waits for a token: false when the job was cut meanwhile (no token). A
 * holder passing its token on (after) waits until another hop took one,
 * so that it does not take it straight back. *from: the core of the hop
 * that gave the token up, or -1. gate_mu held. */
static bool take(struct sq_conn *c, uint64_t after, int *from) {
  struct sq_sched *s = c->sched;
  s->gate_waiting++;
  if (s->gate_held >= s->gate_cap || s->gate_grants == after) SQ_COUNT(c->rts, SQ_GATE_WAITS, 1);
  while (s->gate_held >= s->gate_cap || s->gate_grants == after) {
    if (sq_cut(c)) {
      s->gate_waiting--;
      return false;
    }
    if (s->gate_grants == after && s->gate_held < s->gate_cap && s->gate_waiting == 1) break;
    uv_cond_wait(&s->gate_cv, &s->gate_mu);
  }
  s->gate_waiting--;
  s->gate_held++;
  s->gate_grants++;
  *from = s->gate_from;
  s->gate_from = -1;
  uv_cond_broadcast(&s->gate_cv); /* a passer waits for this grant */
  c->gate_held = true;
  c->gate_since = uv_hrtime();
  return true;
}

/* After a take, out of gate_mu: to the core the token came from. */
static void follow(struct sq_conn *c, int from) {
  if (from < 0) return;
  SQ_COUNT(c->rts, SQ_GATE_HANDOVERS, 1);
  if (move_to(from)) SQ_COUNT(c->rts, SQ_GATE_MOVES, 1);
}

bool sq_gate(struct sq_conn *c) {
  int from = -1;
  if (!c->gate_held) {
    if (uv_hrtime() - c->hop_t0 < GATE_LONG_NS) return true;
    struct sq_sched *s = c->sched;
    uv_mutex_lock(&s->gate_mu);
    bool ok = take(c, UINT64_MAX, &from);
    uv_mutex_unlock(&s->gate_mu);
    follow(c, from);
    return ok;
  }
  uint64_t now = uv_hrtime();
  if (now - c->gate_yield_at >= GATE_YIELD_NS) {
    c->gate_yield_at = now;
    sched_yield();
  }
  if (now - c->gate_since < GATE_SLICE_NS) return true;
  struct sq_sched *s = c->sched;
  uv_mutex_lock(&s->gate_mu);
  bool ok = true;
  if (s->gate_waiting > 0) { /* pass it on, and wait for a turn */
    s->gate_held--;
    c->gate_held = false;
    s->gate_from = core_now();
    uv_cond_broadcast(&s->gate_cv);
    ok = take(c, s->gate_grants, &from);
  } else
    c->gate_since = uv_hrtime();
  uv_mutex_unlock(&s->gate_mu);
  follow(c, from);
  return ok;
}

void sq_gate_release(struct sq_conn *c) {
  if (!c->gate_held) return;
  struct sq_sched *s = c->sched;
  uv_mutex_lock(&s->gate_mu);
  s->gate_held--;
  c->gate_held = false;
  if (s->gate_waiting) {
    s->gate_from = core_now(); /* this hop leaves its core: the next holder's */
    uv_cond_broadcast(&s->gate_cv);
  }
  uv_mutex_unlock(&s->gate_mu);
}
