# cmake -DAR=… -DLD=… -DOBJCOPY=… -DARCHIVE=lib.a -P localize.cmake
#
# A static archive's objects see each other's internal functions through
# global symbols, which the archive then offers to every program it is
# linked into (pg_cache_get, err_set…): names that may clash with the
# program's own, and that a shared library hides. This links the archive's
# objects into one relocatable object (ld -r), where they are resolved,
# turns every hidden symbol local (objcopy --localize-hidden) and makes the
# archive of that one object: only the ascope_* API stays global.
get_filename_component(dir ${ARCHIVE} DIRECTORY)
get_filename_component(base ${ARCHIVE} NAME_WE)
set(work ${dir}/${base}.localize)
file(REMOVE_RECURSE ${work})
file(MAKE_DIRECTORY ${work})
execute_process(COMMAND ${AR} x ${ARCHIVE} WORKING_DIRECTORY ${work} RESULT_VARIABLE rc)
if(rc)
  message(FATAL_ERROR "localize: ar x ${ARCHIVE} failed")
endif()
file(GLOB objects ${work}/*.o)
execute_process(COMMAND ${LD} -r -o ${work}/${base}.o ${objects} RESULT_VARIABLE rc)
if(rc)
  message(FATAL_ERROR "localize: ld -r failed for ${ARCHIVE}")
endif()
execute_process(COMMAND ${OBJCOPY} --localize-hidden ${work}/${base}.o RESULT_VARIABLE rc)
if(rc)
  message(FATAL_ERROR "localize: objcopy --localize-hidden failed for ${ARCHIVE}")
endif()
file(REMOVE ${ARCHIVE})
execute_process(COMMAND ${AR} rcs ${ARCHIVE} ${work}/${base}.o RESULT_VARIABLE rc)
if(rc)
  message(FATAL_ERROR "localize: ar rcs ${ARCHIVE} failed")
endif()
file(REMOVE_RECURSE ${work})
