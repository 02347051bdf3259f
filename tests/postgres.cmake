# The PostgreSQL driver's tests, against the real server scripts/pg-start
# runs (ASCOPE_PG_DSN; without it they fail and say so). Each test process
# uses tables of its own, named after its pid.
pkg_check_modules(LIBPQ_T REQUIRED IMPORTED_TARGET libpq)
# Labelled "tsan" too: cancel requests and host lookups run on the threadpool.
set(_pg_test_opts)
if(TARGET mini_criterion)
  list(APPEND _pg_test_opts MINI_UNDER_TSAN)
endif()
foreach(t test_postgres test_postgres_pipeline test_postgres_stream test_postgres_faults
    test_postgres_order test_postgres_errors test_postgres_pool test_postgres_pgbouncer)
  if(EXISTS ${CMAKE_CURRENT_SOURCE_DIR}/${t}.c)
    ascope_test(${t} ${CMAKE_CURRENT_SOURCE_DIR}/${t}.c ${CMAKE_CURRENT_SOURCE_DIR}/pg_support.c
      ${CMAKE_CURRENT_SOURCE_DIR}/support/scope_record.c
      LIBS ascope-postgres PkgConfig::LIBPQ_T LABELS "postgres;tsan" ${_pg_test_opts})
  endif()
endforeach()
# test_postgres_errors interposes a libpq function the driver calls: its
# definition must be in the executable's dynamic symbol table.
if(TARGET test_postgres_errors)
  set_target_properties(test_postgres_errors PROPERTIES ENABLE_EXPORTS ON)
endif()
# Thousands of rounds of 64 scopes: more than the default time on a busy machine.
if(TEST test_postgres_order)
  set_tests_properties(test_postgres_order PROPERTIES TIMEOUT 1500)
endif()
# Each allocation of a connect and a query failed in turn, on the real server.
ascope_test(test_postgres_alloc ${CMAKE_CURRENT_SOURCE_DIR}/test_postgres_alloc.c
  LIBS ascope-postgres LABELS postgres)
# Failover: a primary and a synchronous standby of its own (scripts/pg-start
# --standby), the primary stopped hard under load and the standby promoted.
ascope_test(test_postgres_failover ${CMAKE_CURRENT_SOURCE_DIR}/test_postgres_failover.c
  ${CMAKE_CURRENT_SOURCE_DIR}/pg_support.c ${CMAKE_CURRENT_SOURCE_DIR}/support/scope_record.c
  LIBS ascope-postgres PkgConfig::LIBPQ_T LABELS postgres TIMEOUT 400)
target_compile_definitions(test_postgres_failover PRIVATE ASCOPE_SOURCE_DIR="${CMAKE_SOURCE_DIR}")
