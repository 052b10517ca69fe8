// The Python module s2s_fast._C (s2s_fast._C_emulated for the CUDA emulation). Importing it loads the library, whose
// static initialisers register the operators (TORCH_LIBRARY in ops.cpp); it has no Python functions of its own, so it
// is built against Python's stable ABI (Py_LIMITED_API) and one built file serves every Python version torch does.
#include <Python.h>

#define S2S_FAST_CONCAT(a, b) a##b
#define S2S_FAST_MODULE_INIT(name) S2S_FAST_CONCAT(PyInit_, name)
#define S2S_FAST_STRING(name) #name
#define S2S_FAST_MODULE_NAME(name) S2S_FAST_STRING(name)

extern "C" PyMODINIT_FUNC S2S_FAST_MODULE_INIT(TORCH_EXTENSION_NAME)(void) {
    static PyModuleDef definition = {
        PyModuleDef_HEAD_INIT, S2S_FAST_MODULE_NAME(TORCH_EXTENSION_NAME),
        "s2s_fast kernels; loading this module registers the operators torch.ops.s2s_fast.*", -1, nullptr};
    return PyModule_Create(&definition);
}
