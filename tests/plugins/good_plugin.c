/* A plugin driver that loads: its acquire and release complete at once. */
#include <ascope/driver.h>

static void acquire(ascope_res *r, const void *arg, const char *options) {
  (void)arg;
  (void)options;
  *(int *)ascope_res_state(r) = 42;
  ascope_res_done(r, 0, NULL, NULL);
}
static void release(ascope_res *r, int outcome) {
  (void)outcome;
  ascope_res_done(r, 0, NULL, NULL);
}
static void abort_(ascope_res *r) {
  (void)r;
}
static const ascope_driver drv = {
    .abi = ASCOPE_DRIVER_ABI,
    .name = "good-plugin",
    .state_size = sizeof(int),
    .acquire = acquire,
    .release = release,
    .abort = abort_,
};
__attribute__((visibility("default"))) const ascope_driver *ascope_driver_entry(void) {
  return &drv;
}
