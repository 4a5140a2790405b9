# CMake toolchain for cross-building zeroskip._C for aarch64 Linux (Debian's
# g++-aarch64-linux-gnu) against the arm64 Python in a Debian bookworm rootfs
# made by .ci/aarch64.sh. The rootfs is ZS_ARM_ROOT (a CMake variable or, as
# try_compile sub-projects only see the environment, the environment variable).
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)

set(CMAKE_C_COMPILER aarch64-linux-gnu-gcc)
set(CMAKE_CXX_COMPILER aarch64-linux-gnu-g++)

if(NOT ZS_ARM_ROOT)
  set(ZS_ARM_ROOT "$ENV{ZS_ARM_ROOT}")
endif()
if(NOT ZS_ARM_ROOT OR NOT EXISTS "${ZS_ARM_ROOT}/usr/include/python3.11/Python.h")
  message(FATAL_ERROR "aarch64 toolchain: set ZS_ARM_ROOT to an arm64 bookworm rootfs with libpython3.11-dev (got '${ZS_ARM_ROOT}')")
endif()
list(APPEND CMAKE_TRY_COMPILE_PLATFORM_VARIABLES ZS_ARM_ROOT)

# Libraries and headers come from the cross toolchain (/usr/aarch64-linux-gnu);
# the rootfs's headers are only a fallback (-idirafter), so glibc/libstdc++
# from the cross compiler win over the rootfs copies.
set(CMAKE_C_FLAGS_INIT "-idirafter ${ZS_ARM_ROOT}/usr/include")
set(CMAKE_CXX_FLAGS_INIT "-idirafter ${ZS_ARM_ROOT}/usr/include")

# Programs (cmake, ninja, the host Python) run on the build machine.
set(CMAKE_FIND_ROOT_PATH /usr/aarch64-linux-gnu)
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE BOTH)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE BOTH)

# The target Python: headers from the rootfs, the host interpreter only for
# running CMake helpers; pybind11 must not ask the host interpreter for the
# extension suffix.
set(PYBIND11_USE_CROSSCOMPILING ON CACHE BOOL "" FORCE)
set(Python_INCLUDE_DIR "${ZS_ARM_ROOT}/usr/include/python3.11" CACHE PATH "" FORCE)
# pybind11 >= 2.12/3.x read PYTHON_MODULE_EXT_SUFFIX first; it beats SKBUILD_SOABI,
# which scikit-build-core takes from the host interpreter (the script also sets
# SETUPTOOLS_EXT_SUFFIX, which both read). PYTHON_MODULE_EXTENSION: older pybind11.
set(PYTHON_MODULE_EXT_SUFFIX ".cpython-311-aarch64-linux-gnu.so" CACHE STRING "" FORCE)
set(PYTHON_MODULE_EXTENSION ".cpython-311-aarch64-linux-gnu.so" CACHE INTERNAL "" FORCE)
set(Python_SOABI "cpython-311-aarch64-linux-gnu" CACHE STRING "" FORCE)

set(ZEROSKIP_CUDA OFF CACHE BOOL "" FORCE)
