/* Builds against an installed ascope (find_package, static libraries) and
 * runs one scope: proof that the installed headers, libraries and CMake
 * package are complete. */
#include <ascope/sqlite.h>

#include <stdio.h>

static void done(ascope *s, int status, void *ud) {
  (void)s;
  *(int *)ud = status == 0 ? 1 : -1;
}

int main(void) {
  ascope_rt *rt = ascope_rt_new(NULL);
  ascope_lock *lock = ascope_lock_new(rt);
  ascope *s = ascope_new(rt);
  int ok = 0;
  if (ascope_use_lock(s, lock) || ascope_start(s, NULL, done, &ok)) return 1;
  ascope_rt_run(rt);
  ascope_lock_free(lock);
  ascope_rt_free(rt);
  printf("consumer: %s\n", ok == 1 ? "ok" : "failed");
  return ok == 1 ? 0 : 1;
}
