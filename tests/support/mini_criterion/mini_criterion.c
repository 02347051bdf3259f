/* The runner of the Criterion stand-in for ThreadSanitizer builds: see
 * criterion/criterion.h beside it. */
#include "criterion/criterion.h"

#include <stdarg.h>
#include <sys/wait.h>
#include <unistd.h>

#define MC_MAX 512

struct mc_test {
  const char *suite, *name;
  void (*fn)(void);
};
struct mc_suite {
  const char *name;
  struct mc_suite_opts opts;
};

static struct mc_test tests[MC_MAX];
static struct mc_suite suites[64];
static int ntests, nsuites;

void mc_register_test(const char *suite, const char *name, void (*fn)(void)) {
  if (ntests == MC_MAX) abort();
  tests[ntests++] = (struct mc_test){suite, name, fn};
}

void mc_register_suite(const char *suite, struct mc_suite_opts opts) {
  if (nsuites == 64) abort();
  suites[nsuites++] = (struct mc_suite){suite, opts};
}

void mc_fail(const char *file, int line, const char *expr, const char *fmt, ...) {
  fprintf(stderr, "[----] %s:%d: Assertion Failed: %s\n", file, line, expr);
  if (fmt && *fmt) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "[----]   ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
  }
  fflush(NULL);
  exit(1);
}

static const struct mc_suite_opts *suite_of(const char *name) {
  for (int i = 0; i < nsuites; i++)
    if (strcmp(suites[i].name, name) == 0) return &suites[i].opts;
  return NULL;
}

static int by_name(const void *a, const void *b) {
  const struct mc_test *x = a, *y = b;
  int c = strcmp(x->suite, y->suite);
  return c ? c : strcmp(x->name, y->name);
}

int main(int argc, char **argv) {
  (void)argc;
  (void)argv;
  qsort(tests, (size_t)ntests, sizeof *tests, by_name);
  int passed = 0, failed = 0, crashed = 0;
  for (int i = 0; i < ntests; i++) {
    struct mc_test *t = &tests[i];
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
      perror("fork");
      return 1;
    }
    if (pid == 0) {
      const struct mc_suite_opts *o = suite_of(t->suite);
      alarm(o && o->timeout > 0 ? (unsigned)o->timeout : 300);
      if (o && o->init) o->init();
      t->fn();
      if (o && o->fini) o->fini();
      fflush(NULL);
      exit(0);
    }
    int st = 0;
    while (waitpid(pid, &st, 0) < 0) {
    }
    if (WIFEXITED(st) && WEXITSTATUS(st) == 0) {
      passed++;
    } else if (WIFEXITED(st)) {
      failed++;
      fprintf(stderr, "[FAIL] %s::%s (exit %d)\n", t->suite, t->name, WEXITSTATUS(st));
    } else {
      crashed++;
      fprintf(stderr, "[FAIL] %s::%s: CRASH (signal %d)\n", t->suite, t->name, WTERMSIG(st));
    }
  }
  fprintf(stderr, "[====] Synthesis: Tested: %d | Passing: %d | Failing: %d | Crashing: %d\n",
          ntests, passed, failed, crashed);
  return failed || crashed ? 1 : 0;
}
