// The CPU kernels for any CPU (setup.py: -DCPU_CAPABILITY=DEFAULT).
#include "kernels.h"
