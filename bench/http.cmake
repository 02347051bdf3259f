# bench/http_bench: the HTTP driver beside wrk against the local nginx.
add_executable(http_bench ${CMAKE_CURRENT_SOURCE_DIR}/http_bench.c)
target_link_libraries(http_bench PRIVATE ascope-http)
