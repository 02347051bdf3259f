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
 * the hop waiting for it), nor past the hop.
 *
 * A hop waiting in the progress handler is still running its job
 * (conn->running names it): a cancel or an abort flags the job and calls
 * sq_gate_kick, the wait ends at once and the progress handler stops the
 * statement. A wait between jobs ends when a token comes, within the
 * holder's slice. Only the hop's own pool thread waits, and a hop is on
 * the pool only within the driver's concurrency cap, so file I/O and DNS
 * keep the pool's other threads. The gate is per runtime, as the cap is.
 */
#include "internal.h"

#define GATE_LONG_NS (2 * 1000 * 1000)   /* a hop running this long needs a token */
#define GATE_SLICE_NS (50 * 1000 * 1000) /* a token held this long goes to a waiter */

void sq_gate_init(struct sq_sched *s) {
  unsigned cores = uv_available_parallelism();
  s->gate_cap = cores > 2 ? cores - 1 : 1;
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

static bool cut(const struct sq_conn *c) {
  return c->cur && !c->no_cut && !c->cur->uncut && atomic_load(&c->cur->cancelled);
}

/* Waits for a token: false when the job was cut meanwhile (no token). A
 * holder passing its token on (after) waits until another hop took one,
 * so that it does not take it straight back. gate_mu held. */
static bool take(struct sq_conn *c, uint64_t after) {
  struct sq_sched *s = c->sched;
  s->gate_waiting++;
  if (s->gate_held >= s->gate_cap || s->gate_grants == after) SQ_COUNT(c->rts, SQ_GATE_WAITS, 1);
  while (s->gate_held >= s->gate_cap || s->gate_grants == after) {
    if (cut(c)) {
      s->gate_waiting--;
      return false;
    }
    if (s->gate_grants == after && s->gate_held < s->gate_cap && s->gate_waiting == 1) break;
    uv_cond_wait(&s->gate_cv, &s->gate_mu);
  }
  s->gate_waiting--;
  s->gate_held++;
  s->gate_grants++;
  uv_cond_broadcast(&s->gate_cv); /* a passer waits for this grant */
  c->gate_held = true;
  c->gate_since = uv_hrtime();
  return true;
}

bool sq_gate(struct sq_conn *c) {
  if (!c->gate_held) {
    if (uv_hrtime() - c->hop_t0 < GATE_LONG_NS) return true;
    struct sq_sched *s = c->sched;
    uv_mutex_lock(&s->gate_mu);
    bool ok = take(c, UINT64_MAX);
    uv_mutex_unlock(&s->gate_mu);
    return ok;
  }
  if (uv_hrtime() - c->gate_since < GATE_SLICE_NS) return true;
  struct sq_sched *s = c->sched;
  uv_mutex_lock(&s->gate_mu);
  bool ok = true;
  if (s->gate_waiting > 0) { /* pass it on, and wait for a turn */
    s->gate_held--;
    c->gate_held = false;
    uv_cond_broadcast(&s->gate_cv);
    ok = take(c, s->gate_grants);
  } else
    c->gate_since = uv_hrtime();
  uv_mutex_unlock(&s->gate_mu);
  return ok;
}

void sq_gate_release(struct sq_conn *c) {
  if (!c->gate_held) return;
  struct sq_sched *s = c->sched;
  uv_mutex_lock(&s->gate_mu);
  s->gate_held--;
  c->gate_held = false;
  if (s->gate_waiting) uv_cond_broadcast(&s->gate_cv);
  uv_mutex_unlock(&s->gate_mu);
}
