# The file driver's tests: real files in a temporary directory. Labelled
# "tsan" too: its threadpool paths are what ThreadSanitizer should see (where
# Criterion cannot start, the tests run on the mini stand-in).
set(_file_test_opts)
if(TARGET mini_criterion)
  list(APPEND _file_test_opts MINI_UNDER_TSAN)
endif()
ascope_test(test_file ${CMAKE_CURRENT_SOURCE_DIR}/test_file.c LIBS ascope-file LABELS file tsan
  ${_file_test_opts})
ascope_test(test_file_lines ${CMAKE_CURRENT_SOURCE_DIR}/test_file_lines.c LIBS ascope-file
  LABELS file tsan ${_file_test_opts})
# Each allocation of a read and of an atomic write failed in turn.
ascope_test(test_file_alloc ${CMAKE_CURRENT_SOURCE_DIR}/test_file_alloc.c LIBS ascope-file
  LABELS file tsan ${_file_test_opts})
