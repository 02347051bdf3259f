/* The tour's file part: `async with open("report.txt", "w", atomic)`.
 *
 * 1. A report is written atomically: the lines go to a temporary file beside
 *    report.txt, and only when the scope ends well is it fsynced and renamed
 *    over the target.
 * 2. A second report fails halfway (its copy to /dev/full runs out of space):
 *    the scope fails, the temporary file is removed, and report.txt still
 *    holds the first report, byte for byte.
 * Everything happens in a temporary directory, removed at the end. */
#include "tour.h"

#include <ascope/file.h>

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char dir[256], report[300];
static char first[512]; /* what the first report holds, read back */
static int bad;

static void list_dir(void) {
  DIR *d = opendir(dir);
  for (struct dirent *e; d && (e = readdir(d));)
    if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
      tour_say("  the directory holds %s", e->d_name);
  if (d) closedir(d);
}

static int entries(void) {
  DIR *d = opendir(dir);
  int n = 0;
  for (struct dirent *e; d && (e = readdir(d));)
    n += strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0;
  if (d) closedir(d);
  return n;
}

/* ---- 1. the atomic report ------------------------------------------------------ */

static int line_written(ascope *s, int status, void *ud) {
  (void)s;
  const char *line = ud;
  tour_say("  wrote \"%.*s\" (%s)", (int)strcspn(line, "\n"), line, tour_outcome(status));
  return status;
}

static void write_report(ascope *s, const char *const *lines) {
  ascope_file *out = ascope_resource(s, 0);
  for (int i = 0; lines[i]; i++)
    ascope_file_write(s, out, lines[i], strlen(lines[i]), -1, line_written, (void *)lines[i]);
}

static void report_body(ascope *s, void *ud) {
  (void)ud;
  static const char *const lines[] = {"region,sales\n", "north,120\n", "south,95\n", NULL};
  tour_say("body: report.txt opened \"w atomic\": writing to a temporary file beside it");
  list_dir();
  write_report(s, lines);
}

static void report_done(ascope *s, int status, void *ud) {
  (void)s, (void)ud;
  tour_say("done: %s: fsync, rename over report.txt, fsync the directory", tour_outcome(status));
  if (status) bad++;
}

/* ---- reading it back -------------------------------------------------------------- */

static int got_all(ascope *s, int status, const char *data, size_t len, void *ud) {
  (void)s;
  if (status == 0) snprintf(ud, sizeof first, "%.*s", (int)len, data);
  return status;
}

static void read_body(ascope *s, void *ud) {
  ascope_file_read_all(s, ascope_resource(s, 0), 4096, got_all, ud);
}

static void read_report(ascope_rt *rt, char *into) {
  ascope *s = ascope_new(rt);
  ascope_set_name(s, "6. read report.txt");
  ascope_use_file(s, report, "r");
  ascope_start(s, read_body, NULL, into);
  ascope_rt_run(rt);
}

static void show(const char *text) {
  char copy[512];
  snprintf(copy, sizeof copy, "%s", text);
  for (char *line = strtok(copy, "\n"); line; line = strtok(NULL, "\n")) tour_say("  | %s", line);
}

/* ---- 2. the failed report ------------------------------------------------------ */

static void failing_body(ascope *s, void *ud) {
  (void)ud;
  static const char *const lines[] = {"region,sales\n", "north,130\n", NULL};
  static char copy[4096];
  tour_say("body: a new report; its copy to /dev/full will run out of space");
  write_report(s, lines);
  ascope_file_write(s, ascope_resource(s, 1), copy, sizeof copy, -1, NULL, NULL);
}

static void failing_done(ascope *s, int status, void *ud) {
  (void)ud;
  tour_say("done: %s: the temporary file is unlinked, report.txt untouched", tour_outcome(status));
  tour_print_error(s);
  if (status != UV_ENOSPC) bad++;
}

int tour_file(ascope_rt *rt) {
  bad = 0;
  if (tour_temp_dir(dir, sizeof dir) == NULL) return 1;
  snprintf(report, sizeof report, "%s/report.txt", dir);

  ascope *s = ascope_new(rt);
  ascope_set_name(s, "6. write report.txt");
  ascope_use_file(s, report, "w atomic");
  ascope_start(s, report_body, report_done, NULL);
  ascope_rt_run(rt);
  read_report(rt, first);
  tour_say("report.txt now reads:");
  show(first);

  s = ascope_new(rt);
  ascope_set_name(s, "6. a report that fails");
  ascope_use_file(s, report, "w atomic");
  ascope_use_file(s, "/dev/full", "w");
  ascope_start(s, failing_body, failing_done, NULL);
  ascope_rt_run(rt);

  char after[512] = "";
  read_report(rt, after);
  int same = strcmp(first, after) == 0, files = entries();
  tour_say("report.txt %s; %d file(s) in the directory", same ? "is unchanged" : "CHANGED", files);
  if (!same || files != 1) bad++;

  unlink(report);
  rmdir(dir);
  return bad;
}
