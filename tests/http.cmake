# The HTTP driver's tests, against real servers: nginx and tests/fault_server,
# started by scripts/http-start (which runs fault_server from this build tree).
add_executable(fault_server ${CMAKE_CURRENT_SOURCE_DIR}/fault_server.c)
target_link_libraries(fault_server PRIVATE PkgConfig::LIBUV)

ascope_test(test_http ${CMAKE_CURRENT_SOURCE_DIR}/test_http.c LIBS ascope-http LABELS "http")
# Random cancels of many streams sharing a session, beside other watchers of
# the loop; its counts scale with ASCOPE_HTTP_STORM_SCOPES and _ROUNDS.
ascope_test(test_http_storm ${CMAKE_CURRENT_SOURCE_DIR}/test_http_storm.c LIBS ascope-http LABELS "http")
# Each allocation of a session and a GET failed in turn, on the real nginx.
ascope_test(test_http_alloc ${CMAKE_CURRENT_SOURCE_DIR}/test_http_alloc.c LIBS ascope-http
  LABELS http)
