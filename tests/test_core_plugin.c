/* The plugin loader: a good plugin loads and works as a use in a scope; a
 * missing file, a shared object without the entry symbol and a plugin built
 * for another driver ABI are refused with a clear reason. */
#include <criterion/criterion.h>

#include "test_driver.h"
#include "test_util.h"
#include "temp_dir.h"

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

/* ---- drivers by name ----------------------------------------------------------------------- */

static void noop_acquire(ascope_res *r, const void *arg, const char *options) {
  (void)arg, (void)options;
  ascope_res_done(r, 0, NULL, NULL);
}
static void noop_release(ascope_res *r, int outcome) {
  (void)outcome;
  ascope_res_done(r, 0, NULL, NULL);
}
static const ascope_driver named = {
    .abi = ASCOPE_DRIVER_ABI, .name = "reg-test", .acquire = noop_acquire, .release = noop_release};
static const ascope_driver same_name = {
    .abi = ASCOPE_DRIVER_ABI, .name = "reg-test", .acquire = noop_acquire, .release = noop_release};

Test(plugin, a_registered_driver_is_found_by_name) {
  char err[512] = "untouched";
  cr_assert_null(ascope_driver_find("reg-test", err, sizeof err));
  cr_assert_eq(ascope_driver_register(&named), 0);
  cr_assert_eq(ascope_driver_register(&named), 0, "the same table again is no error");
  cr_assert_eq(ascope_driver_register(&same_name), UV_EEXIST);
  cr_assert_eq(ascope_driver_find("reg-test", err, sizeof err), &named);
  cr_assert_str_eq(err, "");
}

Test(plugin, names_that_could_leave_a_folder_are_refused) {
  const char *bad[] = {
      "", "Up", "../x", "a/b", "a.so", "a b", "abcdefghijklmnopqrstuvwxyz0123456789"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    char err[512];
    cr_assert_null(ascope_driver_find(bad[i], err, sizeof err), "'%s'", bad[i]);
    has(err, "bad driver name");
    ascope_driver d = named;
    d.name = bad[i];
    cr_assert_eq(ascope_driver_register(&d), UV_EINVAL, "'%s'", bad[i]);
  }
  cr_assert_null(ascope_driver_find(NULL, NULL, 0));
  cr_assert_eq(ascope_driver_register(NULL), UV_EINVAL);
}

/* A folder holding `file` (a link to one of the test plugins) as link. */
static char *plugin_folder(const char *file, const char *link) {
  static char dir[256];
  cr_assert_not_null(t_temp_dir(dir, sizeof dir, "ascope-plugins"));
  char from[512], to[512];
  snprintf(from, sizeof from, "%s/%s", PLUGIN_DIR, file);
  snprintf(to, sizeof to, "%s/%s", dir, link);
  cr_assert_eq(symlink(from, to), 0);
  return dir;
}

static void plugin_folder_rm(const char *dir, const char *link) {
  char to[512];
  snprintf(to, sizeof to, "%s/%s", dir, link);
  unlink(to);
  rmdir(dir);
}

Test(plugin, a_plugin_is_found_in_ASCOPE_DRIVER_PATH_and_registered) {
  char *dir = plugin_folder("good_plugin.so", "ascope-good-plugin.so");
  char path[600];
  snprintf(path, sizeof path, "/nonexistent-ascope:%s", dir);
  setenv("ASCOPE_DRIVER_PATH", path, 1);
  char err[512] = "untouched";
  const ascope_driver *drv = ascope_driver_find("good-plugin", err, sizeof err);
  cr_assert_not_null(drv, "%s", err);
  cr_assert_str_eq(drv->name, "good-plugin");
  cr_assert_str_eq(err, "");
  plugin_folder_rm(dir, "ascope-good-plugin.so");
  /* registered: found again without the file */
  cr_assert_eq(ascope_driver_find("good-plugin", err, sizeof err), drv);
}

Test(plugin, a_plugin_holding_another_driver_is_refused) {
  char *dir = plugin_folder("good_plugin.so", "ascope-other.so");
  setenv("ASCOPE_DRIVER_PATH", dir, 1);
  char err[512];
  cr_assert_null(ascope_driver_find("other", err, sizeof err));
  has(err, "holds the driver \"good-plugin\", not \"other\"");
  plugin_folder_rm(dir, "ascope-other.so");
}

Test(plugin, a_broken_plugin_in_the_path_says_why) {
  char *dir = plugin_folder("no_entry_plugin.so", "ascope-broken.so");
  setenv("ASCOPE_DRIVER_PATH", dir, 1);
  char err[512];
  cr_assert_null(ascope_driver_find("broken", err, sizeof err));
  has(err, "no symbol ascope_driver_entry");
  plugin_folder_rm(dir, "ascope-broken.so");
}

Test(plugin, a_driver_found_nowhere_says_where_it_was_looked_for) {
  setenv("ASCOPE_DRIVER_PATH", "/nonexistent-ascope", 1);
  char err[512];
  cr_assert_null(ascope_driver_find("nosuch", err, sizeof err));
  has(err, "no driver named \"nosuch\"");
  has(err, "ascope-nosuch.so");
  has(err, "/nonexistent-ascope");
  has(err, ascope_driver_dir());
}
