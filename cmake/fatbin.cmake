# Ahead-of-time compilation of the CUDA kernels (src/lrfast_kernels.cu) to one fatbin, installed as
# lrfast/cuda_src/lrfast_kernels.fatbin. Included by CMakeLists.txt only when check_language(CUDA) found a
# CUDA compiler; without one the package installs the sources alone and the cuda backend compiles them
# with NVRTC at run time. lrfast/backends/_cuda.py loads the fatbin with cupy.RawModule(path=...) and falls
# back to NVRTC when no image in it fits the GPU.
#
#   -DLRFAST_FATBIN=OFF                 skip the fatbin even though nvcc is there
#   -DLRFAST_CUDA_ARCHS="75;80;86;89;90;100;120" the SASS images (one per GPU generation, Turing ..
#                                       Blackwell: sm_100 runs on 10.x, sm_120 on 12.x GPUs)
#   -DLRFAST_CUDA_PTX_ARCH=90           the PTX embedded for GPUs no SASS image fits (sm_110, later
#                                       generations: the driver JIT-compiles it); compute_90 runs on all
#                                       of them, where a newer PTX would leave some out
#
# CUDA 13 dropped sm_50 .. sm_72; sm_75 is the oldest arch it targets. Archs the found nvcc does not
# list (nvcc --list-gpu-code) are left out with a message rather than failing the build.

option(LRFAST_FATBIN "Compile the CUDA kernels ahead of time into a fatbin" ON)
set(LRFAST_CUDA_ARCHS "75;80;86;89;90;100;120" CACHE STRING "SASS archs of lrfast's fatbin")
set(LRFAST_CUDA_PTX_ARCH "90" CACHE STRING "PTX arch of lrfast's fatbin (for GPUs newer than the SASS archs)")

if(NOT LRFAST_FATBIN)
  message(STATUS "lrfast: LRFAST_FATBIN=OFF; installing CUDA sources only")
  return()
endif()

execute_process(COMMAND "${CMAKE_CUDA_COMPILER}" --list-gpu-code
                OUTPUT_VARIABLE _lrfast_codes RESULT_VARIABLE _lrfast_rc ERROR_QUIET)
string(REGEX MATCHALL "sm_[0-9]+[a-z]?" _lrfast_codes "${_lrfast_codes}")
if(NOT _lrfast_rc EQUAL 0)
  set(_lrfast_codes "")  # cannot tell: try every requested arch
endif()

set(_lrfast_gencode "")
set(_lrfast_sass "")
foreach(_arch IN LISTS LRFAST_CUDA_ARCHS)
  if(NOT _lrfast_codes OR "sm_${_arch}" IN_LIST _lrfast_codes)
    list(APPEND _lrfast_gencode "-gencode=arch=compute_${_arch},code=sm_${_arch}")
    list(APPEND _lrfast_sass "sm_${_arch}")
  else()
    message(STATUS "lrfast: ${CMAKE_CUDA_COMPILER} does not support sm_${_arch}; left out of the fatbin")
  endif()
endforeach()
list(APPEND _lrfast_gencode "-gencode=arch=compute_${LRFAST_CUDA_PTX_ARCH},code=compute_${LRFAST_CUDA_PTX_ARCH}")

set(_lrfast_fatbin "${CMAKE_CURRENT_BINARY_DIR}/lrfast_kernels.fatbin")
set(_lrfast_main "${CMAKE_CURRENT_SOURCE_DIR}/src/lrfast_kernels.cu")
file(GLOB _lrfast_headers CONFIGURE_DEPENDS "${CMAKE_CURRENT_SOURCE_DIR}/src/*.cuh")

add_custom_command(
  OUTPUT "${_lrfast_fatbin}"
  COMMAND "${CMAKE_CUDA_COMPILER}" --fatbin -std=c++17 --threads 0 ${_lrfast_gencode}
          -o "${_lrfast_fatbin}" "${_lrfast_main}"
  DEPENDS "${_lrfast_main}" ${_lrfast_headers}
  COMMENT "lrfast: nvcc --fatbin ${_lrfast_sass} + compute_${LRFAST_CUDA_PTX_ARCH} PTX"
  VERBATIM)
add_custom_target(lrfast_fatbin ALL DEPENDS "${_lrfast_fatbin}")
install(FILES "${_lrfast_fatbin}" DESTINATION lrfast/cuda_src)
message(STATUS "lrfast: CUDA fatbin for ${_lrfast_sass} + compute_${LRFAST_CUDA_PTX_ARCH} PTX")
