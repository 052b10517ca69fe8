// Torch binding of the CPU additive attention kernels: the operators s2s_fast::cpu_additive_attention_fwd/_bwd
// (a fragment of the s2s_fast library, which csrc/ops.cpp defines for the CUDA kernels when that library is built),
// their CPU implementations (input checks, allocation, the kernels of the chosen instruction set), and
// cpu_kernel_capability, which names that set. Fake implementations and the autograd formula are registered from
// Python (s2s_fast/cpu/additive_attention.py).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <optional>
#include <tuple>
#include <vector>

#include "additive_attention.h"
#include "capability.h"
#include "products.h"

namespace s2s_fast::cpu {
namespace {

using at::Tensor;

void check_float(const Tensor& tensor, const char* name, const Tensor& like) {
    TORCH_CHECK(tensor.device().is_cpu(), "cpu_additive_attention: ", name, " must be a CPU tensor, got ",
                tensor.device());
    TORCH_CHECK(tensor.scalar_type() == like.scalar_type(), "cpu_additive_attention: ", name, " has dtype ",
                tensor.scalar_type(), " but query_proj has ", like.scalar_type());
}

// A [B, rows, width] tensor whose rows are contiguous (a copy only where they are not) and its strides.
std::pair<Tensor, RowStrides> with_contiguous_rows(const Tensor& tensor) {
    const Tensor rows = tensor.stride(2) == 1 || tensor.size(2) <= 1 ? tensor : tensor.contiguous();
    return {rows, RowStrides{rows.stride(0), rows.stride(1)}};
}

void check_shape(const Tensor& tensor, const char* name, at::IntArrayRef expected) {
    TORCH_CHECK(tensor.sizes() == expected, "cpu_additive_attention: ", name, " must have shape ", expected, ", got ",
                tensor.sizes());
}

// The inputs both directions take, checked against each other (the backward reads them as the forward does, and a
// direct call of either op with shapes that disagree would read past their ends).
void check_inputs(const char* op, const Tensor& query_proj, const Tensor& key_proj, const Tensor& v,
                  const Tensor& values) {
    TORCH_CHECK(query_proj.dim() == 3 && key_proj.dim() == 3 && values.dim() == 3, op,
                ": query_proj [B, Tq, A], key_proj [B, Tk, A] and values [B, Tk, Dv] must be 3-d");
    TORCH_CHECK(query_proj.scalar_type() == at::kFloat || query_proj.scalar_type() == at::kDouble, op,
                ": float32 or float64 only, got ", query_proj.scalar_type());
    for (const auto& [tensor, name] : {std::pair{key_proj, "key_proj"}, {v, "v"}, {values, "values"}}) {
        check_float(tensor, name, query_proj);
    }
    check_float(query_proj, "query_proj", query_proj);
    const int64_t batch = key_proj.size(0), keys = key_proj.size(1), attn = key_proj.size(2);
    check_shape(query_proj, "query_proj", {batch, query_proj.size(1), attn});
    check_shape(v, "v", {attn});
    check_shape(values, "values", {batch, keys, values.size(2)});
}

std::tuple<Tensor, Tensor> additive_attention_fwd_cpu(const Tensor& query_proj, const Tensor& key_proj,
                                                      const Tensor& v, const Tensor& values,
                                                      const std::optional<Tensor>& mask) {
    check_inputs("cpu_additive_attention_fwd", query_proj, key_proj, v, values);
    const int64_t batch = key_proj.size(0), keys = key_proj.size(1), attn = key_proj.size(2);
    const int64_t queries = query_proj.size(1), value_size = values.size(2);
    if (mask) {
        TORCH_CHECK(mask->scalar_type() == at::kBool && mask->device().is_cpu(),
                    "cpu_additive_attention_fwd: mask must be a bool CPU tensor");
        check_shape(*mask, "mask", {batch, keys});
    }
    const auto [query_c, query_strides] = with_contiguous_rows(query_proj);
    const auto [key_c, key_strides] = with_contiguous_rows(key_proj);
    const auto [values_c, value_strides] = with_contiguous_rows(values);
    const Tensor v_c = v.contiguous();
    const std::optional<Tensor> mask_c = mask ? std::optional<Tensor>(mask->contiguous()) : std::nullopt;
    Tensor context = at::empty({batch, queries, value_size}, values.options());
    Tensor weights = at::empty({batch, queries, keys}, values.options());
    AT_DISPATCH_FLOATING_TYPES(query_proj.scalar_type(), "cpu_additive_attention_fwd", [&] {
        const AttentionForwardParams<scalar_t> params{
            batch, queries, keys, attn, value_size, query_c.data_ptr<scalar_t>(), key_c.data_ptr<scalar_t>(),
            v_c.data_ptr<scalar_t>(), values_c.data_ptr<scalar_t>(),
            mask_c ? mask_c->data_ptr<bool>() : nullptr, context.data_ptr<scalar_t>(), weights.data_ptr<scalar_t>(),
            query_strides, key_strides, value_strides};
        run_additive_attention_fwd(params);
    });
    return {context, weights};
}

std::tuple<Tensor, Tensor, Tensor, Tensor> additive_attention_bwd_cpu(
    const Tensor& grad_context, const Tensor& grad_weights, const Tensor& query_proj, const Tensor& key_proj,
    const Tensor& v, const Tensor& values, const Tensor& weights) {
    check_inputs("cpu_additive_attention_bwd", query_proj, key_proj, v, values);
    const int64_t batch = key_proj.size(0), keys = key_proj.size(1), attn = key_proj.size(2);
    const int64_t queries = query_proj.size(1), value_size = values.size(2);
    for (const auto& [tensor, name] : {std::pair{grad_context, "grad_context"}, {grad_weights, "grad_weights"},
                                       {weights, "weights"}}) {
        check_float(tensor, name, query_proj);
    }
    check_shape(grad_context, "grad_context", {batch, queries, value_size});
    check_shape(grad_weights, "grad_weights", {batch, queries, keys});
    check_shape(weights, "weights", {batch, queries, keys});
    const Tensor grad_context_c = grad_context.contiguous(), grad_weights_c = grad_weights.contiguous();
    const auto [query_c, query_strides] = with_contiguous_rows(query_proj);
    const auto [key_c, key_strides] = with_contiguous_rows(key_proj);
    const auto [values_c, value_strides] = with_contiguous_rows(values);
    const Tensor v_c = v.contiguous(), weights_c = weights.contiguous();
    Tensor grad_query = at::empty({batch, queries, attn}, query_proj.options());
    Tensor grad_key = at::empty({batch, keys, attn}, key_proj.options());
    Tensor grad_values = at::empty({batch, keys, value_size}, values.options());
    Tensor grad_v_partial = at::empty({batch, attn}, v.options());
    AT_DISPATCH_FLOATING_TYPES(query_proj.scalar_type(), "cpu_additive_attention_bwd", [&] {
        const AttentionBackwardParams<scalar_t> params{
            batch, queries, keys, attn, value_size, query_c.data_ptr<scalar_t>(), key_c.data_ptr<scalar_t>(),
            v_c.data_ptr<scalar_t>(), values_c.data_ptr<scalar_t>(), weights_c.data_ptr<scalar_t>(),
            grad_context_c.data_ptr<scalar_t>(), grad_weights_c.data_ptr<scalar_t>(),
            grad_query.data_ptr<scalar_t>(), grad_key.data_ptr<scalar_t>(), grad_values.data_ptr<scalar_t>(),
            grad_v_partial.data_ptr<scalar_t>(), query_strides, key_strides, value_strides};
        run_additive_attention_bwd(params);
    });
    // Batch rows' shares of grad_v, added in a fixed order: the same bits on every run.
    return {grad_query, grad_key, grad_v_partial.sum(0), grad_values};
}

std::string kernel_capability() { return capability_name(capability()); }

// How many of torch's threads at::parallel_for hands `tasks` one-item tasks to, from this library: 1 when the
// library was compiled without OpenMP (then ATen's parallel_for runs inline and every kernel here on one thread).
int64_t kernel_threads(int64_t tasks) {
    TORCH_CHECK(tasks >= 0, "cpu_kernel_threads: tasks must be >= 0, got ", tasks);
    std::vector<char> used(static_cast<size_t>(std::max(1, at::get_num_threads())), 0);
    at::parallel_for(0, tasks, 1, [&](int64_t, int64_t) { used.at(static_cast<size_t>(at::get_thread_num())) = 1; });
    return std::count(used.begin(), used.end(), 1);
}

}  // namespace
}  // namespace s2s_fast::cpu

