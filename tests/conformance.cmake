# The driver conformance kit (tests/conformance/kit.[ch]) and one runner per
# driver. The kit sees a driver's completions by defining ascope_res_done,
# ascope_op_begin and ascope_op_end in the executable and forwarding to
# libascope's (dlsym RTLD_NEXT): the runners export their symbols, and link
# the shared ascope libraries.
set(_kit ${CMAKE_CURRENT_SOURCE_DIR}/conformance)
function(ascope_conformance name)
  cmake_parse_arguments(C "" "" "LIBS;LABELS" ${ARGN})
  ascope_test(${name} ${_kit}/${name}.c ${_kit}/kit.c LIBS ${C_LIBS} ${CMAKE_DL_LIBS}
    LABELS ${C_LABELS})
  target_include_directories(${name} PRIVATE ${_kit})
  set_target_properties(${name} PROPERTIES ENABLE_EXPORTS ON)
endfunction()

ascope_conformance(test_conformance_core LABELS core)
if(TARGET ascope-file)
  ascope_conformance(test_conformance_file LIBS ascope-file LABELS file)
endif()
if(TARGET ascope-sqlite)
  ascope_conformance(test_conformance_sqlite LIBS ascope-sqlite LABELS sqlite)
endif()
if(TARGET ascope-postgres)
  ascope_conformance(test_conformance_postgres LIBS ascope-postgres LABELS postgres)
endif()
if(TARGET ascope-http)
  ascope_conformance(test_conformance_http LIBS ascope-http LABELS http)
endif()
if(TARGET ascope-redis)
  ascope_conformance(test_conformance_redis LIBS ascope-redis LABELS redis)
endif()

# The SQL conformance suite (conformance/sql_suite.[ch]): the same cases on
# every SQL driver, each runner describing its own. Compiled once per runner
# under a suite name of its own (sql_sqlite…), so a report names the driver.
# Labelled like the driver's own tests, "tsan" included (there on the
# Criterion stand-in): statements are handed to threads either way.
set(_sql_suite_opts)
if(TARGET mini_criterion)
  list(APPEND _sql_suite_opts MINI_UNDER_TSAN)
endif()
function(sql_conformance_runner name suite)
  cmake_parse_arguments(C "" "" "LIBS;LABELS" ${ARGN})
  ascope_test(${name} ${_kit}/${name}.c ${_kit}/sql_suite.c
    ${CMAKE_CURRENT_SOURCE_DIR}/support/scope_record.c
    LIBS ${C_LIBS} LABELS "${C_LABELS}" ${_sql_suite_opts})
  target_include_directories(${name} PRIVATE ${_kit})
  target_compile_definitions(${name} PRIVATE ASCOPE_SQL_SUITE_NAME=${suite})
endfunction()
if(TARGET ascope-sqlite)
  sql_conformance_runner(test_conformance_sql_sqlite sql_sqlite LIBS ascope-sqlite
    LABELS sqlite tsan)
endif()
if(TARGET ascope-postgres)
  sql_conformance_runner(test_conformance_sql_postgres sql_postgres
    LIBS ascope-postgres PkgConfig::LIBPQ_T LABELS postgres tsan)
endif()
