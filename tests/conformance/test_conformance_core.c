/* The conformance kit on the core's own drivers: the lock and the
 * semaphore. Their vtables are not exported; the kit finds them through
 * the use functions. */
#include <criterion/criterion.h>

#include "kit.h"

TestSuite(conformance_core, .timeout = 300);

static int use_lock(ascope *s, void *ud) {
  (void)ud;
  ascope_lock *l = ascope_lock_new(ascope_scope_rt(s));
  int rc = ascope_use_lock(s, l);
  ascope_lock_free(l); /* the use was never acquired: nothing holds it */
  return rc;
}

static int use_sem(ascope *s, void *ud) {
  (void)ud;
  ascope_sem *m = ascope_sem_new(ascope_scope_rt(s), 1);
  int rc = ascope_use_sem(s, m);
  ascope_sem_free(m);
  return rc;
}

static const void *make_lock(ascope_rt *rt, int which, void *ud) {
  (void)ud;
  return which == ASCOPE_KIT_GOOD ? ascope_lock_new(rt) : NULL;
}

static void free_lock(const void *arg, int which, void *ud) {
  (void)which, (void)ud;
  ascope_lock_free((ascope_lock *)arg);
}

/* A semaphore with no permit: the acquire waits until it is cancelled. */
static const void *make_sem(ascope_rt *rt, int which, void *ud) {
  (void)ud;
  if (which == ASCOPE_KIT_BAD) return NULL;
  return ascope_sem_new(rt, which == ASCOPE_KIT_WAITS ? 0 : 1);
}

static void free_sem(const void *arg, int which, void *ud) {
  (void)which, (void)ud;
  ascope_sem_free((ascope_sem *)arg);
}

Test(conformance_core, lock) {
  const ascope_driver *drv = ascope_kit_driver_of(use_lock, NULL);
  cr_assert(drv);
  ascope_kit_driver d = {
      .name = "lock", .driver = drv, .make_arg = make_lock, .free_arg = free_lock};
  cr_assert_eq(ascope_kit_run(&d), 0, "the lock broke rules: see above");
}

Test(conformance_core, semaphore) {
  const ascope_driver *drv = ascope_kit_driver_of(use_sem, NULL);
  cr_assert(drv);
  ascope_kit_driver d = {
      .name = "semaphore", .driver = drv, .make_arg = make_sem, .free_arg = free_sem};
  cr_assert_eq(ascope_kit_run(&d), 0, "the semaphore broke rules: see above");
}
