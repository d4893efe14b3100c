// Q4_0 .. Q8_1 kernels for the avx512 path (body in quant_legacy_x86.h).
#define STRATA_ISA avx512
#include "tensor/quant_legacy_x86.h"
