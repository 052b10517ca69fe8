// The CPU instruction sets the kernels are built for, and the one to run them with.
//
// setup.py compiles the kernels (kernels.h) once per instruction set, each time in a namespace of that name
// (CPU_CAPABILITY, as ATen compiles its own CPU kernels): kernels_default.cpp everywhere, kernels_avx2.cpp and
// kernels_avx512.cpp on x86-64 with -mavx2/-mavx512* flags of their own, announced to the bindings by
// S2S_FAST_CPU_AVX2 and S2S_FAST_CPU_AVX512. At run time the bindings take the best set both this library and torch
// run with (at::get_cpu_capability(): the CPU's own, or the ATEN_CPU_CAPABILITY environment variable).
#pragma once

#include <ATen/Version.h>

#include <string>

namespace s2s_fast::cpu {

enum class Capability { kDefault, kAvx2, kAvx512 };

inline Capability capability() {
    static const Capability chosen = [] {
        const std::string torch_choice = at::get_cpu_capability();
#if defined(S2S_FAST_CPU_AVX512)
        if (torch_choice == "AVX512") return Capability::kAvx512;
#endif
#if defined(S2S_FAST_CPU_AVX2)
        if (torch_choice == "AVX2" || torch_choice == "AVX512") return Capability::kAvx2;
#endif
        return Capability::kDefault;
    }();
    return chosen;
}

inline const char* capability_name(Capability chosen) {
    switch (chosen) {
        case Capability::kAvx512: return "AVX512";
        case Capability::kAvx2: return "AVX2";
        default: return "DEFAULT";
    }
}

// Declares the kernels named in the arguments in the namespace of every instruction set (kernels_<set>.cpp define
// them, compiled once per set).
#define S2S_FAST_CPU_DECLARE_KERNELS(...) \
    namespace DEFAULT {                   \
    __VA_ARGS__                           \
    }                                     \
    namespace AVX2 {                      \
    __VA_ARGS__                           \
    }                                     \
    namespace AVX512 {                    \
    __VA_ARGS__                           \
    }

// Inside a function returning what `function` returns: return NS::function(args...) for the instruction set
// capability() chose (NS one of the namespaces kernels_<set>.cpp define).
#if defined(S2S_FAST_CPU_AVX512)
#define S2S_FAST_CPU_CASE_AVX512(function, ...) \
    case ::s2s_fast::cpu::Capability::kAvx512: return AVX512::function(__VA_ARGS__);
#else
#define S2S_FAST_CPU_CASE_AVX512(function, ...)
#endif
#if defined(S2S_FAST_CPU_AVX2)
#define S2S_FAST_CPU_CASE_AVX2(function, ...) \
    case ::s2s_fast::cpu::Capability::kAvx2: return AVX2::function(__VA_ARGS__);
#else
#define S2S_FAST_CPU_CASE_AVX2(function, ...)
#endif
#define S2S_FAST_CPU_CALL(function, ...)                      \
    switch (::s2s_fast::cpu::capability()) {                  \
        S2S_FAST_CPU_CASE_AVX512(function, __VA_ARGS__)       \
        S2S_FAST_CPU_CASE_AVX2(function, __VA_ARGS__)         \
        default: return DEFAULT::function(__VA_ARGS__);       \
    }

}  // namespace s2s_fast::cpu
