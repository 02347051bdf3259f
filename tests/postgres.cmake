# The PostgreSQL driver's tests, against the real server scripts/pg-start
# runs (ASCOPE_PG_DSN; without it they fail and say so). Each test process
# uses tables of its own, named after its pid.
pkg_check_modules(LIBPQ_T REQUIRED IMPORTED_TARGET libpq)
foreach(t test_postgres test_postgres_pipeline test_postgres_stream test_postgres_faults)
  if(EXISTS ${CMAKE_CURRENT_SOURCE_DIR}/${t}.c)
    ascope_test(${t} ${CMAKE_CURRENT_SOURCE_DIR}/${t}.c ${CMAKE_CURRENT_SOURCE_DIR}/pg_support.c
      LIBS ascope-postgres PkgConfig::LIBPQ_T LABELS "postgres")
    set_tests_properties(${t} PROPERTIES FAIL_REGULAR_EXPRESSION "${SANITIZER_REPORT}")
  endif()
endforeach()
