/* The conformance kit on the file driver: a file read twice, and an atomic
 * write (whose release commits or discards by the outcome). */
#include <ascope/file.h>
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "kit.h"
#include "temp_dir.h"

TestSuite(conformance_file, .timeout = 300);

static char dir[256];
static char path[280];

static void setup(void) {
  cr_assert(t_temp_dir(dir, sizeof dir, "ascope-kit"));
  snprintf(path, sizeof path, "%s/data", dir);
  FILE *f = fopen(path, "w");
  cr_assert(f);
  fputs("some bytes for the kit to read\n", f);
  fclose(f);
}

static void teardown(void) {
  char tmp[280];
  unlink(path);
  /* an atomic write that failed leaves nothing; one that succeeded, this */
  snprintf(tmp, sizeof tmp, "%s/out", dir);
  unlink(tmp);
  rmdir(dir);
}

static int on_data(ascope *s, int status, const char *data, size_t len, void *ud) {
  (void)s, (void)data, (void)len;
  return ascope_kit_op_done(ud, status);
}

static int read_op(ascope *s, void *res, ascope_kit_op *k) {
  return ascope_file_read_all(s, res, SIZE_MAX, on_data, k);
}

static int on_written(ascope *s, int status, void *ud) {
  (void)s;
  return ascope_kit_op_done(ud, status);
}

static int write_op(ascope *s, void *res, ascope_kit_op *k) {
  return ascope_file_write(s, res, "kit\n", 4, -1, on_written, k);
}

Test(conformance_file, read, .init = setup, .fini = teardown) {
  ascope_kit_driver d = {.name = "file-read",
                         .driver = ascope_file_driver(),
                         .target = path,
                         .options = "r",
                         .bad_target = "/nonexistent-ascope-kit/none",
                         .bad_options = "r",
                         .op = read_op,
                         .nops = 2,
                         /* threadpool work that started cannot be taken back */
                         .flags = ASCOPE_KIT_OPS_RUN_TO_END};
  cr_assert_eq(ascope_kit_run(&d), 0, "the file driver broke rules: see above");
}

Test(conformance_file, atomic_write, .init = setup, .fini = teardown) {
  char out[280];
  snprintf(out, sizeof out, "%s/out", dir);
  ascope_kit_driver d = {.name = "file-atomic",
                         .driver = ascope_file_driver(),
                         .target = out,
                         .options = "w atomic",
                         .bad_target = "/nonexistent-ascope-kit/none",
                         .bad_options = "w atomic",
                         .op = write_op,
                         .nops = 2,
                         .flags = ASCOPE_KIT_OPS_RUN_TO_END};
  cr_assert_eq(ascope_kit_run(&d), 0, "the file driver broke rules: see above");
}
