# bench/file_bench: ascope_file_stream beside cat, on one file in the page cache.
add_executable(file_bench ${CMAKE_CURRENT_SOURCE_DIR}/file_bench.c)
target_link_libraries(file_bench PRIVATE ascope-file_static ascope_static)
