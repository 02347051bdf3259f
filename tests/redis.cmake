# The Redis driver's tests, against the real server scripts/redis-start runs
# (ASCOPE_REDIS_URL; without it they fail and say so). Each test process
# uses keys of its own, named after its pid.
pkg_check_modules(HIREDIS_T REQUIRED IMPORTED_TARGET hiredis)
foreach(t test_redis test_redis_streams)
  if(EXISTS ${CMAKE_CURRENT_SOURCE_DIR}/${t}.c)
    ascope_test(${t} ${CMAKE_CURRENT_SOURCE_DIR}/${t}.c ${CMAKE_CURRENT_SOURCE_DIR}/redis_support.c
      ${CMAKE_CURRENT_SOURCE_DIR}/support/scope_record.c
      LIBS ascope-redis PkgConfig::HIREDIS_T LABELS "redis")
  endif()
endforeach()
