# bench/redis_bench: the Redis driver beside redis-benchmark against the same
# server in the same run (GET and SET, 64 in flight on one connection). Needs
# ASCOPE_REDIS_URL (scripts/redis-start) and redis-benchmark (redis-tools).
add_executable(redis_bench ${CMAKE_CURRENT_SOURCE_DIR}/redis_bench.c)
target_link_libraries(redis_bench PRIVATE ascope-redis)
