/* A driver written outside the project, against the installed headers
 * only, built as a plugin: ascope-hello.so. Its resource is a number the
 * acquire sets; scripts/check-install loads it by name (by_name.c). */
#include <ascope/driver.h>

static void hello_acquire(ascope_res *r, const void *arg, const char *options) {
  (void)arg, (void)options;
  *(int *)ascope_res_state(r) = 7;
  ascope_res_done(r, 0, NULL, NULL);
}

static void hello_release(ascope_res *r, int outcome) {
  (void)outcome;
  ascope_res_done(r, 0, NULL, NULL);
}

static const ascope_driver hello = {.abi = ASCOPE_DRIVER_ABI,
                                    .name = "hello",
                                    .state_size = sizeof(int),
                                    .acquire = hello_acquire,
                                    .release = hello_release};

ASCOPE_EXTERN const ascope_driver *ascope_driver_entry(void) {
  return &hello;
}
