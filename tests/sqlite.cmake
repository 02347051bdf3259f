# The SQLite driver's tests: real database files in a mkdtemp directory per
# test. Labelled "tsan" too: the threadpool hand-offs are what
# ThreadSanitizer should see (where Criterion cannot start under TSan, the
# tests run on the mini stand-in, when the tree has it).
set(_sqlite_test_opts)
if(TARGET mini_criterion)
  list(APPEND _sqlite_test_opts MINI_UNDER_TSAN)
endif()
foreach(t test_sqlite test_sqlite_tx test_sqlite_stream test_sqlite_faults test_sqlite_load
    test_sqlite_pool test_sqlite_loop)
  if(EXISTS ${CMAKE_CURRENT_SOURCE_DIR}/${t}.c)
    ascope_test(${t} ${CMAKE_CURRENT_SOURCE_DIR}/${t}.c ${CMAKE_CURRENT_SOURCE_DIR}/sqlite_support.c
      ${CMAKE_CURRENT_SOURCE_DIR}/fault_vfs.c
      ${CMAKE_CURRENT_SOURCE_DIR}/support/scope_record.c
      LIBS ascope-sqlite PkgConfig::SQLITE3 LABELS "sqlite;tsan" ${_sqlite_test_opts})
  endif()
endforeach()
# Each allocation of a connect, a transaction, an exec, a query and a stream
# failed in turn (statements allocate on the threadpool too).
ascope_test(test_sqlite_alloc ${CMAKE_CURRENT_SOURCE_DIR}/test_sqlite_alloc.c
  LIBS ascope-sqlite LABELS "sqlite;tsan" ${_sqlite_test_opts})
