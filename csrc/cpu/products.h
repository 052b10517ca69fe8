// The cpu backend's matrix products (the RNN layers and cells, lstm_layer.cpp and gru_layer.cpp; linear.cpp): through
// ATen (at::mm, which on x86 is MKL's GEMM) or through oneDNN (torch's mkldnn::_linear_pointwise on dense tensors),
// one choice for the process, and ATen for products too small to pay oneDNN's cost per call (onednn_from_work).
//
// MKL's float32 GEMM does not take its fast paths on CPUs other than Intel's: on a 2-core AMD EPYC with AVX-512
// (2026-12-04, one thread) a 768 x 768 product ran at 103 GFLOP/s through at::mm and 246 through oneDNN, the layers'
// per-step products h @ W_hh^T 1.2x (B=8, H=256) to 2.2x (B=64-256, H=512) faster through oneDNN, and the layers'
// forward+backward (T=64, B=8-128, H=256-512, one and two threads) 1.4-1.9x faster. So the default is oneDNN for
// float32 on an x86 CPU that is not Intel's, where torch has oneDNN, and ATen elsewhere (float64 always: oneDNN's
// linear takes float32), and never while torch.backends.mkldnn.enabled is off. The vendor is read with GCC's and
// Clang's __builtin_cpu_is, so other compilers (MSVC) default to ATen. s2s_fast::cpu_products reads the choice and
// sets it (s2s_fast.cpu.use_products).
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

// A 2-d operand oneDNN reads as it is: row-major or its transpose (column-major); anything else as a contiguous copy.
inline Tensor plain_or_transposed(const Tensor& matrix) {
    return matrix.is_contiguous() || matrix.t().is_contiguous() ? matrix : matrix.contiguous();
}

// The fewest multiply-adds (M * K * N) a float32 product must have to go through oneDNN: each call of its linear costs
// about 10 us more than MKL's GEMM (2026-12-04, AMD EPYC, one thread: a [1, 384] x [384, 43] product 12.4 us against
// 2.7), so small products stay with ATen. Through s2s_fast.cpu's linear (a Python op either way), oneDNN ran
// 0.53-0.85x MKL's speed from 0.26M to 1M multiply-adds, 1.0-1.2x at 2M and 1.1-1.5x at 4M ([M, 512] x [512, 512],
// [M, 1024] x [1024, 512], [M, 512] x [512, 8000]), 1.8-2.1x at 64 rows. s2s_fast::cpu_onednn_from_work reads and
// sets it (the tests set 0 to run every product through oneDNN).
inline std::atomic<int64_t>& onednn_from_work() {
    static std::atomic<int64_t> work{2'000'000};
    return work;
}

// Whether a product of `work` multiply-adds (M * K * N) in `dtype` goes through oneDNN: float32, oneDNN chosen and
// enabled in torch, not empty, and at least onednn_from_work. Product and the layers' step products ask this alone.
inline bool onednn_serves(at::ScalarType dtype, int64_t work) {
    return dtype == at::kFloat && onednn_products().load() && work > 0 &&
           at::globalContext().userEnabledMkldnn() && work >= onednn_from_work().load();
}

// x [M, K] @ weight^T (+ bias) through oneDNN's linear: x and weight [N, K] each row- or column-major.
inline Tensor onednn_linear(const Tensor& x, const Tensor& weight, const std::optional<Tensor>& bias) {
    static const c10::OperatorHandle op =
        c10::Dispatcher::singleton().findSchemaOrThrow("mkldnn::_linear_pointwise", "");
    torch::jit::Stack stack{plain_or_transposed(x), plain_or_transposed(weight),
                            bias ? c10::IValue(bias->contiguous()) : c10::IValue(),
                            std::string("none"), c10::List<std::optional<at::Scalar>>(), c10::IValue()};
    op.callBoxed(&stack);
    return stack[0].toTensor();
}

// Products x @ right (+ bias). oneDNN's linear reads right^T as its weight in whatever strides it has (a transposed
// view ran as fast as a contiguous copy, 2026-12-04, AMD EPYC: [64, 2048] x [2048, 768] 1.02 against 0.92 ms, one
// row 0.08 against 0.07 ms, where copying the 2048 x 768 operand cost 0.62 ms), so a product used once takes it as
// it is; a right operand read by many products (`repeated`: the per-step products of a layer) is made contiguous
// once. Empty operands go to ATen (oneDNN's linear refuses them), as do products under onednn_from_work.
class Product {
   public:
    explicit Product(const Tensor& right, bool repeated = false)
        : right_(right),
          onednn_weight_(right.scalar_type() == at::kFloat && onednn_products().load() && right.numel() > 0
                             ? (repeated ? right.t().contiguous() : right.t())
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
        return onednn_weight_.defined() && onednn_serves(x.scalar_type(), x.numel() * onednn_weight_.size(0));
    }

    Tensor right_;
    Tensor onednn_weight_;
};

// A weight's gradient grad^T @ x ([N, K]) over M rows: grad [M, N] and x [M, K], each row-major. ATen's GEMM reads a
// transposed operand as it is; oneDNN's linear copies its left operand when it comes transposed (the right one it
// reads in any strides), so through oneDNN this takes the product whose copies are smaller: grad^T copied ([N, M])
// and read against x, or x^T copied ([K, M]) against grad and the [K, N] result transposed into place ([N, K]). In an
// LSTM layer's backward (N = 4H) the second copies a quarter to a half of what the first does: measured 2026-12-05
// on a 2-core AMD EPYC with AVX-512, one thread, the [768, 2048] copies of the g2p encoder's gate gradients took
// 15 ms of its training step.
inline Tensor weight_gradient(const Tensor& grad, const Tensor& x) {
    const int64_t rows = grad.size(0), outputs = grad.size(1), inputs = x.size(1);
    if (!onednn_products().load() || x.scalar_type() != at::kFloat || grad.numel() == 0 || x.numel() == 0 ||
        !onednn_serves(x.scalar_type(), rows * outputs * inputs)) {
        return at::mm(grad.t(), x);
    }
    if (outputs * rows <= inputs * rows + outputs * inputs) return onednn_linear(grad.t().contiguous(), x.t(), {});
    return onednn_linear(x.t().contiguous(), grad.t(), {}).t().contiguous();
}

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

// s2s_fast::cpu_onednn_from_work(int? work) -> int: onednn_from_work, after setting it when given.
inline int64_t onednn_from_work_op(std::optional<int64_t> work) {
    if (work) {
        TORCH_CHECK(*work >= 0, "cpu_onednn_from_work: work must be >= 0, got ", *work);
        onednn_from_work().store(*work);
    }
    return onednn_from_work().load();
}

}  // namespace s2s_fast::cpu
