/* copy_file SRC DST: copies a file through an atomic replace.
 *
 *   async with open(src) as src, open(dst, "w", atomic=True) as dst:
 *       async for chunk in src: await dst.write(chunk)
 *
 * DST appears whole or not at all: if anything fails (a read error, a full
 * disk, the 10 s deadline), the temporary file is removed and DST keeps
 * its old content. */
#include <ascope/file.h>

#include <stdio.h>

static int on_chunk(ascope *s, int status, const char *data, size_t len, void *ud) {
  if (status < 0) return status; /* pass a read error up: the scope fails */
  if (data == NULL) return 0;    /* the end of the file */
  /* the write copies data; writes run in order, each after the last */
  return ascope_file_write(s, ud, data, len, -1, NULL, NULL);
}

static void body(ascope *s, void *ud) {
  size_t *at = ud;
  ascope_file *src = ascope_file_resource(s, at[0]);
  ascope_file *dst = ascope_file_resource(s, at[1]);
  ascope_file_stream(s, src, 1 << 20, 0, on_chunk, dst, NULL);
}

static int result;

static void done(ascope *s, int status, void *ud) {
  (void)ud;
  result = status;
  char err[512];
  ascope_err_format(ascope_error(s), err, sizeof err);
  printf("%s\n", status ? err : "copied");
}

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: copy_file SRC DST\n");
    return 2;
  }
  ascope_rt *rt = ascope_rt_new(NULL);
  ascope *s = ascope_new(rt);
  size_t at[2];
  at[0] = ascope_use_count(s);
  ascope_use_file(s, argv[1], "r");
  at[1] = ascope_use_count(s);
  ascope_use_file(s, argv[2], "w atomic");
  ascope_set_timeout(s, 10000);
  int rc = ascope_start(s, body, done, at);
  if (rc == 0) rc = ascope_rt_run(rt);
  ascope_rt_free(rt);
  return rc || result ? 1 : 0;
}
