# The C++ package as another project sees it: `cmake --install` into
# BUILD/install, then examples/cpp configured with find_package(dattn) and
# built against it, then run (exit 77 without a GPU, which counts as a pass
# here: the GPU run is scripts/device_check.sh's `package` mode).
#   cmake -DBUILD=<build dir> -DSRC=<source dir> -P check_package.cmake
function(run)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "failed (${rc}): ${ARGN}\n${out}\n${err}")
  endif()
endfunction()
set(prefix ${BUILD}/install)
file(REMOVE_RECURSE ${prefix} ${BUILD}/example)
run(${CMAKE_COMMAND} --install ${BUILD} --prefix ${prefix})
foreach(f include/dattn/runtime.h include/dattn/tensor.h include/dattn/tile_plan.cuh
          lib/cmake/dattn/dattnConfig.cmake)
  if(NOT EXISTS ${prefix}/${f})
    message(FATAL_ERROR "the install lacks ${f}")
  endif()
endforeach()
run(${CMAKE_COMMAND} -S ${SRC}/examples/cpp -B ${BUILD}/example -G Ninja
    -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH=${prefix})
run(${CMAKE_COMMAND} --build ${BUILD}/example)
execute_process(COMMAND ${BUILD}/example/dattn_example ${SRC}/examples/longnet_head_partitioned.dattn
                        --seq 512
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
message(STATUS "dattn_example: exit ${rc}\n${out}${err}")
if(NOT rc EQUAL 0 AND NOT rc EQUAL 77)
  message(FATAL_ERROR "dattn_example failed")
endif()
