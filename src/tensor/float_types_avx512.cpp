// F32 / F16 / BF16 kernels for the avx512 path (body in float_types_x86.h).
#define STRATA_ISA avx512
#include "tensor/float_types_x86.h"
