// The cpu backend's linear: input @ weight^T + bias and its backward, every product through products.h (oneDNN for
// float32 on x86 CPUs that are not Intel's, where MKL's GEMM, behind torch's own linear, runs at under half of
// oneDNN's rate; ATen elsewhere). The Seq2Seq model's projections (the output layer over the vocabulary, the
// input-feeding combination, the attention's query and key projections) are most of a CPU decoder step's work.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <optional>
#include <tuple>

#include "products.h"

namespace s2s_fast::cpu {
namespace {

void check_operands(const char* op, const Tensor& input, const Tensor& weight) {
    TORCH_CHECK(input.dim() == 2 && weight.dim() == 2 && input.size(1) == weight.size(1), op,
                ": input must be [M, K] and weight [N, K], got ", input.sizes(), " and ", weight.sizes());
    TORCH_CHECK(input.scalar_type() == weight.scalar_type(), op, ": input has dtype ", input.scalar_type(),
                " but weight has ", weight.scalar_type());
    TORCH_CHECK(input.scalar_type() == at::kFloat || input.scalar_type() == at::kDouble, op,
                ": float32 or float64 only, got ", input.scalar_type());
    TORCH_CHECK(input.device().is_cpu() && weight.device().is_cpu(), op, ": CPU tensors only");
}

// input [M, K], weight [N, K], bias [N] or None -> [M, N].
Tensor linear_fwd_cpu(const Tensor& input, const Tensor& weight, const std::optional<Tensor>& bias) {
    check_operands("cpu_linear_fwd", input, weight);
    if (bias) {
        TORCH_CHECK(bias->dim() == 1 && bias->size(0) == weight.size(0) &&
                        bias->scalar_type() == input.scalar_type() && bias->device().is_cpu(),
                    "cpu_linear_fwd: bias must be a CPU tensor of shape [", weight.size(0), "] and dtype ",
                    input.scalar_type(), ", got ", bias->scalar_type(), " ", bias->sizes());
    }
    return Product(weight.t())(input, bias);
}

// -> (grad_input [M, K], grad_weight [N, K], grad_bias [N]), each empty unless asked for.
std::tuple<Tensor, Tensor, Tensor> linear_bwd_cpu(const Tensor& grad_output, const Tensor& input,
                                                  const Tensor& weight, bool input_grad, bool weight_grad,
                                                  bool bias_grad) {
    check_operands("cpu_linear_bwd", input, weight);
    TORCH_CHECK(grad_output.dim() == 2 && grad_output.size(0) == input.size(0) &&
                    grad_output.size(1) == weight.size(0) && grad_output.scalar_type() == input.scalar_type(),
                "cpu_linear_bwd: grad_output must be [", input.size(0), ", ", weight.size(0), "] of dtype ",
                input.scalar_type(), ", got ", grad_output.scalar_type(), " ", grad_output.sizes());
    const auto none = [&] { return at::empty({0}, grad_output.options()); };  // one each: outputs do not alias
    return {input_grad ? Product(weight)(grad_output) : none(),
            weight_grad ? weight_gradient(grad_output, input) : none(), bias_grad ? grad_output.sum(0) : none()};
}

}  // namespace
}  // namespace s2s_fast::cpu

TORCH_LIBRARY_FRAGMENT(s2s_fast, m) {
    m.def("cpu_linear_fwd(Tensor input, Tensor weight, Tensor? bias) -> Tensor");
    m.def(
        "cpu_linear_bwd(Tensor grad_output, Tensor input, Tensor weight, bool input_grad, bool weight_grad, "
        "bool bias_grad) -> (Tensor grad_input, Tensor grad_weight, Tensor grad_bias)");
}

TORCH_LIBRARY_IMPL(s2s_fast, CPU, m) {
    m.impl("cpu_linear_fwd", &s2s_fast::cpu::linear_fwd_cpu);
    m.impl("cpu_linear_bwd", &s2s_fast::cpu::linear_bwd_cpu);
}