TORCH_LIBRARY_FRAGMENT(s2s_fast, m) {
    m.def(
        "cpu_additive_attention_fwd(Tensor query_proj, Tensor key_proj, Tensor v, Tensor values, Tensor? mask) "
        "-> (Tensor context, Tensor weights)");
    m.def(
        "cpu_additive_attention_bwd(Tensor grad_context, Tensor grad_weights, Tensor query_proj, Tensor key_proj, "
        "Tensor v, Tensor values, Tensor weights) -> (Tensor grad_query, Tensor grad_key, Tensor grad_v, "
        "Tensor grad_values)");
    m.def("cpu_kernel_capability() -> str", &s2s_fast::cpu::kernel_capability);
    m.def("cpu_kernel_threads(int tasks) -> int", &s2s_fast::cpu::kernel_threads);
    m.def("cpu_products(str? choose=None) -> str", &s2s_fast::cpu::products_op);
    m.def("cpu_onednn_from_work(int? work=None) -> int", &s2s_fast::cpu::onednn_from_work_op);
    m.def("cpu_packed_float32_from_rows(int? rows=None) -> int", &s2s_fast::cpu::packed_float32_from_rows_op);
    m.def("cpu_onednn_weight_gradients(bool? through=None) -> bool", &s2s_fast::cpu::onednn_weight_gradients_op);
    m.def("cpu_bf16_products(str? force=None) -> bool", &s2s_fast::cpu::bf16_products_op);
    m.def("cpu_bf16_from_work(int? work=None) -> int", &s2s_fast::cpu::bf16_from_work_op);
    m.def("cpu_clear_kept_weights() -> int", &s2s_fast::cpu::clear_kept_weights_op);
    m.def("cpu_keep_weights(bool? keep=None) -> bool", &s2s_fast::cpu::keep_weights_op);
}

TORCH_LIBRARY_IMPL(s2s_fast, CPU, m) {
    m.impl("cpu_additive_attention_fwd", &s2s_fast::cpu::additive_attention_fwd_cpu);
    m.impl("cpu_additive_attention_bwd", &s2s_fast::cpu::additive_attention_bwd_cpu);
}
