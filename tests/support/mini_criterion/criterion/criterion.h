/* A stand-in for <criterion/criterion.h>, used only in ThreadSanitizer
 * builds (ASCOPE_SANITIZE=thread).
 *
 * Criterion cannot start under TSan: at start-up its sandbox (BoxFort) maps
 * an "inheritable arena" with mmap(MAP_FIXED) at a random address, which
 * TSan's mmap interceptor refuses outside application memory, so every test
 * binary aborts with "criterion: Could not initialize inheritable arena:
 * Resource temporarily unavailable" (or, now and then, a SEGV inside
 * libcriterion) before running a test — Criterion issue #274.
 *
 * This header implements the part of Criterion's API the core tests use:
 * Test(), TestSuite() with .init/.fini/.timeout, and the cr_assert* macros with an
 * optional printf-style message. Like Criterion, each test runs in its own
 * forked process (so static state and the allocator hook start fresh), the
 * suite's init runs before it and its fini after it; an assertion failure
 * ends the test. Command-line arguments are ignored. The binary exits 1 if
 * any test failed or crashed. */
#ifndef MINI_CRITERION_H
#define MINI_CRITERION_H

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct mc_suite_opts {
  void (*init)(void);
  void (*fini)(void);
  double timeout; /* seconds; 0: 300 */
};

void mc_register_test(const char *suite, const char *name, void (*fn)(void));
void mc_register_suite(const char *suite, struct mc_suite_opts opts);
void mc_fail(const char *file, int line, const char *expr, const char *fmt, ...)
    __attribute__((noreturn));

#define Test(suite, name, ...)                                                                     \
  static void mc_test_##suite##_##name(void);                                                      \
  __attribute__((constructor)) static void mc_reg_##suite##_##name(void) {                         \
    mc_register_test(#suite, #name, mc_test_##suite##_##name);                                     \
  }                                                                                                \
  static void mc_test_##suite##_##name(void)

#define TestSuite(suite, ...)                                                                      \
  __attribute__((constructor)) static void mc_regsuite_##suite(void) {                             \
    mc_register_suite(#suite, (struct mc_suite_opts){__VA_ARGS__});                                \
  }

/* "" __VA_ARGS__: no message gives "", a message gives "" "fmt", args. */
#define cr_assert(cond, ...)                                                                       \
  do {                                                                                             \
    if (!(cond)) mc_fail(__FILE__, __LINE__, #cond, "" __VA_ARGS__);                               \
  } while (0)
#define mc_cmp(a, op, b, ...)                                                                      \
  do {                                                                                             \
    if (!((a)op(b))) mc_fail(__FILE__, __LINE__, #a " " #op " " #b, "" __VA_ARGS__);               \
  } while (0)
#define cr_assert_eq(a, b, ...) mc_cmp(a, ==, b, __VA_ARGS__)
#define cr_assert_neq(a, b, ...) mc_cmp(a, !=, b, __VA_ARGS__)
#define cr_assert_lt(a, b, ...) mc_cmp(a, <, b, __VA_ARGS__)
#define cr_assert_gt(a, b, ...) mc_cmp(a, >, b, __VA_ARGS__)
#define cr_assert_leq(a, b, ...) mc_cmp(a, <=, b, __VA_ARGS__)
#define cr_assert_geq(a, b, ...) mc_cmp(a, >=, b, __VA_ARGS__)
#define cr_assert_null(p, ...) mc_cmp((const void *)(p), ==, NULL, __VA_ARGS__)
#define cr_assert_not_null(p, ...) mc_cmp((const void *)(p), !=, NULL, __VA_ARGS__)
#define cr_assert_str_eq(a, b, ...)                                                                \
  do {                                                                                             \
    const char *mc_a_ = (a), *mc_b_ = (b);                                                         \
    if (strcmp(mc_a_, mc_b_) != 0) {                                                               \
      fprintf(stderr, "  \"%s\" != \"%s\"\n", mc_a_, mc_b_);                                       \
      mc_fail(__FILE__, __LINE__, #a " == " #b, "" __VA_ARGS__);                                   \
    }                                                                                              \
  } while (0)
#define cr_assert_fail(...) mc_fail(__FILE__, __LINE__, "cr_assert_fail", "" __VA_ARGS__)
#define cr_log_info(...)                                                                           \
  do {                                                                                             \
    fprintf(stderr, "[----] " __VA_ARGS__);                                                        \
    fputc('\n', stderr);                                                                           \
  } while (0)

#endif
