/* A program linked with the core and the SQL interface only: it finds an
 * outside driver ("hello", ascope-hello.so) and the installed SQLite
 * plugin by name, through ASCOPE_DRIVER_PATH. Usage: by_name <sqlite db>;
 * by_name <sqlite db> <name> only finds the driver called name. */
#include <ascope/driver.h>
#include <ascope/sql.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int hello_value, answer;

static int answer_cb(ascope *s, int status, ascope_rows *rows, void *ud) {
  (void)s, (void)ud;
  if (status == 0) answer = (int)ascope_rows_int64(rows, 0, 0);
  return status;
}

static void body(ascope *s, void *ud) {
  (void)ud;
  hello_value = *(int *)ascope_resource(s, 0);
  ascope_sql_query(s, ascope_sql_resource(s, 1), "SELECT 6 * 7", NULL, answer_cb, NULL);
}

int main(int argc, char **argv) {
  char why[512], url[512];
  if (argc != 2 && argc != 3) return 2;
  if (argc == 3) {
    const ascope_driver *d = ascope_driver_find(argv[2], why, sizeof why);
    if (d == NULL || strcmp(d->name, argv[2]) != 0) {
      fprintf(stderr, "by_name: %s\n", d ? "another driver's name" : why);
      return 1;
    }
    return 0;
  }
  const ascope_driver *hello = ascope_driver_find("hello", why, sizeof why);
  if (hello == NULL) {
    fprintf(stderr, "by_name: %s\n", why);
    return 1;
  }
  snprintf(url, sizeof url, "sqlite:%s", argv[1]);
  ascope_rt *rt = ascope_rt_new(NULL);
  ascope *s = ascope_new(rt);
  if (ascope_use(s, hello, NULL, NULL) || ascope_use_sql_url(s, url, NULL) ||
      ascope_start(s, body, NULL, NULL) || ascope_rt_run(rt) || ascope_rt_free(rt))
    return 1;
  if (hello_value != 7 || answer != 42) {
    fprintf(stderr, "by_name: hello %d, answer %d\n", hello_value, answer);
    return 1;
  }
  return 0;
}
