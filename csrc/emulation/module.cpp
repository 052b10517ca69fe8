// module.cpp for the emulated extension s2s_fast._C_emulated (its own object file).
#include "../module.cpp"
