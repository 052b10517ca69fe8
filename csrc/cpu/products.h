// The CPU RNN layers' matrix products (lstm_layer.cpp, gru_layer.cpp): through ATen (at::mm, which on x86 is MKL's
// GEMM) or through oneDNN (torch's mkldnn::_linear_pointwise on dense tensors), one choice for the process.
//
// MKL's float32 GEMM does not take its fast paths on CPUs other than Intel's: on a 2-core AMD EPYC with AVX-512
// (2026-12-04, one thread) a 768 x 768 product ran at 103 GFLOP/s through at::mm and 246 through oneDNN, the layers'
// per-step products h @ W_hh^T 1.2x (B=8, H=256) to 2.2x (B=64-256, H=512) faster through oneDNN, and the layers'
// forward+backward (T=64, B=8-128, H=256-512, one and two threads) 1.4-1.9x faster. So the default is oneDNN for
// float32 on an x86 CPU that is not Intel's, where torch has oneDNN, and ATen elsewhere (float64 always: oneDNN's
// linear takes float32), and never while torch.backends.mkldnn.enabled is off. The vendor is read with GCC's and
// Clang's __builtin_cpu_is, so other compilers (MSVC) default to ATen. s2s_fast::cpu_products reads the choice and
// sets it (for the tests).
#pragma once

#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/core/stack.h>

#include <atomic>
#include <optional>
#include <string>

namespace s2s_fast::cpu {

using at::Tensor;

inline bool onednn_linear_registered() {
    static const bool registered =
        c10::Dispatcher::singleton().findSchema({"mkldnn::_linear_pointwise", ""}).has_value();
    return registered;
}

inline bool x86_not_intel() {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    return !__builtin_cpu_is("intel");
#else
    return false;
#endif
}

// true: float32 products through oneDNN.
inline std::atomic<bool>& onednn_products() {
    static std::atomic<bool> choice{onednn_linear_registered() && x86_not_intel()};
    return choice;
}

// x [M, K] @ weight^T (+ bias) through oneDNN's linear: weight [N, K] contiguous.
inline Tensor onednn_linear(const Tensor& x, const Tensor& weight, const std::optional<Tensor>& bias) {
    static const c10::OperatorHandle op =
        c10::Dispatcher::singleton().findSchemaOrThrow("mkldnn::_linear_pointwise", "");
    torch::jit::Stack stack{x.contiguous(), weight, bias ? c10::IValue(bias->contiguous()) : c10::IValue(),
                            std::string("none"), c10::List<std::optional<at::Scalar>>(), c10::IValue()};
    op.callBoxed(&stack);
    return stack[0].toTensor();
}

// Repeated products x @ right (+ bias) with one right operand: for oneDNN its transpose is made contiguous once, the
// linear weight every product then reads. Empty operands go to ATen (oneDNN's linear refuses them).
class Product {
   public:
    explicit Product(const Tensor& right)
        : right_(right),
          onednn_weight_(right.scalar_type() == at::kFloat && onednn_products().load() && right.numel() > 0
                             ? right.t().contiguous()
                             : Tensor()) {}

    Tensor operator()(const Tensor& x, const std::optional<Tensor>& bias = std::nullopt) const {
        if (onednn(x)) return onednn_linear(x, onednn_weight_, bias);
        return bias ? at::addmm(*bias, x, right_) : at::mm(x, right_);
    }

    void out(Tensor& result, const Tensor& x, const std::optional<Tensor>& bias = std::nullopt) const {
        if (onednn(x)) {
            result.copy_(onednn_linear(x, onednn_weight_, bias));
        } else if (bias) {
            at::addmm_out(result, *bias, x, right_);
        } else {
            at::mm_out(result, x, right_);
        }
    }

   private:
    bool onednn(const Tensor& x) const {
        return onednn_weight_.defined() && x.numel() > 0 && at::globalContext().userEnabledMkldnn();
    }

    Tensor right_;
    Tensor onednn_weight_;
};

// s2s_fast::cpu_products(str? choose) -> str: the products' library ("onednn" or "aten"), after setting it when given.
inline std::string products_op(const std::optional<std::string>& choose) {
    if (choose) {
        TORCH_CHECK(*choose == "onednn" || *choose == "aten", "cpu_products: choose \"onednn\" or \"aten\", got \"",
                    *choose, "\"");
        TORCH_CHECK(*choose == "aten" || onednn_linear_registered(),
                    "cpu_products: this torch has no oneDNN linear (mkldnn::_linear_pointwise)");
        onednn_products().store(*choose == "onednn");
    }
    return onednn_products().load() ? "onednn" : "aten";
}

}  // namespace s2s_fast::cpu
