/* Builds against an installed ascope (scripts/check-install builds it with
 * find_package, shared and static, and with pkg-config) and runs one scope
 * with two drivers: an in-memory SQLite database answers a query and the
 * file driver writes the answer. Proof that the installed headers,
 * libraries, CMake package and .pc files are complete.
 *
 *   c <file to write>   */
#include <ascope/file.h>
#include <ascope/sqlite.h>

#include <stdio.h>
#include <string.h>

static char answer[32];

static int on_rows(ascope *s, int status, ascope_rows *rows, void *ud) {
  (void)ud;
  if (status) return status;
  snprintf(answer, sizeof answer, "%lld\n", (long long)ascope_rows_int64(rows, 0, 0));
  return ascope_file_write(s, ascope_resource(s, 0), answer, strlen(answer), 0, NULL, NULL);
}

static void body(ascope *s, void *ud) {
  (void)ud;
  ascope_sql_query(s, ascope_resource(s, 1), "SELECT 40 + 2", NULL, on_rows, NULL);
}

static void done(ascope *s, int status, void *ud) {
  char msg[256] = "";
  if (status) ascope_err_format(ascope_error(s), msg, sizeof msg);
  if (status) fprintf(stderr, "consumer: %s\n", msg);
  *(int *)ud = status == 0 ? 1 : -1;
}

int main(int argc, char **argv) {
  const char *path = argc > 1 ? argv[1] : "consumer.out";
  ascope_rt *rt = ascope_rt_new(NULL);
  ascope *s = ascope_new(rt);
  int ok = 0, rc;
  if ((rc = ascope_use_file(s, path, "w atomic")) ||
      (rc = ascope_use_sqlite(s, ":memory:", "mode=memory")) ||
      (rc = ascope_start(s, body, done, &ok))) {
    fprintf(stderr, "consumer: %s\n", ascope_err_name(rc));
    return 1;
  }
  ascope_rt_run(rt);
  ascope_rt_free(rt);

  /* The atomic write lands only if the scope succeeded: read it back. */
  char got[32] = "";
  FILE *f = fopen(path, "r");
  if (f) {
    if (!fgets(got, sizeof got, f)) got[0] = 0;
    fclose(f);
  }
  ok = ok == 1 && strcmp(got, "42\n") == 0;
  printf("consumer: %s\n", ok ? "ok" : "failed");
  return ok ? 0 : 1;
}
