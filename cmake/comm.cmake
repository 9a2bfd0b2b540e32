# comm.cmake — the build side of the communication layer (common/nn/comm.h), included by the top
# CMakeLists.txt after libasvr:
#  - the MPI plugin libasvr_comm_mpi.so (common/nn/mpi/), built into lib/ when MPI is found. It is the
#    only thing linked against libmpi; libasvr loads it with dlopen when a launcher started the process,
#    so the tools start and run alone without MPI installed;
#  - NCCL for the CUDA backend: found by compiling `#include <nccl.h>` (it ships with the CUDA toolkit);
#    libnccl.so.2 itself is loaded with dlopen at run time (common/nn/cuda/comm_nccl.cu).
set(ASVR_MPI AUTO CACHE STRING "Build the MPI plugin of the communication layer: AUTO (when MPI is found), ON, OFF")
set(ASVR_HAVE_MPI OFF)
if(NOT ASVR_MPI STREQUAL "OFF")
  find_package(MPI COMPONENTS C QUIET)
  if(MPI_C_FOUND)
    set(ASVR_HAVE_MPI ON)
    add_library(asvr_comm_mpi MODULE ${PROJECT_SOURCE_DIR}/common/nn/mpi/comm_mpi_plugin.c)
    target_include_directories(asvr_comm_mpi PRIVATE ${PROJECT_SOURCE_DIR}/common)
    target_link_libraries(asvr_comm_mpi PRIVATE MPI::MPI_C)
    set_target_properties(asvr_comm_mpi PROPERTIES PREFIX "lib" OUTPUT_NAME asvr_comm_mpi
                          LIBRARY_OUTPUT_DIRECTORY ${PROJECT_BINARY_DIR}/lib C_VISIBILITY_PRESET hidden)
    add_dependencies(asvr asvr_comm_mpi) # whatever links libasvr finds the plugin built beside it
  elseif(ASVR_MPI STREQUAL "ON")
    message(FATAL_ERROR "ASVR_MPI=ON but MPI was not found: apt-get install openmpi-bin libopenmpi-dev")
  endif()
endif()

set(ASVR_HAVE_NCCL OFF)
if(ASVR_HAVE_CUDA)
  set(ASVR_NCCL AUTO CACHE STRING "Build the NCCL backend of the communication layer: AUTO (when nccl.h is found), ON, OFF")
  if(NOT ASVR_NCCL STREQUAL "OFF")
    include(CheckSourceCompiles)
    check_source_compiles(CUDA "#include <nccl.h>
int main(void) { ncclUniqueId id; (void)id; return NCCL_MAJOR >= 2 ? 0 : 1; }" ASVR_NCCL_COMPILES)
    if(ASVR_NCCL_COMPILES)
      set(ASVR_HAVE_NCCL ON)
      set_property(SOURCE ${PROJECT_SOURCE_DIR}/common/nn/cuda/comm_nccl.cu APPEND PROPERTY COMPILE_DEFINITIONS
                   ASVR_HAVE_NCCL=1 ASVR_NCCL_DIR="${CUDAToolkit_LIBRARY_DIR}")
    elseif(ASVR_NCCL STREQUAL "ON")
      message(FATAL_ERROR "ASVR_NCCL=ON but nccl.h does not compile with nvcc: install NCCL's headers")
    endif()
  endif()
  if(ASVR_WERROR)
    set_property(SOURCE ${PROJECT_SOURCE_DIR}/common/nn/cuda/comm_cuda.cu ${PROJECT_SOURCE_DIR}/common/nn/cuda/comm_nccl.cu
                 APPEND PROPERTY COMPILE_OPTIONS -Werror=all-warnings -Xcompiler=-Werror)
  endif()
endif()
target_link_libraries(asvr PUBLIC ${CMAKE_DL_LIBS})
message(STATUS "asvr: communication layer: MPI plugin ${ASVR_HAVE_MPI}, NCCL ${ASVR_HAVE_NCCL}")
