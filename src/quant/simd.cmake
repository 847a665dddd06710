# Included by src/quant/CMakeLists.txt after ds4_quant is defined.
#
# Float contraction is off for the whole library: the fast paths must reproduce the
# scalar references bit for bit, and g++ contracts a*b - c*d into an FMA by default in
# C++ (even with -std=c++20) as soon as a file is compiled with -mfma.
target_compile_options(ds4_quant PRIVATE -ffp-contract=off)

# ISA-specific translation units. Their code runs only after the CPUID check in
# kernels.cpp; everything else in the library is built for the baseline x86-64.
if(CMAKE_SYSTEM_PROCESSOR MATCHES "^(x86_64|AMD64|amd64)$")
    target_compile_definitions(ds4_quant PRIVATE DS4_QUANT_X86=1)
    set_source_files_properties(${CMAKE_CURRENT_SOURCE_DIR}/kernels_avx2.cpp
        PROPERTIES COMPILE_OPTIONS "-mavx2;-mfma;-mf16c")
    set_source_files_properties(${CMAKE_CURRENT_SOURCE_DIR}/kernels_avx512.cpp
        PROPERTIES COMPILE_OPTIONS
        "-mavx2;-mfma;-mf16c;-mavx512f;-mavx512bw;-mavx512vl;-mavx512dq")
endif()
