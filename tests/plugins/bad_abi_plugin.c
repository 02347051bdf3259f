/* A plugin older than the oldest driver ABI this core accepts (version 0,
 * before the vtable was versioned): the loader must refuse it. */
#include <ascope/driver.h>

static void acquire(ascope_res *r, const void *arg, const char *options) {
  (void)arg;
  (void)options;
  ascope_res_done(r, 0, NULL, NULL);
}
static void release(ascope_res *r, int outcome) {
  (void)outcome;
  ascope_res_done(r, 0, NULL, NULL);
}
static const ascope_driver drv = {
    .abi = ASCOPE_DRIVER_ABI_MIN - 1,
    .name = "bad-abi-plugin",
    .acquire = acquire,
    .release = release,
};
__attribute__((visibility("default"))) const ascope_driver *ascope_driver_entry(void) {
  return &drv;
}
