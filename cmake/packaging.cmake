# ascope_pkgconfig(<library> <description> [REQUIRES ...] [REQUIRES_PRIVATE ...]
#                  [LIBS_PRIVATE ...]): installs <library>.pc beside the
# libraries, so `pkg-config --cflags --libs ascope-sqlite` is the whole
# command line for a driver (the ascope libraries it needs come through
# Requires) and `pkg-config --static` adds what the archives need (the system
# libraries: REQUIRES_PRIVATE are pkg-config modules, LIBS_PRIVATE -l flags).
#
# The prefix is written when installing, not when configuring: `cmake
# --install --prefix DIR` must give a .pc that points into DIR, not at the
# CMAKE_INSTALL_PREFIX the tree was configured with.
function(ascope_pkgconfig name description)
  cmake_parse_arguments(P "" "" "REQUIRES;REQUIRES_PRIVATE;LIBS_PRIVATE" ${ARGN})
  set(PC_NAME ${name})
  set(PC_DESCRIPTION "${description}")
  set(PC_FIELDS "")
  if(P_REQUIRES)
    # The ascope libraries of one installation go together: pin the version.
    set(reqs "")
    foreach(r ${P_REQUIRES})
      if(r MATCHES "^ascope(-[a-z]+)?$")
        list(APPEND reqs "${r} = ${PROJECT_VERSION}")
      else()
        list(APPEND reqs "${r}")
      endif()
    endforeach()
    list(JOIN reqs ", " reqs)
    string(APPEND PC_FIELDS "Requires: ${reqs}\n")
  endif()
  if(P_REQUIRES_PRIVATE)
    list(JOIN P_REQUIRES_PRIVATE ", " r)
    string(APPEND PC_FIELDS "Requires.private: ${r}\n")
  endif()
  string(APPEND PC_FIELDS "Libs: -L\${libdir} -l${name}\n")
  if(P_LIBS_PRIVATE)
    list(JOIN P_LIBS_PRIVATE " " l)
    string(APPEND PC_FIELDS "Libs.private: ${l}\n")
  endif()
  foreach(kind LIBDIR INCLUDEDIR)
    if(IS_ABSOLUTE "${CMAKE_INSTALL_${kind}}")
      set(PC_${kind} "${CMAKE_INSTALL_${kind}}")
    else()
      set(PC_${kind} "\${prefix}/${CMAKE_INSTALL_${kind}}")
    endif()
  endforeach()
  # First pass now, for everything but the prefix: @ASCOPE_PC_PREFIX@ is
  # left in place for the second pass, at install time.
  set(ASCOPE_PC_PREFIX "@ASCOPE_PC_PREFIX@")
  set(stage ${PROJECT_BINARY_DIR}/pkgconfig/${name}.pc.in)
  set(out ${PROJECT_BINARY_DIR}/pkgconfig/${name}.pc)
  configure_file(${PROJECT_SOURCE_DIR}/cmake/ascope.pc.in ${stage} @ONLY)
  install(CODE "set(ASCOPE_PC_PREFIX \"\${CMAKE_INSTALL_PREFIX}\")
configure_file(\"${stage}\" \"${out}\" @ONLY)")
  install(FILES ${out} DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
endfunction()
