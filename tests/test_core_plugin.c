/* The plugin loader: a good plugin loads and works as a use in a scope; a
 * missing file, a shared object without the entry symbol and a plugin built
 * for another driver ABI are refused with a clear reason. */
#include <criterion/criterion.h>

#include "test_driver.h"
#include "test_util.h"

#ifndef PLUGIN_DIR
#error "PLUGIN_DIR is defined by tests/CMakeLists.txt"
#endif

TestSuite(plugin, .timeout = 60); /* a hang fails the test instead of stalling the run */
static void has(const char *text, const char *part) {
  cr_assert(strstr(text, part) != NULL, "'%s' does not mention '%s'", text, part);
}

struct seen {
  int value;
};

static void plugin_body(ascope *s, rec *r) {
  struct seen *sn = r->arg;
  int *state = ascope_resource(s, 0);
  cr_assert_not_null(state);
  sn->value = *state;
}

Test(plugin, good_plugin_loads_and_works_in_a_scope) {
  char err[256] = "untouched";
  const ascope_driver *drv = ascope_driver_load(PLUGIN_DIR "/good_plugin.so", err, sizeof err);
  cr_assert_not_null(drv, "load failed: %s", err);
  cr_assert_str_eq(err, "", "errbuf not cleared on success");
  cr_assert_eq(drv->abi, ASCOPE_DRIVER_ABI);
  cr_assert_str_eq(drv->name, "good-plugin");
  /* loading twice gives the same driver */
  cr_assert_eq(ascope_driver_load(PLUGIN_DIR "/good_plugin.so", NULL, 0), drv);

  ascope_rt *rt = ascope_rt_new(NULL);
  ascope *s = ascope_new(rt);
  cr_assert_eq(ascope_use(s, drv, NULL, NULL), 0);
  struct seen sn = {0};
  rec r = {.body = plugin_body, .arg = &sn};
  cr_assert_eq(rec_start(s, &r), 0);
  cr_assert_eq(ascope_rt_run(rt), 0);
  assert_done(&r, 0);
  cr_assert_eq(sn.value, 42, "the plugin's acquire did not run");
  cr_assert_eq(ascope_rt_free(rt), 0);
}

Test(plugin, missing_file) {
  char err[512];
  const char *path = PLUGIN_DIR "/no_such_plugin.so";
  cr_assert_null(ascope_driver_load(path, err, sizeof err));
  has(err, "cannot load plugin");
  has(err, path);
  has(err, "No such file"); /* the loader's own reason */
}

Test(plugin, missing_entry_symbol) {
  char err[512];
  const char *path = PLUGIN_DIR "/no_entry_plugin.so";
  cr_assert_null(ascope_driver_load(path, err, sizeof err));
  has(err, path);
  has(err, "no symbol ascope_driver_entry");
}

Test(plugin, wrong_abi) {
  char err[512];
  const char *path = PLUGIN_DIR "/bad_abi_plugin.so";
  cr_assert_null(ascope_driver_load(path, err, sizeof err));
  has(err, path);
  has(err, "ABI");
  char want[64];
  snprintf(want, sizeof want, "version %u", ASCOPE_DRIVER_ABI_MIN - 1);
  has(err, want);
  snprintf(want, sizeof want, "needs %u or later", ASCOPE_DRIVER_ABI_MIN);
  has(err, want);
}

Test(plugin, bad_arguments) {
  char err[128];
  cr_assert_null(ascope_driver_load(NULL, err, sizeof err));
  has(err, "no plugin path");
  cr_assert_null(ascope_driver_load("", err, sizeof err));
  has(err, "no plugin path");
  /* no buffer: still refused, nothing written */
  cr_assert_null(ascope_driver_load(PLUGIN_DIR "/no_entry_plugin.so", NULL, 0));
  /* a short buffer is truncated, and terminated */
  char tiny[8];
  memset(tiny, 'x', sizeof tiny);
  cr_assert_null(ascope_driver_load(PLUGIN_DIR "/no_such_plugin.so", tiny, sizeof tiny));
  cr_assert_eq(strlen(tiny), sizeof tiny - 1);
}
