# Build helpers in the style of absl_cc_library: one way to declare a library,
# a binary or a test, with the project's warnings applied everywhere.

set(CB_WARNINGS -Wall -Wextra -Wpedantic -Wshadow -Wnon-virtual-dtor
    -Wno-unused-parameter -Wno-missing-field-initializers)
if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU")
  # GCC 12 reports false positives inside std::string (GCC bug 105329).
  list(APPEND CB_WARNINGS -Wno-restrict)
endif()
if(CB_THREAD_SAFETY)
  if(NOT CMAKE_CXX_COMPILER_ID STREQUAL "Clang")
    message(FATAL_ERROR "CB_THREAD_SAFETY needs clang (CXX=clang++)")
  endif()
  # Checks every ABSL_GUARDED_BY / ABSL_EXCLUSIVE_LOCKS_REQUIRED annotation.
  list(APPEND CB_WARNINGS -Wthread-safety -Werror=thread-safety)
endif()
if(CB_WERROR)
  list(APPEND CB_WARNINGS -Werror)
endif()

# cb_cc_library(NAME SRCS ... HDRS ... DEPS ...)
function(cb_cc_library NAME)
  cmake_parse_arguments(CB "" "" "SRCS;HDRS;DEPS" ${ARGN})
  if(CB_SRCS)
    add_library(${NAME} STATIC ${CB_SRCS} ${CB_HDRS})
    target_compile_options(${NAME} PRIVATE ${CB_WARNINGS})
    target_include_directories(${NAME} PUBLIC ${PROJECT_SOURCE_DIR})
    target_link_libraries(${NAME} PUBLIC ${CB_DEPS})
  else()
    add_library(${NAME} INTERFACE ${CB_HDRS})
    target_include_directories(${NAME} INTERFACE ${PROJECT_SOURCE_DIR})
    target_link_libraries(${NAME} INTERFACE ${CB_DEPS})
  endif()
endfunction()

# cb_cc_binary(NAME SRCS ... DEPS ...)
function(cb_cc_binary NAME)
  cmake_parse_arguments(CB "" "" "SRCS;DEPS" ${ARGN})
  add_executable(${NAME} ${CB_SRCS})
  target_compile_options(${NAME} PRIVATE ${CB_WARNINGS})
  target_link_libraries(${NAME} PRIVATE ${CB_DEPS})
endfunction()

# cb_cc_test(NAME SRCS ... DEPS ... [LABELS ...] [FIXTURES ...])
# FIXTURES names ctest fixtures the test requires (e.g. dev_pki).
function(cb_cc_test NAME)
  cmake_parse_arguments(CB "" "TIMEOUT" "SRCS;DEPS;LABELS;FIXTURES" ${ARGN})
  add_executable(${NAME} ${CB_SRCS})
  target_compile_options(${NAME} PRIVATE ${CB_WARNINGS})
  target_link_libraries(${NAME} PRIVATE ${CB_DEPS} GTest::gtest GTest::gmock GTest::gtest_main)
  add_test(NAME ${NAME} COMMAND ${NAME})
  if(NOT CB_TIMEOUT)
    set(CB_TIMEOUT 300)
  endif()
  set_tests_properties(${NAME} PROPERTIES
    ENVIRONMENT "CB_TEST_PKI=${PROJECT_BINARY_DIR}/test-pki;CB_SOURCE_DIR=${PROJECT_SOURCE_DIR};CB_BINARY_DIR=${PROJECT_BINARY_DIR};CB_SAMPLES_DIR=${CB_SAMPLES_DIR}"
    TIMEOUT ${CB_TIMEOUT})
  if(CB_LABELS)
    set_tests_properties(${NAME} PROPERTIES LABELS "${CB_LABELS}")
  endif()
  if(CB_FIXTURES)
    set_tests_properties(${NAME} PROPERTIES FIXTURES_REQUIRED "${CB_FIXTURES}")
  endif()
endfunction()
