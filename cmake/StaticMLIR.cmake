# Finds LLVM/MLIR 19 (Debian's packages) and makes every imported MLIR target
# link LLVM statically.
#
# Why: Debian builds LLVM with LLVM_LINK_LLVM_DYLIB, so each static libMLIR*.a
# target names the shared `LLVM` target (libLLVM-19.so, ~120 MB plus its own
# dependencies) in INTERFACE_LINK_LIBRARIES. Our tools must travel to a GPU
# machine that has no LLVM installed, so we swap that one entry for the static
# component libraries that MLIR's core actually uses. The result needs only
# libc/libstdc++ at run time.

# LLVMSupport's exported link interface names zstd::libzstd_shared and a
# shared libz3. dattn uses neither compression nor the SMT solver, so both are
# dropped below; the zstd target must still exist while LLVM's exports load.
if(NOT TARGET zstd::libzstd_shared)
  add_library(zstd::libzstd_shared INTERFACE IMPORTED)
endif()
find_package(MLIR REQUIRED CONFIG
  HINTS /usr/lib/llvm-19/lib/cmake/mlir)
message(STATUS "dattn: MLIR from ${MLIR_DIR}, LLVM ${LLVM_PACKAGE_VERSION}")

list(APPEND CMAKE_MODULE_PATH "${MLIR_CMAKE_DIR}" "${LLVM_CMAKE_DIR}")
include(TableGen)
include(AddLLVM)
include(AddMLIR)

# Static component libraries that replace the shared `LLVM` dylib target.
llvm_map_components_to_libnames(DATTN_LLVM_STATIC_LIBS support demangle)

function(dattn_rewrite_llvm_dylib_dependency target)
  get_target_property(type ${target} TYPE)
  if(NOT type MATCHES "STATIC_LIBRARY|INTERFACE_LIBRARY")
    return()
  endif()
  get_target_property(deps ${target} INTERFACE_LINK_LIBRARIES)
  if(NOT deps)
    return()
  endif()
  list(FIND deps LLVM idx)
  if(idx EQUAL -1)
    return()
  endif()
  list(REMOVE_ITEM deps LLVM)
  list(APPEND deps ${DATTN_LLVM_STATIC_LIBS})
  set_target_properties(${target} PROPERTIES INTERFACE_LINK_LIBRARIES "${deps}")
endfunction()

# LLVMSupport: keep the system libraries it needs, statically where we can.
get_target_property(_support_deps LLVMSupport INTERFACE_LINK_LIBRARIES)
list(FILTER _support_deps EXCLUDE REGEX "z3|zstd|ZLIB")
find_library(DATTN_STATIC_ZLIB libz.a REQUIRED)
list(APPEND _support_deps ${DATTN_STATIC_ZLIB})
set_target_properties(LLVMSupport PROPERTIES INTERFACE_LINK_LIBRARIES "${_support_deps}")

foreach(t IN LISTS MLIR_EXPORTED_TARGETS)
  if(TARGET ${t})
    dattn_rewrite_llvm_dylib_dependency(${t})
  endif()
endforeach()

# The MLIR/LLVM headers, as SYSTEM so their warnings stay out of our builds.
add_library(dattn_mlir_headers INTERFACE)
target_include_directories(dattn_mlir_headers SYSTEM INTERFACE
  ${LLVM_INCLUDE_DIRS} ${MLIR_INCLUDE_DIRS})
target_compile_definitions(dattn_mlir_headers INTERFACE ${LLVM_DEFINITIONS})

if(NOT LLVM_PACKAGE_VERSION VERSION_GREATER_EQUAL 19 OR LLVM_PACKAGE_VERSION VERSION_GREATER_EQUAL 20)
  message(FATAL_ERROR "dattn needs LLVM/MLIR 19, found ${LLVM_PACKAGE_VERSION} at ${MLIR_DIR}")
endif()
