/* The file driver under allocation failure: each allocation of a read (an
 * open, a read, a read_all and a line stream) and of an atomic write (the
 * temporary name, the copy of the data, the rename) fails in turn, and
 * every time the scope ends once, cleanly, with nothing left behind: no
 * block of memory and no temporary file beside the target. */
#include <ascope/file.h>
#include <dirent.h>

#include "alloc_fail.h"
#include "temp_dir.h"

static char dir[256];
static char in_path[280], out_path[280];

static void setup(void) {
  cr_assert(t_temp_dir(dir, sizeof dir, "ascope-file-alloc"));
  snprintf(in_path, sizeof in_path, "%s/in", dir);
  snprintf(out_path, sizeof out_path, "%s/out", dir);
  FILE *f = fopen(in_path, "w");
  cr_assert(f);
  for (int i = 0; i < 100; i++) fprintf(f, "line %d of the file the test reads\n", i);
  fclose(f);
}

static void teardown(void) {
  unlink(in_path);
  unlink(out_path);
  rmdir(dir);
}

/* Suite-wide, so that the Criterion stand-in under TSan runs them too. */
TestSuite(file_alloc, .init = setup, .fini = teardown, .timeout = 300);

/* Entries in the directory: "in", and "out" once a write succeeded; a
 * temporary file left by a failed atomic write would be a third. */
static int entries(void) {
  DIR *d = opendir(dir);
  int n = 0;
  for (struct dirent *e; d && (e = readdir(d)) != NULL;) n += e->d_name[0] != '.';
  if (d) closedir(d);
  return n;
}

/* ---- the read --------------------------------------------------------------- */

static int on_data(ascope *s, int status, const char *data, size_t len, void *ud) {
  (void)s, (void)data, (void)len;
  af_run *r = ud;
  r->ended++;
  af_saw(r, status);
  return status;
}

static int on_line(ascope *s, int status, const char *data, size_t len, void *ud) {
  if (data != NULL) return ASCOPE_CONTINUE;
  return on_data(s, status, data, len, ud);
}

static int read_uses(ascope *s, af_run *r) {
  (void)r;
  return ascope_use_file(s, in_path, "r");
}

static void read_body(ascope *s, void *ud) {
  af_run *r = ud;
  ascope_file *f = ascope_file_resource(s, 0);
  af_start_op(r, ascope_file_read(s, f, 100, 0, on_data, r));
  af_start_op(r, ascope_file_read_all(s, f, SIZE_MAX, on_data, r));
  af_start_op(r, ascope_file_lines(s, f, "read_size=256", on_line, r, NULL));
}

static void read_scenario(af_run *r) {
  af_scope(r, read_uses, read_body);
}

Test(file_alloc, read) {
  af_sweep("file read", read_scenario, NULL);
}

/* ---- the atomic write ---------------------------------------------------------- */

static int on_written(ascope *s, int status, void *ud) {
  (void)s;
  af_run *r = ud;
  r->ended++;
  af_saw(r, status);
  return status;
}

static int write_uses(ascope *s, af_run *r) {
  (void)r;
  return ascope_use_file(s, out_path, "w atomic");
}

static void write_body(ascope *s, void *ud) {
  af_run *r = ud;
  ascope_file *f = ascope_file_resource(s, 0);
  af_start_op(r, ascope_file_write(s, f, "first\n", 6, -1, on_written, r));
  af_start_op(r, ascope_file_write(s, f, "second\n", 7, -1, on_written, r));
  af_start_op(r, ascope_file_sync(s, f, on_written, r));
}

static int left_behind; /* runs after which the directory held a temporary file */

static void write_scenario(af_run *r) {
  af_scope(r, write_uses, write_body);
  if (entries() > 2) left_behind++;
}

Test(file_alloc, atomic_write) {
  af_sweep("file atomic write", write_scenario, NULL);
  cr_assert_eq(left_behind, 0, "%d run(s) left a temporary file beside the target", left_behind);
  FILE *f = fopen(out_path, "r");
  cr_assert(f, "the good run wrote no file");
  char buf[32] = "";
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  cr_assert_str_eq(buf, "first\nsecond\n", "got %zu bytes", n);
}
