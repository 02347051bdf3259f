/* lock_turns: ten tasks take turns with one lock while a semaphore lets
 * at most three of them in at a time.
 *
 *   async with sem, lock: ...      (asyncio.Semaphore(3), asyncio.Lock())
 *
 * Waiters are served first come, first served; the uses are acquired in
 * order and released in reverse, so no task holds the lock while waiting
 * for the semaphore. */
#include <ascope/ascope.h>

#include <stdint.h>
#include <stdio.h>

static int turns;

static void task(ascope *s, void *ud) {
  (void)s;
  printf("task %d has its turn (%d so far)\n", (int)(intptr_t)ud, ++turns);
}

static void task_done(ascope *s, int status, void *ud) {
  (void)s;
  if (status) printf("task %d: %s\n", (int)(intptr_t)ud, ascope_strerror(status));
}

int main(void) {
  ascope_rt *rt = ascope_rt_new(NULL);
  ascope_lock *lock = ascope_lock_new(rt);
  ascope_sem *sem = ascope_sem_new(rt, 3);
  for (intptr_t i = 0; i < 10; i++) {
    ascope *s = ascope_new(rt);
    ascope_use_sem(s, sem);
    ascope_use_lock(s, lock);
    ascope_set_timeout(s, 5000);
    ascope_start(s, task, task_done, (void *)i);
  }
  int rc = ascope_rt_run(rt);
  ascope_lock_free(lock);
  ascope_sem_free(sem);
  ascope_rt_free(rt);
  return rc || turns != 10;
}
